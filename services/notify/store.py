"""notify's SQL. Every function runs inside the caller's transaction unless it says otherwise."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from services.notify.domain import Attempt
from services.notify.notices import Contact
from shared.db import claim_and_fetch, columns_of, records
from shared.events import Urgency

STATUSES = ("pending", "delivered", "dead")
LEDGER_COLUMNS = """id, webhook_id, kind, case_id, department, event_id, event_type, status,
    attempts, tries, next_attempt_at, window_start, last_status_code, last_error, dead_reason,
    replays, created_at, finished_at"""


@dataclass(frozen=True)
class NewDelivery:
    webhook_id: str
    case_id: str
    department: str
    event_id: str
    event_type: str
    body: bytes
    kind: str = "webhook"
    not_before: datetime | None = None  # None: now


@dataclass(frozen=True)
class Holders:
    lead: str | None
    cooperating: list[str]
    urgency: Urgency | None


NO_HOLDERS = Holders(None, [], None)


_CASE_FACTS = """
    SELECT ids.case_id, h.case_id IS NOT NULL AS held, h.lead, h.cooperating, h.urgency,
           c.case_id IS NOT NULL AS reachable, c.phone, c.email, c.language
    FROM unnest($2::text[]) AS ids (case_id)
    LEFT JOIN case_holders h USING (case_id)
    LEFT JOIN case_contacts c USING (case_id)"""


async def claim_and_read_facts(
    conn: asyncpg.Connection, event_ids: Sequence[str], case_ids: Sequence[str]
) -> tuple[set[str], dict[str, Holders], dict[str, Contact]]:
    """The new among ``event_ids`` (claimed), who holds each case and how to reach its
    citizen (for the cases that have them): one round trip for a batch."""
    fresh, rows = await claim_and_fetch(conn, event_ids, _CASE_FACTS, sorted(set(case_ids)))
    holders = {
        row["case_id"]: Holders(
            row["lead"],
            list(row["cooperating"]),
            Urgency(row["urgency"]) if row["urgency"] else None,
        )
        for row in rows
        if row["held"]
    }
    contacts = {
        row["case_id"]: Contact(row["phone"], row["email"], row["language"])
        for row in rows
        if row["reachable"]
    }
    return fresh, holders, contacts


# The batch's holders, contacts and deliveries in one round trip: each round trip waits to
# be scheduled on a busy machine, and the consumer is on every request's path. Each WITH
# clause writes its own table, so their running in no set order does not matter; rows go
# in case order, so two replicas writing the same cases never deadlock.
_SAVE_INGEST = """
    WITH contacts AS (
        INSERT INTO case_contacts (case_id, phone, email, language)
        SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
        ON CONFLICT (case_id) DO UPDATE
        SET phone = COALESCE(EXCLUDED.phone, case_contacts.phone),
            email = COALESCE(EXCLUDED.email, case_contacts.email),
            language = COALESCE(EXCLUDED.language, case_contacts.language),
            updated_at = now()
    ), holders AS (
        INSERT INTO case_holders (case_id, lead, cooperating, urgency)
        SELECT case_id, lead, cooperating, urgency
        FROM jsonb_populate_recordset(NULL::case_holders, $5)
        ON CONFLICT (case_id) DO UPDATE
        SET lead = EXCLUDED.lead, cooperating = EXCLUDED.cooperating,
            urgency = EXCLUDED.urgency, updated_at = now()
    )
    INSERT INTO deliveries (webhook_id, case_id, department, event_id, event_type, body,
                            kind, next_attempt_at, window_start)
    SELECT webhook_id, case_id, department, event_id, event_type, body, kind,
           COALESCE(not_before, now()), COALESCE(not_before, now())
    FROM unnest($6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::bytea[],
                $12::text[], $13::timestamptz[]) WITH ORDINALITY
         AS d (webhook_id, case_id, department, event_id, event_type, body, kind, not_before, n)
    ORDER BY n
    ON CONFLICT (webhook_id) DO NOTHING"""


async def save_ingest(
    conn: asyncpg.Connection,
    *,
    holders: Mapping[str, Holders],
    contacts: Mapping[str, Contact],
    deliveries: Sequence[NewDelivery],
) -> None:
    """Record the departments now holding each case (the last dispatch wins), how to reach
    each citizen (a field a later event lacks keeps its value), and queue the deliveries in
    their order (a redelivered event, same webhook-id, adds nothing)."""
    if not (holders or contacts or deliveries):
        return
    await conn.execute(
        _SAVE_INGEST,
        *columns_of(
            [(case_id, c.phone, c.email, c.language) for case_id, c in sorted(contacts.items())],
            4,
        ),
        records(
            "case_id, lead, cooperating, urgency",
            [
                (case_id, h.lead, h.cooperating, h.urgency.value if h.urgency else None)
                for case_id, h in sorted(holders.items())
            ],
        ),
        *columns_of(
            [
                (
                    d.webhook_id,
                    d.case_id,
                    d.department,
                    d.event_id,
                    d.event_type,
                    d.body,
                    d.kind,
                    d.not_before,
                )
                for d in deliveries
            ],
            8,
        ),
    )


# The lease of ``lease_due``: parameters endpoints, their free slots, the ids in flight, the lease.
LEASE_DUE = """
    WITH picked AS (
        SELECT c.id
        FROM unnest($1::text[], $2::int[]) AS f (department, slots)
        CROSS JOIN LATERAL (
            SELECT d.id FROM deliveries d
            WHERE d.department = f.department AND d.status = 'pending'
              AND d.next_attempt_at <= now() AND d.id <> ALL ($3::bigint[])
              AND d.id = (
                  SELECT e.id FROM deliveries e
                  WHERE e.case_id = d.case_id AND e.department = d.department
                    AND e.status = 'pending'
                  ORDER BY e.id LIMIT 1)
            ORDER BY d.next_attempt_at, d.id
            LIMIT f.slots
            FOR UPDATE SKIP LOCKED
        ) AS c
    )
    UPDATE deliveries SET next_attempt_at = now() + $4::interval
    FROM picked WHERE deliveries.id = picked.id
    RETURNING deliveries.id, deliveries.webhook_id, deliveries.kind, deliveries.case_id,
              deliveries.department, deliveries.event_id, deliveries.event_type,
              deliveries.body, deliveries.attempts, deliveries.tries,
              deliveries.window_start"""


async def lease_due(
    conn: asyncpg.Connection,
    *,
    slots: Mapping[str, int],
    in_flight: Sequence[int],
    lease: timedelta,
) -> list[asyncpg.Record]:
    """Take due deliveries, at most ``slots[endpoint]`` for each endpoint named.

    Each endpoint is read on its own (an index range), so a big backlog at one
    cannot crowd out the others. Only the oldest pending delivery of a (case,
    endpoint) qualifies, so a case's event n+1 never overtakes event n. That test is a
    one-row probe of the (case, endpoint) index, not an anti-join: with statistics
    taken when the queue was small, PostgreSQL planned the anti-join as a scan per
    candidate, and a lease took 19 s with 12,000 deliveries pending. The lease
    (next_attempt_at pushed forward) is committed before sending: replicas never
    send the same delivery at once, and a crash only delays it until the lease ends.
    """
    names = [name for name, free in slots.items() if free > 0]
    if not names:
        return []
    return await conn.fetch(
        LEASE_DUE,
        names,
        [slots[name] for name in names],
        list(in_flight),
        lease,
    )


@dataclass(frozen=True)
class Settlement:
    """The outcome of one attempt, to be written: rescheduled (``next_at``) or finished."""

    delivery_id: int
    number: int
    tries: int
    attempt: Attempt
    next_at: datetime | None
    status: str
    dead_reason: str | None


_SETTLE = """
    WITH tried AS (
        INSERT INTO delivery_attempts
            (delivery_id, attempt, status_code, latency_ms, error, retry_after_seconds)
        SELECT * FROM unnest($1::bigint[], $2::int[], $3::int[], $4::int[], $5::text[],
                             $6::int[])
        ON CONFLICT DO NOTHING
    ), again AS (
        UPDATE deliveries d
        SET attempts = u.attempts, tries = u.tries, next_attempt_at = u.next_at,
            last_status_code = u.code, last_error = u.error, updated_at = now()
        FROM unnest($7::bigint[], $8::int[], $9::int[], $10::timestamptz[], $11::int[],
                    $12::text[]) AS u (id, attempts, tries, next_at, code, error)
        WHERE d.id = u.id
    )
    UPDATE deliveries d
    SET status = u.status, attempts = u.attempts, tries = u.tries,
        last_status_code = u.code, last_error = u.error, dead_reason = u.reason,
        finished_at = now(), updated_at = now()
    FROM unnest($13::bigint[], $14::text[], $15::int[], $16::int[], $17::int[], $18::text[],
                $19::text[]) AS u (id, status, attempts, tries, code, error, reason)
    WHERE d.id = u.id"""


async def settle(conn: asyncpg.Connection, items: Sequence[Settlement]) -> None:
    """Record many attempts and their deliveries' new state in one statement (atomic by
    itself). A delivery is settled once per attempt, so the two updates touch different
    rows."""
    if not items:
        return
    again = [i for i in items if i.next_at is not None]
    done = [i for i in items if i.next_at is None]
    await conn.execute(
        _SETTLE,
        *columns_of(
            [
                (
                    i.delivery_id,
                    i.number,
                    i.attempt.status_code,
                    i.attempt.latency_ms,
                    i.attempt.error,
                    i.attempt.retry_after,
                )
                for i in items
            ],
            6,
        ),
        *columns_of(
            [
                (
                    i.delivery_id,
                    i.number,
                    i.tries,
                    i.next_at,
                    i.attempt.status_code,
                    i.attempt.error,
                )
                for i in again
            ],
            6,
        ),
        *columns_of(
            [
                (
                    i.delivery_id,
                    i.status,
                    i.number,
                    i.tries,
                    i.attempt.status_code,
                    i.attempt.error,
                    i.dead_reason,
                )
                for i in done
            ],
            7,
        ),
    )


async def ledger(
    conn: asyncpg.Connection,
    *,
    case_id: str | None,
    department: str | None,
    status: str | None,
    kind: str | None,
    after_id: int,
    limit: int,
) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"""
        SELECT {LEDGER_COLUMNS} FROM deliveries
        WHERE ($1::text IS NULL OR case_id = $1) AND ($2::text IS NULL OR department = $2)
          AND ($3::text IS NULL OR status = $3) AND ($4::text IS NULL OR kind = $4)
          AND id > $5
        ORDER BY id LIMIT $6""",  # noqa: S608 - a constant column list, values are bound
        case_id,
        department,
        status,
        kind,
        after_id,
        limit,
    )


async def delivery(conn: asyncpg.Connection, delivery_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {LEDGER_COLUMNS} FROM deliveries WHERE id = $1",  # noqa: S608 - constant
        delivery_id,
    )


async def attempts(conn: asyncpg.Connection, delivery_ids: Sequence[int]) -> list[asyncpg.Record]:
    return await conn.fetch(
        """
        SELECT delivery_id, attempt, at, status_code, latency_ms, error, retry_after_seconds
        FROM delivery_attempts WHERE delivery_id = ANY($1::bigint[])
        ORDER BY delivery_id, attempt""",
        list(delivery_ids),
    )


async def replay(conn: asyncpg.Connection, delivery_id: int) -> asyncpg.Record | None:
    """Queue a finished delivery again, same webhook-id, with a fresh retry window.

    None when it does not exist or is still pending.
    """
    return await conn.fetchrow(
        f"""
        UPDATE deliveries
        SET status = 'pending', tries = 0, window_start = now(), next_attempt_at = now(),
            dead_reason = NULL, finished_at = NULL, replays = replays + 1, updated_at = now()
        WHERE id = $1 AND status <> 'pending'
        RETURNING {LEDGER_COLUMNS}""",  # noqa: S608 - constant column list
        delivery_id,
    )


async def pending_by_department(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Queue depth and the oldest retry window already open, per endpoint."""
    return await conn.fetch(
        """
        SELECT department, count(*) AS pending,
               min(window_start) FILTER (WHERE window_start <= now()) AS oldest,
               now() AS now
        FROM deliveries WHERE status = 'pending' GROUP BY department"""
    )
