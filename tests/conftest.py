"""Test harness: a real Apache Kafka broker and a real PostgreSQL for the session.

Both start once per session on free ports (``deploy.local``). Each test gets
its own database and its own topic namespace, so tests never see each other's
rows or messages. ``CIVIC_KAFKA_BOOTSTRAP`` / ``CIVIC_DATABASE_URL`` point the
suite at existing servers instead; ``CIVIC_TEST_BROKER=tansu`` runs it on the
tansu broker, and tests marked ``kafka`` (real Kafka semantics) then skip.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
import structlog

from deploy.local.kafka import KafkaBroker, TansuBroker
from deploy.local.postgres import PostgresServer
from shared.settings import DEFAULT_CITIES_DIR
from shared.topics import TopicNames, ensure_topics


@dataclass
class Infra:
    bootstrap: str
    database_url: str
    broker: KafkaBroker | TansuBroker | None
    postgres: PostgresServer | None
    broker_kind: str  # "kafka" or "tansu"

    @property
    def idempotent(self) -> bool:
        return self.broker_kind == "kafka"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("CIVIC_TEST_BROKER", "kafka") != "tansu":
        return
    skip = pytest.mark.skip(reason="needs real Apache Kafka semantics (CIVIC_TEST_BROKER=tansu)")
    for item in items:
        if "kafka" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _logging_left_as_found() -> Iterator[None]:
    """Code under test may call configure_logging (the router's CLI tools do), which binds
    logs to this test's captured stdout; put the configuration back afterwards, so a later
    test never logs into a stream that is closed by then."""
    config = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.configure(**config)
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """Keep each phase's report on the item, so fixtures can tell a failed test at teardown."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def infra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Infra]:
    workdir = tmp_path_factory.mktemp("infra")
    started: list[KafkaBroker | TansuBroker | PostgresServer] = []
    try:
        database_url = os.environ.get("CIVIC_DATABASE_URL")
        postgres = None
        if not database_url:
            postgres = PostgresServer(workdir / "postgres")
            postgres.start()
            started.append(postgres)
            database_url = postgres.url()
        bootstrap = os.environ.get("CIVIC_KAFKA_BOOTSTRAP")
        kind = os.environ.get("CIVIC_TEST_BROKER", "kafka")
        broker: KafkaBroker | TansuBroker | None = None
        if not bootstrap:
            broker = (
                TansuBroker(workdir / "tansu")
                if kind == "tansu"
                else KafkaBroker(workdir / "kafka")
            )
            broker.start()
            started.append(broker)
            bootstrap = broker.bootstrap
            ready = f"{broker.started_in:.1f}s"
            print(f"\n[infra] {kind} {broker.version} ready in {ready} at {bootstrap}")
        yield Infra(bootstrap, database_url, broker, postgres, kind)
    finally:
        for thing in reversed(started):
            thing.stop()


def _with_database(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


@pytest.fixture
async def database_url(infra: Infra) -> AsyncIterator[str]:
    """A fresh, empty database for this test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(infra.database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield _with_database(infra.database_url, name)
    admin = await asyncpg.connect(infra.database_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def topics(infra: Infra) -> TopicNames:
    """A private topic namespace for this test, with every topic created."""
    names = TopicNames(f"t{uuid.uuid4().hex[:10]}.")
    await ensure_topics(infra.bootstrap, names, partitions=3)
    return names


@pytest.fixture
def city_pack(tmp_path: Path) -> Path:
    """A private copy of the demo-zh pack that a test may edit."""
    target = tmp_path / "cities" / "demo-zh"
    shutil.copytree(DEFAULT_CITIES_DIR / "demo-zh", target)
    return target
