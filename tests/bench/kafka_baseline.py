"""The broker's own pace: bare aiokafka produce→consume on the same broker, same run."""

from __future__ import annotations

import asyncio
import os
import time
import uuid

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from shared.kafka import make_producer
from shared.settings import CommonSettings

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


def service_like_consumer(bootstrap: str, topics: list[str], group: str) -> AIOKafkaConsumer:
    """A consumer fetching as the services' do (their default settings, no environment)."""
    fields = CommonSettings.model_fields
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=fields["kafka_fetch_max_wait_ms"].default,
        fetch_min_bytes=fields["kafka_fetch_min_bytes"].default,
        auto_commit_interval_ms=fields["kafka_commit_interval_ms"].default,
    )


async def warm_broker(bootstrap: str, partitions: int, seconds: float, rate: float = 1000) -> int:
    """Steady produce→consume traffic for ``seconds``, the way the services use the broker.

    A broker just started spends its first minute compiling its hot paths
    (measured: about a core for 15 s, then 0.45, settling near 0.3 at 1,000
    messages/s after 45–60 s). A deployed broker is long past that, so the
    bench warms its own broker before it measures anything. Returns the
    messages sent.
    """
    topics = [f"bench-warmup-{uuid.uuid4().hex[:8]}-{n}" for n in range(4)]
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1) for topic in topics])
    finally:
        await admin.close()
    producer = make_producer(bootstrap, idempotent=True, client_id="bench-warmup")
    consumers = [service_like_consumer(bootstrap, [topic], f"{topic}-group") for topic in topics]
    await producer.start()
    for consumer in consumers:
        await consumer.start()
    payload = os.urandom(MESSAGE_BYTES // 2).hex().encode()
    done = asyncio.Event()

    async def consume(consumer: AIOKafkaConsumer) -> None:
        while not done.is_set():
            await consumer.getmany(timeout_ms=250, max_records=500)

    readers = [asyncio.create_task(consume(consumer)) for consumer in consumers]
    sent = 0
    try:
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < seconds:
            await producer.send(topics[sent % len(topics)], payload, key=str(sent).encode())
            sent += 1
            await asyncio.sleep(max(0.0, sent / rate - elapsed))
        await producer.flush()
    finally:
        done.set()
        await asyncio.gather(*readers, return_exceptions=True)
        for consumer in consumers:
            await consumer.stop()
        await producer.stop()
    return sent
