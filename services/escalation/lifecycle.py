"""The case lifecycle after dispatch, as pure functions: (case, action, now) → outcome.

Every function either returns an :class:`Outcome` (the new case, the events that
announce it, and the clocks it started, moved or stopped) or raises
:class:`Refused` and changes nothing. States::

    triage ──dispatch──▶ dispatched ──sign──▶ signed ──contact/progress──▶ in_progress
       ▲                     │                  │                              │
       └──triage──  returned ◀──return──────────┘        extension approved ──▶ extended
                                                                                │
    reopened ◀──unsatisfied── resolved ◀──resolve── (signed | in_progress | extended | reopened)
                                 └──satisfied / basically satisfied──▶ closed

Clocks: sign-for runs while ``dispatched``; contact runs until contact (or the
resolution, whose reply reaches the citizen); resolve runs until resolution and
moves with an approved extension; a reopening starts a fresh resolve clock.
A return or triage stops every clock; a re-dispatch starts them afresh.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel

from shared.events import (
    CaseClosed,
    CaseContacted,
    CaseDeadlinesSet,
    CaseDispatched,
    CaseExtended,
    CaseExtensionRefused,
    CaseExtensionRequested,
    CaseProgressed,
    CaseRated,
    CaseReopened,
    CaseResolved,
    CaseReturned,
    CaseSigned,
    CaseTriaged,
    Clock,
    EventType,
    Rating,
)


class State(StrEnum):
    TRIAGE = "triage"
    DISPATCHED = "dispatched"
    SIGNED = "signed"
    IN_PROGRESS = "in_progress"
    EXTENDED = "extended"
    RETURNED = "returned"
    RESOLVED = "resolved"
    REOPENED = "reopened"
    CLOSED = "closed"


# A department holds the case and works on it in these states.
WORKING = frozenset({State.SIGNED, State.IN_PROGRESS, State.EXTENDED, State.REOPENED})
HELD = WORKING | {State.DISPATCHED}
# Still open: a deadline can pass and the case counts as open in reports.
OPEN = HELD | {State.TRIAGE, State.RETURNED, State.RESOLVED}
RETURNABLE = frozenset({State.DISPATCHED, State.SIGNED})


class Refused(Exception):
    """An action the lifecycle does not allow now; nothing changed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Extension:
    new_due: datetime
    reason: str
    requested_at: datetime
    actor: str | None = None


@dataclass(frozen=True)
class Case:
    case_id: str
    state: State
    category: str
    urgency: str
    lead: str | None = None
    cooperating: tuple[str, ...] = ()
    sla_policy: str = "general"
    attempt: int = 0
    excluded: tuple[str, ...] = ()
    return_count: int = 0
    dispatched_at: datetime | None = None
    sign_for_due: datetime | None = None
    contact_due: datetime | None = None
    resolve_due: datetime | None = None
    signed_at: datetime | None = None
    signed_by: str | None = None
    contacted_at: datetime | None = None
    contacted_by: str | None = None
    resolved_at: datetime | None = None
    overdue: bool = False
    reply: str | None = None
    pending: Extension | None = None
    rating: Rating | None = None
    reopen_count: int = 0
    level: int = 0
    closed_at: datetime | None = None

    def due(self, clock: Clock) -> datetime | None:
        return {
            Clock.SIGN_FOR: self.sign_for_due,
            Clock.CONTACT: self.contact_due,
            Clock.RESOLVE: self.resolve_due,
        }[clock]

    def running(self, clock: Clock) -> bool:
        """Whether ``clock`` is counting down now."""
        if clock is Clock.SIGN_FOR:
            return self.state is State.DISPATCHED and self.sign_for_due is not None
        if clock is Clock.CONTACT:
            return self.state in HELD and self.contacted_at is None and self.contact_due is not None
        return self.state in HELD and self.resolved_at is None and self.resolve_due is not None

    def running_clocks(self) -> dict[Clock, datetime]:
        return {c: self.due(c) for c in Clock if self.running(c)}  # type: ignore[misc]


Event = tuple[EventType, BaseModel]


@dataclass(frozen=True)
class Outcome:
    case: Case
    events: list[Event] = field(default_factory=list)
    # Clocks (re)started with their new deadline, or stopped (None). Timers follow this.
    clocks: dict[Clock, datetime | None] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.events)


# Computes (policy name, deadlines) for a category and urgency from a start instant.
Deadlines = Callable[[str, str, datetime], tuple[str, dict[Clock, datetime]]]


def _clock_changes(before: Case | None, after: Case) -> dict[Clock, datetime | None]:
    old = before.running_clocks() if before is not None else {}
    new = after.running_clocks()
    changes: dict[Clock, datetime | None] = {}
    for clock in Clock:
        if old.get(clock) != new.get(clock):
            changes[clock] = new.get(clock)
    return changes


def _outcome(before: Case | None, after: Case, events: list[Event]) -> Outcome:
    return Outcome(after, events, _clock_changes(before, after))


def _deadlines_event(case: Case, reason: str) -> Event:
    assert case.lead is not None
    return (
        EventType.CASE_DEADLINES_SET,
        CaseDeadlinesSet(
            case_id=case.case_id,
            department=case.lead,
            sla_policy=case.sla_policy,
            sign_for_due=case.sign_for_due if case.running(Clock.SIGN_FOR) else None,
            contact_due=case.contact_due if case.running(Clock.CONTACT) else None,
            resolve_due=case.resolve_due,
            reason=reason,
        ),
    )


# --- what the router tells us ------------------------------------------------------------


def dispatch(current: Case | None, event: CaseDispatched, deadlines: Deadlines) -> Outcome:
    """A first dispatch, or a re-dispatch (new lead, fresh clocks) after a return or triage."""
    if current is not None:
        if current.state is State.CLOSED or current.state is State.RESOLVED:
            raise Refused(409, f"case {current.case_id} is {current.state}; not re-dispatched")
        newer = event.attempt > current.attempt or (
            current.state is State.TRIAGE and event.attempt >= current.attempt
        )
        if not newer:
            return Outcome(current)  # an older or repeated dispatch: already applied
    policy, due = deadlines(event.category, event.urgency.value, event.dispatched_at)
    case = Case(
        case_id=event.case_id,
        state=State.DISPATCHED,
        category=event.category,
        urgency=event.urgency.value,
        lead=event.lead,
        cooperating=tuple(event.cooperating),
        sla_policy=policy,
        attempt=event.attempt,
        excluded=tuple(dict.fromkeys([*(current.excluded if current else ()), *event.excluded])),
        return_count=current.return_count if current else 0,
        dispatched_at=event.dispatched_at,
        sign_for_due=due[Clock.SIGN_FOR],
        contact_due=due[Clock.CONTACT],
        resolve_due=due[Clock.RESOLVE],
        reopen_count=current.reopen_count if current else 0,
    )
    reason = "dispatched" if current is None or current.lead is None else "redispatched"
    return _outcome(current, case, [_deadlines_event(case, reason)])


def triage(current: Case | None, event: CaseTriaged) -> Outcome:
    """The router sent the case to a human: nobody holds it and every clock stops."""
    if current is None:
        category = str(event.request.category_hint or "unclassified")
        urgency = event.request.urgency_hint.value if event.request.urgency_hint else "general"
        case = Case(case_id=event.case_id, state=State.TRIAGE, category=category, urgency=urgency)
        return Outcome(case)
    if current.state is State.TRIAGE:
        return Outcome(current)
    if current.state not in (HELD | {State.RETURNED}):
        raise Refused(409, f"case {current.case_id} is {current.state}; cannot go to triage")
    case = replace(current, state=State.TRIAGE, pending=None)
    return _outcome(current, case, [])


# --- a department's actions -----------------------------------------------------------------


def _held_by(case: Case, department: str) -> None:
    if case.state is State.CLOSED:
        raise Refused(409, f"case {case.case_id} is closed")
    if case.lead != department or case.state not in (HELD | {State.RESOLVED}):
        raise Refused(403, f"{department} does not hold case {case.case_id}")


def _in(case: Case, allowed: frozenset[State], action: str) -> None:
    if case.state not in allowed:
        raise Refused(409, f"case {case.case_id} is {case.state}: cannot {action}")


def sign(
    case: Case, department: str, actor: str | None, note: str | None, now: datetime
) -> Outcome:
    _held_by(case, department)
    if case.signed_at is not None:
        if case.signed_by == actor:
            return Outcome(case)  # the same signature again: already done
        raise Refused(409, f"case {case.case_id} was already signed for by someone else")
    _in(case, frozenset({State.DISPATCHED}), "sign")
    after = replace(case, state=State.SIGNED, signed_at=now, signed_by=actor)
    payload = CaseSigned(
        case_id=case.case_id, department=department, actor=actor, at=now, note=note
    )
    return _outcome(case, after, [(EventType.CASE_SIGNED, payload)])


def contact(
    case: Case, department: str, actor: str | None, note: str | None, now: datetime
) -> Outcome:
    _held_by(case, department)
    _in(case, WORKING, "record contact (sign for it first)")
    if case.contacted_at is not None:
        if case.contacted_by == actor:
            return Outcome(case)
        raise Refused(409, f"first contact on case {case.case_id} was already recorded")
    state = State.IN_PROGRESS if case.state is State.SIGNED else case.state
    after = replace(case, state=state, contacted_at=now, contacted_by=actor)
    payload = CaseContacted(
        case_id=case.case_id, department=department, actor=actor, at=now, note=note
    )
    return _outcome(case, after, [(EventType.CASE_CONTACTED, payload)])


def progress(case: Case, department: str, actor: str | None, note: str, now: datetime) -> Outcome:
    _held_by(case, department)
    _in(case, WORKING, "report progress (sign for it first)")
    state = State.IN_PROGRESS if case.state is State.SIGNED else case.state
    after = replace(case, state=state)
    payload = CaseProgressed(
        case_id=case.case_id, department=department, actor=actor, at=now, note=note
    )
    return _outcome(case, after, [(EventType.CASE_PROGRESSED, payload)])


def request_extension(
    case: Case,
    department: str,
    actor: str | None,
    reason: str,
    new_due: datetime,
    now: datetime,
) -> Outcome:
    _held_by(case, department)
    _in(case, WORKING, "request an extension (sign for it first)")
    assert case.resolve_due is not None
    if case.pending is not None:
        if case.pending.new_due == new_due and case.pending.reason == reason:
            return Outcome(case)
        raise Refused(409, f"case {case.case_id} already has an extension request pending")
    if now >= case.resolve_due:
        raise Refused(409, "an extension must be requested before the resolve deadline")
    if new_due <= case.resolve_due:
        raise Refused(422, "new_due must be later than the current resolve deadline")
    after = replace(case, pending=Extension(new_due, reason, now, actor))
    payload = CaseExtensionRequested(
        case_id=case.case_id,
        department=department,
        actor=actor,
        at=now,
        new_due=new_due,
        reason=reason,
    )
    return _outcome(case, after, [(EventType.CASE_EXTENSION_REQUESTED, payload)])


def approve_extension(case: Case, supervisor: str, note: str | None, now: datetime) -> Outcome:
    if case.state is State.CLOSED:
        raise Refused(409, f"case {case.case_id} is closed")
    if case.pending is None or case.state not in WORKING:
        raise Refused(409, f"case {case.case_id} has no extension request pending")
    assert case.lead is not None
    new_due = case.pending.new_due
    after = replace(case, state=State.EXTENDED, resolve_due=new_due, pending=None)
    payload = CaseExtended(
        case_id=case.case_id,
        department=case.lead,
        actor=supervisor,
        at=now,
        note=note,
        new_due=new_due,
        approved_by=supervisor,
    )
    return _outcome(
        case, after, [(EventType.CASE_EXTENDED, payload), _deadlines_event(after, "extended")]
    )


def refuse_extension(case: Case, supervisor: str, reason: str, now: datetime) -> Outcome:
    if case.state is State.CLOSED:
        raise Refused(409, f"case {case.case_id} is closed")
    if case.pending is None or case.state not in WORKING:
        raise Refused(409, f"case {case.case_id} has no extension request pending")
    assert case.lead is not None
    after = replace(case, pending=None)
    payload = CaseExtensionRefused(
        case_id=case.case_id,
        department=case.lead,
        actor=supervisor,
        at=now,
        refused_by=supervisor,
        reason=reason,
    )
    return _outcome(case, after, [(EventType.CASE_EXTENSION_REFUSED, payload)])


def give_back(
    case: Case, department: str, actor: str | None, reason: str, now: datetime
) -> Outcome:
    """The department says the case is not theirs (退单): the router re-routes it without them."""
    _held_by(case, department)
    _in(case, RETURNABLE, "return it (only before contact with the citizen)")
    excluded = tuple(dict.fromkeys([*case.excluded, department]))
    after = replace(
        case,
        state=State.RETURNED,
        return_count=case.return_count + 1,
        excluded=excluded,
        pending=None,
    )
    payload = CaseReturned(
        case_id=case.case_id,
        department=department,
        actor=actor,
        at=now,
        reason=reason,
        return_count=after.return_count,
        excluded=list(excluded),
    )
    return _outcome(case, after, [(EventType.CASE_RETURNED, payload)])


def resolve(case: Case, department: str, actor: str | None, reply: str, now: datetime) -> Outcome:
    _held_by(case, department)
    if case.state is State.RESOLVED:
        if case.reply == reply:
            return Outcome(case)
        raise Refused(409, f"case {case.case_id} is already resolved with another reply")
    _in(case, WORKING, "resolve it (sign for it first)")
    assert case.resolve_due is not None
    overdue = now > case.resolve_due
    after = replace(
        case,
        state=State.RESOLVED,
        resolved_at=now,
        overdue=overdue,
        reply=reply,
        pending=None,
        # The reply reaches the citizen: it is the first contact if none was recorded.
        contacted_at=case.contacted_at or now,
        contacted_by=case.contacted_by if case.contacted_at else actor,
    )
    payload = CaseResolved(
        case_id=case.case_id,
        department=department,
        actor=actor,
        at=now,
        reply=reply,
        overdue=overdue,
    )
    return _outcome(case, after, [(EventType.CASE_RESOLVED, payload)])


def rate(
    case: Case,
    rating: Rating,
    by: str,
    note: str | None,
    now: datetime,
    deadlines: Deadlines,
) -> Outcome:
    """The citizen's rating of a resolved case: satisfied closes it, unsatisfied reopens it."""
    if case.state is State.CLOSED:
        raise Refused(409, f"case {case.case_id} is closed")
    _in(case, frozenset({State.RESOLVED}), "take a rating (not resolved)")
    assert case.lead is not None
    rated = CaseRated(
        case_id=case.case_id, department=case.lead, actor=by, at=now, note=note, rating=rating
    )
    events: list[Event] = [(EventType.CASE_RATED, rated)]
    if rating is Rating.UNSATISFIED:
        _, due = deadlines(case.category, case.urgency, now)
        after = replace(
            case,
            state=State.REOPENED,
            rating=rating,
            resolved_at=None,
            overdue=False,
            reply=None,
            resolve_due=due[Clock.RESOLVE],
            reopen_count=case.reopen_count + 1,
        )
        reopened = CaseReopened(
            case_id=case.case_id,
            department=case.lead,
            actor=by,
            at=now,
            reason=note or "citizen unsatisfied",
        )
        events += [(EventType.CASE_REOPENED, reopened), _deadlines_event(after, "reopened")]
        return _outcome(case, after, events)
    after = replace(case, state=State.CLOSED, rating=rating, closed_at=now)
    closed = CaseClosed(case_id=case.case_id, department=case.lead, actor=by, at=now)
    events.append((EventType.CASE_CLOSED, closed))
    return _outcome(case, after, events)
