"""Settings from the environment (prefix ``CIVIC_``), one class per service.

A bad or missing setting stops the process at start with exactly one line on
stderr naming the variable, instead of a traceback half-way through wiring.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal, NoReturn, TypeVar

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CITIES_DIR = REPO_ROOT / "deploy" / "cities"


class CommonSettings(BaseSettings):
    """What every service reads. Service settings subclass this."""

    model_config = SettingsConfigDict(env_prefix="CIVIC_", extra="ignore", frozen=True)

    kafka_bootstrap: str = Field(
        description="Kafka bootstrap servers, host:port[,host:port]", min_length=3
    )
    database_url: str = Field(description="PostgreSQL DSN, postgresql://user@host:port/db")
    city: str = Field(default="demo-zh", description="City pack name under the cities directory")
    cities_dir: Path = Field(default=DEFAULT_CITIES_DIR, description="Where city packs live")
    topic_namespace: str = Field(
        default="",
        description="Prefix for topic and consumer-group names (isolates tenants and test runs)",
        pattern=r"^[A-Za-z0-9._-]*$",
    )
    kafka_idempotence: bool = Field(
        default=True, description="Idempotent producer (off only for brokers lacking it)"
    )
    kafka_partitions: int = Field(default=6, ge=1, le=1024, description="Partitions per topic")
    kafka_fetch_max_wait_ms: int = Field(
        default=20,
        ge=0,
        le=500,
        description="How long the broker may hold a fetch to fill kafka_fetch_min_bytes",
    )
    kafka_fetch_min_bytes: int = Field(
        default=32_768,
        ge=1,
        le=16_777_216,
        description="Bytes a fetch waits for (up to kafka_fetch_max_wait_ms): fuller batches",
    )
    kafka_commit_interval_ms: int = Field(
        default=1_000,
        ge=0,
        le=60_000,
        description="Longest a finished batch's offsets wait to be committed (0: every"
        " batch); a crash redelivers at most this much, which the inbox ignores",
    )
    http_host: str = Field(default="127.0.0.1", description="HTTP bind address")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    secrets_file: Path | None = Field(
        default=None, description="YAML mapping of department id to its webhook secret(s)"
    )
    api_keys_file: Path | None = Field(
        default=None, description="YAML list of API clients: name, roles, sha256 of the key"
    )
    db_pool_size: int = Field(default=10, ge=1, le=200)

    @field_validator("database_url")
    @classmethod
    def _postgres_dsn(cls, value: str) -> str:
        if not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must start with postgresql://")
        return value

    @field_validator("kafka_bootstrap")
    @classmethod
    def _host_ports(cls, value: str) -> str:
        for server in value.split(","):
            host, _, port = server.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"expected host:port, got {server!r}")
        return value

    @property
    def city_dir(self) -> Path:
        return self.cities_dir / self.city


SettingsT = TypeVar("SettingsT", bound=BaseSettings)


def _env_name(settings_cls: type[BaseSettings], field: str) -> str:
    prefix = settings_cls.model_config.get("env_prefix", "")
    return f"{prefix}{field}".upper()


def describe_error(settings_cls: type[BaseSettings], error: ValidationError) -> str:
    """One line: every bad variable with what is wrong with it."""
    parts = []
    for item in error.errors():
        field = str(item["loc"][0]) if item["loc"] else "?"
        problem = "is required but not set" if item["type"] == "missing" else item["msg"]
        parts.append(f"{_env_name(settings_cls, field)} {problem}")
    return "bad settings: " + "; ".join(parts)


def load_settings(settings_cls: type[SettingsT]) -> SettingsT:
    """Read settings or exit(2) with one clear line on stderr."""
    try:
        return settings_cls()
    except ValidationError as error:
        _die(describe_error(settings_cls, error))


def _die(line: str) -> NoReturn:
    print(line, file=sys.stderr)
    raise SystemExit(2)
