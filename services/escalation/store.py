"""escalation's SQL. Every function runs inside the caller's transaction."""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from services.escalation.ladder import TimerSpec
from services.escalation.lifecycle import HELD, Case, Extension, State
from shared.db import claim_and_fetch, columns_of, records
from shared.events import CaseEscalated, Clock, CloudEvent, EventType, Rating
from shared.outbox import notify_channel, outbox_columns, outbox_insert

_HELD = sorted(state.value for state in HELD)

# --- cases ---------------------------------------------------------------------------------


def case_from_row(row: asyncpg.Record | dict[str, Any]) -> Case:
    pending = None
    if row["ext_new_due"] is not None:
        pending = Extension(
            row["ext_new_due"], row["ext_reason"], row["ext_requested_at"], row["ext_actor"]
        )
    return Case(
        case_id=row["case_id"],
        state=State(row["state"]),
        category=row["category"],
        urgency=row["urgency"],
        lead=row["lead"],
        cooperating=tuple(row["cooperating"] or ()),
        sla_policy=row["sla_policy"],
        attempt=row["attempt"],
        excluded=tuple(row["excluded"] or ()),
        return_count=row["return_count"],
        dispatched_at=row["dispatched_at"],
        sign_for_due=row["sign_for_due"],
        contact_due=row["contact_due"],
        resolve_due=row["resolve_due"],
        signed_at=row["signed_at"],
        signed_by=row["signed_by"],
        contacted_at=row["contacted_at"],
        contacted_by=row["contacted_by"],
        resolved_at=row["resolved_at"],
        overdue=row["overdue"],
        reply=row["reply"],
        pending=pending,
        rating=Rating(row["rating"]) if row["rating"] else None,
        reopen_count=row["reopen_count"],
        level=row["level"],
        closed_at=row["closed_at"],
    )


async def load_case(conn: asyncpg.Connection, case_id: str) -> Case | None:
    """The case as it is (for reading; writers lock with ``load_cases``)."""
    row = await conn.fetchrow("SELECT * FROM cases WHERE case_id = $1", case_id)
    return case_from_row(row) if row is not None else None


def _lock_cases(ids: int) -> str:
    """The cases that exist among the ids in parameter $``ids``, locked in a fixed order (no
    deadlocks)."""
    return f"SELECT * FROM cases WHERE case_id = ANY(${ids}::text[]) ORDER BY case_id FOR UPDATE"  # noqa: S608


async def load_cases(conn: asyncpg.Connection, case_ids: Iterable[str]) -> dict[str, Case]:
    """The cases that exist among ``case_ids``, locked."""
    rows = await conn.fetch(_lock_cases(1), sorted(set(case_ids)))
    return {row["case_id"]: case_from_row(row) for row in rows}


async def claim_and_lock_cases(
    conn: asyncpg.Connection, event_ids: list[str], case_ids: Iterable[str]
) -> tuple[set[str], dict[str, Case]]:
    """The new among ``event_ids`` (claimed) and the cases among ``case_ids``, locked: one
    round trip to start a consumer batch."""
    fresh, rows = await claim_and_fetch(conn, event_ids, _lock_cases(2), sorted(set(case_ids)))
    return fresh, {row["case_id"]: case_from_row(row) for row in rows}


async def existing_cases(conn: asyncpg.Connection, case_ids: list[str]) -> list[str]:
    """Which of ``case_ids`` exist (committed), without locking them."""
    rows = await conn.fetch("SELECT case_id FROM cases WHERE case_id = ANY($1::text[])", case_ids)
    return [row["case_id"] for row in rows]


_CASE_COLUMNS = (
    "state, category, urgency, lead, cooperating, sla_policy, attempt, excluded, return_count,"
    " dispatched_at, sign_for_due, contact_due, resolve_due, signed_at, signed_by, contacted_at,"
    " contacted_by, resolved_at, overdue, reply, ext_new_due, ext_reason, ext_requested_at,"
    " ext_actor, rating, reopen_count, level, closed_at"
)


def _case_values(case: Case) -> list[Any]:
    pending = case.pending
    return [
        case.state.value,
        case.category,
        case.urgency,
        case.lead,
        list(case.cooperating),
        case.sla_policy,
        case.attempt,
        list(case.excluded),
        case.return_count,
        case.dispatched_at,
        case.sign_for_due,
        case.contact_due,
        case.resolve_due,
        case.signed_at,
        case.signed_by,
        case.contacted_at,
        case.contacted_by,
        case.resolved_at,
        case.overdue,
        case.reply,
        pending.new_due if pending else None,
        pending.reason if pending else None,
        pending.requested_at if pending else None,
        pending.actor if pending else None,
        case.rating.value if case.rating else None,
        case.reopen_count,
        case.level,
        case.closed_at,
    ]


def holds_assignment(case: Case) -> bool:
    """Whether a department holds the case (then its assignment row is the report's fact)."""
    return (
        case.lead is not None and case.state is not State.TRIAGE and case.dispatched_at is not None
    )


_ASSIGNMENT_COLUMNS = (
    "case_id, attempt, department, category, urgency, state, dispatched_at, sign_for_due,"
    " contact_due, resolve_due, signed_at, contacted_at, resolved_at, overdue, rating, returned"
)


def _assignment_values(case: Case) -> tuple[Any, ...]:
    return (
        case.case_id,
        case.attempt,
        case.lead,
        case.category,
        case.urgency,
        case.state.value,
        case.dispatched_at,
        case.sign_for_due,
        case.contact_due,
        case.resolve_due,
        case.signed_at,
        case.contacted_at,
        case.resolved_at,
        case.overdue,
        case.rating.value if case.rating else None,
        case.state is State.RETURNED,
    )


@dataclass
class Changes:
    """What decisions on one or more cases changed, written together by ``write_changes``.

    A case changed twice keeps its last state; each (case, attempt) assignment and each
    (case, clock) keeps its last value; timeline entries and events keep their order.
    ``answers`` (webhook-id, status, answer) are kept for the callbacks' repeats;
    ``refused`` callbacks changed nothing and are forgotten, so the same one may come again.
    """

    cases: dict[str, Case] = field(default_factory=dict)
    assignments: dict[tuple[str, int], Case] = field(default_factory=dict)
    clocks: dict[tuple[str, Clock], tuple[datetime, TimerSpec] | None] = field(default_factory=dict)
    timeline: list[tuple[str, datetime, str, str | None, str | None, dict[str, Any]]] = field(
        default_factory=list
    )
    events: list[tuple[str, str | None, CloudEvent]] = field(default_factory=list)
    answers: list[tuple[str, int, dict[str, Any]]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    def save(self, case: Case) -> None:
        self.cases[case.case_id] = case
        if holds_assignment(case):
            self.assignments[(case.case_id, case.attempt)] = case

    def set_clock(
        self, case_id: str, clock: Clock, armed: tuple[datetime, TimerSpec] | None
    ) -> None:
        """Replace the clock's timers: ``armed`` is (deadline, timer), None to disarm."""
        self.clocks[(case_id, clock)] = armed


def _timeline_insert(first: int) -> str:
    """The INSERT of timeline entries (case_id, at, type, department, actor, detail) from
    parameters $first…$first+5, in the given order (ids follow it): one set-based statement,
    as one INSERT per row costs PostgreSQL several times more."""
    case_ids, at, types, departments, actors, details = (f"${n}" for n in range(first, first + 6))
    return f"""
        INSERT INTO timeline (case_id, at, type, department, actor, detail)
        SELECT case_id, at, type, department, actor, detail
        FROM unnest({case_ids}::text[], {at}::timestamptz[], {types}::text[],
                    {departments}::text[], {actors}::text[], {details}::jsonb[]) WITH ORDINALITY
             AS e (case_id, at, type, department, actor, detail, n)
        ORDER BY n"""  # noqa: S608 (parameter numbers only)


def _timer_columns(timers: list[tuple[str, Clock, datetime, TimerSpec]]) -> list[list[Any]]:
    """(case, clock, deadline, timer) rows as the six array parameters of a timers insert:
    case_id, clock, level, repeat, deadline, due_at."""
    return columns_of(
        [
            (case_id, clock.value, t.level, t.repeat, deadline, t.due_at)
            for case_id, clock, deadline, t in timers
        ],
        6,
    )


def _write_changes_sql() -> str:
    case_updates = ", ".join(
        f"{c.strip()} = EXCLUDED.{c.strip()}" for c in _CASE_COLUMNS.split(",")
    )
    # Data-modifying WITH clauses run in no set order and see the same snapshot, so no two
    # of them touch one row: the timers kept (same case, clock, deadline, level, repeat)
    # are left out of the delete and only updated, the others deleted or inserted.
    # The timers to delete are found by the index, clock by clock (a lateral subquery the
    # planner cannot turn into a join), and the kept ones left out by a hashed NOT IN: the
    # plain join was planned, on the bench's few thousand timers, as a scan of every timer
    # hashed against the batch, with a nested-loop anti-join against the new timers whose
    # cost grows with the square of the batch. No key is NULL (the timers' columns are NOT
    # NULL, and a NULL among the new ones fails their insert), so NOT IN means what it says.
    # Foreign keys are checked at the statement's end, after a new case's row is in.
    return f"""
        WITH saved_cases AS (
            INSERT INTO cases (case_id, {_CASE_COLUMNS})
            SELECT case_id, {_CASE_COLUMNS} FROM jsonb_populate_recordset(NULL::cases, $1)
            ON CONFLICT (case_id) DO UPDATE SET {case_updates}, updated_at = now()
        ), saved_assignments AS (
            INSERT INTO assignments ({_ASSIGNMENT_COLUMNS})
            SELECT {_ASSIGNMENT_COLUMNS}
            FROM jsonb_populate_recordset(NULL::assignments, $2)
            ON CONFLICT (case_id, attempt) DO UPDATE SET
                state = EXCLUDED.state, resolve_due = EXCLUDED.resolve_due,
                signed_at = EXCLUDED.signed_at, contacted_at = EXCLUDED.contacted_at,
                resolved_at = EXCLUDED.resolved_at, overdue = EXCLUDED.overdue,
                rating = EXCLUDED.rating, returned = assignments.returned OR EXCLUDED.returned
        ), armed AS (
            SELECT DISTINCT ON (case_id, clock, deadline, level, repeat) *
            FROM unnest($5::text[], $6::text[], $7::int[], $8::int[], $9::timestamptz[],
                        $10::timestamptz[]) AS t (case_id, clock, level, repeat, deadline, due_at)
        ), disarmed AS (
            DELETE FROM timers WHERE id = ANY (ARRAY(
                SELECT t.id
                FROM unnest($3::text[], $4::text[]) AS reset (case_id, clock)
                CROSS JOIN LATERAL (
                    SELECT id, deadline, level, repeat FROM timers
                    WHERE timers.case_id = reset.case_id AND timers.clock = reset.clock
                    OFFSET 0) t
                WHERE (reset.case_id, reset.clock, t.deadline, t.level, t.repeat)
                      NOT IN (SELECT case_id, clock, deadline, level, repeat FROM armed)))
        ), rearmed AS (
            INSERT INTO timers (case_id, clock, level, repeat, deadline, due_at)
            SELECT case_id, clock, level, repeat, deadline, due_at FROM armed
            ON CONFLICT (case_id, clock, deadline, level, repeat)
            DO UPDATE SET due_at = EXCLUDED.due_at WHERE timers.due_at <> EXCLUDED.due_at
        ), written AS ({_timeline_insert(11)}
        ), queued AS ({outbox_insert(17)}
        ), forgotten AS (DELETE FROM callbacks WHERE webhook_id = ANY($21::text[])
        ), answered AS (
            UPDATE callbacks SET status = a.status, answer = a.answer
            FROM unnest($22::text[], $23::int[], $24::jsonb[]) AS a (webhook_id, status, answer)
            WHERE callbacks.webhook_id = a.webhook_id
        )
        SELECT pg_notify($20, '') WHERE EXISTS (SELECT 1 FROM queued)"""  # noqa: S608


WRITE_CHANGES = _write_changes_sql()


def write_changes_arguments(schema: str, changes: Changes) -> list[Any]:
    """The parameters of ``WRITE_CHANGES`` for ``changes`` in ``schema``."""
    armed = [
        (case_id, clock, *setting)
        for (case_id, clock), setting in changes.clocks.items()
        if setting is not None
    ]
    return [
        records(
            "case_id, " + _CASE_COLUMNS,
            ((c.case_id, *_case_values(c)) for c in changes.cases.values()),
        ),
        records(_ASSIGNMENT_COLUMNS, map(_assignment_values, changes.assignments.values())),
        [case_id for case_id, _ in changes.clocks],
        [clock.value for _, clock in changes.clocks],
        *_timer_columns(armed),
        *columns_of(changes.timeline, 6),
        *outbox_columns(changes.events),
        notify_channel(schema),
        changes.refused,
        *columns_of(changes.answers, 3),
    ]


async def write_changes(conn: asyncpg.Connection, schema: str, changes: Changes) -> None:
    """One round trip for the whole set, whatever its size: on a busy machine each round
    trip waits to be scheduled, and a statement per table kept the consumer behind."""
    if not (
        changes.cases
        or changes.clocks
        or changes.timeline
        or changes.events
        or changes.answers
        or changes.refused
    ):
        return
    await conn.execute(WRITE_CHANGES, *write_changes_arguments(schema, changes))


# --- timeline ------------------------------------------------------------------------------


async def timeline(conn: asyncpg.Connection, case_id: str) -> list[dict[str, Any]]:
    """The case's history, oldest first: its timeline rows in the order written, and its
    escalations (each recorded once, in its own table) placed among them by time."""
    entries = await conn.fetch(
        "SELECT at, type, department, actor, detail FROM timeline WHERE case_id = $1 ORDER BY id",
        case_id,
    )
    fired = await conn.fetch(
        """
        SELECT clock, deadline, level, repeat, fired_at, department, targets
        FROM escalations WHERE case_id = $1 ORDER BY fired_at, clock, level, repeat""",
        case_id,
    )
    return list(
        heapq.merge(
            (dict(row) for row in entries),
            (_escalation_entry(case_id, row) for row in fired),
            key=lambda entry: entry["at"],
        )
    )


def _escalation_entry(case_id: str, row: asyncpg.Record) -> dict[str, Any]:
    """An escalations row as the history entry its firing announced."""
    payload = CaseEscalated(
        case_id=case_id,
        department=row["department"],
        clock=Clock(row["clock"]),
        level=row["level"],
        repeat=row["repeat"],
        due_at=row["deadline"],
        fired_at=row["fired_at"],
        targets=list(row["targets"]),
    )
    detail = payload.model_dump(mode="json", exclude={"case_id", "department"})
    return {
        "at": row["fired_at"],
        "type": EventType.CASE_ESCALATED.value,
        "department": row["department"],
        "actor": None,
        "detail": detail,
    }


# --- timers --------------------------------------------------------------------------------


# Each due timer's case is read by key (a lateral subquery the planner cannot turn into a
# join): timers fall due and are deleted all day, so between ANALYZEs the statistics take
# long-fired timers for due, and a plain join was planned as a hash join over every case
# (seen at 8,000 cases: 12-14 ms a claim, eight claims a second from an idle replica's two
# loops, growing with the cases until the planner changed its mind). Locks and skips are as
# before: a timer is claimed only with its case, and neither is waited for.
_DUE_TIMERS = """
    SELECT t.id AS timer_id, t.clock, t.level AS timer_level, t.repeat, t.deadline,
           t.due_at, c.*
    FROM timers t
    CROSS JOIN LATERAL (SELECT * FROM cases WHERE cases.case_id = t.case_id OFFSET 0) c
    WHERE t.due_at <= now()
    ORDER BY t.due_at
    LIMIT $1
    FOR UPDATE OF t, c SKIP LOCKED"""

# The claimed timers are deleted by the same statement: one round trip, and a timer fires
# in the transaction that claimed it or, rolled back, stays armed. They are deleted by key
# from an array: as a semi-join (`id IN (SELECT …)`) the same stale statistics planned a
# scan of every timer.
CLAIM_DUE_TIMERS = f"""
    WITH claimed AS ({_DUE_TIMERS}
    ), fired AS (DELETE FROM timers WHERE id = ANY (ARRAY(SELECT timer_id FROM claimed)))
    SELECT * FROM claimed"""  # noqa: S608


async def claim_due_timers(conn: asyncpg.Connection, limit: int) -> list[asyncpg.Record]:
    """Due timers with their case, both locked, the timers deleted; rows another transaction
    holds are skipped."""
    return await conn.fetch(CLAIM_DUE_TIMERS, limit)


async def next_due(conn: asyncpg.Connection) -> datetime | None:
    """When the earliest timer not yet due falls due. Timers already due are left out: a
    claim that came back short took every one not held by another loop, whose to fire
    they are (or, should that loop fail, anyone's at the next poll)."""
    return await conn.fetchval("SELECT min(due_at) FROM timers WHERE due_at > now()")


Breach = tuple[str, str, datetime, str, datetime]
"""(case, clock, deadline, department, breached at) of a clock that passed unmet."""
Escalation = tuple[str, str, datetime, int, int, datetime, datetime, str, list[str]]
"""(case, clock, deadline, level, repeat, due, fired, department, targets) of a firing."""


async def record_firings(
    conn: asyncpg.Connection, breaches: list[Breach], escalations: list[Escalation]
) -> tuple[set[tuple[str, str, datetime]], set[tuple[str, str, datetime, int, int]]]:
    """Insert the breaches and the escalations, in one statement; each escalations row is
    also the firing's entry in the case's history (``timeline``).

    Returns the keys actually inserted, (case, clock, deadline) of the breaches and
    (case, clock, deadline, level, repeat) of the escalations: a timer whose firing is
    already recorded fired before and must not fire again.
    """
    if not (breaches or escalations):
        return set(), set()
    # A text[][] parameter must be rectangular, so each row's targets travel as one string:
    # the city pack admits no comma in a target's name.
    *fields, targets = columns_of(escalations, 9)
    rows = await conn.fetch(
        """
        WITH breached AS (
            INSERT INTO breaches (case_id, clock, deadline, department, breached_at)
            SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[],
                                 $5::timestamptz[])
            ON CONFLICT DO NOTHING
            RETURNING case_id, clock, deadline
        ), escalated AS (
            INSERT INTO escalations (case_id, clock, deadline, level, repeat, due_at, fired_at,
                                     department, targets)
            SELECT case_id, clock, deadline, level, repeat, due_at, fired_at, department,
                   string_to_array(targets, ',')
            FROM unnest($6::text[], $7::text[], $8::timestamptz[], $9::int[], $10::int[],
                        $11::timestamptz[], $12::timestamptz[], $13::text[], $14::text[])
                 AS r (case_id, clock, deadline, level, repeat, due_at, fired_at, department,
                       targets)
            ON CONFLICT DO NOTHING
            RETURNING case_id, clock, deadline, level, repeat
        )
        SELECT case_id, clock, deadline, NULL::int AS level, NULL::int AS repeat FROM breached
        UNION ALL
        SELECT case_id, clock, deadline, level, repeat FROM escalated""",
        *columns_of(breaches, 5),
        *fields,
        [",".join(names) for names in targets],
    )
    return (
        {(r["case_id"], r["clock"], r["deadline"]) for r in rows if r["level"] is None},
        {
            (r["case_id"], r["clock"], r["deadline"], r["level"], r["repeat"])
            for r in rows
            if r["level"] is not None
        },
    )


async def announce_firings(
    conn: asyncpg.Connection,
    schema: str,
    levels: dict[str, int],
    rearm: list[tuple[str, Clock, datetime, TimerSpec]],
    events: list[tuple[str, str | None, CloudEvent]],
) -> None:
    """After firings: raise each case's level to at least ``levels``, arm the next timers
    (case, clock, deadline, timer) and queue the events, in one statement."""
    if not (levels or rearm or events):
        return
    await conn.execute(
        f"""
        WITH raised AS (
            UPDATE cases SET level = greatest(cases.level, raised.level), updated_at = now()
            FROM unnest($1::text[], $2::int[]) AS raised (case_id, level)
            WHERE cases.case_id = raised.case_id
        ), armed AS (
            INSERT INTO timers (case_id, clock, level, repeat, deadline, due_at)
            SELECT * FROM unnest($3::text[], $4::text[], $5::int[], $6::int[],
                                 $7::timestamptz[], $8::timestamptz[])
            ON CONFLICT (case_id, clock, deadline, level, repeat) DO NOTHING
        ), queued AS ({outbox_insert(9)})
        SELECT pg_notify($12, '') WHERE EXISTS (SELECT 1 FROM queued)""",  # noqa: S608
        list(levels),
        list(levels.values()),
        *_timer_columns(rearm),
        *outbox_columns(events),
        notify_channel(schema),
    )


# --- callbacks -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CallbackClaim:
    webhook_id: str
    department: str
    case_id: str
    action: str
    request_sha256: str


async def claim_callbacks(
    conn: asyncpg.Connection, claims: list[CallbackClaim]
) -> dict[str, asyncpg.Record]:
    """Register webhook-ids (distinct); returns the earlier registration of each one that
    was already there. Claimed in webhook-id order, so two replicas never deadlock; a
    registration another transaction is writing is waited for."""
    if not claims:
        return {}
    ordered = sorted(claims, key=lambda claim: claim.webhook_id)
    inserted = await conn.fetch(
        """
        INSERT INTO callbacks (webhook_id, department, case_id, action, request_sha256)
        SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])
        ON CONFLICT DO NOTHING
        RETURNING webhook_id""",
        [c.webhook_id for c in ordered],
        [c.department for c in ordered],
        [c.case_id for c in ordered],
        [c.action for c in ordered],
        [c.request_sha256 for c in ordered],
    )
    fresh = {row["webhook_id"] for row in inserted}
    seen = [c.webhook_id for c in ordered if c.webhook_id not in fresh]
    if not seen:
        return {}
    rows = await conn.fetch(
        "SELECT webhook_id, department, case_id, action, request_sha256, status, answer"
        " FROM callbacks WHERE webhook_id = ANY($1::text[])",
        seen,
    )
    return {row["webhook_id"]: row for row in rows}


# --- reports -------------------------------------------------------------------------------


async def department_facts(
    conn: asyncpg.Connection, start: datetime, end: datetime, now: datetime
) -> list[asyncpg.Record]:
    """Per department, the counts the report's rates are made of (assignments dispatched
    in [start, end))."""
    return await conn.fetch(
        """
        SELECT department,
            count(*) AS dispatched,
            count(*) FILTER (WHERE returned) AS returned,
            count(*) FILTER (WHERE NOT returned AND signed_at <= sign_for_due) AS signed_on_time,
            count(*) FILTER (WHERE NOT returned AND contacted_at <= contact_due)
                AS contacted_on_time,
            count(*) FILTER (WHERE NOT returned AND resolved_at IS NOT NULL) AS resolved,
            count(*) FILTER (WHERE NOT returned AND resolved_at IS NOT NULL AND NOT overdue)
                AS resolved_on_time,
            count(*) FILTER (WHERE NOT returned AND rating = 'satisfied') AS satisfied,
            count(*) FILTER (WHERE NOT returned AND rating = 'basically_satisfied')
                AS basically_satisfied,
            count(*) FILTER (WHERE NOT returned AND rating = 'unsatisfied') AS unsatisfied,
            count(*) FILTER (WHERE NOT returned AND state = ANY($4::text[]) AND (
                (state = 'dispatched' AND sign_for_due < $3)
                OR (contacted_at IS NULL AND contact_due < $3)
                OR (resolved_at IS NULL AND resolve_due < $3))) AS overdue_open
        FROM assignments
        WHERE dispatched_at >= $1 AND dispatched_at < $2
        GROUP BY department
        ORDER BY department""",
        start,
        end,
        now,
        _HELD,
    )


async def overdue_cases(
    conn: asyncpg.Connection, now: datetime, limit: int
) -> list[asyncpg.Record]:
    """Open cases held by a department with a running clock past its deadline."""
    return await conn.fetch(
        """
        SELECT case_id, state, lead, category, urgency, level, dispatched_at,
               CASE WHEN state = 'dispatched' AND sign_for_due < $1 THEN sign_for_due END
                   AS sign_for_overdue_since,
               CASE WHEN contacted_at IS NULL AND contact_due < $1 THEN contact_due END
                   AS contact_overdue_since,
               CASE WHEN resolved_at IS NULL AND resolve_due < $1 THEN resolve_due END
                   AS resolve_overdue_since
        FROM cases
        WHERE state = ANY($2::text[]) AND (
            (state = 'dispatched' AND sign_for_due < $1)
            OR (contacted_at IS NULL AND contact_due < $1)
            OR (resolved_at IS NULL AND resolve_due < $1))
        ORDER BY least(
            CASE WHEN state = 'dispatched' THEN sign_for_due END,
            CASE WHEN contacted_at IS NULL THEN contact_due END,
            CASE WHEN resolved_at IS NULL THEN resolve_due END)
        LIMIT $3""",
        now,
        _HELD,
        limit,
    )


async def state_counts(conn: asyncpg.Connection, states: Iterable[str]) -> dict[str, int]:
    """Cases in each of ``states``, read from the state index: closed cases, whose number
    only grows, are not visited when ``states`` leaves them out."""
    rows = await conn.fetch(
        "SELECT state, count(*) AS n FROM cases WHERE state = ANY($1::text[]) GROUP BY state",
        list(states),
    )
    return {row["state"]: row["n"] for row in rows}


# --- gauge snapshots -----------------------------------------------------------------------


async def claim_snapshot(conn: asyncpg.Connection, name: str, max_age_seconds: float) -> bool:
    """Whether this transaction is to recompute snapshot ``name``: it is missing or older
    than ``max_age_seconds``. Its row stays locked until commit, so a replica arriving
    meanwhile waits and then finds it fresh: one computation per interval, not per replica."""
    claimed = await conn.fetchval(
        """
        INSERT INTO gauge_snapshots (name, computed_at, value) VALUES ($1, now(), 'null')
        ON CONFLICT (name) DO UPDATE SET computed_at = now()
        WHERE gauge_snapshots.computed_at <= now() - make_interval(secs => $2)
        RETURNING true""",
        name,
        max_age_seconds,
    )
    return bool(claimed)


async def save_snapshot(conn: asyncpg.Connection, name: str, value: Any) -> None:
    await conn.execute("UPDATE gauge_snapshots SET value = $2 WHERE name = $1", name, value)


async def snapshots(conn: asyncpg.Connection) -> dict[str, Any]:
    rows = await conn.fetch("SELECT name, value FROM gauge_snapshots")
    return {row["name"]: row["value"] for row in rows}
