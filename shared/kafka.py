"""Kafka at the edge: the producer, the dead-letter writer and the consumer runtime.

The consumer runtime's promise: an offset is committed only after the work for
every message before it is durably done (its transaction committed, or the
message dead-lettered with its reason and original bytes). A crash anywhere
means redelivery, and handlers are idempotent on the CloudEvents ``id``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.conn import AIOKafkaConnection, CloseReason
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
)
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata, RecordMetadata
from pydantic import BaseModel

from shared.aio import sleep_or_stop
from shared.db import TRANSIENT_DB_ERRORS
from shared.events import (
    CloudEvent,
    EventType,
    InvalidEvent,
    MessageDeadLettered,
    encode,
    envelope,
    new_event,
    parse_document,
    utcnow,
)
from shared.metrics import Metrics
from shared.settings import CommonSettings

log = structlog.get_logger(__name__)

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (*TRANSIENT_DB_ERRORS, KafkaError)
# A handler that fails this often on one message for a non-transient reason has a
# bug or met data it cannot take: the message is dead-lettered so the partition moves on.
MAX_HANDLER_ATTEMPTS = 3
FINAL_COMMIT_SECONDS = 5.0


def tolerate_closed_transports() -> None:
    """Make a write to a socket that has just closed fail as a lost connection.

    aiokafka turns only OSError from a socket write into KafkaConnectionError, which
    its clients recover from by reconnecting. uvloop raises RuntimeError instead
    ("the handler is closed") when the broker's socket closed one loop iteration
    before aiokafka noticed (aio-libs/aiokafka#1038, open). That escaped from a
    consumer during a broker crash and stopped the service. Idempotent.
    """
    send = AIOKafkaConnection.send
    if getattr(send, "tolerates_closed_transports", False):
        return

    def send_or_fail_as_lost(
        self: AIOKafkaConnection, request: Any, expect_response: bool = True
    ) -> Any:
        try:
            return send(self, request, expect_response)
        except RuntimeError as error:
            if "handler is closed" not in str(error):
                raise
            self.close(reason=CloseReason.CONNECTION_BROKEN, exc=error)
            raise KafkaConnectionError(
                f"Connection at {self.host}:{self.port} broken: {error}"
            ) from error

    send_or_fail_as_lost.tolerates_closed_transports = True  # type: ignore[attr-defined]
    AIOKafkaConnection.send = send_or_fail_as_lost  # type: ignore[method-assign]


async def start_with_retry(client: AIOKafkaProducer | AIOKafkaConsumer, what: str) -> None:
    """Brokers may still be starting when a service does; keep trying for a minute."""
    deadline = time.monotonic() + 60
    attempt = 0
    while True:
        attempt += 1
        try:
            await client.start()
            return
        except KafkaConnectionError as error:
            if time.monotonic() > deadline:
                raise
            log.warning("kafka not reachable yet", client=what, attempt=attempt, error=str(error))
            await asyncio.sleep(min(0.25 * attempt, 2.0))


def make_producer(bootstrap: str, *, idempotent: bool, client_id: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        client_id=client_id,
        acks="all",
        enable_idempotence=idempotent,
        linger_ms=2,
        max_batch_size=256 * 1024,
        request_timeout_ms=30_000,
    )


# (topic, key, value): one message to publish.
Message = tuple[str, bytes | None, bytes | None]


class Publisher(Protocol):
    """What the outbox relay and dead letters need of a producer."""

    async def send(
        self, topic: str, value: bytes | None = None, key: bytes | None = None
    ) -> asyncio.Future[RecordMetadata]: ...

    async def send_many(self, messages: Sequence[Message]) -> list[asyncio.Future[Any]]: ...

    async def send_and_wait(
        self, topic: str, value: bytes | None = None, key: bytes | None = None
    ) -> RecordMetadata: ...


_PARTITIONER = DefaultPartitioner()


async def send_batches(
    producer: AIOKafkaProducer, messages: Sequence[Message]
) -> list[asyncio.Future[Any]]:
    """Queue ``messages`` as record batches built here, one per partition at a time.

    ``send`` costs 15-30 µs of Python per message (a future, a lookup and a partitioner
    call each); appending to a batch costs about a third of that, which counts when a
    relay publishes thousands at once. Partitions are chosen as ``send`` chooses them
    (the default partitioner, over all the topic's partitions), so a key's messages
    reach the same partition whichever way they were sent, in the order given.
    """
    partitions: dict[str, list[int]] = {}
    open_batches: dict[tuple[str, int], Any] = {}
    futures: list[asyncio.Future[Any]] = []
    for topic, key, value in messages:
        if topic not in partitions:
            partitions[topic] = sorted(await producer.partitions_for(topic))
        every = partitions[topic]
        target = (topic, _PARTITIONER(key, every, every))
        batch = open_batches.get(target)
        if batch is not None and batch.append(key=key, value=value, timestamp=None) is not None:
            continue
        if batch is not None:  # full: queue it and start the next
            futures.append(await producer.send_batch(batch, topic, partition=target[1]))
        batch = open_batches[target] = producer.create_batch()
        batch.append(key=key, value=value, timestamp=None)  # an empty batch takes any message
    for (topic, partition), batch in open_batches.items():
        futures.append(await producer.send_batch(batch, topic, partition=partition))
    return futures


# The broker refuses the producer itself, not one batch: every later send fails alike.
_PRODUCER_REFUSED = (OutOfOrderSequenceNumber, ProducerFenced)


class RenewingProducer:
    """A producer that is replaced when the broker refuses it for good.

    After a broker restart an idempotent producer's sequence can be refused with
    OutOfOrderSequenceNumber; aiokafka fails that batch and, the gap staying, every
    batch after it (seen in the fault tests: 180 s of refusals). Retrying with the same
    producer would hold the outbox forever, so the send after a refusal starts a new
    producer (a new producer id) first. Resending the refused events may repeat some on
    the wire; consumers drop repeats by event id.
    """

    def __init__(self, make: Callable[[], AIOKafkaProducer], name: str, metrics: Metrics):
        self._make = make
        self._name = name
        self._current = make()
        self._refused: BaseException | None = None
        self._lock = asyncio.Lock()
        self._renewed = metrics.counter(
            "kafka_producer_renewed_total", "Producers replaced after the broker refused them"
        )

    @property
    def client(self) -> Any:
        return self._current.client

    async def start(self) -> None:
        await start_with_retry(self._current, self._name)

    async def stop(self) -> None:
        await self._current.stop()

    async def send(
        self, topic: str, value: bytes | None = None, key: bytes | None = None
    ) -> asyncio.Future[RecordMetadata]:
        async def one(producer: AIOKafkaProducer) -> list[asyncio.Future[Any]]:
            return [await producer.send(topic, value, key=key)]

        [future] = await self._queue(one)
        return future

    async def send_and_wait(
        self, topic: str, value: bytes | None = None, key: bytes | None = None
    ) -> RecordMetadata:
        return await (await self.send(topic, value, key))

    async def send_many(self, messages: Sequence[Message]) -> list[asyncio.Future[Any]]:
        """Queue ``messages`` in order, each partition's as whole batches; one future per
        batch. The partition of each is the one ``send`` would choose."""
        return await self._queue(lambda producer: send_batches(producer, messages))

    async def _queue(
        self, queue: Callable[[AIOKafkaProducer], Awaitable[list[asyncio.Future[Any]]]]
    ) -> list[asyncio.Future[Any]]:
        """Queue with the current producer (a new one first after a refusal) and watch
        what it returns for a refusal."""
        if self._refused is not None:
            await self._renew()
        producer = self._current
        try:
            futures = await queue(producer)
        except _PRODUCER_REFUSED as error:
            self._note_refusal(producer, error)
            raise
        for future in futures:
            future.add_done_callback(
                lambda done: self._note_refusal(
                    producer, None if done.cancelled() else done.exception()
                )
            )
        return futures

    def _note_refusal(self, producer: AIOKafkaProducer, error: BaseException | None) -> None:
        # A replaced producer's sends fail as it stops; they say nothing of the new one.
        if isinstance(error, _PRODUCER_REFUSED) and producer is self._current:
            self._refused = error

    async def _renew(self) -> None:
        async with self._lock:
            if self._refused is None:
                return  # another sender renewed it while this one waited
            log.warning("kafka refused the producer; starting a new one", error=repr(self._refused))
            fresh = self._make()
            try:
                await start_with_retry(fresh, self._name)
            except BaseException:
                await fresh.stop()
                raise
            stale, self._current, self._refused = self._current, fresh, None
            self._renewed.inc()
        with contextlib.suppress(KafkaError, TimeoutError):
            await asyncio.wait_for(stale.stop(), 10)


@dataclass(frozen=True)
class Inbound:
    """One decoded message with where it came from."""

    event: CloudEvent
    payload: BaseModel
    record: ConsumerRecord


Handler = Callable[[Sequence[Inbound]], Awaitable[None]]


# Names dead letters: one message dead-lettered by one service always gets the same id.
_DEAD_LETTER_IDS = uuid.uuid5(uuid.NAMESPACE_URL, "urn:civicroute:deadletter")


def dead_letter_id(service: str, record: ConsumerRecord) -> str:
    """A message redelivered after a crash or a stop before its offset was committed is
    dead-lettered again; the same id lets readers of deadletter.v1 drop the repeat, as
    they drop any redelivered event."""
    where = f"{service}/{record.topic}/{record.partition}/{record.offset}"
    return str(uuid.uuid5(_DEAD_LETTER_IDS, where))


class DeadLetters:
    """Writes unprocessable messages to ``deadletter.v1``, keyed by their original key."""

    def __init__(self, producer: Publisher, topic: str, service: str, metrics: Metrics):
        self._producer = producer
        self._topic = topic
        self._service = service
        self._total = metrics.counter(
            "deadlettered_total", "Messages sent to the dead-letter topic", ["topic", "reason"]
        )

    async def send(self, record: ConsumerRecord, reason: str) -> None:
        payload = MessageDeadLettered(
            reason=reason[:2000],
            service=self._service,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key_b64=base64.b64encode(record.key).decode() if record.key is not None else None,
            value_b64=base64.b64encode(record.value or b"").decode(),
            at=utcnow(),
        )
        event = new_event(
            EventType.MESSAGE_DEADLETTERED,
            source=f"/civicroute/{self._service}",
            subject=None,
            data=payload,
            event_id=dead_letter_id(self._service, record),
        )
        await self._producer.send_and_wait(self._topic, encode(event), key=record.key)
        self._total.labels(record.topic, reason_label(reason)).inc()
        log.warning(
            "message dead-lettered",
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            reason=reason[:300],
        )


def reason_label(reason: str) -> str:
    """A bounded metric label from a free-text reason: the part before the first colon."""
    return reason.split(":", 1)[0][:60]


@dataclass(frozen=True)
class _Failure:
    reason: str
    invalid: bool  # the handler judged the message itself bad: no retry will help


@dataclass
class _Batch:
    valid: list[Inbound] = field(default_factory=list)
    invalid: list[tuple[ConsumerRecord, str]] = field(default_factory=list)
    ignored: int = 0


class ConsumerRuntime:
    """Consume topics in batches, hand valid events to ``handler``, commit after.

    ``accept`` names the event types the handler wants; others are skipped (and
    committed), as the contract says consumers ignore types they do not handle.

    Offsets of finished batches are committed at most every ``commit_interval_ms``,
    and at once when the consumer has caught up, before its partitions move and
    before it stops. A commit is a broker round trip and a write to the offsets log:
    once per batch it was a cost per batch, paid again by every service. A crash
    redelivers at most that interval's messages, which the handlers' inbox ignores.
    """

    def __init__(
        self,
        *,
        service: str,
        bootstrap: str,
        topics: Sequence[str],
        group_id: str,
        handler: Handler,
        accept: set[str],
        dead_letters: DeadLetters,
        metrics: Metrics,
        max_batch: int = 500,
        fetch_max_wait_ms: int = 500,
        fetch_min_bytes: int = 1,
        commit_interval_ms: int = 0,
    ) -> None:
        self._service = service
        self._topics = list(topics)
        self._handler = handler
        self._accept = accept
        self._dead = dead_letters
        self._max_batch = max_batch
        self.fetch_max_wait_ms, self.fetch_min_bytes = fetch_max_wait_ms, fetch_min_bytes
        self._lock = asyncio.Lock()
        self._commit_interval = commit_interval_ms / 1000
        self._last_commit = time.monotonic()
        # Offsets of finished batches not yet committed, by partition.
        self._uncommitted: dict[TopicPartition, OffsetAndMetadata] = {}
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=group_id,
            client_id=f"civicroute-{service}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=max_batch,
            # A fetch waits briefly for a fuller batch: one transaction and commit then
            # serves many messages, at the cost of at most fetch_max_wait_ms per hop.
            fetch_max_wait_ms=fetch_max_wait_ms,
            fetch_min_bytes=fetch_min_bytes,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
            max_poll_interval_ms=300_000,
        )
        self.ready = asyncio.Event()
        self._consumed = metrics.counter("messages_consumed_total", "Messages read", ["topic"])
        self._processed = metrics.counter(
            "messages_processed_total", "Messages whose work is durably done", ["topic"]
        )
        self._failed = metrics.counter(
            "messages_failed_total", "Handler attempts that failed", ["topic", "kind"]
        )
        self._lag = metrics.gauge("consumer_lag_messages", "Messages behind the log end", ["topic"])
        self._batch_seconds = metrics.histogram("batch_seconds", "Time to process one batch")
        self._commits = metrics.counter("offset_commits_total", "Offset commits sent to Kafka")

    @classmethod
    def configured(cls, settings: CommonSettings, **wiring: Any) -> ConsumerRuntime:
        """A consumer on the broker and fetch settings of ``settings``; ``wiring`` gives the
        rest (service, topics, group_id, handler, accept, dead_letters, metrics, …). Every
        service builds its consumer through here, so no setting is left behind."""
        return cls(
            bootstrap=settings.kafka_bootstrap,
            fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
            fetch_min_bytes=settings.kafka_fetch_min_bytes,
            commit_interval_ms=settings.kafka_commit_interval_ms,
            **wiring,
        )

    async def run(self, stop: asyncio.Event) -> None:
        self._consumer.subscribe(self._topics, listener=_CommitOnRevoke(self))
        await start_with_retry(self._consumer, f"{self._service}-consumer")
        self.ready.set()
        try:
            while not stop.is_set():
                records = await self._consumer.getmany(timeout_ms=250, max_records=self._max_batch)
                if not records:
                    await self.commit_finished()  # caught up: nothing to wait for
                    await self._update_lag()
                    continue
                async with self._lock:
                    if await self._process(records, stop):
                        self._finished(records)
                        if time.monotonic() - self._last_commit >= self._commit_interval:
                            await self._commit()
                await self._update_lag()
        finally:
            try:
                # Bounded: with the broker away, stopping must not wait for it.
                await asyncio.wait_for(self.commit_finished(), FINAL_COMMIT_SECONDS)
            except TimeoutError:
                log.warning("offsets not committed at stop; they will be redelivered")
            await self._consumer.stop()

    async def _process(
        self, records: dict[TopicPartition, list[ConsumerRecord]], stop: asyncio.Event
    ) -> bool:
        """Do the batch's work; False when stopped before it was done (so no commit)."""
        started = time.perf_counter()
        batch = self._classify(records)
        for record, reason in batch.invalid:
            await self._dead_letter(record, reason, stop)
        done = await self._handle(batch.valid, stop)
        if done:
            for tp, messages in records.items():
                self._processed.labels(tp.topic).inc(len(messages))
            self._batch_seconds.observe(time.perf_counter() - started)
        return done

    def _classify(self, records: dict[TopicPartition, list[ConsumerRecord]]) -> _Batch:
        batch = _Batch()
        seen: set[str] = set()
        for tp, messages in records.items():
            self._consumed.labels(tp.topic).inc(len(messages))
            for record in messages:
                try:
                    document = parse_document(record.value)
                    # Types this service does not handle are skipped before any validation:
                    # most of a shared topic's traffic is for other consumers. A document
                    # with no type at all is not a CloudEvent and still goes to dead letters.
                    kind = document.get("type")
                    if isinstance(kind, str) and kind not in self._accept:
                        batch.ignored += 1
                        continue
                    event = envelope(document)
                    if event.id in seen:
                        batch.ignored += 1
                        continue
                    payload = event.payload()
                except InvalidEvent as error:
                    batch.invalid.append((record, str(error)))
                    continue
                if payload is None:
                    batch.ignored += 1
                    continue
                seen.add(event.id)
                batch.valid.append(Inbound(event, payload, record))
        return batch

    async def _handle(self, items: list[Inbound], stop: asyncio.Event) -> bool:
        if not items:
            return True
        outcome = await self._attempt(items, stop)
        if isinstance(outcome, bool):
            return outcome
        # The batch failed for a non-transient reason: find the culprit one by one.
        for item in items:
            for attempt in range(1, MAX_HANDLER_ATTEMPTS + 1):
                outcome = await self._attempt([item], stop)
                if isinstance(outcome, bool):
                    break
                if outcome.invalid or attempt == MAX_HANDLER_ATTEMPTS:
                    reason = (
                        outcome.reason
                        if outcome.invalid
                        else f"processing failed: {outcome.reason}"
                    )
                    await self._dead_letter(item.record, reason, stop)
                    break
            if outcome is False:
                return False
        return True

    async def _attempt(self, items: list[Inbound], stop: asyncio.Event) -> bool | _Failure:
        """True when done; False when stopped first; a _Failure for a non-transient error."""
        delay = 0.2
        while not stop.is_set():
            try:
                await self._handler(items)
                return True
            except InvalidEvent as error:
                return _Failure(str(error), invalid=True)
            except TRANSIENT_ERRORS as error:
                self._failed.labels(items[0].record.topic, "transient").inc()
                log.warning("transient failure; retrying batch", error=repr(error), delay=delay)
                await sleep_or_stop(stop, delay)
                delay = min(delay * 2, 5.0)
            except Exception as error:
                self._failed.labels(items[0].record.topic, "error").inc()
                log.exception("handler failed", batch_size=len(items))
                return _Failure(f"{type(error).__name__}: {error}", invalid=False)
        return False

    async def _dead_letter(self, record: ConsumerRecord, reason: str, stop: asyncio.Event) -> None:
        delay = 0.2
        while True:
            try:
                await self._dead.send(record, reason)
                return
            except KafkaError as error:
                if stop.is_set():
                    raise
                log.warning("dead-letter publish failed; retrying", error=repr(error))
                await sleep_or_stop(stop, delay)
                delay = min(delay * 2, 5.0)

    async def commit_finished(self) -> None:
        """Commit what finished batches left uncommitted, once the batch in hand is done."""
        async with self._lock:
            await self._commit()

    def _finished(self, records: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        """Mark a batch's work durable: its offsets go out with the next commit."""
        for tp, messages in records.items():
            self._uncommitted[tp] = OffsetAndMetadata(messages[-1].offset + 1, "")

    async def _commit(self) -> None:
        """Commit the finished batches' offsets, if any. Called with the lock held."""
        self._last_commit = time.monotonic()
        if not self._uncommitted:
            return
        offsets, self._uncommitted = self._uncommitted, {}
        self._commits.inc()
        try:
            await self._consumer.commit(offsets)
        except (KafkaError, AssertionError) as error:
            # Partitions that moved to another member are redelivered there (handlers are
            # idempotent); those still ours go out with the next commit.
            log.warning("offset commit failed", error=repr(error))
            kept = self._consumer.assignment()
            for tp, offset in offsets.items():
                if tp in kept:
                    self._uncommitted.setdefault(tp, offset)

    async def _update_lag(self) -> None:
        behind: dict[str, int] = {}
        for tp in self._consumer.assignment():
            end = self._consumer.highwater(tp)
            if end is None:
                continue
            position = await self._consumer.position(tp)
            behind[tp.topic] = behind.get(tp.topic, 0) + max(0, end - position)
        for topic, lag in behind.items():
            self._lag.labels(topic).set(lag)


class _CommitOnRevoke(ConsumerRebalanceListener):
    """Before partitions move, wait for the batch in hand to finish, and commit what the
    runtime has finished, so that the next owner starts after it."""

    def __init__(self, runtime: ConsumerRuntime) -> None:
        self._runtime = runtime

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._runtime.commit_finished()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info(
            "partitions assigned", partitions=sorted(f"{t.topic}:{t.partition}" for t in assigned)
        )
