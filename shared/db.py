"""PostgreSQL: a pool per service schema, a migration runner and the consumer inbox.

Each service owns one schema (``intake``, ``router``, …) and reaches it through
``search_path``, so a service's SQL names its tables without qualification and
never touches another service's tables.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import structlog

log = structlog.get_logger(__name__)

SHARED_MIGRATIONS = Path(__file__).parent / "migrations"
_MIGRATION_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")

# How long a connection keeps the plans it has made (see ``drop_old_plans``).
PLAN_REFRESH_SECONDS = 30.0
_plans_since: weakref.WeakKeyDictionary[asyncpg.Connection, float] = weakref.WeakKeyDictionary()

# Errors that a later attempt can get past: the database restarting or unreachable.
TRANSIENT_DB_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
    # The connection broke mid-exchange (the server crashed while a query or its rollback
    # was under way): "cannot switch to state …; another operation is in progress". The
    # pool drops that connection; the next attempt gets a fresh one.
    asyncpg.InternalClientError,
)


class MigrationError(RuntimeError):
    pass


async def _init_connection(conn: asyncpg.Connection) -> None:
    _plans_since[conn] = time.monotonic()
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(
            type_name,
            encoder=lambda value: orjson.dumps(value).decode(),
            decoder=orjson.loads,
            schema="pg_catalog",
        )


async def drop_old_plans(conn: asyncpg.Connection, every: float) -> None:
    """``DISCARD PLANS`` on ``conn`` once ``every`` seconds have passed since it connected
    (or was first seen here) or last did.

    PostgreSQL keeps a prepared statement's generic plan, and a foreign-key check's, until
    the tables' statistics change; a plan made while a queue was nearly empty reads it
    whole (a sequential scan, then a sort) however long it has grown since. A queue can
    grow by thousands of rows before autovacuum analyses it again, so every connection
    drops its plans on a timer: the next ones are made for the tables as they are by then.
    """
    now = time.monotonic()
    since = _plans_since.setdefault(conn, now)
    if now - since >= every:
        await conn.execute("DISCARD PLANS")
        _plans_since[conn] = now


def _keep_session(plan_refresh_seconds: float) -> Callable[[asyncpg.Connection], Awaitable[None]]:
    """The pool's reset on release, after asyncpg's own (which rolls back an open
    transaction): old plans dropped now and then, nothing more. The default (unlock all,
    close all, unlisten, reset all) is one more round trip on every use, and on a busy
    machine each waits to be scheduled. Pool connections keep no session state: no SET,
    LISTEN or cursor outside a transaction, and the one session lock (``migrate``) is
    released or goes with its connection.
    """

    async def reset(conn: asyncpg.Connection) -> None:
        try:
            await drop_old_plans(conn, plan_refresh_seconds)
        except TRANSIENT_DB_ERRORS:
            # Lost after its work was done: the pool connects anew on the next acquire,
            # and the work stands (asyncpg would raise it from the caller's release).
            conn.terminate()

    return reset


def check_schema_name(schema: str) -> str:
    if not _SCHEMA_NAME.match(schema):
        raise ValueError(f"bad schema name {schema!r}")
    return schema


async def connect_pool(
    dsn: str,
    schema: str,
    *,
    max_size: int = 10,
    attempts: int = 60,
    plan_refresh_seconds: float = PLAN_REFRESH_SECONDS,
) -> asyncpg.Pool:
    """A pool whose connections see ``schema`` first; waits for the server to come up."""
    check_schema_name(schema)
    for attempt in range(1, attempts + 1):
        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=1,
                max_size=max_size,
                init=_init_connection,
                reset=_keep_session(plan_refresh_seconds),
                # PostgreSQL's own choice between a statement's generic and custom plans
                # (plan_cache_mode auto); a connection's plans are dropped when it is given
                # back plan_refresh_seconds after it last dropped them.
                # Planning every execution afresh (force_custom_plan) also planned each
                # foreign-key check anew, row by row; keeping plans cut PostgreSQL's
                # statement time at 200 requests/s by more than a third.
                server_settings={"search_path": schema, "application_name": f"civicroute-{schema}"},
                command_timeout=60,
            )
        except TRANSIENT_DB_ERRORS as error:
            if attempt == attempts:
                raise
            log.warning("database not reachable yet", attempt=attempt, error=str(error))
            await asyncio.sleep(min(0.25 * attempt, 2.0))
        else:
            assert pool is not None
            return pool
    raise AssertionError("unreachable")


def _migration_files(directory: Path) -> list[tuple[int, str, str]]:
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path}: migration files are named NNN_snake_case.sql")
        found.append((int(match.group(1)), path.name, path.read_text()))
    versions = [v for v, _, _ in found]
    if len(versions) != len(set(versions)):
        raise MigrationError(f"{directory}: two migrations share a number")
    return found


async def migrate(pool: asyncpg.Pool, schema: str, service_dir: Path | None) -> list[str]:
    """Apply the shared migrations (outbox, inbox) then the service's own, once each.

    A session advisory lock makes replicas that start together take turns.
    Returns the names of the migrations applied now.
    """
    check_schema_name(schema)
    sources: list[tuple[str, Path]] = [("shared", SHARED_MIGRATIONS)]
    if service_dir is not None:
        sources.append((schema, service_dir))
    applied_now: list[str] = []
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock(hashtext($1))", f"civicroute.migrate.{schema}")
        try:
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            await conn.execute(
                """
                CREATE TABLE IF NOT EXISTS schema_migrations (
                    source     text        NOT NULL,
                    version    int         NOT NULL,
                    name       text        NOT NULL,
                    checksum   text        NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now(),
                    PRIMARY KEY (source, version)
                )"""
            )
            for source, directory in sources:
                done = {
                    row["version"]: row
                    for row in await conn.fetch(
                        "SELECT version, name, checksum FROM schema_migrations WHERE source = $1",
                        source,
                    )
                }
                for version, name, sql in _migration_files(directory):
                    checksum = hashlib.sha256(sql.encode()).hexdigest()
                    if version in done:
                        if done[version]["checksum"] != checksum:
                            raise MigrationError(
                                f"{directory / name}: changed after it was applied; "
                                "add a new migration instead"
                            )
                        continue
                    async with conn.transaction():
                        await conn.execute(sql)
                        await conn.execute(
                            "INSERT INTO schema_migrations (source, version, name, checksum)"
                            " VALUES ($1, $2, $3, $4)",
                            source,
                            version,
                            name,
                            checksum,
                        )
                    applied_now.append(f"{source}/{name}")
            await conn.execute(
                "SELECT pg_advisory_unlock(hashtext($1))", f"civicroute.migrate.{schema}"
            )
        except BaseException:
            # The pool does not reset sessions (see ``_keep_session``): a lock left held
            # would stop every later start, so the connection goes, and its lock with it.
            conn.terminate()
            raise
    if applied_now:
        log.info("migrations applied", schema=schema, migrations=applied_now)
    return applied_now


CLAIM_EVENTS = (
    "INSERT INTO processed_events (event_id) SELECT unnest($1::text[])"
    " ON CONFLICT DO NOTHING RETURNING event_id"
)
"""The claim of event ids $1 (those new come back), for a WITH clause of a service's own."""


async def claim_new_events(conn: asyncpg.Connection, event_ids: Sequence[str]) -> set[str]:
    """Record event ids as processed; return those not seen before.

    Call inside the transaction that applies the events, so a redelivered
    event is recognised exactly when its effects were committed.
    """
    if not event_ids:
        return set()
    rows = await conn.fetch(CLAIM_EVENTS, list(event_ids))
    return {row["event_id"] for row in rows}


async def claim_and_fetch(
    conn: asyncpg.Connection, event_ids: Sequence[str], query: str, *args: Any
) -> tuple[set[str], list[asyncpg.Record]]:
    """``claim_new_events`` and a read the batch needs, in one round trip: ``query`` takes
    its parameters from $2 and may lock (FOR UPDATE). Each round trip waits to be scheduled
    on a busy machine, and this one starts every consumer batch.

    The two share one snapshot (the read does not see the ids claimed here), and which of
    them takes its locks first is the planner's choice. Two consumers hold the same events
    at once only when one of them is a zombie past its session; should their claims and
    locks then cross, PostgreSQL breaks the deadlock and the batch is retried as any
    transient database error is."""
    rows = await conn.fetch(
        f"""
        WITH fresh AS ({CLAIM_EVENTS})
        SELECT (SELECT array_agg(event_id) FROM fresh) AS claimed, r.*
        FROM (SELECT 1) AS one
        LEFT JOIN LATERAL (SELECT true AS found, q.* FROM ({query}) AS q) AS r ON true""",  # noqa: S608
        list(event_ids),
        *args,
    )
    claimed = rows[0]["claimed"] if rows else None
    return set(claimed or ()), [row for row in rows if row["found"]]


async def ping(pool: asyncpg.Pool) -> None:
    async with pool.acquire(timeout=2) as conn:
        await conn.fetchval("SELECT 1", timeout=2)


def columns(rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
    """Rows as one list per column: the array parameters of an ``unnest(…)`` statement,
    which writes or matches a whole batch in one round trip."""
    return [list(column) for column in zip(*rows, strict=True)]


def columns_of(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """``columns`` that also gives ``width`` empty arrays for no rows, for a statement whose
    every part runs whether or not it has rows."""
    return columns(rows) if rows else [[] for _ in range(width)]


def records(names: str, rows: Iterable[Sequence[Any]]) -> list[dict[str, Any]]:
    """Rows as JSON objects keyed by the comma-separated ``names``, the parameter of a
    ``jsonb_populate_recordset(NULL::table, $n)`` statement: it writes a batch with array
    columns in one round trip (``unnest`` would flatten the arrays)."""
    keys = [name.strip() for name in names.split(",")]
    return [dict(zip(keys, row, strict=True)) for row in rows]


def as_records(rows: Iterable[asyncpg.Record]) -> list[dict[str, Any]]:
    return [dict(row) for row in rows]
