"""Helpers shared by tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer

from shared.events import CloudEvent, decode

T = TypeVar("T")


async def eventually(
    check: Callable[[], T | Awaitable[T]],
    timeout: float = 30.0,
    interval: float = 0.1,
    message: str = "condition",
) -> T:
    """Poll ``check()`` (sync or async) until its value is truthy; return it, or fail."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value: Any = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value  # type: ignore[no-any-return]
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        await asyncio.sleep(interval)


async def read_topic(bootstrap: str, topic: str, timeout_ms: int = 3000) -> list[CloudEvent]:
    """Everything on ``topic`` so far, decoded (a fresh consumer, no group)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        records: list[CloudEvent] = []
        while True:
            batch = await consumer.getmany(timeout_ms=timeout_ms)
            if not batch:
                return records
            for messages in batch.values():
                records.extend(decode(m.value) for m in messages)
    finally:
        await consumer.stop()


async def fetch(database_url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    """Run one query on a connection of its own (a test's view of a service's database)."""
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


async def explain(
    conn: asyncpg.Connection, query: str, *args: Any, generic: bool = False, json: bool = False
) -> Any:
    """PostgreSQL's EXPLAIN of ``query`` (text, or the parsed JSON document with ``json``).

    ``generic``: the plan made without the parameters' values, which PostgreSQL keeps for
    a prepared statement after its first five executions when it costs no more than theirs
    (what a service runs once its statements are cached); ``args`` are then not used.
    """
    options = "(FORMAT JSON) " if json else ""
    if generic:
        await conn.execute("PREPARE plan_probe AS " + query)
        try:
            async with conn.transaction():
                await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
                nulls = ", ".join(["NULL"] * len(args))
                rows = await conn.fetch(f"EXPLAIN {options}EXECUTE plan_probe({nulls})")
        finally:
            await conn.execute("DEALLOCATE plan_probe")
    else:
        rows = await conn.fetch(f"EXPLAIN {options}" + query, *args)
    if not json:
        return "\n".join(row[0] for row in rows)
    document = rows[0][0]
    return orjson.loads(document) if isinstance(document, str) else document


def plan_nodes(document: Any) -> list[tuple[str, str | None, str | None]]:
    """(node type, table, index) of every node of an ``EXPLAIN (FORMAT JSON)`` document
    (parsed, or as the text PostgreSQL returns)."""
    parsed = orjson.loads(document) if isinstance(document, str) else document

    def walk(node: dict[str, Any]) -> list[tuple[str, str | None, str | None]]:
        found = [(node["Node Type"], node.get("Relation Name"), node.get("Index Name"))]
        for child in node.get("Plans", []):
            found += walk(child)
        return found

    return walk(parsed[0]["Plan"])


async def plan_of(
    conn: asyncpg.Connection, query: str, *args: Any, generic: bool = False
) -> list[tuple[str, str | None, str | None]]:
    """(node type, table, index) of every node of the plan PostgreSQL makes for ``query``
    (``generic``: see ``explain``)."""
    return plan_nodes(await explain(conn, query, *args, generic=generic, json=True))
