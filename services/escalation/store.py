"""escalation's SQL. Every function runs inside the caller's transaction."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from services.escalation.ladder import TimerSpec
from shared.events import CaseDispatched, Clock


async def open_case(conn: asyncpg.Connection, case: CaseDispatched, sign_for_due: datetime) -> bool:
    inserted = await conn.fetchval(
        """
        INSERT INTO cases (case_id, state, lead, cooperating, category, urgency, sla_policy,
                           dispatched_at, sign_for_due)
        VALUES ($1, 'dispatched', $2, $3, $4, $5, $6, $7, $8)
        ON CONFLICT (case_id) DO NOTHING
        RETURNING true""",
        case.case_id,
        case.lead,
        case.cooperating,
        case.category,
        case.urgency.value,
        case.sla_policy,
        case.dispatched_at,
        sign_for_due,
    )
    return bool(inserted)


async def arm(
    conn: asyncpg.Connection,
    case_id: str,
    clock: Clock,
    deadline: datetime,
    timers: list[TimerSpec],
) -> None:
    await conn.executemany(
        """
        INSERT INTO timers (case_id, clock, level, repeat, deadline, due_at)
        VALUES ($1, $2, $3, $4, $5, $6)
        ON CONFLICT (case_id, clock, level, repeat) DO NOTHING""",
        [(case_id, clock.value, t.level, t.repeat, deadline, t.due_at) for t in timers],
    )


async def claim_due_timers(conn: asyncpg.Connection, limit: int) -> list[asyncpg.Record]:
    """Due timers with their case, locked; rows another replica holds are skipped."""
    return await conn.fetch(
        """
        SELECT t.id, t.case_id, t.clock, t.level, t.repeat, t.deadline, t.due_at,
               c.state, c.lead
        FROM timers t JOIN cases c USING (case_id)
        WHERE t.due_at <= now()
        ORDER BY t.due_at
        LIMIT $1
        FOR UPDATE OF t, c SKIP LOCKED""",
        limit,
    )


async def delete_timers(conn: asyncpg.Connection, ids: list[int]) -> None:
    await conn.execute("DELETE FROM timers WHERE id = ANY($1::bigint[])", ids)


async def record_escalation(
    conn: asyncpg.Connection, timer: asyncpg.Record, fired_at: datetime
) -> bool:
    inserted = await conn.fetchval(
        """
        INSERT INTO escalations (case_id, clock, level, repeat, due_at, fired_at)
        VALUES ($1, $2, $3, $4, $5, $6)
        ON CONFLICT DO NOTHING RETURNING true""",
        timer["case_id"],
        timer["clock"],
        timer["level"],
        timer["repeat"],
        timer["due_at"],
        fired_at,
    )
    return bool(inserted)


async def next_due(conn: asyncpg.Connection) -> datetime | None:
    return await conn.fetchval("SELECT min(due_at) FROM timers")


async def lock_case(conn: asyncpg.Connection, case_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM cases WHERE case_id = $1 FOR UPDATE", case_id)


async def remember_callback(
    conn: asyncpg.Connection, webhook_id: str, department: str, case_id: str, action: str
) -> bool:
    """False if this webhook-id was seen before (a replay)."""
    inserted = await conn.fetchval(
        "INSERT INTO callbacks (webhook_id, department, case_id, action) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT DO NOTHING RETURNING true",
        webhook_id,
        department,
        case_id,
        action,
    )
    return bool(inserted)


async def mark_signed(
    conn: asyncpg.Connection, case_id: str, at: datetime, actor: str | None
) -> None:
    await conn.execute(
        "UPDATE cases SET state = 'signed', signed_at = $2, signed_by = $3, updated_at = now()"
        " WHERE case_id = $1",
        case_id,
        at,
        actor,
    )
    await conn.execute(
        "DELETE FROM timers WHERE case_id = $1 AND clock = $2", case_id, Clock.SIGN_FOR.value
    )
