"""Fixtures for intake's tests: the real app over real PostgreSQL (and Kafka when asked).

Import the fixtures a test module uses from here. Each test gets a fresh
database, a private metrics registry and API keys for every role.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.intake.app import MIGRATIONS, NUL_HANDLING, Intake, Open311Config
from shared.apikeys import ApiKeys, Client, hash_key
from shared.citypack import load_pack
from shared.db import connect_pool, migrate
from shared.events import CloudEvent, EventType, encode, utcnow
from shared.http import create_app
from shared.kafka import RenewingProducer, make_producer
from shared.metrics import Metrics
from shared.outbox import OutboxRelay
from shared.settings import CommonSettings
from shared.topics import Topic, TopicNames
from tests.conftest import Infra
from tests.helpers import read_topic

ROLE_KEYS = {
    "platform": "ck_test_platform_key",
    "app": "ck_test_app_key",
    "operator": "ck_test_operator_key",
}
JURISDICTION = "demo-zh"


def auth(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {ROLE_KEYS[role]}"}


@dataclass
class IntakeEnv:
    intake: Intake
    app: FastAPI
    http: httpx.AsyncClient
    pool: asyncpg.Pool
    registry: CollectorRegistry
    topics: TopicNames
    database_url: str
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def sql(self, query: str, *args: Any) -> list[asyncpg.Record]:
        async with self.pool.acquire() as conn:
            return await conn.fetch(query, *args)

    async def count(self, table: str) -> int:
        rows = await self.sql(f"SELECT count(*) AS n FROM {table}")
        return int(rows[0]["n"])

    def metric(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(f"civicroute_intake_{name}", labels)
        return value or 0.0


async def make_env(
    database_url: str, topics: TopicNames, pack_dir: Path, registry: CollectorRegistry
) -> IntakeEnv:
    pool = await connect_pool(database_url, "intake", max_size=8)
    await migrate(pool, "intake", MIGRATIONS)
    metrics = Metrics("intake", registry)
    keys = ApiKeys(
        {
            hash_key(key): Client(f"test-{role}", frozenset({role}))
            for role, key in ROLE_KEYS.items()
        }
    )
    intake = Intake(
        pool=pool,
        metrics=metrics,
        topics=topics,
        pack=load_pack(pack_dir),
        keys=keys,
        open311=Open311Config(JURISDICTION, "ops@example.org", "https://example.org/keys"),
    )
    app = create_app(service="intake", metrics=metrics, checks={}, **NUL_HANDLING)
    intake.install(app)
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://intake")
    return IntakeEnv(intake, app, http, pool, registry, topics, database_url)


async def close_env(env: IntakeEnv) -> None:
    for task in env.tasks:
        task.cancel()
    await asyncio.gather(*env.tasks, return_exceptions=True)
    await env.http.aclose()
    await env.pool.close()


@pytest.fixture
async def intake_env(database_url: str, city_pack: Path) -> AsyncIterator[IntakeEnv]:
    """intake's HTTP app in-process over a fresh database (no Kafka)."""
    env = await make_env(
        database_url, TopicNames(f"t{uuid.uuid4().hex[:10]}."), city_pack, CollectorRegistry()
    )
    yield env
    await close_env(env)


@dataclass
class KafkaSide:
    """The platform's and the other services' side of the broker, for one test."""

    infra: Infra
    topics: TopicNames
    producer: RenewingProducer
    stop: asyncio.Event

    async def publish(self, topic: Topic, value: bytes, key: str | None = None) -> None:
        await self.producer.send_and_wait(
            self.topics(topic), value, key=key.encode() if key else None
        )

    async def submit(self, payload: Any, event_id: str | None = None) -> str:
        """Publish a request.submitted event with ``payload`` as data; returns its id."""
        event = CloudEvent(
            specversion="1.0",
            id=event_id or str(uuid.uuid4()),
            source="/appeal-platform/test",
            type=EventType.REQUEST_SUBMITTED.value,
            time=utcnow(),
            data=payload,
        )
        key = None
        if isinstance(payload, dict):
            key = f"{payload.get('channel')}:{payload.get('source_ref')}"
        await self.publish(Topic.CITIZEN_REQUESTS, encode(event), key)
        return event.id

    async def read(self, topic: Topic, timeout_ms: int = 1500) -> list[CloudEvent]:
        """Everything on ``topic`` so far (a fresh consumer, no group)."""
        return await read_topic(self.infra.bootstrap, self.topics(topic), timeout_ms)


@pytest.fixture
async def kafka_intake(
    infra: Infra, database_url: str, topics: TopicNames, city_pack: Path
) -> AsyncIterator[tuple[IntakeEnv, KafkaSide]]:
    """intake with its consumer and outbox relay running against the real broker."""
    env = await make_env(database_url, topics, city_pack, CollectorRegistry())
    producer = RenewingProducer(
        lambda: make_producer(infra.bootstrap, idempotent=infra.idempotent, client_id="test"),
        "test",
        env.intake.metrics,
    )
    await producer.start()
    stop = asyncio.Event()
    runtime = env.intake.consumer(
        CommonSettings(kafka_bootstrap=infra.bootstrap, database_url=database_url), producer
    )
    relay = OutboxRelay(
        dsn=database_url, schema="intake", producer=producer, metrics=env.intake.metrics
    )
    env.tasks += [asyncio.create_task(runtime.run(stop)), asyncio.create_task(relay.run(stop))]
    await asyncio.wait_for(runtime.ready.wait(), 60)
    side = KafkaSide(infra, topics, producer, stop)
    try:
        yield env, side
    finally:
        stop.set()
        await asyncio.wait(env.tasks, timeout=20)
        await producer.stop()
        await close_env(env)
