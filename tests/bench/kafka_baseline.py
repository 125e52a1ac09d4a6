"""The broker's own pace: bare aiokafka produce→consume on the same broker, same run."""

from __future__ import annotations

import asyncio
import os
import time
import uuid

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from shared.kafka import make_producer

MESSAGE_BYTES = 1200  # about the size of a dispatched CloudEvent


async def kafka_round_trip(bootstrap: str, partitions: int, messages: int = 50_000) -> float:
    """Messages per second from the first send to the last message consumed."""
    topic = f"bench-baseline-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()
    producer = make_producer(bootstrap, idempotent=True, client_id="bench-baseline")
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        group_id=f"{topic}-group",
        max_poll_records=2000,
    )
    await producer.start()
    await consumer.start()
    payload = os.urandom(MESSAGE_BYTES // 2).hex().encode()
    try:
        started = time.perf_counter()

        async def produce() -> None:
            pending = []
            for n in range(messages):
                pending.append(await producer.send(topic, payload, key=str(n % 1000).encode()))
                if len(pending) >= 5000:
                    await asyncio.gather(*pending)
                    pending.clear()
            await asyncio.gather(*pending)

        async def consume() -> None:
            seen = 0
            while seen < messages:
                batch = await consumer.getmany(timeout_ms=1000)
                seen += sum(len(m) for m in batch.values())

        await asyncio.gather(produce(), consume())
        return round(messages / (time.perf_counter() - started), 1)
    finally:
        await consumer.stop()
        await producer.stop()
