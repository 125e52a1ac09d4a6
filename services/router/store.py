"""router's SQL. Every function runs inside the caller's transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from services.router.domain import Decision, Triage, request_text
from shared.db import CLAIM_EVENTS, records
from shared.events import CitizenRequest, CloudEvent, Jurisdiction
from shared.outbox import notify_channel, outbox_columns, outbox_insert


@dataclass(frozen=True)
class CaseState:
    request: CitizenRequest
    attempt: int
    excluded: frozenset[str]


async def claim_and_save_cases(
    conn: asyncpg.Connection, event_ids: list[str], requests: list[tuple[str, CitizenRequest]]
) -> tuple[set[str], set[str]]:
    """Claim ``event_ids`` and remember the requests (event id, request) of those new, for
    re-routing, in one round trip. Returns the new event ids and the case ids not known
    before."""
    row = await conn.fetchrow(
        f"""
        WITH fresh AS ({CLAIM_EVENTS}), saved AS (
            INSERT INTO cases (case_id, request, received_at)
            SELECT r.case_id, r.request::jsonb, r.received_at
            FROM unnest($2::text[], $3::text[], $4::text[], $5::timestamptz[])
                 AS r (event_id, case_id, request, received_at)
            JOIN fresh USING (event_id)
            ON CONFLICT (case_id) DO NOTHING
            RETURNING case_id
        )
        SELECT (SELECT array_agg(event_id) FROM fresh) AS claimed,
               (SELECT array_agg(case_id) FROM saved) AS saved""",  # noqa: S608
        event_ids,
        [event_id for event_id, _ in requests],
        [r.case_id for _, r in requests],
        [r.model_dump_json() for _, r in requests],
        [r.received_at for _, r in requests],
    )
    return set(row["claimed"] or ()), set(row["saved"] or ())


async def lock_case(conn: asyncpg.Connection, case_id: str) -> CaseState | None:
    row = await conn.fetchrow(
        "SELECT request, attempt, excluded FROM cases WHERE case_id = $1 FOR UPDATE", case_id
    )
    if row is None:
        return None
    return CaseState(
        CitizenRequest.model_validate(row["request"]), row["attempt"], frozenset(row["excluded"])
    )


async def update_case(
    conn: asyncpg.Connection, case_id: str, attempt: int, excluded: frozenset[str]
) -> None:
    await conn.execute(
        "UPDATE cases SET attempt = $2, excluded = $3 WHERE case_id = $1",
        case_id,
        attempt,
        sorted(excluded),
    )


def decision_row(
    case_id: str,
    attempt: int,
    decision: Decision,
    *,
    excluded: frozenset[str] = frozenset(),
    model_version: str | None = None,
    decided_by: str | None = None,
    reason: str | None = None,
) -> tuple[Any, ...]:
    """One dispatch decision as ``save_dispatches`` writes it."""
    return (
        case_id,
        attempt,
        decision.category,
        decision.lead,
        decision.cooperating,
        decision.confidence,
        decision.trace,
        decision.method,
        decision.route_id,
        decision.urgency.value,
        decision.sla_policy,
        decision.jurisdiction.model_dump(mode="json"),
        sorted(excluded),
        model_version,
        decided_by,
        reason,
    )


_DECISION_COLUMNS = (
    "case_id, attempt, category, lead, cooperating, confidence, trace, method, route_id,"
    " urgency, sla_policy, jurisdiction, excluded, model_version, decided_by, reason"
)

# The decisions, the events announcing them and the relay's wake-up, and the triage queue's
# length for its gauge: one round trip, as each waits to be scheduled on a busy machine.
_SAVE_DISPATCHES = f"""
    WITH saved AS (
        INSERT INTO decisions (outcome, {_DECISION_COLUMNS})
        SELECT 'dispatched', {_DECISION_COLUMNS}
        FROM jsonb_populate_recordset(NULL::decisions, $1)
    ), queued AS ({outbox_insert(2)})
    SELECT (SELECT count(*) FROM triage WHERE resolved_at IS NULL) AS waiting,
           (SELECT count(pg_notify($5, '')) FROM (SELECT 1 FROM queued LIMIT 1) AS one) AS woken
    """  # noqa: S608 (column names and parameter numbers only)


async def save_dispatches(
    conn: asyncpg.Connection,
    schema: str,
    decisions: list[tuple[Any, ...]],
    messages: list[tuple[str, str | None, CloudEvent]],
) -> int:
    """Record dispatch decisions (``decision_row``) and queue the events; returns how many
    cases wait in triage."""
    row = await conn.fetchrow(
        _SAVE_DISPATCHES,
        records(_DECISION_COLUMNS, decisions),
        *outbox_columns(messages),
        notify_channel(schema),
    )
    return int(row["waiting"])


async def save_triage(
    conn: asyncpg.Connection,
    case_id: str,
    attempt: int,
    triage: Triage,
    *,
    excluded: frozenset[str] = frozenset(),
    model_version: str | None = None,
) -> None:
    """Record the decision to ask a person, and put the case in the queue."""
    await conn.execute(
        """
        INSERT INTO decisions
            (case_id, attempt, outcome, category, confidence, trace, method, jurisdiction,
             excluded, model_version, reason)
        VALUES ($1, $2, 'triage', $3, $4, $5, 'model', $6, $7, $8, $9)""",
        case_id,
        attempt,
        triage.category,
        triage.confidence,
        triage.trace,
        triage.jurisdiction.model_dump(mode="json"),
        sorted(excluded),
        model_version,
        triage.reason,
    )
    await conn.execute(
        """
        INSERT INTO triage
            (case_id, attempt, kind, reason, category, confidence, candidates, jurisdiction)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
        ON CONFLICT (case_id) DO UPDATE SET
            attempt = EXCLUDED.attempt, kind = EXCLUDED.kind, reason = EXCLUDED.reason,
            category = EXCLUDED.category, confidence = EXCLUDED.confidence,
            candidates = EXCLUDED.candidates, jurisdiction = EXCLUDED.jurisdiction,
            queued_at = now(), resolved_at = NULL, resolved_by = NULL""",
        case_id,
        attempt,
        triage.kind,
        triage.reason,
        triage.category,
        triage.confidence,
        triage.candidates,
        triage.jurisdiction.model_dump(mode="json"),
    )


@dataclass(frozen=True)
class Waiting:
    case_id: str
    attempt: int
    kind: str
    reason: str
    category: str | None
    confidence: float
    candidates: list[str]
    jurisdiction: Jurisdiction
    queued_at: datetime
    request: CitizenRequest


def _waiting(row: asyncpg.Record) -> Waiting:
    return Waiting(
        case_id=row["case_id"],
        attempt=row["attempt"],
        kind=row["kind"],
        reason=row["reason"],
        category=row["category"],
        confidence=row["confidence"],
        candidates=list(row["candidates"]),
        jurisdiction=Jurisdiction.model_validate(row["jurisdiction"]),
        queued_at=row["queued_at"],
        request=CitizenRequest.model_validate(row["request"]),
    )


_WAITING = """
    SELECT t.case_id, t.attempt, t.kind, t.reason, t.category, t.confidence, t.candidates,
           t.jurisdiction, t.queued_at, c.request
    FROM triage t JOIN cases c USING (case_id)
    WHERE t.resolved_at IS NULL"""


async def list_triage(conn: asyncpg.Connection, limit: int, offset: int) -> list[Waiting]:
    rows = await conn.fetch(
        _WAITING + " ORDER BY t.queued_at, t.case_id LIMIT $1 OFFSET $2", limit, offset
    )
    return [_waiting(row) for row in rows]


async def count_triage(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM triage WHERE resolved_at IS NULL"))


async def lock_waiting(conn: asyncpg.Connection, case_id: str) -> Waiting | None:
    row = await conn.fetchrow(_WAITING + " AND t.case_id = $1 FOR UPDATE OF t", case_id)
    return _waiting(row) if row is not None else None


async def case_known(conn: asyncpg.Connection, case_id: str) -> bool:
    return bool(await conn.fetchval("SELECT true FROM cases WHERE case_id = $1", case_id))


async def resolve_triage(conn: asyncpg.Connection, case_id: str, operator: str) -> None:
    await conn.execute(
        "UPDATE triage SET resolved_at = now(), resolved_by = $2 WHERE case_id = $1",
        case_id,
        operator,
    )


async def save_example(
    conn: asyncpg.Connection,
    request: CitizenRequest,
    category: str,
    lead: str,
    operator: str,
    reason: str,
) -> None:
    where = request.location
    await conn.execute(
        """
        INSERT INTO labelled_examples
            (case_id, text, category, expected_lead, channel, address, lat, long, grid_id,
             operator, reason)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)""",
        request.case_id,
        request_text(request),
        category,
        lead,
        request.channel.value,
        where.address_text,
        where.lat,
        where.long,
        where.grid_id,
        operator,
        reason,
    )


async def examples(conn: asyncpg.Connection, since: datetime | None = None) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """
        SELECT text, category, expected_lead, channel, address, lat, long, grid_id
        FROM labelled_examples WHERE $1::timestamptz IS NULL OR recorded_at >= $1
        ORDER BY id""",
        since,
    )
    return [dict(row) for row in rows]


async def decisions_of(conn: asyncpg.Connection, case_id: str) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """
        SELECT attempt, outcome, method, category, lead, cooperating, confidence, route_id,
               urgency, sla_policy, jurisdiction, excluded, model_version, decided_by, reason,
               trace, decided_at
        FROM decisions WHERE case_id = $1 ORDER BY id""",
        case_id,
    )
    return [dict(row) for row in rows]
