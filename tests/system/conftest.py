"""The whole system for one test: the four services as subprocesses, a department
receiver as a real local HTTP server, a private database and topic namespace."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from deploy.local.demo import publish
from deploy.local.department import DepartmentReceiver
from deploy.local.procs import tail
from deploy.local.stack import SERVICES, ServiceSet, write_secrets
from shared.citypack import load_pack
from shared.kafka import make_producer
from shared.topics import Topic, TopicNames
from tests.conftest import Infra
from tests.helpers import fetch, read_topic


@dataclass
class System:
    services: ServiceSet
    receiver: DepartmentReceiver
    topics: TopicNames
    producer: AIOKafkaProducer
    database_url: str
    infra: Infra

    async def submit(self, payload: dict[str, Any]) -> str:
        """Publish a raw channel payload on citizen.requests.v1, as the platform would."""
        return await publish(self.producer, self.topics(Topic.CITIZEN_REQUESTS), payload)

    async def sql(self, query: str, *args: Any) -> list[asyncpg.Record]:
        return await fetch(self.database_url, query, *args)

    async def read_topic(self, topic: Topic, timeout_ms: int = 3000) -> list[Any]:
        """Everything on ``topic`` so far, decoded (a fresh consumer, no group)."""
        return await read_topic(self.infra.bootstrap, self.topics(topic), timeout_ms)


SystemFactory = Callable[..., Any]


def stack_env(
    infra: Infra,
    database_url: str,
    topics: TopicNames,
    city_pack: Path,
    *,
    secrets_file: Path,
    hooks: str,
) -> dict[str, str]:
    """The services' settings for one test: its database, topics, pack, secrets, webhooks."""
    return {
        "CIVIC_KAFKA_BOOTSTRAP": infra.bootstrap,
        "CIVIC_DATABASE_URL": database_url,
        "CIVIC_CITY": city_pack.name,
        "CIVIC_CITIES_DIR": str(city_pack.parent),
        "CIVIC_TOPIC_NAMESPACE": topics.namespace,
        "CIVIC_KAFKA_PARTITIONS": "3",
        "CIVIC_KAFKA_IDEMPOTENCE": str(infra.idempotent).lower(),
        "CIVIC_SECRETS_FILE": str(secrets_file),
        "CIVIC_WEBHOOK_URL_TEMPLATE": hooks,
        "CIVIC_DB_POOL_SIZE": "4",
    }


@pytest.fixture
async def make_system(
    infra: Infra,
    database_url: str,
    topics: TopicNames,
    city_pack: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> AsyncIterator[SystemFactory]:
    """Call ``await make_system()`` after editing ``city_pack`` if the test needs to."""
    made: list[System] = []

    async def factory(auto_sign: bool = True, extra_env: dict[str, str] | None = None) -> System:
        pack = load_pack(city_pack)
        secrets = write_secrets(tmp_path / "secrets.yaml", list(pack.departments))
        services = ServiceSet(tmp_path / "logs", {})
        receiver = DepartmentReceiver(
            secrets=secrets, escalation_url=services.url("escalation"), auto_sign=auto_sign
        )
        await receiver.start()
        services.env = {
            **stack_env(
                infra,
                database_url,
                topics,
                city_pack,
                secrets_file=tmp_path / "secrets.yaml",
                hooks=f"{receiver.url}/hooks/{{department}}",
            ),
            **(extra_env or {}),
        }
        services.start()
        producer = make_producer(
            infra.bootstrap, idempotent=infra.idempotent, client_id="test-platform"
        )
        await producer.start()
        system = System(services, receiver, topics, producer, database_url, infra)
        made.append(system)
        return system

    yield factory

    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for system in made:
        await system.producer.stop()
        system.services.stop()
        await system.receiver.stop()
        if failed:
            for service in SERVICES:
                log_tail = tail(system.services.log_file(service), 30)
                print(f"\n----- {service} log (tail) -----\n{log_tail}")
