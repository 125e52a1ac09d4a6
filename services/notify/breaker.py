"""A circuit breaker per endpoint, pure: the caller passes the clock.

closed: everything goes; ``failures`` unhealthy attempts in a row open it.
open: nothing goes for ``cooldown`` seconds, so a dead department costs nothing.
half-open: one probe goes; its success closes the breaker, its failure reopens it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class State(IntEnum):
    # Values are the breaker-state gauge: 0 closed, 1 half-open, 2 open.
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


@dataclass
class Breaker:
    failures: int
    cooldown: float
    state: State = State.CLOSED
    consecutive: int = 0
    opened_at: float = 0.0

    def current(self, now: float) -> State:
        if self.state is State.OPEN and now >= self.opened_at + self.cooldown:
            self.state = State.HALF_OPEN
        return self.state

    def slots(self, now: float, concurrency: int, in_flight: int) -> int:
        """How many more attempts may start now."""
        state = self.current(now)
        if state is State.OPEN:
            return 0
        limit = 1 if state is State.HALF_OPEN else concurrency
        return max(0, limit - in_flight)

    def succeeded(self) -> None:
        self.state = State.CLOSED
        self.consecutive = 0

    def failed(self, now: float) -> None:
        self.consecutive += 1
        if self.state is State.HALF_OPEN or self.consecutive >= self.failures:
            self.state = State.OPEN
            self.opened_at = now

    def seconds_until_probe(self, now: float) -> float | None:
        if self.current(now) is not State.OPEN:
            return None
        return max(0.0, self.opened_at + self.cooldown - now)
