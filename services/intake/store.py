"""intake's SQL. Every function runs inside the caller's transaction."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

import asyncpg

from services.intake.domain import ChannelPayload, format_case_id, payload_hash, to_citizen_request
from services.intake.lifecycle import RECEIVED, CaseView, Change, in_rounds
from shared.db import claim_and_fetch, columns_of
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


@dataclass(frozen=True)
class Submission:
    """A request as it arrived: the payload, when intake had it, the category its hint names."""

    payload: ChannelPayload
    received_at: datetime
    category: str | None = None

    @cached_property
    def fingerprint(self) -> str:
        return payload_hash(self.payload)


async def accept(
    conn: asyncpg.Connection,
    submission: Submission,
    *,
    idempotency: IdempotencyKey | None = None,
) -> Acceptance:
    """Store one request, as :func:`accept_many` does, honouring an Idempotency-Key.

    The same key again with the same payload returns the first case; with a
    different payload it is a conflict.
    """
    if idempotency is None:
        return (await accept_many(conn, [submission]))[0]
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
        return Acceptance(known["case_id"], False, known["payload_hash"] != submission.fingerprint)
    outcome = (await accept_many(conn, [submission]))[0]
    if not outcome.conflict:
        await conn.execute(
            "INSERT INTO idempotency_keys (client, key, payload_hash, case_id)"
            " VALUES ($1, $2, $3, $4)",
            idempotency.client,
            idempotency.key,
            submission.fingerprint,
            outcome.case_id,
        )
    return outcome


@dataclass
class _Identity:
    """What one (channel, source_ref) resolved to in a batch."""

    case_id: str
    fingerprint: str
    created: bool = False
    request: CitizenRequest | None = None


Known = dict[tuple[str, str], _Identity]
"""What the database holds for some (channel, source_ref) identities."""


async def accept_many(
    conn: asyncpg.Connection, submissions: Sequence[Submission], known: Known | None = None
) -> list[Acceptance]:
    """Store each request once per (channel, source_ref); say, in order, which are new.

    A second delivery of the same payload is a duplicate (created=False) and
    returns the first's case; a different payload under the same identity is a
    conflict. That holds within the batch too. Concurrent deliveries are safe:
    the unique constraint decides, and the loser reads the winner's row.
    A whole batch costs four statements, however many requests it holds (three when
    ``known``, read by ``claim_and_find`` in this transaction, covers its identities).
    """
    fingerprints = [s.fingerprint for s in submissions]
    identities = [(s.payload.channel, s.payload.source_ref) for s in submissions]
    resolved = known.copy() if known is not None else await _find_many(conn, identities)
    fresh: dict[tuple[str, str], int] = {}  # identity -> index of its first submission
    for index, identity in enumerate(identities):
        if identity not in resolved and identity not in fresh:
            fresh[identity] = index
    if fresh:
        numbers = sorted(
            await conn.fetchval(
                "SELECT array_agg(nextval('case_number')) FROM generate_series(1, $1)", len(fresh)
            )
        )
        candidates: dict[tuple[str, str], _Identity] = {}
        for number, (identity, index) in zip(numbers, fresh.items(), strict=True):
            s = submissions[index]
            case_id = format_case_id(number, s.received_at)
            request = to_citizen_request(s.payload, case_id=case_id, received_at=s.received_at)
            candidates[identity] = _Identity(case_id, fingerprints[index], True, request)
        stored = await _insert_requests(
            conn, {i: (c, submissions[fresh[i]]) for i, c in candidates.items()}
        )
        lost_races = [identity for identity, c in candidates.items() if c.case_id not in stored]
        resolved |= {i: c for i, c in candidates.items() if c.case_id in stored}
        if lost_races:  # a concurrent delivery of the same request committed first
            resolved |= await _find_many(conn, lost_races)
    outcomes: list[Acceptance] = []
    first_seen: set[tuple[str, str]] = set()
    for identity, fingerprint in zip(identities, fingerprints, strict=True):
        known = resolved[identity]
        created = known.created and identity not in first_seen
        first_seen.add(identity)
        outcomes.append(
            Acceptance(
                known.case_id,
                created,
                known.fingerprint != fingerprint,
                known.request if created else None,
            )
        )
    return outcomes


def _find(first: int) -> str:
    channels, refs = f"${first}", f"${first + 1}"
    return (
        "SELECT r.channel, r.source_ref, r.case_id, r.payload_hash FROM requests r"  # noqa: S608
        f" JOIN unnest({channels}::text[], {refs}::text[]) AS wanted (channel, source_ref)"
        " USING (channel, source_ref)"
    )


def _known(rows: Iterable[asyncpg.Record]) -> Known:
    return {
        (r["channel"], r["source_ref"]): _Identity(r["case_id"], r["payload_hash"]) for r in rows
    }


async def _find_many(conn: asyncpg.Connection, identities: Sequence[tuple[str, str]]) -> Known:
    return _known(await conn.fetch(_find(1), *columns_of(identities, 2)))


async def claim_and_find(
    conn: asyncpg.Connection, event_ids: list[str], identities: Sequence[tuple[str, str]]
) -> tuple[set[str], Known]:
    """Claim a consumer batch's event ids and read what is stored under its requests'
    identities, in one round trip: the new event ids, and ``known`` for ``accept_many``."""
    fresh, rows = await claim_and_fetch(conn, event_ids, _find(2), *columns_of(identities, 2))
    return fresh, _known(rows)


async def _insert_requests(
    conn: asyncpg.Connection, candidates: dict[tuple[str, str], tuple[_Identity, Submission]]
) -> set[str]:
    """Insert the new requests, and the public status of each one stored; return the case
    ids stored (those not beaten to it). One statement."""
    # In identity order: two batches sharing requests wait for each other in the same order.
    rows = sorted(
        ((identity, c, c.request, s) for identity, (c, s) in candidates.items() if c.request),
        key=lambda row: row[0],
    )
    stored = await conn.fetch(
        """
        WITH stored AS (
            INSERT INTO requests
                (case_id, channel, source_ref, payload_hash, request, received_at, requested_at)
            SELECT case_id, channel, source_ref, payload_hash, request, received_at, requested_at
            FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::jsonb[],
                        $6::timestamptz[], $7::timestamptz[])
                 AS r (case_id, channel, source_ref, payload_hash, request, received_at,
                       requested_at)
            ON CONFLICT (channel, source_ref) DO NOTHING
            RETURNING case_id
        ), statuses AS (
            INSERT INTO case_status (case_id, state, category, updated_at)
            SELECT s.case_id, $8, s.category, s.updated_at
            FROM unnest($1::text[], $9::text[], $6::timestamptz[]) AS s (case_id, category,
                                                                         updated_at)
            JOIN stored USING (case_id)
            ON CONFLICT (case_id) DO NOTHING
        )
        SELECT case_id FROM stored""",
        [c.case_id for _, c, _, _ in rows],
        [channel for (channel, _), _, _, _ in rows],
        [ref for (_, ref), _, _, _ in rows],
        [c.fingerprint for _, c, _, _ in rows],
        [r.model_dump(mode="json") for _, _, r, _ in rows],
        [r.received_at for _, _, r, _ in rows],
        [r.submitted_at or r.received_at for _, _, r, _ in rows],
        RECEIVED,
        [s.category for _, _, _, s in rows],
    )
    return {row["case_id"] for row in stored}


def _status_upsert(first: int, *, moves_state: bool) -> str:
    """The upsert of one round's case_status rows from parameters $first…$first+6
    (case_id, state, category, department, resolve_due, note, at). ``moves_state``: every
    row names a new state (its note replaces the shown one, and a dispatch names the
    department); else none does, and state and note stay as they are."""
    case_ids, states, categories, departments, dues, notes, at = (
        f"${n}" for n in range(first, first + 7)
    )
    if moves_state:
        state, status_notes = "EXCLUDED.state", "EXCLUDED.status_notes"
        department = """CASE WHEN EXCLUDED.state = 'dispatched' OR case_status.department IS NULL
                                THEN coalesce(EXCLUDED.department, case_status.department)
                                ELSE case_status.department END"""
    else:
        state, status_notes = "case_status.state", "case_status.status_notes"
        department = "coalesce(case_status.department, EXCLUDED.department)"
    # A case first heard of through its events (never through intake) still gets a row.
    return f"""
        INSERT INTO case_status (case_id, state, category, department, resolve_due,
                                 status_notes, updated_at)
        SELECT case_id, coalesce(state, '{RECEIVED}'), category, department, resolve_due, note,
               coalesce(at, now())
        FROM unnest({case_ids}::text[], {states}::text[], {categories}::text[],
                    {departments}::text[], {dues}::timestamptz[], {notes}::text[],
                    {at}::timestamptz[])
             AS c (case_id, state, category, department, resolve_due, note, at)
        ORDER BY case_id
        ON CONFLICT (case_id) DO UPDATE SET
            state        = {state},
            category     = coalesce(EXCLUDED.category, case_status.category),
            department   = {department},
            resolve_due  = coalesce(EXCLUDED.resolve_due, case_status.resolve_due),
            status_notes = {status_notes},
            updated_at   = greatest(case_status.updated_at, EXCLUDED.updated_at)"""  # noqa: S608 (no input)


# One round of changes: the history of the whole batch (in the first round), and the
# round's status rows, those that move the state apart from those that do not. A round
# names each case once, so the three parts never touch one row.
_APPLY_ROUND = f"""
    WITH history AS (
        INSERT INTO case_history (event_id, case_id, at, kind, state, department, note)
        SELECT event_id, case_id, coalesce(at, now()), kind, state, department, note
        FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[],
                    $6::text[], $7::text[])
             AS h (event_id, case_id, at, kind, state, department, note)
        ON CONFLICT (event_id) DO NOTHING
    ), moved AS ({_status_upsert(8, moves_state=True)}
    ){_status_upsert(15, moves_state=False)}"""  # noqa: S608 (parameter numbers only)


def _status_columns(round_: list[tuple[str, Change]], *, moves_state: bool) -> list[list[Any]]:
    """The parameters of ``_status_upsert(…, moves_state=…)`` for a round's changes."""
    return columns_of(
        [
            (c.case_id, c.state, c.category, c.department, c.resolve_due, c.note, c.at)
            for _, c in round_
            if (c.state is not None) == moves_state
        ],
        7,
    )


async def apply_changes(conn: asyncpg.Connection, changes: list[tuple[str, Change]]) -> None:
    """Fold (event id, change) pairs, in order, into the cases' public state and history:
    one statement per round of ``in_rounds`` (as many as the most events one case has in
    the batch), not one per event, which cost PostgreSQL an execution and asyncpg an
    encoding per row."""
    history = [
        (event_id, c.case_id, c.at, c.kind, c.state, c.department, c.note)
        for event_id, c in changes
        if c.in_history
    ]
    for n, round_ in enumerate(in_rounds(changes)):
        await conn.execute(
            _APPLY_ROUND,
            *columns_of(history if n == 0 else [], 7),
            *_status_columns(round_, moves_state=True),
            *_status_columns(round_, moves_state=False),
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
