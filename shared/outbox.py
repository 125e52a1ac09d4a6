"""Transactional outbox and its relay.

A service writes its state change and the events announcing it in one
PostgreSQL transaction (:func:`enqueue`). The relay publishes what the outbox
holds, in insertion order, with ``acks=all``, and deletes rows only after the
broker has them. One relay per schema is active at a time (an advisory lock),
so events reach Kafka in id order. Writers that emit events for one case
lock that case's row first, so a case's events get increasing ids and keep
their order on the wire.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

import asyncpg
import structlog
from aiokafka.errors import KafkaError

from shared.aio import sleep_or_stop, wait_any
from shared.db import (
    PLAN_REFRESH_SECONDS,
    TRANSIENT_DB_ERRORS,
    check_schema_name,
    columns_of,
    drop_old_plans,
)
from shared.events import CloudEvent, encode
from shared.kafka import Publisher
from shared.metrics import Metrics

log = structlog.get_logger(__name__)


def notify_channel(schema: str) -> str:
    return f"civicroute_outbox_{check_schema_name(schema)}"


def outbox_insert(first: int) -> str:
    """The INSERT of ``outbox_columns`` from parameters $first…$first+2, for a WITH clause
    (RETURNING 1): ids follow the rows' order, so per-key order holds."""
    topics, keys, values = (f"${n}" for n in range(first, first + 3))
    return f"""
        INSERT INTO outbox (topic, key, value)
        SELECT topic, key, value
        FROM unnest({topics}::text[], {keys}::bytea[], {values}::bytea[]) WITH ORDINALITY
             AS r (topic, key, value, n)
        ORDER BY n
        RETURNING 1"""  # noqa: S608 (parameter numbers only)


def outbox_columns(messages: Iterable[tuple[str, str | None, CloudEvent]]) -> list[list[Any]]:
    """(topic, key, event) messages as the three array parameters of ``outbox_insert``."""
    rows = [
        (topic, key.encode() if key is not None else None, encode(event))
        for topic, key, event in messages
    ]
    return columns_of(rows, 3)


async def enqueue(
    conn: asyncpg.Connection, schema: str, messages: Iterable[tuple[str, str | None, CloudEvent]]
) -> int:
    """Add (topic, key, event) rows to the outbox inside the caller's transaction."""
    topics, keys, values = outbox_columns(messages)
    if not topics:
        return 0
    # One round trip: the rows and the relay's wake-up, delivered at commit (several
    # fold into one).
    await conn.execute(
        f"WITH added AS ({outbox_insert(1)}) SELECT pg_notify($4, '')",
        topics,
        keys,
        values,
        notify_channel(schema),
    )
    return len(topics)


# The relay's read: the oldest events first, at most $1.
READ_BATCH = "SELECT id, topic, key, value, created_at FROM outbox ORDER BY id LIMIT $1"


class OutboxRelay:
    def __init__(
        self,
        *,
        dsn: str,
        schema: str,
        producer: Publisher,
        metrics: Metrics,
        batch_size: int = 1000,
        idle_poll_seconds: float = 1.0,
    ) -> None:
        self._dsn = dsn
        self._schema = check_schema_name(schema)
        self._producer = producer
        self._batch_size = batch_size
        self._idle_poll = idle_poll_seconds
        self._wake = asyncio.Event()
        self._published = metrics.counter("outbox_published_total", "Events relayed to Kafka")
        self._age = metrics.gauge(
            "outbox_oldest_age_seconds", "Age of the oldest event waiting in the outbox"
        )
        self._active = metrics.gauge(
            "outbox_relay_active", "1 when this replica holds the relay lock"
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until ``stop``; reconnect after database or broker failures."""
        delay = 0.2
        while not stop.is_set():
            try:
                await self._run_connected(stop)
                delay = 0.2
            except (*TRANSIENT_DB_ERRORS, KafkaError) as error:
                self._active.set(0)
                log.warning("outbox relay interrupted; reconnecting", error=repr(error))
                await sleep_or_stop(stop, delay)
                delay = min(delay * 2, 5.0)

    async def _run_connected(self, stop: asyncio.Event) -> None:
        conn: asyncpg.Connection = await asyncpg.connect(
            self._dsn, server_settings={"search_path": self._schema}
        )
        try:
            lock_key = f"civicroute.outbox.{self._schema}"
            while not await conn.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", lock_key):
                # Another replica relays; stand by and take over if it goes away.
                if await sleep_or_stop(stop, 2.0):
                    return
            self._active.set(1)
            await conn.add_listener(notify_channel(self._schema), self._on_notify)
            while not stop.is_set():
                # Cleared before the read, not after: a NOTIFY arriving while a batch is
                # relayed is for rows committed after its read, and must end the wait below.
                self._wake.clear()
                await drop_old_plans(conn, PLAN_REFRESH_SECONDS)
                relayed = await self._relay_batch(conn)
                if relayed < self._batch_size:
                    if relayed == 0:
                        self._age.set(0)
                    await wait_any([stop, self._wake], self._idle_poll)
            # Drain what is already committed before stopping.
            while await self._relay_batch(conn) == self._batch_size:
                pass
        finally:
            self._active.set(0)
            await conn.close()

    def _on_notify(self, *_args: object) -> None:
        self._wake.set()

    async def _relay_batch(self, conn: asyncpg.Connection) -> int:
        rows = await conn.fetch(READ_BATCH, self._batch_size)
        if not rows:
            return 0
        self._age.set(max(0.0, time.time() - rows[0]["created_at"].timestamp()))
        await asyncio.gather(
            *await self._producer.send_many([(r["topic"], r["key"], r["value"]) for r in rows])
        )
        # Exact ids, not a range: a row with a lower id may commit after this read.
        await conn.execute(
            "DELETE FROM outbox WHERE id = ANY($1::bigint[])", [r["id"] for r in rows]
        )
        self._published.inc(len(rows))
        return len(rows)
