"""Settings: a bad or missing setting stops the start with exactly one clear line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from shared.settings import CommonSettings, describe_error

GOOD = {"CIVIC_KAFKA_BOOTSTRAP": "127.0.0.1:9092", "CIVIC_DATABASE_URL": "postgresql://u@h:5432/d"}


def test_settings_read_from_civic_prefixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {**GOOD, "CIVIC_CITY": "nyc", "CIVIC_KAFKA_PARTITIONS": "12"}.items():
        monkeypatch.setenv(key, value)
    settings = CommonSettings()
    assert settings.city == "nyc"
    assert settings.kafka_partitions == 12
    assert settings.city_dir.name == "nyc"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "CIVIC_KAFKA_BOOTSTRAP is required but not set"),
        ({**GOOD, "CIVIC_DATABASE_URL": "mysql://x"}, "CIVIC_DATABASE_URL"),
        ({**GOOD, "CIVIC_KAFKA_BOOTSTRAP": "localhost"}, "expected host:port"),
        ({**GOOD, "CIVIC_KAFKA_PARTITIONS": "zero"}, "CIVIC_KAFKA_PARTITIONS"),
    ],
)
def test_bad_setting_is_named_in_one_line(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str
) -> None:
    for key in list(os.environ):
        if key.startswith("CIVIC_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(Exception) as error:  # noqa: PT011 - pydantic's ValidationError
        CommonSettings()
    line = describe_error(CommonSettings, error.value)  # type: ignore[arg-type]
    assert "\n" not in line
    assert line.startswith("bad settings: ")
    assert expected in line


@pytest.mark.parametrize("service", ["intake", "router", "escalation", "notify"])
def test_service_without_settings_exits_2_with_one_stderr_line(service: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIVIC_")}
    result = subprocess.run(
        [sys.executable, "-m", f"services.{service}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "CIVIC_KAFKA_BOOTSTRAP is required" in lines[0]
