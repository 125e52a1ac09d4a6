"""intake's SQL. Every function runs inside the caller's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from services.intake.domain import ChannelPayload, format_case_id, payload_hash, to_citizen_request
from services.intake.lifecycle import RECEIVED, CaseView, Change
from shared.events import CitizenRequest


@dataclass(frozen=True)
class Acceptance:
    case_id: str
    created: bool
    conflict: bool = False
    request: CitizenRequest | None = None


@dataclass(frozen=True)
class IdempotencyKey:
    client: str
    key: str


async def accept(
    conn: asyncpg.Connection,
    payload: ChannelPayload,
    received_at: datetime,
    *,
    category: str | None = None,
    idempotency: IdempotencyKey | None = None,
) -> Acceptance:
    """Store the request once per (channel, source_ref); say whether it is new.

    A second delivery of the same payload is a duplicate (created=False); a
    different payload under the same identity, or under the same
    Idempotency-Key, is a conflict. Concurrent deliveries are safe: the unique
    constraints decide, and the loser reads the winner's row.
    """
    fingerprint = payload_hash(payload)
    if idempotency is not None:
        # Serialise the holders of one key so the second waits for the first's commit.
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            f"idem\x1f{idempotency.client}\x1f{idempotency.key}",
        )
        known = await conn.fetchrow(
            "SELECT case_id, payload_hash FROM idempotency_keys WHERE client = $1 AND key = $2",
            idempotency.client,
            idempotency.key,
        )
        if known is not None:
            return Acceptance(known["case_id"], False, known["payload_hash"] != fingerprint)
    outcome = await _accept_once(conn, payload, received_at, fingerprint, category)
    if idempotency is not None and not outcome.conflict:
        await conn.execute(
            "INSERT INTO idempotency_keys (client, key, payload_hash, case_id)"
            " VALUES ($1, $2, $3, $4)",
            idempotency.client,
            idempotency.key,
            fingerprint,
            outcome.case_id,
        )
    return outcome


async def _accept_once(
    conn: asyncpg.Connection,
    payload: ChannelPayload,
    received_at: datetime,
    fingerprint: str,
    category: str | None,
) -> Acceptance:
    existing = await _find(conn, payload.channel, payload.source_ref)
    if existing is not None:
        return Acceptance(existing["case_id"], False, existing["payload_hash"] != fingerprint)
    number = await conn.fetchval("SELECT nextval('case_number')")
    case_id = format_case_id(number, received_at)
    request = to_citizen_request(payload, case_id=case_id, received_at=received_at)
    inserted = await conn.fetchval(
        """
        INSERT INTO requests
            (case_id, channel, source_ref, payload_hash, request, received_at, requested_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7)
        ON CONFLICT (channel, source_ref) DO NOTHING
        RETURNING case_id""",
        case_id,
        payload.channel,
        payload.source_ref,
        fingerprint,
        request.model_dump(mode="json"),
        received_at,
        request.submitted_at or received_at,
    )
    if inserted is None:  # a concurrent delivery of the same request won the race
        winner = await _find(conn, payload.channel, payload.source_ref)
        assert winner is not None
        return Acceptance(winner["case_id"], False, winner["payload_hash"] != fingerprint)
    await conn.execute(
        "INSERT INTO case_status (case_id, state, category, updated_at) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (case_id) DO NOTHING",
        case_id,
        RECEIVED,
        category,
        received_at,
    )
    return Acceptance(case_id, True, False, request)


async def _find(conn: asyncpg.Connection, channel: str, source_ref: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT case_id, payload_hash FROM requests WHERE channel = $1 AND source_ref = $2",
        channel,
        source_ref,
    )


async def apply_changes(conn: asyncpg.Connection, changes: list[tuple[str, Change]]) -> None:
    """Fold (event id, change) pairs, in order, into the cases' public state and history:
    two pipelined statements for the whole batch, not two round trips per event."""
    history = [
        (event_id, c.case_id, c.at, c.kind, c.state, c.department, c.note)
        for event_id, c in changes
        if c.in_history
    ]
    if history:
        await conn.executemany(
            "INSERT INTO case_history (event_id, case_id, at, kind, state, department, note)"
            " VALUES ($1, $2, coalesce($3, now()), $4, $5, $6, $7)"
            " ON CONFLICT (event_id) DO NOTHING",
            history,
        )
    if not changes:
        return
    # A case first heard of through its events (never through intake) still gets a row.
    await conn.executemany(
        """
        INSERT INTO case_status (case_id, state, category, department, resolve_due,
                                 status_notes, updated_at)
        VALUES ($1, coalesce($2, 'received'), $3, $4, $5, $6, coalesce($7, now()))
        ON CONFLICT (case_id) DO UPDATE SET
            state        = coalesce($2, case_status.state),
            category     = coalesce($3, case_status.category),
            department   = CASE WHEN $2 = 'dispatched' OR case_status.department IS NULL
                                THEN coalesce($4, case_status.department)
                                ELSE case_status.department END,
            resolve_due  = coalesce($5, case_status.resolve_due),
            status_notes = CASE WHEN $2 IS NOT NULL THEN $6 ELSE case_status.status_notes END,
            updated_at   = greatest(case_status.updated_at, coalesce($7, now()))""",
        [
            (c.case_id, c.state, c.category, c.department, c.resolve_due, c.note, c.at)
            for _, c in changes
        ],
    )


def _view(row: asyncpg.Record, history: list[dict[str, Any]] | None = None) -> CaseView:
    return CaseView(
        request=CitizenRequest.model_validate(row["request"]),
        requested_at=row["requested_at"],
        state=row["state"],
        category=row["category"],
        department=row["department"],
        resolve_due=row["resolve_due"],
        status_notes=row["status_notes"],
        updated_at=row["updated_at"],
        history=history or [],
    )


async def get_case(conn: asyncpg.Connection, case_id: str) -> CaseView | None:
    row = await conn.fetchrow(
        "SELECT * FROM case_views WHERE case_id = $1",
        case_id,
    )
    if row is None:
        return None
    history = await conn.fetch(
        "SELECT at, kind, state, department, note FROM case_history"
        " WHERE case_id = $1 ORDER BY at, event_id",
        case_id,
    )
    return _view(row, [dict(h) for h in history])


async def get_request(conn: asyncpg.Connection, case_id: str) -> CitizenRequest | None:
    row = await conn.fetchrow("SELECT request FROM requests WHERE case_id = $1", case_id)
    return CitizenRequest.model_validate(row["request"]) if row else None


@dataclass(frozen=True)
class CaseFilter:
    """A page of cases: by ids (overrides the rest) or by time window, category, state."""

    case_ids: Sequence[str] = ()
    start: datetime | None = None
    end: datetime | None = None
    categories: Sequence[str] | None = None  # None: any
    closed: bool | None = None  # None: open and closed
    closed_states: Sequence[str] = ()
    limit: int = 1000
    offset: int = 0


async def find_cases(conn: asyncpg.Connection, query: CaseFilter) -> list[CaseView]:
    if query.case_ids:
        rows = await conn.fetch(
            "SELECT * FROM case_views WHERE case_id = ANY($1::text[])"
            " ORDER BY requested_at DESC, case_id LIMIT $2 OFFSET $3",
            list(query.case_ids),
            query.limit,
            query.offset,
        )
        return [_view(row) for row in rows]
    rows = await conn.fetch(
        """
        SELECT * FROM case_views
        WHERE requested_at >= $1 AND requested_at <= $2
          AND ($3::text[] IS NULL OR category = ANY($3::text[]))
          AND ($4::boolean IS NULL OR (state = ANY($5::text[])) = $4)
        ORDER BY requested_at DESC, case_id
        LIMIT $6 OFFSET $7""",
        query.start,
        query.end,
        list(query.categories) if query.categories is not None else None,
        query.closed,
        list(query.closed_states),
        query.limit,
        query.offset,
    )
    return [_view(row) for row in rows]


async def case_for_token(conn: asyncpg.Connection, token: str) -> str | None:
    """Open311 tokens are the source_ref intake gave an Open311 POST."""
    return await conn.fetchval(
        "SELECT case_id FROM requests WHERE channel = 'app' AND source_ref = $1", token
    )
