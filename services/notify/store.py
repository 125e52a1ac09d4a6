"""notify's SQL. Every function runs inside the caller's transaction unless it says otherwise."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg


@dataclass(frozen=True)
class NewDelivery:
    webhook_id: str
    case_id: str
    department: str
    event_id: str
    event_type: str
    body: bytes


async def set_holders(
    conn: asyncpg.Connection, case_id: str, lead: str, cooperating: list[str]
) -> None:
    await conn.execute(
        """
        INSERT INTO case_holders (case_id, lead, cooperating) VALUES ($1, $2, $3)
        ON CONFLICT (case_id) DO UPDATE
        SET lead = EXCLUDED.lead, cooperating = EXCLUDED.cooperating, updated_at = now()""",
        case_id,
        lead,
        cooperating,
    )


async def holders(conn: asyncpg.Connection, case_id: str) -> tuple[str | None, list[str]]:
    row = await conn.fetchrow(
        "SELECT lead, cooperating FROM case_holders WHERE case_id = $1", case_id
    )
    return (row["lead"], list(row["cooperating"])) if row else (None, [])


async def add_deliveries(conn: asyncpg.Connection, deliveries: list[NewDelivery]) -> None:
    await conn.executemany(
        """
        INSERT INTO deliveries (webhook_id, case_id, department, event_id, event_type, body)
        VALUES ($1, $2, $3, $4, $5, $6)
        ON CONFLICT (webhook_id) DO NOTHING""",
        [
            (d.webhook_id, d.case_id, d.department, d.event_id, d.event_type, d.body)
            for d in deliveries
        ],
    )


async def lease_due(conn: asyncpg.Connection, limit: int, lease: timedelta) -> list[asyncpg.Record]:
    """Take due deliveries whose case has nothing older pending for that department.

    The lease (next_attempt_at pushed forward) is committed before sending, so
    replicas never send the same delivery at once and a crash only delays it.
    """
    return await conn.fetch(
        """
        WITH due AS (
            SELECT d.id FROM deliveries d
            WHERE d.status = 'pending' AND d.next_attempt_at <= now()
              AND NOT EXISTS (
                  SELECT 1 FROM deliveries e
                  WHERE e.case_id = d.case_id AND e.department = d.department
                    AND e.status = 'pending' AND e.id < d.id)
            ORDER BY d.next_attempt_at
            LIMIT $1
            FOR UPDATE SKIP LOCKED
        )
        UPDATE deliveries SET next_attempt_at = now() + $2::interval
        FROM due WHERE deliveries.id = due.id
        RETURNING deliveries.id, deliveries.webhook_id, deliveries.case_id,
                  deliveries.department, deliveries.event_type, deliveries.body,
                  deliveries.attempts, deliveries.created_at""",
        limit,
        lease,
    )


async def record_attempt(
    conn: asyncpg.Connection,
    delivery_id: int,
    attempt: int,
    status_code: int | None,
    latency_ms: float,
    error: str | None,
) -> None:
    await conn.execute(
        "INSERT INTO delivery_attempts (delivery_id, attempt, status_code, latency_ms, error)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        delivery_id,
        attempt,
        status_code,
        latency_ms,
        error,
    )


async def finish(
    conn: asyncpg.Connection,
    delivery_id: int,
    status: str,
    attempts: int,
    code: int | None,
    error: str | None,
) -> None:
    await conn.execute(
        """
        UPDATE deliveries SET status = $2, attempts = $3, last_status_code = $4, last_error = $5,
                              finished_at = now()
        WHERE id = $1""",
        delivery_id,
        status,
        attempts,
        code,
        error,
    )


async def reschedule(
    conn: asyncpg.Connection,
    delivery_id: int,
    attempts: int,
    at: datetime,
    code: int | None,
    error: str | None,
) -> None:
    await conn.execute(
        """
        UPDATE deliveries
        SET attempts = $2, next_attempt_at = $3, last_status_code = $4, last_error = $5
        WHERE id = $1""",
        delivery_id,
        attempts,
        at,
        code,
        error,
    )


async def pending_count(conn: asyncpg.Connection) -> int:
    return await conn.fetchval("SELECT count(*) FROM deliveries WHERE status = 'pending'")
