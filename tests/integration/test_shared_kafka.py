"""The consumer runtime, the outbox relay and the topic registry on real Kafka and PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg
import pytest
import uvloop
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.conn import create_conn
from aiokafka.errors import GroupCoordinatorNotAvailableError, OutOfOrderSequenceNumber
from aiokafka.protocol.metadata import MetadataRequest
from aiokafka.structs import ConsumerRecord
from prometheus_client import CollectorRegistry

from shared.db import claim_new_events, connect_pool, migrate
from shared.events import (
    CaseSigned,
    CloudEvent,
    EventType,
    InvalidEvent,
    MessageDeadLettered,
    decode,
    encode,
    new_event,
    utcnow,
)
from shared.kafka import (
    ConsumerRuntime,
    DeadLetters,
    Inbound,
    Message,
    Publisher,
    RenewingProducer,
    make_producer,
    send_batches,
    tolerate_closed_transports,
)
from shared.metrics import Metrics
from shared.outbox import OutboxRelay, enqueue
from shared.topics import Topic, TopicNames, ensure_topics
from tests.conftest import Infra
from tests.helpers import eventually

SIGNED = EventType.CASE_SIGNED.value


def signed(case_id: str, note: str = "") -> bytes:
    payload = CaseSigned(case_id=case_id, department="water_bureau", at=utcnow(), note=note)
    return encode(new_event(EventType.CASE_SIGNED, source="/test", subject=case_id, data=payload))


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await connect_pool(database_url, "svc")
    await migrate(pool, "svc", None)
    async with pool.acquire() as conn:
        await conn.execute("CREATE TABLE seen (case_id text, note text)")
    yield pool
    await pool.close()


@pytest.fixture
async def producer(infra: Infra) -> AsyncIterator[AIOKafkaProducer]:
    producer = make_producer(infra.bootstrap, idempotent=infra.idempotent, client_id="test")
    await producer.start()
    yield producer
    await producer.stop()


class Recorder:
    """A handler that stores events durably, the way services do (inbox + state in one tx)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        fail_times: int = 0,
        poison_note: str | None = None,
        failure: Exception | None = None,
        seconds_per_batch: float = 0.0,
    ):
        self.pool = pool
        self.fail_times = fail_times
        self.poison_note = poison_note
        self.failure = failure or ConnectionResetError("database went away")
        self.seconds_per_batch = seconds_per_batch
        self.calls = 0
        self.handed = 0  # events handed to it, redeliveries included

    async def __call__(self, batch: Sequence[Inbound]) -> None:
        self.calls += 1
        self.handed += len(batch)
        await asyncio.sleep(self.seconds_per_batch)
        if self.fail_times > 0:
            self.fail_times -= 1
            raise self.failure
        async with self.pool.acquire() as conn, conn.transaction():
            fresh = await claim_new_events(conn, [i.event.id for i in batch])
            for item in batch:
                payload = item.payload
                assert isinstance(payload, CaseSigned)
                if payload.note == self.poison_note:
                    raise ValueError("cannot handle this one")
                if payload.note == "reject":
                    raise InvalidEvent("rejected: the handler refuses it")
                if item.event.id in fresh:
                    await conn.execute(
                        "INSERT INTO seen VALUES ($1, $2)", payload.case_id, payload.note
                    )


def runtime_for(
    infra: Infra,
    topics: TopicNames,
    producer: AIOKafkaProducer,
    handler: Recorder,
    group: str = "svc",
    *,
    max_batch: int = 50,
    commit_interval_ms: int = 0,
    registry: CollectorRegistry | None = None,
) -> ConsumerRuntime:
    metrics = Metrics("test", registry=registry or CollectorRegistry())
    return ConsumerRuntime(
        service="test",
        bootstrap=infra.bootstrap,
        topics=[topics(Topic.CASE_EVENTS)],
        group_id=topics.group(group),
        handler=handler,
        accept={SIGNED},
        dead_letters=DeadLetters(producer, topics(Topic.DEADLETTER), "test", metrics),
        metrics=metrics,
        max_batch=max_batch,
        commit_interval_ms=commit_interval_ms,
    )


@contextlib.asynccontextmanager
async def running(runtime: ConsumerRuntime) -> AsyncIterator[asyncio.Event]:
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.run(stop))
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def read_all(infra: Infra, topic: str, expect: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=infra.bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    values: list[bytes] = []
    try:
        for _ in range(40):
            batch = await consumer.getmany(timeout_ms=500)
            for messages in batch.values():
                values.extend(m.value for m in messages)
            if len(values) >= expect and not batch:
                break
    finally:
        await consumer.stop()
    return values


async def count_seen(pool: asyncpg.Pool) -> int:
    async with pool.acquire() as conn:
        return await conn.fetchval("SELECT count(*) FROM seen")


def seen(pool: asyncpg.Pool, expected: int):  # type: ignore[no-untyped-def]
    """A check for ``eventually``: exactly ``expected`` events stored."""

    async def check() -> bool:
        return await count_seen(pool) == expected

    return check


async def committed(infra: Infra, topics: TopicNames, group: str = "svc") -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=infra.bootstrap)
    await admin.start()
    try:
        partitions = [TopicPartition(topics(Topic.CASE_EVENTS), p) for p in range(3)]
        offsets = await admin.list_consumer_group_offsets(
            topics.group(group), partitions=partitions
        )
        return sum(max(o.offset, 0) for o in offsets.values())
    finally:
        await admin.close()


async def test_poison_messages_are_dead_lettered_with_reason_and_bytes_and_the_rest_processed(
    infra: Infra, topics: TopicNames, producer: AIOKafkaProducer, pool: asyncpg.Pool
) -> None:
    topic = topics(Topic.CASE_EVENTS)
    poison = [
        b"{broken json",
        b"\xff\xfe not utf8",
        signed("C-bad").replace(b'"water_bureau"', b"42"),
    ]
    for n in range(10):
        await producer.send_and_wait(topic, signed(f"C{n}"), key=f"C{n}".encode())
        if n < len(poison):
            await producer.send_and_wait(topic, poison[n], key=b"poison")
    await producer.send_and_wait(topic, signed("C-reject", note="reject"), key=b"C-reject")
    async with running(runtime_for(infra, topics, producer, Recorder(pool))):
        await eventually(seen(pool, 10), message="all 10 good events")
    dead = [decode(v) for v in await read_all(infra, topics(Topic.DEADLETTER), 4)]
    payloads = [MessageDeadLettered.model_validate(d.data) for d in dead]
    assert sorted(base64.b64decode(p.value_b64) for p in payloads[:3]) == sorted(poison)
    reasons = sorted(p.reason.split(":")[0] for p in payloads)
    assert reasons == [
        "invalid civicroute.case.signed.v1 data",
        "malformed JSON",
        "malformed JSON",
        "rejected",
    ]
    assert all(p.topic == topic and p.offset >= 0 for p in payloads)
    assert await committed(infra, topics) == 14  # every offset, poison included, is behind us


@pytest.mark.parametrize(
    "failure",
    [
        ConnectionResetError("database went away"),
        asyncpg.CannotConnectNowError("the database system is in recovery mode"),
        # What a query on a connection whose server crashed mid-exchange raises.
        asyncpg.InternalClientError(
            "cannot switch to state 15; another operation (2) is in progress"
        ),
    ],
)
async def test_transient_failures_are_retried_until_the_work_is_done(
    infra: Infra,
    topics: TopicNames,
    producer: AIOKafkaProducer,
    pool: asyncpg.Pool,
    failure: Exception,
) -> None:
    for n in range(5):
        await producer.send_and_wait(topics(Topic.CASE_EVENTS), signed(f"C{n}"), key=b"k")
    handler = Recorder(pool, fail_times=4, failure=failure)
    async with running(runtime_for(infra, topics, producer, handler)):
        await eventually(seen(pool, 5), message="work done after retries")
    assert handler.calls >= 4
    assert await read_all(infra, topics(Topic.DEADLETTER), 0) == []


async def test_a_message_that_keeps_failing_is_dead_lettered_and_its_neighbours_processed(
    infra: Infra, topics: TopicNames, producer: AIOKafkaProducer, pool: asyncpg.Pool
) -> None:
    for n in range(6):
        note = "bug" if n == 3 else ""
        await producer.send_and_wait(topics(Topic.CASE_EVENTS), signed(f"C{n}", note), key=b"k")
    async with running(runtime_for(infra, topics, producer, Recorder(pool, poison_note="bug"))):
        await eventually(seen(pool, 5), message="the five good ones")
    dead = [decode(v) for v in await read_all(infra, topics(Topic.DEADLETTER), 1)]
    assert len(dead) == 1
    assert dead[0].data["reason"].startswith("processing failed: ValueError")


async def test_offsets_are_not_committed_before_the_work_is_durable(
    infra: Infra, topics: TopicNames, producer: AIOKafkaProducer, pool: asyncpg.Pool
) -> None:
    for n in range(4):
        await producer.send_and_wait(topics(Topic.CASE_EVENTS), signed(f"C{n}"), key=b"k")
    stuck = Recorder(pool, fail_times=10_000)  # the database is "down" the whole time
    async with running(runtime_for(infra, topics, producer, stuck)):
        await eventually(lambda: stuck.calls >= 2, message="attempts")
    assert await committed(infra, topics) == 0
    assert await count_seen(pool) == 0
    # The next consumer in the group gets every message again and finishes the work.
    async with running(runtime_for(infra, topics, producer, Recorder(pool))):
        await eventually(seen(pool, 4), message="redelivered and done")


async def test_a_poison_message_redelivered_before_its_commit_is_dead_lettered_under_one_id(
    infra: Infra, topics: TopicNames, producer: AIOKafkaProducer, pool: asyncpg.Pool
) -> None:
    topic = topics(Topic.CASE_EVENTS)
    await producer.send_and_wait(topic, b"{broken json", key=b"poison")
    await producer.send_and_wait(topic, signed("C1"), key=b"C1")
    # The database is down: the poison is dead-lettered, the good one waits, and the
    # consumer stops (a deploy) before the batch's offsets could be committed.
    stuck = Recorder(pool, fail_times=10_000)
    async with running(runtime_for(infra, topics, producer, stuck)):
        await eventually(lambda: stuck.calls >= 2, message="attempts")
    assert await committed(infra, topics) == 0
    async with running(runtime_for(infra, topics, producer, Recorder(pool))):
        await eventually(seen(pool, 1), message="the good one, redelivered")
    letters = [decode(v) for v in await read_all(infra, topics(Topic.DEADLETTER), 2)]
    assert len(letters) == 2  # at least once on the wire ...
    assert len({letter.id for letter in letters}) == 1  # ... and one event to its readers
    assert {letter.data["offset"] for letter in letters} == {0}


async def test_two_replicas_share_the_work_and_every_event_is_processed_once(
    infra: Infra, topics: TopicNames, producer: AIOKafkaProducer, pool: asyncpg.Pool
) -> None:
    first = runtime_for(infra, topics, producer, Recorder(pool))
    async with running(first):
        for n in range(150):
            await producer.send(topics(Topic.CASE_EVENTS), signed(f"C{n}"), key=f"C{n}".encode())
            if n == 50:
                second_ctx = running(runtime_for(infra, topics, producer, Recorder(pool)))
                await second_ctx.__aenter__()
        await producer.flush()
        await eventually(seen(pool, 150), timeout=60, message="150 events")
        await second_ctx.__aexit__(None, None, None)
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(DISTINCT case_id) FROM seen") == 150


async def test_finished_batches_share_one_commit_within_the_interval(
    infra: Infra, topics: TopicNames, producer: AIOKafkaProducer, pool: asyncpg.Pool
) -> None:
    for n in range(120):
        await producer.send(topics(Topic.CASE_EVENTS), signed(f"C{n}"), key=f"C{n}".encode())
    await producer.flush()
    commits = {}
    for interval_ms, group in ((0, "every-batch"), (60_000, "interval")):
        registry, recorder = CollectorRegistry(), Recorder(pool)
        runtime = runtime_for(
            infra,
            topics,
            producer,
            recorder,
            group,
            max_batch=10,
            commit_interval_ms=interval_ms,
            registry=registry,
        )
        async with running(runtime):
            # Caught up, a consumer commits without waiting out the interval.
            await eventually(
                lambda group=group: _committed_is(infra, topics, group, 120),
                message=f"all 120 offsets committed ({group})",
            )
        assert recorder.calls >= 12
        commits[group] = (
            registry.get_sample_value("civicroute_test_offset_commits_total"),
            recorder.calls,
        )
    every_batch, interval = commits["every-batch"], commits["interval"]
    assert every_batch[0] == every_batch[1]  # one commit per batch
    assert interval[0] <= 3  # the batches' offsets went out together


async def _committed_is(infra: Infra, topics: TopicNames, group: str, expected: int) -> bool:
    try:
        return await committed(infra, topics, group) == expected
    except GroupCoordinatorNotAvailableError:  # a new group, not yet known to the broker
        return False


async def test_a_replica_joining_gets_partitions_after_what_the_first_finished(
    infra: Infra, topics: TopicNames, producer: AIOKafkaProducer, pool: asyncpg.Pool
) -> None:
    """Offsets held back by the commit interval are committed before partitions move:
    no event is handed to a handler twice, although the first replica is never idle."""
    for n in range(150):
        await producer.send(topics(Topic.CASE_EVENTS), signed(f"C{n}"), key=f"C{n}".encode())
    await producer.flush()
    first, second = (Recorder(pool, seconds_per_batch=0.2) for _ in range(2))
    async with running(
        runtime_for(infra, topics, producer, first, max_batch=5, commit_interval_ms=60_000)
    ):
        await eventually(lambda: first.calls >= 3, message="the first replica at work")
        async with running(
            runtime_for(infra, topics, producer, second, max_batch=5, commit_interval_ms=60_000)
        ):
            await eventually(seen(pool, 150), timeout=60, message="150 events")
            assert second.handed > 0
    assert first.handed + second.handed == 150


async def enqueue_signed(pool: asyncpg.Pool, topic: str, count: int) -> list[CloudEvent]:
    """``count`` events of one case, in transactions of 30, as a service writes them."""
    events = [
        new_event(
            EventType.CASE_SIGNED,
            source="/t",
            subject="C1",
            data=CaseSigned(case_id="C1", department="d", at=utcnow(), note=str(n)),
        )
        for n in range(count)
    ]
    async with pool.acquire() as conn:
        for start in range(0, count, 30):
            async with conn.transaction():
                await enqueue(conn, "svc", [(topic, "C1", e) for e in events[start : start + 30]])
    return events


def relay_producer(infra: Infra) -> RenewingProducer:
    """The producer a service's relay uses, on the broker under test."""
    return RenewingProducer(
        lambda: make_producer(infra.bootstrap, idempotent=infra.idempotent, client_id="relay"),
        "relay",
        Metrics("test", registry=CollectorRegistry()),
    )


async def relay_until_drained(
    database_url: str, pool: asyncpg.Pool, producer: Publisher, replicas: int = 1
) -> None:
    relays = [
        OutboxRelay(
            dsn=database_url,
            schema="svc",
            producer=producer,
            metrics=Metrics("test", registry=CollectorRegistry()),
            batch_size=25,
        )
        for _ in range(replicas)
    ]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(r.run(stop)) for r in relays]
    try:

        async def drained() -> bool:
            async with pool.acquire() as conn:
                return await conn.fetchval("SELECT count(*) FROM outbox") == 0

        await eventually(drained, message="outbox drained")
    finally:
        stop.set()
        await asyncio.gather(*tasks)


async def test_outbox_relay_publishes_in_order_and_empties_the_outbox(
    infra: Infra, topics: TopicNames, pool: asyncpg.Pool, database_url: str
) -> None:
    topic = topics(Topic.CASE_EVENTS)
    events = await enqueue_signed(pool, topic, 120)
    producer = relay_producer(infra)
    await producer.start()
    try:
        await relay_until_drained(database_url, pool, producer, replicas=2)
    finally:
        await producer.stop()
    published = [decode(v) for v in await read_all(infra, topic, 120)]
    assert [e.id for e in published] == [e.id for e in events]  # once each, in order


async def test_rows_committed_while_the_relay_publishes_are_relayed_without_waiting_for_the_poll(
    infra: Infra, topics: TopicNames, pool: asyncpg.Pool, database_url: str
) -> None:
    """A NOTIFY that arrives while a batch is published is for rows its read did not see:
    the relay must read again at once, not after its idle poll (here 30 s)."""
    topic = topics(Topic.CASE_EVENTS)
    first = await enqueue_signed(pool, topic, 1)
    producer = relay_producer(infra)

    class CommitWhilePublishing:
        """The relay's producer; while it publishes the first batch, one more event is
        committed and its NOTIFY given time to reach the relay."""

        def __init__(self) -> None:
            self.later: list[CloudEvent] = []

        async def send_many(self, messages: Sequence[Message]) -> list[asyncio.Future[Any]]:
            futures = await producer.send_many(messages)
            if not self.later:
                self.later = await enqueue_signed(pool, topic, 1)
                await asyncio.sleep(0.5)
            return futures

        async def send(self, topic: str, value: bytes | None = None, key: bytes | None = None):  # type: ignore[no-untyped-def]
            return await producer.send(topic, value, key)

        async def send_and_wait(
            self, topic: str, value: bytes | None = None, key: bytes | None = None
        ):  # type: ignore[no-untyped-def]
            return await producer.send_and_wait(topic, value, key)

    publisher = CommitWhilePublishing()
    relay = OutboxRelay(
        dsn=database_url,
        schema="svc",
        producer=publisher,
        metrics=Metrics("test", registry=CollectorRegistry()),
        idle_poll_seconds=30.0,
    )
    await producer.start()
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:

        async def drained() -> bool:
            async with pool.acquire() as conn:
                return (
                    bool(publisher.later)
                    and await conn.fetchval("SELECT count(*) FROM outbox") == 0
                )

        await eventually(drained, timeout=10, message="the later row relayed before the poll")
    finally:
        stop.set()
        await task
        await producer.stop()
    published = [decode(v).id for v in await read_all(infra, topic, 2)]
    assert published == [first[0].id, publisher.later[0].id]


async def test_a_batch_of_messages_lands_where_single_sends_land_in_the_order_given(
    infra: Infra, topics: TopicNames, producer: AIOKafkaProducer
) -> None:
    """The relay queues whole batches; a key's messages must reach the partition that
    ``send`` picks for that key (other publishers send one by one), in order."""
    topic = topics(Topic.CASE_EVENTS)
    keys = [f"C{n % 7}".encode() for n in range(210)]
    singles = [await producer.send_and_wait(topic, b"single", key=key) for key in keys[:7]]
    where = {key: meta.partition for key, meta in zip(keys[:7], singles, strict=True)}
    futures = await send_batches(
        producer, [(topic, key, f"{n}".encode()) for n, key in enumerate(keys)]
    )
    await asyncio.gather(*futures)
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=infra.bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        seen: list[ConsumerRecord] = []
        while len(seen) < 7 + 210:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                seen += records
    finally:
        await consumer.stop()
    batched = [r for r in seen if r.value != b"single"]
    assert {r.key: r.partition for r in batched} == where
    for key in where:
        numbers = [int(r.value) for r in batched if r.key == key]
        assert numbers == [n for n, k in enumerate(keys) if k == key]


BEFORE_THE_GAP = b"before the gap"


async def leave_a_gap_in_the_sequence(producer: AIOKafkaProducer, topic: str) -> None:
    """Make the broker refuse this idempotent producer's next batches on ``topic``, as it
    does when it has lost track of a producer's sequence across a restart. (A broker
    takes any first sequence from a producer new to a partition, hence one message first.)"""
    for partition in await producer.partitions_for(topic):
        await producer.send_and_wait(topic, BEFORE_THE_GAP, partition=partition)
        producer._txn_manager.increment_sequence_number(TopicPartition(topic, partition), 3)


async def test_the_outbox_drains_after_the_broker_refuses_the_relays_producer(
    infra: Infra, topics: TopicNames, pool: asyncpg.Pool, database_url: str
) -> None:
    """After a broker restart the broker can refuse an idempotent producer's sequence
    (OutOfOrderSequenceNumber) and then every later batch of it, as the fault tests once
    saw. The relay's producer is replaced and every event still reaches the topic."""
    if not infra.idempotent:
        pytest.skip("the broker under test has no idempotent producers")
    topic = topics(Topic.CASE_EVENTS)

    def make() -> AIOKafkaProducer:
        made.append(make_producer(infra.bootstrap, idempotent=True, client_id="relay"))
        return made[-1]

    # The premise: a refused producer stays refused.
    made: list[AIOKafkaProducer] = []
    plain = make()
    await plain.start()
    try:
        await leave_a_gap_in_the_sequence(plain, topic)
        for _ in range(2):
            with pytest.raises(OutOfOrderSequenceNumber):
                await plain.send_and_wait(topic, b"x", key=b"C0")
    finally:
        await plain.stop()

    made.clear()
    metrics = Metrics("test", registry=CollectorRegistry())
    renewing = RenewingProducer(make, "relay", metrics)
    await renewing.start()
    try:
        await leave_a_gap_in_the_sequence(made[0], topic)
        events = await enqueue_signed(pool, topic, 120)
        await relay_until_drained(database_url, pool, renewing)
    finally:
        await renewing.stop()
    values = await read_all(infra, topic, 120)
    published = [decode(v).id for v in values if v != BEFORE_THE_GAP]
    assert list(dict.fromkeys(published)) == [e.id for e in events]  # all, in order
    assert len(made) == 2  # the refused producer and the one that replaced it
    renewed = metrics.registry.get_sample_value("civicroute_test_kafka_producer_renewed_total")
    assert renewed == 1


async def test_topics_are_created_once_even_when_services_race(infra: Infra) -> None:
    names = TopicNames("race.")
    await asyncio.gather(*(ensure_topics(infra.bootstrap, names, 3) for _ in range(4)))
    admin = AIOKafkaAdminClient(bootstrap_servers=infra.bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        described = await admin.describe_topics([names(Topic.CASE_EVENTS), names(Topic.DEADLETTER)])
    finally:
        await admin.close()
    assert {names(t) for t in Topic} <= existing
    assert [len(d["partitions"]) for d in described] == [3, 1]


def test_a_broker_socket_closed_under_uvloop_fails_as_a_lost_connection(infra: Infra) -> None:
    """The services run on uvloop, which raises RuntimeError for a write to a socket
    closed one loop iteration before aiokafka's reader noticed. Each write, in that
    window or out of it, must fail as KafkaConnectionError, the error aiokafka's
    clients reconnect from (a broker crash in CI once stopped notify this way)."""
    tolerate_closed_transports()
    host, port = infra.bootstrap.rsplit(":", 1)

    async def write_after_the_socket_closed(iterations: int) -> BaseException | None:
        connection = await create_conn(host, int(port))
        try:
            connection._writer.transport.abort()  # as a crashed broker's socket would close
            for _ in range(iterations):
                await asyncio.sleep(0)
            await connection.send(MetadataRequest([]))
        except Exception as error:
            return error
        finally:
            connection.close()
        return None

    errors = [uvloop.run(write_after_the_socket_closed(n)) for n in range(5)]
    assert [type(error).__name__ for error in errors] == ["KafkaConnectionError"] * 5
