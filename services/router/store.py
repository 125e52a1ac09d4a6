"""router's SQL. Every function runs inside the caller's transaction."""

from __future__ import annotations

import asyncpg

from services.router.domain import Decision
from shared.events import CitizenRequest


async def save_case(conn: asyncpg.Connection, request: CitizenRequest) -> bool:
    """Remember the request (for re-routing); False if the case was already known."""
    inserted = await conn.fetchval(
        "INSERT INTO cases (case_id, request, received_at) VALUES ($1, $2, $3)"
        " ON CONFLICT (case_id) DO NOTHING RETURNING true",
        request.case_id,
        request.model_dump(mode="json"),
        request.received_at,
    )
    return bool(inserted)


async def save_decision(
    conn: asyncpg.Connection, case_id: str, attempt: int, decision: Decision
) -> None:
    await conn.execute(
        """
        INSERT INTO decisions
            (case_id, attempt, outcome, category, lead, cooperating, confidence, trace)
        VALUES ($1, $2, 'dispatched', $3, $4, $5, $6, $7)""",
        case_id,
        attempt,
        decision.category,
        decision.lead,
        decision.cooperating,
        decision.confidence,
        decision.trace,
    )
