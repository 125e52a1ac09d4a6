"""The ladder's arithmetic: levels, repeats, and catch-up after downtime."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.escalation.ladder import (
    BREACH,
    TimerSpec,
    arm,
    marks_breach,
    next_timer,
    targets_of,
)
from shared.citypack.sla import LadderStep

DEADLINE = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
LADDER = [
    LadderStep.model_validate(
        {"level": 1, "after": "0s", "repeat": "30m", "targets": ["duty_contact", "supervisor"]}
    ),
    LadderStep.model_validate(
        {"level": 2, "after": "1h", "repeat": "2h", "targets": ["district_supervision"]}
    ),
    LadderStep.model_validate({"level": 3, "after": "4h", "targets": ["city_centre"]}),
]


def minutes(n: float) -> datetime:
    return DEADLINE + timedelta(minutes=n)


# The first level ten minutes past the deadline: the breach mark needs a timer of its own.
LATE_START = [
    LadderStep.model_validate({"level": 1, "after": "10m", "repeat": "30m"}),
    *LADDER[1:],
]


def test_a_deadline_arms_one_timer_the_first_level_when_it_starts_at_the_deadline() -> None:
    assert arm(LADDER, DEADLINE) == TimerSpec(1, 0, DEADLINE)


def test_the_first_level_at_the_deadline_marks_the_breach_on_its_first_firing_only() -> None:
    assert marks_breach(LADDER, TimerSpec(1, 0, DEADLINE), DEADLINE)
    assert not marks_breach(LADDER, TimerSpec(1, 1, minutes(30)), DEADLINE)
    assert not marks_breach(LADDER, TimerSpec(2, 0, minutes(60)), DEADLINE)


def test_a_first_level_after_the_deadline_is_armed_by_a_breach_mark_of_its_own() -> None:
    head = arm(LATE_START, DEADLINE)
    assert head == TimerSpec(BREACH, 0, DEADLINE)
    assert marks_breach(LATE_START, head, DEADLINE)
    first = next_timer(LATE_START, DEADLINE, head, DEADLINE)
    assert first == TimerSpec(1, 0, minutes(10))
    assert not marks_breach(LATE_START, first, DEADLINE)


def test_a_breach_mark_found_late_arms_the_first_level_at_its_own_time() -> None:
    # Every replica down until 25 min past: the first level (at 10 min) is due at once.
    late = next_timer(LATE_START, DEADLINE, TimerSpec(BREACH, 0, DEADLINE), minutes(25))
    assert late == TimerSpec(1, 0, minutes(10))


def test_a_first_level_timer_armed_at_the_deadline_still_marks_the_breach_after_a_pack_change() -> (
    None
):
    # Armed under a pack whose first level started at the deadline, fired under one whose
    # first level starts 10 min later: the timer is still the chain's head.
    assert marks_breach(LATE_START, TimerSpec(1, 0, DEADLINE), DEADLINE)


def test_first_level_arms_its_repeat_before_the_next_level() -> None:
    assert next_timer(LADDER, DEADLINE, TimerSpec(1, 0, DEADLINE), DEADLINE) == TimerSpec(
        1, 1, minutes(30)
    )


def test_the_repeat_that_would_reach_the_next_level_gives_way_to_it() -> None:
    assert next_timer(LADDER, DEADLINE, TimerSpec(1, 1, minutes(30)), minutes(30)) == TimerSpec(
        2, 0, minutes(60)
    )


def test_top_level_without_repeat_fires_once() -> None:
    assert next_timer(LADDER, DEADLINE, TimerSpec(3, 0, minutes(240)), minutes(240)) is None


def test_level_two_repeats_until_level_three() -> None:
    fired = TimerSpec(2, 0, minutes(60))
    assert next_timer(LADDER, DEADLINE, fired, minutes(60)) == TimerSpec(2, 1, minutes(180))
    assert next_timer(LADDER, DEADLINE, TimerSpec(2, 1, minutes(180)), minutes(180)) == (
        TimerSpec(3, 0, minutes(240))
    )


def test_the_chain_fires_every_rung_in_order_when_each_is_on_time() -> None:
    rungs, fired = [], TimerSpec(1, 0, DEADLINE)
    while fired is not None and fired.due_at <= minutes(480):
        rungs.append((fired.level, fired.repeat, fired.due_at))
        fired = next_timer(LADDER, DEADLINE, fired, fired.due_at)
    assert rungs == [
        (1, 0, minutes(0)),
        (1, 1, minutes(30)),
        (2, 0, minutes(60)),
        (2, 1, minutes(180)),
        (3, 0, minutes(240)),
    ]
    assert fired is None


def test_missed_repeats_collapse_into_the_next_one_ahead() -> None:
    # Replicas were down from the deadline until 50 min past: L1 fires once, late;
    # the 30-min repeat already passed, so the next repeat would be at 60 min, which is
    # level 2's time: level 2 takes over instead.
    fired = TimerSpec(1, 0, DEADLINE)
    assert next_timer(LADDER, DEADLINE, fired, minutes(50)) == TimerSpec(2, 0, minutes(60))
    # Down even longer (5 h): level 2 is due at once, its repeats skipped; level 3 is
    # armed at its own (past) time, so it fires right after, once.
    level2 = TimerSpec(2, 0, minutes(60))
    assert next_timer(LADDER, DEADLINE, level2, minutes(300)) == TimerSpec(3, 0, minutes(240))


def test_top_level_repeat_skips_missed_occurrences() -> None:
    looping = [*LADDER[:2], LadderStep.model_validate({"level": 3, "after": "4h", "repeat": "1h"})]
    fired = TimerSpec(3, 0, minutes(240))
    # Found 3.5 h late: repeats at 300, 360, 420 min were missed; next is 480 min (repeat 4).
    assert next_timer(looping, DEADLINE, fired, minutes(450)) == TimerSpec(3, 4, minutes(480))


def test_targets_per_level() -> None:
    assert targets_of(LADDER, 1) == ["duty_contact", "supervisor"]
    assert targets_of(LADDER, 3) == ["city_centre"]
    assert targets_of(LADDER, 2) == ["district_supervision"]
