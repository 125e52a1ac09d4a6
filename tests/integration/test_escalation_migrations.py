"""escalation's schema changes on a database that already holds cases (real PostgreSQL)."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from services.escalation import store
from services.escalation.app import MIGRATIONS
from shared.db import connect_pool, migrate

AT = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
DEADLINE = AT + timedelta(hours=2)
FIRED = DEADLINE + timedelta(seconds=1)


async def _old_style_history(conn: asyncpg.Connection) -> None:
    """A case as the code before migration 005 wrote it: its escalation twice, once as the
    fire-once record and once as a timeline row."""
    await conn.execute(
        """
        INSERT INTO cases (case_id, state, lead, category, urgency, sla_policy,
                           dispatched_at, sign_for_due)
        VALUES ('C-1', 'dispatched', 'water', 'water.outage', 'general', 'general', $1, $2)""",
        AT,
        DEADLINE,
    )
    await conn.execute(
        """
        INSERT INTO escalations (case_id, clock, deadline, level, repeat, due_at, fired_at,
                                 department)
        VALUES ('C-1', 'sign_for', $1, 1, 0, $1, $2, 'water')""",
        DEADLINE,
        FIRED,
    )
    rows = [
        (AT, "civicroute.case.dispatched.v1", {"lead": "water"}),
        (
            FIRED,
            "civicroute.case.escalated.v1",
            {
                "clock": "sign_for",
                "level": 1,
                "repeat": 0,
                "due_at": DEADLINE.isoformat().replace("+00:00", "Z"),
                "fired_at": FIRED.isoformat().replace("+00:00", "Z"),
                "targets": ["duty_contact", "supervisor"],
            },
        ),
        (FIRED + timedelta(minutes=5), "civicroute.case.signed.v1", {}),
    ]
    for at, kind, detail in rows:
        await conn.execute(
            "INSERT INTO timeline (case_id, at, type, department, detail)"
            " VALUES ('C-1', $1, $2, 'water', $3)",
            at,
            kind,
            detail,
        )


async def test_escalations_written_twice_before_are_kept_once_with_the_history_unchanged(
    database_url: str, tmp_path: Path
) -> None:
    before = tmp_path / "migrations"
    before.mkdir()
    for path in sorted(MIGRATIONS.glob("*.sql")):
        if path.name < "005":
            shutil.copy(path, before / path.name)
    pool = await connect_pool(database_url, "escalation")
    try:
        await migrate(pool, "escalation", before)
        async with pool.acquire() as conn:
            await _old_style_history(conn)
            # What the case's history showed then: its timeline rows.
            history_before = [
                dict(r)
                for r in await conn.fetch(
                    "SELECT at, type, department, actor, detail FROM timeline ORDER BY id"
                )
            ]
        applied = await migrate(pool, "escalation", MIGRATIONS)
        async with pool.acquire() as conn:
            history_after = await store.timeline(conn, "C-1")
            kept = await conn.fetch("SELECT type FROM timeline ORDER BY id")
            targets = await conn.fetchval("SELECT targets FROM escalations")
            with pytest.raises(asyncpg.RaiseError, match="escalations is append-only"):
                await conn.execute("DELETE FROM escalations")
    finally:
        await pool.close()
    assert applied[0] == "escalation/005_escalations_in_the_timeline.sql"
    assert [r["type"] for r in kept] == [
        "civicroute.case.dispatched.v1",
        "civicroute.case.signed.v1",
    ]
    assert targets == ["duty_contact", "supervisor"]
    assert history_after == history_before
