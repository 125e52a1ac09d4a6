"""A queue's statements read it by index again soon after it grows past what their plans saw.

Services let PostgreSQL keep a prepared statement's generic plan (its default
``plan_cache_mode``). Such a plan is made for the tables as they are and kept until
their statistics change, and a queue can grow from a few rows to thousands between two
autovacuum rounds. So each pool connection drops its plans now and then
(``shared.db.drop_old_plans``), and the next plan is made for the table as it has grown.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from services.notify import store as notify_store
from shared.db import connect_pool, migrate
from shared.outbox import READ_BATCH
from tests.helpers import plan_nodes

NOTIFY_MIGRATIONS = Path(notify_store.__file__).parent / "migrations"
DEPARTMENTS = [f"department_{n}" for n in range(16)]
REFRESH = 0.3  # seconds, for the refreshing pool


async def deliveries(conn: asyncpg.Connection, count: int, first: int = 0) -> None:
    """``count`` deliveries due now, over 16 endpoints and 700 cases."""
    await conn.execute(
        """INSERT INTO deliveries (webhook_id, case_id, department, event_id, event_type, body,
                                   next_attempt_at)
           SELECT 'w' || n, 'C' || (n % 700), ($3::text[])[1 + n % 16], 'e' || n, 'dispatched',
                  '\\x7b7d', now() - interval '1 second'
           FROM generate_series($1::int, $1::int + $2::int - 1) AS n""",
        first,
        count,
        DEPARTMENTS,
    )


async def outbox_rows(conn: asyncpg.Connection, count: int, first: int = 0) -> None:
    await conn.execute(
        """INSERT INTO outbox (topic, key, value)
           SELECT 'case.events.v1', convert_to('C' || n, 'UTF8'), '\\x7b7d'::bytea
           FROM generate_series($1::int, $1::int + $2::int - 1) AS n""",
        first,
        count,
    )


QUEUES: dict[str, tuple[str, int, str, Callable[..., Awaitable[None]]]] = {
    # name: (statement, its parameter count, the queue's table, how to add rows)
    "notify-lease": (notify_store.LEASE_DUE, 4, "deliveries", deliveries),
    "outbox-relay": (READ_BATCH, 1, "outbox", outbox_rows),
}


def scans(document: Any) -> list[tuple[str, str | None]]:
    """(node type, table) of every node of an EXPLAIN document."""
    return [(kind, table) for kind, table, _ in plan_nodes(document)]


async def plan_after_growth(database_url: str, queue: str, refresh: float) -> list[tuple]:
    """The plan a pool connection uses for the queue's statement, made (generic, and kept)
    while the queue held five rows, once 20,000 more were added and ``REFRESH`` seconds and
    a use of the connection have passed. No autovacuum runs meanwhile."""
    statement, parameters, table, add = QUEUES[queue]
    nulls = ", ".join(["NULL"] * parameters)
    pool = await connect_pool(database_url, "notify", max_size=1, plan_refresh_seconds=refresh)
    try:
        await migrate(pool, "notify", NOTIFY_MIGRATIONS)
        async with pool.acquire() as conn:
            await conn.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
            await add(conn, 5)
            await conn.execute(f"ANALYZE {table}")
            # Session settings, for this test only: the generic plan, and a name to EXPLAIN.
            await conn.execute("SET plan_cache_mode = force_generic_plan")
            await conn.execute("PREPARE kept AS " + statement)
            made = scans(await conn.fetchval(f"EXPLAIN (FORMAT JSON) EXECUTE kept({nulls})"))
            assert ("Seq Scan", table) in made, made  # a nearly empty table is read whole
            await add(conn, 20_000, first=5)
        await asyncio.sleep(REFRESH)
        async with pool.acquire():
            pass  # given back: old plans dropped if they are due
        async with pool.acquire() as conn:
            return scans(await conn.fetchval(f"EXPLAIN (FORMAT JSON) EXECUTE kept({nulls})"))
    finally:
        await pool.close()


@pytest.mark.parametrize("queue", list(QUEUES))
async def test_a_queue_statement_is_planned_again_for_the_grown_queue_within_the_refresh(
    database_url: str, queue: str
) -> None:
    table = QUEUES[queue][2]
    plan = await plan_after_growth(database_url, queue, refresh=REFRESH)
    assert ("Seq Scan", table) not in plan, plan
    assert any(kind == "Index Scan" and name == table for kind, name in plan), plan


async def test_without_the_refresh_the_plan_made_for_the_empty_queue_is_kept(
    database_url: str,
) -> None:
    plan = await plan_after_growth(database_url, "notify-lease", refresh=3600)
    assert ("Seq Scan", "deliveries") in plan, plan
