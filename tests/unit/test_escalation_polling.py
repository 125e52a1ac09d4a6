"""When a timer loop claims again after a batch that was not full."""

from datetime import UTC, datetime, timedelta

from services.escalation.polling import seconds_until_next_claim

NOW = datetime(2026, 3, 4, 9, 0, tzinfo=UTC)


def test_with_no_timer_ahead_the_loop_looks_again_after_one_poll() -> None:
    assert seconds_until_next_claim(None, NOW, 0.25) == 0.25


def test_the_loop_wakes_when_the_next_timer_falls_due() -> None:
    assert seconds_until_next_claim(NOW + timedelta(milliseconds=80), NOW, 0.25) == 0.08


def test_a_timer_due_later_than_one_poll_is_looked_for_after_the_poll() -> None:
    # Another replica may arm an earlier timer meanwhile.
    assert seconds_until_next_claim(NOW + timedelta(minutes=5), NOW, 0.25) == 0.25


def test_a_timer_that_fell_due_since_the_query_is_claimed_at_once() -> None:
    assert seconds_until_next_claim(NOW - timedelta(milliseconds=3), NOW, 0.25) == 0.0
