"""Migrations and the consumer inbox, on a real PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from shared.db import MigrationError, claim_and_fetch, claim_new_events, connect_pool, migrate


def write(directory: Path, name: str, sql: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(sql)


async def test_migrations_apply_once_in_order_into_the_service_schema(
    database_url: str, tmp_path: Path
) -> None:
    write(tmp_path, "001_things.sql", "CREATE TABLE things (id int PRIMARY KEY);")
    write(tmp_path, "002_more.sql", "ALTER TABLE things ADD COLUMN name text;")
    pool = await connect_pool(database_url, "svc")
    try:
        first = await migrate(pool, "svc", tmp_path)
        again = await migrate(pool, "svc", tmp_path)
        async with pool.acquire() as conn:
            columns = await conn.fetch(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_schema = 'svc' AND table_name = 'things' ORDER BY ordinal_position"
            )
            tables = {
                r["table_name"]
                for r in await conn.fetch(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = 'svc'"
                )
            }
    finally:
        await pool.close()
    assert first == ["shared/001_outbox_and_inbox.sql", "svc/001_things.sql", "svc/002_more.sql"]
    assert again == []
    assert [c["column_name"] for c in columns] == ["id", "name"]
    assert {"outbox", "processed_events", "schema_migrations", "things"} <= tables


async def test_replicas_migrating_together_apply_each_migration_once(
    database_url: str, tmp_path: Path
) -> None:
    write(tmp_path, "001_t.sql", "CREATE TABLE t (id int);")
    pools = [await connect_pool(database_url, "svc") for _ in range(3)]
    try:
        results = await asyncio.gather(*(migrate(p, "svc", tmp_path) for p in pools))
    finally:
        for pool in pools:
            await pool.close()
    assert sorted(len(r) for r in results) == [0, 0, 2]


async def test_editing_an_applied_migration_is_refused(database_url: str, tmp_path: Path) -> None:
    write(tmp_path, "001_t.sql", "CREATE TABLE t (id int);")
    pool = await connect_pool(database_url, "svc")
    try:
        await migrate(pool, "svc", tmp_path)
        write(tmp_path, "001_t.sql", "CREATE TABLE t (id bigint);")
        with pytest.raises(MigrationError, match="changed after it was applied"):
            await migrate(pool, "svc", tmp_path)
    finally:
        await pool.close()


async def test_badly_named_migration_is_refused(database_url: str, tmp_path: Path) -> None:
    write(tmp_path, "first.sql", "SELECT 1;")
    pool = await connect_pool(database_url, "svc")
    try:
        with pytest.raises(MigrationError, match=r"NNN_snake_case\.sql"):
            await migrate(pool, "svc", tmp_path)
    finally:
        await pool.close()


async def test_inbox_reports_each_event_id_new_only_once(database_url: str) -> None:
    pool = await connect_pool(database_url, "svc")
    try:
        await migrate(pool, "svc", None)
        async with pool.acquire() as conn:
            async with conn.transaction():
                assert await claim_new_events(conn, ["a", "b", "b"]) == {"a", "b"}
            async with conn.transaction():
                assert await claim_new_events(conn, ["b", "c"]) == {"c"}
            # Rolled back work leaves the id unclaimed, so a redelivery is processed.
            transaction = conn.transaction()
            await transaction.start()
            assert await claim_new_events(conn, ["d"]) == {"d"}
            await transaction.rollback()  # a crash before commit
            async with conn.transaction():
                assert await claim_new_events(conn, ["d"]) == {"d"}
    finally:
        await pool.close()


async def test_a_claim_with_its_read_reports_new_ids_and_the_rows_found_or_none(
    database_url: str,
) -> None:
    pool = await connect_pool(database_url, "svc")
    try:
        await migrate(pool, "svc", None)
        read = "SELECT event_id AS seen FROM processed_events WHERE event_id = ANY($2::text[])"
        async with pool.acquire() as conn:
            async with conn.transaction():
                fresh, rows = await claim_and_fetch(conn, ["a", "b", "b"], read, ["x"])
            assert (fresh, rows) == ({"a", "b"}, [])  # nothing read: the claim still counts
            async with conn.transaction():
                fresh, rows = await claim_and_fetch(conn, ["b", "c"], read, ["a", "b", "z"])
            assert fresh == {"c"}
            assert sorted(row["seen"] for row in rows) == ["a", "b"]
            async with conn.transaction():
                fresh, rows = await claim_and_fetch(conn, ["c"], read, ["c"])
            assert (fresh, [row["seen"] for row in rows]) == (set(), ["c"])
    finally:
        await pool.close()


async def test_a_failed_migration_leaves_no_lock_behind_for_the_next_start(
    database_url: str, tmp_path: Path
) -> None:
    write(tmp_path, "001_t.sql", "CREATE TABLE t (id int);")
    write(tmp_path, "002_bad.sql", "CREATE TABLE t (id int);")  # t exists: this one fails
    first = await connect_pool(database_url, "svc", max_size=1)
    try:
        with pytest.raises(asyncpg.DuplicateTableError):
            await migrate(first, "svc", tmp_path)
        write(tmp_path, "002_bad.sql", "ALTER TABLE t ADD COLUMN name text;")
        # Another replica starting now must get the lock (a hang here is the failure).
        second = await connect_pool(database_url, "svc")
        try:
            applied = await asyncio.wait_for(migrate(second, "svc", tmp_path), timeout=30)
        finally:
            await second.close()
    finally:
        await first.close()
    assert applied == ["svc/002_bad.sql"]


async def test_a_connection_given_back_inside_a_transaction_is_rolled_back(
    database_url: str,
) -> None:
    pool = await connect_pool(database_url, "alpha", max_size=1)
    try:
        await migrate(pool, "alpha", None)
        async with pool.acquire() as conn:
            await conn.execute("BEGIN")
            await conn.execute("INSERT INTO processed_events (event_id) VALUES ('half-done')")
        async with pool.acquire() as conn:
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SELECT count(*) FROM processed_events") == 0
    finally:
        await pool.close()


async def test_pool_connections_see_only_their_schema_first(database_url: str) -> None:
    pool = await connect_pool(database_url, "alpha")
    try:
        await migrate(pool, "alpha", None)
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW search_path") == "alpha"
            await conn.execute("INSERT INTO processed_events (event_id) VALUES ('x')")
        raw = await asyncpg.connect(database_url)
        try:
            assert await raw.fetchval("SELECT count(*) FROM alpha.processed_events") == 1
        finally:
            await raw.close()
    finally:
        await pool.close()


async def test_a_connection_lost_before_its_plans_are_dropped_is_replaced_and_its_work_stands(
    database_url: str,
) -> None:
    # Plans are due to be dropped at every release; the server ends the connection after
    # the work on it is committed and before it is given back.
    pool = await connect_pool(database_url, "svc", max_size=1, plan_refresh_seconds=0)
    admin = await asyncpg.connect(database_url)
    try:
        await migrate(pool, "svc", None)
        async with pool.acquire() as conn:
            await conn.execute("CREATE TABLE kept (n int); INSERT INTO kept VALUES (1)")
            lost = conn.get_server_pid()
            await admin.execute("SELECT pg_terminate_backend($1)", lost)
        async with pool.acquire() as conn:
            assert conn.get_server_pid() != lost
            assert await conn.fetchval("SELECT count(*) FROM kept") == 1
    finally:
        await admin.close()
        await pool.close()
