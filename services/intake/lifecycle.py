"""Pure: what each case event means for the public view of a case. No I/O.

Intake keeps a projection of every case's public state and history from
``case.events.v1`` so that citizens' apps and Open311 clients can follow it.
Only what a citizen may see goes in: no internal reasons, no escalations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

from shared.citypack.public import PublicText
from shared.events import (
    CaseAction,
    CaseDeadlinesSet,
    CaseDispatched,
    CaseProgressed,
    CaseRated,
    CaseResolved,
    CaseTriaged,
    CitizenRequest,
    EventType,
)

RECEIVED = "received"
# Lifecycle states that Open311 reports as "closed"; every other state is "open".
CLOSED_STATES = frozenset({"resolved", "closed"})

# Event type → (history kind, lifecycle state it moves the case to).
_TRANSITIONS: dict[str, tuple[str, str | None]] = {
    EventType.CASE_DISPATCHED: ("dispatched", "dispatched"),
    EventType.CASE_TRIAGED: ("triaged", "triage"),
    EventType.CASE_SIGNED: ("signed", "signed"),
    EventType.CASE_CONTACTED: ("contacted", "in_progress"),
    EventType.CASE_PROGRESSED: ("progressed", "in_progress"),
    EventType.CASE_EXTENDED: ("extended", "extended"),
    EventType.CASE_RETURNED: ("returned", "returned"),
    EventType.CASE_RESOLVED: ("resolved", "resolved"),
    EventType.CASE_RATED: ("rated", None),
    EventType.CASE_REOPENED: ("reopened", "reopened"),
    EventType.CASE_CLOSED: ("closed", "closed"),
}
# What intake consumes from case.events.v1.
CASE_EVENT_TYPES = frozenset({*_TRANSITIONS, EventType.CASE_DEADLINES_SET})


@dataclass(frozen=True)
class Change:
    """One case event as the public projection sees it."""

    case_id: str
    kind: str
    at: datetime | None
    state: str | None = None  # the new lifecycle state; None leaves it as is
    department: str | None = None  # the lead department id, when the event names it
    category: str | None = None  # the router's category, on dispatch
    note: str | None = None  # what the citizen may read about this step
    resolve_due: datetime | None = None  # deadlines_set only
    in_history: bool = True


def in_rounds(changes: list[tuple[str, Change]]) -> list[list[tuple[str, Change]]]:
    """(event id, change) pairs split into rounds in which no case appears twice, each
    case's changes in their order across the rounds: a set-based upsert can fold one
    round at a time, as it may touch a row only once per statement."""
    rounds: list[list[tuple[str, Change]]] = []
    seen: dict[str, int] = {}
    for event_id, change in changes:
        n = seen.get(change.case_id, 0)
        seen[change.case_id] = n + 1
        if n == len(rounds):
            rounds.append([])
        rounds[n].append((event_id, change))
    return rounds


def change_for(event_type: str, payload: BaseModel) -> Change | None:
    """The public meaning of one event, or None for events intake does not project."""
    if isinstance(payload, CaseDeadlinesSet):
        return Change(
            case_id=payload.case_id,
            kind="deadlines_set",
            at=None,
            department=payload.department,
            resolve_due=payload.resolve_due,
            in_history=False,
        )
    transition = _TRANSITIONS.get(event_type)
    if transition is None:
        return None
    kind, state = transition
    if isinstance(payload, CaseDispatched):
        return Change(
            payload.case_id,
            kind,
            payload.dispatched_at,
            state,
            department=payload.lead,
            category=payload.category,
        )
    if isinstance(payload, CaseTriaged):
        return Change(payload.case_id, kind, payload.triaged_at, state)
    if not isinstance(payload, CaseAction):
        return None
    note: str | None = None
    if isinstance(payload, CaseResolved):
        note = payload.reply  # the department's answer to the citizen
    elif isinstance(payload, CaseProgressed):
        note = payload.note
    elif isinstance(payload, CaseRated):
        note = payload.rating.value
    # Returns, refusals and reopenings carry internal or personal reasons: not shown.
    department = None if kind == "returned" else payload.department
    return Change(payload.case_id, kind, payload.at, state, department=department, note=note)


@dataclass(frozen=True)
class CaseView:
    """A case as intake shows it: the request as accepted and its public state."""

    request: CitizenRequest
    requested_at: datetime
    state: str
    category: str | None
    department: str | None
    resolve_due: datetime | None
    status_notes: str | None
    updated_at: datetime
    history: list[dict[str, Any]] = field(default_factory=list)


def open311_status(state: str) -> Literal["open", "closed"]:
    return "closed" if state in CLOSED_STATES else "open"


def status_notes(
    state: str, agency: str | None, note: str | None, public: PublicText
) -> str | None:
    """Open311 ``status_notes``: the department's own words when it gave some, else the
    pack's line for the state, in the pack's language."""
    if note:
        return note
    return public.status_note(state, agency)
