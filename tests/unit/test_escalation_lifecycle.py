"""The case lifecycle: every transition, every refusal, and invariants over random action
sequences (hypothesis)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.escalation import lifecycle as lc
from services.escalation.clocks import SlaClocks
from services.escalation.lifecycle import Case, Outcome, Refused, State
from shared.citypack import load_pack
from shared.events import (
    CaseDispatched,
    CaseTriaged,
    CitizenRequest,
    Clock,
    EventType,
    Jurisdiction,
    Rating,
    Urgency,
)
from shared.settings import DEFAULT_CITIES_DIR

CLOCKS = SlaClocks.for_sla(load_pack(DEFAULT_CITIES_DIR / "demo-zh").sla)
T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)  # a Monday, 17:00 in Shanghai
LEAD = "community_committee"
OTHER = "housing_bureau"


def request(case_id: str = "C-1") -> CitizenRequest:
    return CitizenRequest(
        case_id=case_id,
        channel="hotline",
        source_ref="BJ-1",
        received_at=T0,
        description="小区垃圾没人清运",
    )


def dispatched(
    lead: str = LEAD, attempt: int = 1, at: datetime = T0, excluded: list[str] | None = None
) -> CaseDispatched:
    return CaseDispatched(
        case_id="C-1",
        category="sanitation.litter",
        urgency=Urgency.GENERAL,
        jurisdiction=Jurisdiction(),
        lead=lead,
        cooperating=[OTHER] if lead == LEAD else [],
        sla_policy="general",
        confidence=0.9,
        attempt=attempt,
        excluded=excluded or [],
        dispatched_at=at,
        request=request(),
    )


def triaged(at: datetime = T0) -> CaseTriaged:
    return CaseTriaged(
        case_id="C-1", reason="low confidence", confidence=0.2, triaged_at=at, request=request()
    )


def new_case() -> Case:
    return lc.dispatch(None, dispatched(), CLOCKS).case


def types(outcome: Outcome) -> list[EventType]:
    return [event_type for event_type, _ in outcome.events]


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def signed() -> Case:
    return lc.sign(new_case(), LEAD, "duty-1", None, at(5)).case


def resolved() -> Case:
    return lc.resolve(signed(), LEAD, "duty-1", "cleared", at(60)).case


# --- dispatch and the clocks it sets ------------------------------------------------------------


def test_dispatch_sets_the_three_clocks_from_the_pack_and_announces_them() -> None:
    outcome = lc.dispatch(None, dispatched(), CLOCKS)
    case = outcome.case
    assert case.state is State.DISPATCHED
    assert case.sign_for_due == T0 + timedelta(hours=2)
    assert case.contact_due == T0 + timedelta(hours=24)
    # 7 working days from Mon Nov 23 17:00 Shanghai → Wed Dec 2 17:00.
    assert case.resolve_due == datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
    assert outcome.clocks == {
        Clock.SIGN_FOR: case.sign_for_due,
        Clock.CONTACT: case.contact_due,
        Clock.RESOLVE: case.resolve_due,
    }
    assert types(outcome) == [EventType.CASE_DEADLINES_SET]
    deadlines = outcome.events[0][1]
    assert deadlines.resolve_due == case.resolve_due
    assert deadlines.reason == "dispatched"


def test_category_override_changes_only_its_clock() -> None:
    event = replace_category(dispatched(), "construction.site")
    case = lc.dispatch(None, event, CLOCKS).case
    assert case.sla_policy == "general/construction.site"
    assert case.contact_due == T0 + timedelta(hours=12)
    assert case.sign_for_due == T0 + timedelta(hours=2)


def replace_category(event: CaseDispatched, category: str) -> CaseDispatched:
    return event.model_copy(update={"category": category})


def test_repeated_or_older_dispatch_changes_nothing() -> None:
    case = signed()
    again = lc.dispatch(case, dispatched(), CLOCKS)
    assert again.case == case
    assert again.events == []
    assert again.clocks == {}


def test_redispatch_after_return_gives_new_lead_and_fresh_clocks() -> None:
    returned = lc.give_back(signed(), LEAD, "duty-1", "not ours", at(10)).case
    outcome = lc.dispatch(
        returned, dispatched(OTHER, attempt=2, at=at(20), excluded=[LEAD]), CLOCKS
    )
    case = outcome.case
    assert (case.state, case.lead, case.attempt) == (State.DISPATCHED, OTHER, 2)
    assert case.signed_at is None
    assert case.sign_for_due == at(20) + timedelta(hours=2)
    assert case.return_count == 1
    assert case.excluded == (LEAD,)
    assert outcome.events[0][1].reason == "redispatched"
    assert set(outcome.clocks) == set(Clock)


def test_triage_stops_every_clock_and_a_manual_dispatch_restarts_them() -> None:
    returned = lc.give_back(new_case(), LEAD, None, "not ours", at(10)).case
    in_triage = lc.triage(returned, triaged(at(11)))
    assert in_triage.case.state is State.TRIAGE
    assert in_triage.case.running_clocks() == {}
    assert in_triage.clocks == {}  # the return already stopped them
    back = lc.dispatch(in_triage.case, dispatched(OTHER, attempt=1, at=at(30)), CLOCKS)
    assert back.case.state is State.DISPATCHED
    assert back.case.lead == OTHER


def test_triage_of_a_case_never_dispatched_creates_it_waiting_for_a_human() -> None:
    outcome = lc.triage(None, triaged())
    assert outcome.case.state is State.TRIAGE
    assert outcome.case.lead is None
    assert lc.triage(outcome.case, triaged()).case == outcome.case


def test_triage_of_a_held_case_stops_its_clocks() -> None:
    outcome = lc.triage(signed(), triaged(at(20)))
    assert outcome.clocks == {Clock.CONTACT: None, Clock.RESOLVE: None}


def test_dispatch_of_a_closed_or_resolved_case_is_refused() -> None:
    with pytest.raises(Refused, match="resolved"):
        lc.dispatch(resolved(), dispatched(attempt=5), CLOCKS)


# --- department actions ----------------------------------------------------------------------


def test_sign_stops_only_the_sign_for_clock() -> None:
    outcome = lc.sign(new_case(), LEAD, "duty-1", "on it", at(5))
    assert outcome.case.state is State.SIGNED
    assert outcome.clocks == {Clock.SIGN_FOR: None}
    assert outcome.case.running(Clock.RESOLVE)
    assert outcome.case.running(Clock.CONTACT)
    assert types(outcome) == [EventType.CASE_SIGNED]


def test_signing_twice_same_data_is_a_no_op_different_data_is_refused() -> None:
    case = signed()
    assert lc.sign(case, LEAD, "duty-1", None, at(6)) == Outcome(case)
    with pytest.raises(Refused, match="already signed") as refused:
        lc.sign(case, LEAD, "someone-else", None, at(6))
    assert refused.value.status == 409


def test_a_department_not_holding_the_case_gets_403() -> None:
    case = new_case()
    for act in (
        lambda: lc.sign(case, OTHER, None, None, at(1)),
        lambda: lc.resolve(case, OTHER, None, "done", at(1)),
        lambda: lc.give_back(case, OTHER, None, "x", at(1)),
    ):
        with pytest.raises(Refused) as refused:
            act()
        assert refused.value.status == 403


def test_resolving_an_unsigned_case_is_refused() -> None:
    with pytest.raises(Refused, match="sign for it first") as refused:
        lc.resolve(new_case(), LEAD, None, "done", at(3))
    assert refused.value.status == 409


def test_contact_stops_the_contact_clock_and_starts_work() -> None:
    outcome = lc.contact(signed(), LEAD, "duty-1", "called back", at(30))
    assert outcome.case.state is State.IN_PROGRESS
    assert outcome.clocks == {Clock.CONTACT: None}
    assert types(outcome) == [EventType.CASE_CONTACTED]
    with pytest.raises(Refused):
        lc.contact(outcome.case, LEAD, "another", None, at(31))


def test_contact_before_sign_is_refused() -> None:
    with pytest.raises(Refused, match="sign for it first"):
        lc.contact(new_case(), LEAD, None, None, at(1))


def test_progress_notes_keep_coming_and_each_is_announced() -> None:
    first = lc.progress(signed(), LEAD, None, "truck ordered", at(20))
    second = lc.progress(first.case, LEAD, None, "truck arrived", at(40))
    assert second.case.state is State.IN_PROGRESS
    assert types(first) == types(second) == [EventType.CASE_PROGRESSED]
    assert first.clocks == {}
    assert second.clocks == {}


def test_resolve_stops_resolve_and_contact_and_marks_late_resolution_overdue() -> None:
    on_time = lc.resolve(signed(), LEAD, None, "cleared", at(60))
    assert on_time.case.state is State.RESOLVED
    assert not on_time.case.overdue
    assert on_time.clocks == {Clock.CONTACT: None, Clock.RESOLVE: None}
    assert on_time.case.contacted_at == at(60)  # the reply reached the citizen
    late_at = signed().resolve_due + timedelta(minutes=1)  # type: ignore[operator]
    late = lc.resolve(signed(), LEAD, None, "cleared", late_at)
    assert late.case.overdue
    assert late.events[0][1].overdue


def test_extension_request_approval_moves_the_resolve_clock() -> None:
    case = signed()
    new_due = case.resolve_due + timedelta(days=3)  # type: ignore[operator]
    asked = lc.request_extension(case, LEAD, "duty-1", "parts on order", new_due, at(30))
    assert types(asked) == [EventType.CASE_EXTENSION_REQUESTED]
    assert asked.clocks == {}
    approved = lc.approve_extension(asked.case, "supervisor-wang", "ok", at(40))
    assert approved.case.state is State.EXTENDED
    assert approved.case.resolve_due == new_due
    assert approved.case.pending is None
    assert approved.clocks == {Clock.RESOLVE: new_due}
    assert types(approved) == [EventType.CASE_EXTENDED, EventType.CASE_DEADLINES_SET]
    assert approved.events[1][1].reason == "extended"


def test_extension_refusal_keeps_the_deadline() -> None:
    case = signed()
    asked = lc.request_extension(
        case,
        LEAD,
        None,
        "busy",
        case.resolve_due + timedelta(days=1),  # type: ignore[operator]
        at(30),
    ).case
    refused = lc.refuse_extension(asked, "supervisor-wang", "no reason to wait", at(31))
    assert refused.case.resolve_due == case.resolve_due
    assert refused.case.pending is None
    assert types(refused) == [EventType.CASE_EXTENSION_REFUSED]
    assert refused.clocks == {}


def test_extension_refusals() -> None:
    case = signed()
    due = case.resolve_due
    assert due is not None
    with pytest.raises(Refused, match="later than") as early:
        lc.request_extension(case, LEAD, None, "x", due - timedelta(hours=1), at(30))
    assert early.value.status == 422
    with pytest.raises(Refused, match="before the resolve deadline"):
        lc.request_extension(case, LEAD, None, "x", due + timedelta(days=2), due)
    pending = lc.request_extension(case, LEAD, None, "x", due + timedelta(days=2), at(30)).case
    with pytest.raises(Refused, match="already has an extension"):
        lc.request_extension(pending, LEAD, None, "y", due + timedelta(days=3), at(31))
    with pytest.raises(Refused, match="no extension request pending"):
        lc.approve_extension(case, "sup", None, at(30))
    with pytest.raises(Refused, match="no extension request pending"):
        lc.refuse_extension(case, "sup", "no", at(30))
    with pytest.raises(Refused, match="sign for it first"):
        lc.request_extension(new_case(), LEAD, None, "x", due + timedelta(days=2), at(1))


def test_return_excludes_the_department_and_stops_every_clock() -> None:
    outcome = lc.give_back(signed(), LEAD, "duty-1", "this is the water bureau's", at(10))
    case = outcome.case
    assert case.state is State.RETURNED
    assert case.return_count == 1
    assert case.excluded == (LEAD,)
    assert outcome.clocks == {Clock.CONTACT: None, Clock.RESOLVE: None}
    payload = outcome.events[0][1]
    assert types(outcome) == [EventType.CASE_RETURNED]
    assert payload.return_count == 1
    assert payload.excluded == [LEAD]
    with pytest.raises(Refused) as refused:  # it no longer holds the case
        lc.sign(case, LEAD, "duty-1", None, at(11))
    assert refused.value.status == 403


def test_return_after_contact_is_refused() -> None:
    contacted = lc.contact(signed(), LEAD, None, None, at(10)).case
    with pytest.raises(Refused, match="only before contact"):
        lc.give_back(contacted, LEAD, None, "not ours", at(11))


def test_satisfied_rating_closes_the_case() -> None:
    for rating in (Rating.SATISFIED, Rating.BASICALLY_SATISFIED):
        outcome = lc.rate(resolved(), rating, "call-centre", None, at(120), CLOCKS)
        assert outcome.case.state is State.CLOSED
        assert outcome.case.rating is rating
        assert types(outcome) == [EventType.CASE_RATED, EventType.CASE_CLOSED]


def test_unsatisfied_rating_reopens_with_a_fresh_resolve_clock() -> None:
    outcome = lc.rate(resolved(), Rating.UNSATISFIED, "call-centre", "still dirty", at(120), CLOCKS)
    case = outcome.case
    assert case.state is State.REOPENED
    assert case.reopen_count == 1
    assert case.resolved_at is None
    _, fresh = CLOCKS("sanitation.litter", "general", at(120))
    assert case.resolve_due == fresh[Clock.RESOLVE]
    assert outcome.clocks == {Clock.RESOLVE: fresh[Clock.RESOLVE]}
    assert types(outcome) == [
        EventType.CASE_RATED,
        EventType.CASE_REOPENED,
        EventType.CASE_DEADLINES_SET,
    ]
    again = lc.resolve(case, LEAD, None, "cleared again", at(180))
    assert again.case.state is State.RESOLVED


def test_rating_an_unresolved_case_is_refused() -> None:
    with pytest.raises(Refused, match="not resolved"):
        lc.rate(signed(), Rating.SATISFIED, "call-centre", None, at(10), CLOCKS)


def test_acting_on_a_closed_case_is_refused() -> None:
    closed = lc.rate(resolved(), Rating.SATISFIED, "cc", None, at(120), CLOCKS).case
    for act in (
        lambda: lc.sign(closed, LEAD, "duty-1", None, at(121)),
        lambda: lc.progress(closed, LEAD, None, "more", at(121)),
        lambda: lc.resolve(closed, LEAD, None, "x", at(121)),
        lambda: lc.rate(closed, Rating.SATISFIED, "cc", None, at(121), CLOCKS),
        lambda: lc.approve_extension(closed, "sup", None, at(121)),
        lambda: lc.dispatch(closed, dispatched(attempt=9), CLOCKS),
        lambda: lc.triage(closed, triaged()),
    ):
        with pytest.raises(Refused, match="closed") as refused:
            act()
        assert refused.value.status == 409


# --- invariants over random action sequences -------------------------------------------------

ACTORS = st.sampled_from(["duty-1", "duty-2", None])
DEPARTMENTS = st.sampled_from([LEAD, OTHER])


def action_strategy() -> st.SearchStrategy[tuple[str, ...]]:
    return st.one_of(
        st.tuples(st.just("sign"), DEPARTMENTS, ACTORS),
        st.tuples(st.just("contact"), DEPARTMENTS, ACTORS),
        st.tuples(st.just("progress"), DEPARTMENTS, ACTORS),
        st.tuples(st.just("extend"), DEPARTMENTS, st.integers(-2, 5)),
        st.tuples(st.just("approve")),
        st.tuples(st.just("refuse")),
        st.tuples(st.just("return"), DEPARTMENTS),
        st.tuples(st.just("resolve"), DEPARTMENTS, st.sampled_from(["done", "fixed"])),
        st.tuples(st.just("rate"), st.sampled_from(list(Rating))),
        st.tuples(st.just("redispatch"), DEPARTMENTS, st.integers(1, 4)),
        st.tuples(st.just("triage")),
    )


def apply(case: Case, action: tuple, now: datetime) -> Outcome:  # type: ignore[type-arg]
    name, *args = action
    if name == "sign":
        return lc.sign(case, args[0], args[1], None, now)
    if name == "contact":
        return lc.contact(case, args[0], args[1], None, now)
    if name == "progress":
        return lc.progress(case, args[0], None, "note", now)
    if name == "extend":
        base = case.resolve_due or now
        return lc.request_extension(case, args[0], None, "why", base + timedelta(days=args[1]), now)
    if name == "approve":
        return lc.approve_extension(case, "sup", None, now)
    if name == "refuse":
        return lc.refuse_extension(case, "sup", "no", now)
    if name == "return":
        return lc.give_back(case, args[0], None, "not ours", now)
    if name == "resolve":
        return lc.resolve(case, args[0], None, args[1], now)
    if name == "rate":
        return lc.rate(case, args[0], "cc", None, now, CLOCKS)
    if name == "redispatch":
        return lc.dispatch(case, dispatched(args[0], attempt=args[1], at=now), CLOCKS)
    return lc.triage(case, triaged(now))


# Which event may stop which clock.
STOPPERS = {
    Clock.SIGN_FOR: {EventType.CASE_SIGNED, EventType.CASE_RETURNED},
    Clock.CONTACT: {EventType.CASE_CONTACTED, EventType.CASE_RESOLVED, EventType.CASE_RETURNED},
    Clock.RESOLVE: {EventType.CASE_RESOLVED, EventType.CASE_RETURNED},
}


@settings(max_examples=400, deadline=None)
@given(actions=st.lists(action_strategy(), max_size=25))
def test_invariants_hold_over_any_sequence_of_actions(actions: list[tuple]) -> None:  # type: ignore[type-arg]
    case = new_case()
    history: list[EventType] = []
    now = T0
    for action in actions:
        now += timedelta(minutes=37)
        before = case
        refusal: Refused | None = None
        try:
            outcome = apply(case, action, now)
        except Refused as refused:
            refusal = refused
        if refusal is not None:
            assert refusal.status in (403, 409, 422)
            assert refusal.message
            assert case == before  # a refusal changes nothing
            continue
        after = outcome.case
        # Exactly one state, always a known one.
        assert isinstance(after.state, State)
        # History is append-only: the outcome's events go after what was there.
        history_before = list(history)
        history.extend(types(outcome))
        assert history[: len(history_before)] == history_before
        # Clocks stop only through their events (or when the router takes the case away).
        for clock, deadline in outcome.clocks.items():
            if deadline is None and before.running(clock):
                router_action = action[0] in ("triage", "redispatch")
                assert router_action or set(types(outcome)) & STOPPERS[clock], (clock, action)
        # The outcome's clock changes are exactly the difference in running clocks.
        running_before, running_after = before.running_clocks(), after.running_clocks()
        for clock in Clock:
            if running_before.get(clock) != running_after.get(clock):
                assert outcome.clocks.get(clock, "absent") == running_after.get(clock)
            else:
                assert clock not in outcome.clocks
        # Nothing changes without an event announcing it, except the router's own moves.
        if after != before and action[0] not in ("triage",):
            assert outcome.events, action
        # A closed case stays closed with a rating; a resolved one has its resolution.
        if after.state is State.CLOSED:
            assert after.rating in (Rating.SATISFIED, Rating.BASICALLY_SATISFIED)
        if after.state is State.RESOLVED:
            assert after.resolved_at is not None
            assert after.reply
        if after.state is State.DISPATCHED:
            assert after.signed_at is None
        if before.state is State.CLOSED:
            pytest.fail("an action on a closed case was accepted")
        case = after
