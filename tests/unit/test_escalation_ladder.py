"""The ladder's arithmetic: levels, repeats, and catch-up after downtime."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.escalation.ladder import BREACH, TimerSpec, arm, next_timer, targets_of
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


def test_a_deadline_arms_the_breach_mark_and_the_first_level() -> None:
    assert arm(LADDER, DEADLINE) == [TimerSpec(BREACH, 0, DEADLINE), TimerSpec(1, 0, DEADLINE)]


def test_breach_mark_arms_nothing_more() -> None:
    assert next_timer(LADDER, DEADLINE, TimerSpec(BREACH, 0, DEADLINE), DEADLINE) is None


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
