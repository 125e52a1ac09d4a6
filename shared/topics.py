"""The topic registry: every topic civicroute uses, created at start if missing."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from enum import StrEnum

import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError

log = structlog.get_logger(__name__)


class Topic(StrEnum):
    CITIZEN_REQUESTS = "citizen.requests.v1"
    REQUESTS_ACCEPTED = "requests.accepted.v1"
    CASE_EVENTS = "case.events.v1"
    DEADLETTER = "deadletter.v1"


@dataclass(frozen=True)
class TopicNames:
    """Topic and consumer-group names under an optional namespace prefix."""

    namespace: str = ""

    def __call__(self, topic: Topic) -> str:
        return f"{self.namespace}{topic.value}"

    def group(self, service: str) -> str:
        return f"{self.namespace}civicroute.{service}"


# Deadletter traffic is small; the others carry every request and partition by case.
DEADLETTER_PARTITIONS = 1


def partitions_for(topic: Topic, default: int) -> int:
    return DEADLETTER_PARTITIONS if topic is Topic.DEADLETTER else default


async def ensure_topics(
    bootstrap: str, names: TopicNames, partitions: int, *, attempts: int = 30
) -> None:
    """Create any missing topic. Safe to race: several services may start at once."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    for attempt in range(1, attempts + 1):
        try:
            await admin.start()
            break
        except KafkaConnectionError:
            if attempt == attempts:
                raise
            await asyncio.sleep(min(0.2 * attempt, 2.0))
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(names(topic), partitions_for(topic, partitions), 1)
            for topic in Topic
            if names(topic) not in existing
        ]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass
            except KafkaError as error:
                # create_topics reports per-topic errors; a concurrent creator is fine.
                if "TopicAlreadyExists" not in repr(error):
                    raise
            log.info("topics created", topics=[t.name for t in missing])
    finally:
        await admin.close()
