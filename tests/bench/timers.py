"""A million armed timers, ten thousand of them due in the same second.

Cases and timers are loaded with COPY while escalation is stopped; the burst is
then moved to fall due a few seconds after escalation is back, and its lateness is read
from the escalations it recorded: the time each firing's transaction committed (when the
escalation and its event exist for anyone else) minus the due time, where PostgreSQL
tracks commit times (``track_commit_timestamp``, on in the bench's own server), else the
time its batch was claimed (``fired_at``), which is earlier by one batch's work.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from deploy.local.procs import tail
from deploy.local.stack import ServiceSet, write_secrets
from shared.citypack import load_pack
from shared.settings import DEFAULT_CITIES_DIR
from shared.topics import TopicNames, ensure_topics
from tests.bench import pg_statements
from tests.bench.figures import percentile, rss_mb
from tests.bench.profiles import start_profiles

LEAD = "water_bureau"


async def timer_burst(
    bootstrap: str,
    database_url: str,
    total: int,
    burst: int,
    workdir: Path,
    *,
    replicas: int = 2,
    profile: bool = False,
    statements_admin_url: str | None = None,
) -> dict[str, Any]:
    """Fire the burst with ``replicas`` escalation processes sharing the database.

    With ``statements_admin_url`` (pg_stat_statements loaded), PostgreSQL's heaviest
    statements from the burst are written to ``pg-statements.txt`` in ``workdir``.
    """
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    topics = TopicNames(f"benchtimers{int(time.time())}.")
    await ensure_topics(bootstrap, topics, 6)
    secrets = workdir / "secrets.yaml"
    write_secrets(secrets, list(load_pack(DEFAULT_CITIES_DIR / "demo-zh").departments))
    env = {
        "CIVIC_KAFKA_BOOTSTRAP": bootstrap,
        "CIVIC_DATABASE_URL": database_url,
        "CIVIC_CITY": "demo-zh",
        "CIVIC_TOPIC_NAMESPACE": topics.namespace,
        "CIVIC_SECRETS_FILE": str(secrets),
        "CIVIC_LOG_LEVEL": "warning",
    }
    # One ServiceSet per replica: each its own port and log file.
    sets = [ServiceSet(workdir / f"replica-{n + 1}", env) for n in range(max(1, replicas))]
    for replica in sets:
        replica.workdir.mkdir(exist_ok=True)
    services = sets[0]
    services.start("escalation", timeout=120)  # creates the schema
    services.stop("escalation")
    loaded = await _arm(database_url, total)
    for replica in sets:
        replica.start("escalation", timeout=120)
    try:
        await asyncio.sleep(3)  # let it settle: connections, first polls
        due = datetime.now(UTC) + timedelta(seconds=5)
        procs = {f"escalation-{n + 1}": r.procs["escalation"] for n, r in enumerate(sets)}
        profiles = start_profiles(procs, workdir, 15) if profile else []
        if statements_admin_url is not None:
            await pg_statements.reset(statements_admin_url)
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(
                "UPDATE escalation.timers SET due_at = $1 WHERE case_id < $2", due, _case(burst)
            )
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                fired = await conn.fetchval("SELECT count(*) FROM escalation.escalations")
                if fired >= burst:
                    break
                for replica in sets:
                    if not replica.procs["escalation"].alive():
                        raise RuntimeError(
                            "escalation exited during the burst:\n"
                            + tail(replica.log_file("escalation"))
                        )
                await asyncio.sleep(0.5)
            at_commit = await conn.fetchval(
                "SELECT current_setting('track_commit_timestamp') = 'on'"
            )
            committed = "pg_xact_commit_timestamp(xmin)" if at_commit else "NULL::timestamptz"
            rows = await conn.fetch(
                "SELECT extract(epoch FROM fired_at - $1::timestamptz) * 1000 AS claimed_ms,"
                f" extract(epoch FROM {committed} - $1::timestamptz) * 1000 AS committed_ms"
                " FROM escalation.escalations",
                due,
            )
            remaining = await conn.fetchval("SELECT count(*) FROM escalation.timers")
        finally:
            await conn.close()
        if statements_admin_url is not None:
            database = database_url.rpartition("/")[2]
            top = await pg_statements.write_top(
                statements_admin_url, database, workdir / "pg-statements.txt"
            )
            print("[bench] timers: PostgreSQL's heaviest statements in the burst:", flush=True)
            for line in top:
                print(f"    {line}", flush=True)
        for spy in profiles:
            await asyncio.to_thread(spy.popen.wait, 60)
        claimed = [max(0.0, float(r["claimed_ms"])) for r in rows]
        lateness = [max(0.0, float(r["committed_ms"])) for r in rows] if at_commit else claimed
        return {
            "armed": total,
            "burst": burst,
            "fired": len(lateness),
            "load_seconds": loaded,
            "lateness_at": "commit" if at_commit else "claim",
            "lateness_p50_ms": round(percentile(lateness, 50), 1) if lateness else None,
            "lateness_p99_ms": round(percentile(lateness, 99), 1) if lateness else None,
            "lateness_max_ms": round(max(lateness), 1) if lateness else None,
            "claimed_p99_ms": round(percentile(claimed, 99), 1) if claimed else None,
            "timers_left_armed": remaining,
            "replicas": len(sets),
            "escalation_rss_mb": max(rss_mb(proc.pid) for proc in procs.values()),
        }
    finally:
        for replica in sets:
            replica.stop()


def _case(n: int) -> str:
    return f"T{n:09d}"


async def _arm(database_url: str, total: int) -> float:
    """COPY ``total`` dispatched cases, each with its sign-for timer days ahead."""
    started = time.perf_counter()
    now = datetime.now(UTC)
    conn = await asyncpg.connect(database_url)
    try:
        chunk = 100_000
        for first in range(0, total, chunk):
            numbers = range(first, min(first + chunk, total))
            deadlines = [now + timedelta(days=3, seconds=n % 86_400) for n in numbers]
            await conn.copy_records_to_table(
                "cases",
                schema_name="escalation",
                columns=[
                    "case_id",
                    "state",
                    "lead",
                    "category",
                    "urgency",
                    "sla_policy",
                    "dispatched_at",
                    "sign_for_due",
                ],
                records=[
                    (
                        _case(n),
                        "dispatched",
                        LEAD,
                        "water.pollution_supply",
                        "general",
                        "general",
                        now,
                        d,
                    )
                    for n, d in zip(numbers, deadlines, strict=True)
                ],
            )
            await conn.copy_records_to_table(
                "timers",
                schema_name="escalation",
                columns=["case_id", "clock", "level", "repeat", "deadline", "due_at"],
                records=[
                    (_case(n), "sign_for", 1, 0, d, d)
                    for n, d in zip(numbers, deadlines, strict=True)
                ],
            )
        await conn.execute("ANALYZE escalation.timers")
        await conn.execute("ANALYZE escalation.cases")
    finally:
        await conn.close()
    return round(time.perf_counter() - started, 1)
