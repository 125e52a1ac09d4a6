"""The circuit breaker's states: closed → open after N failures → half-open probe."""

from __future__ import annotations

from services.notify.breaker import Breaker, State


def test_opens_after_n_consecutive_failures_only() -> None:
    breaker = Breaker(failures=3, cooldown=10)
    breaker.failed(0)
    breaker.failed(0)
    breaker.succeeded()  # the run is broken: counting starts again
    breaker.failed(1)
    breaker.failed(1)
    assert breaker.current(1) is State.CLOSED
    breaker.failed(1)
    assert breaker.current(1) is State.OPEN


def test_open_breaker_lets_nothing_through_until_the_cooldown_ends() -> None:
    breaker = Breaker(failures=1, cooldown=10)
    breaker.failed(100)
    assert breaker.slots(105, concurrency=8, in_flight=0) == 0
    assert breaker.seconds_until_probe(105) == 5
    assert breaker.slots(110, concurrency=8, in_flight=0) == 1  # half-open: one probe
    assert breaker.current(110) is State.HALF_OPEN
    assert breaker.slots(110, concurrency=8, in_flight=1) == 0  # the probe is out


def test_probe_success_closes_and_probe_failure_reopens_for_another_cooldown() -> None:
    breaker = Breaker(failures=5, cooldown=10)
    for _ in range(5):
        breaker.failed(0)
    assert breaker.current(10) is State.HALF_OPEN
    breaker.failed(10)  # one failed probe is enough to reopen
    assert breaker.current(15) is State.OPEN
    assert breaker.current(20) is State.HALF_OPEN
    breaker.succeeded()
    assert breaker.current(20) is State.CLOSED
    assert breaker.slots(20, concurrency=8, in_flight=3) == 5
