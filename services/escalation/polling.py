"""How long a timer loop waits before it claims again after a short batch. Pure: no I/O."""

from __future__ import annotations

from datetime import datetime


def seconds_until_next_claim(next_due: datetime | None, now: datetime, poll: float) -> float:
    """After a batch that was not full, every due timer not held by another loop was
    claimed: wait until the next one falls due (``next_due``, the earliest not yet due),
    at most ``poll``, since another replica may arm an earlier one or a loop holding due
    timers may fail and release them.

    Claiming again at once while other loops hold the due timers would walk past every
    held row and find nothing: in the bench's burst of 10,000 the claims took a sixth of
    PostgreSQL's time (1.09 s), 0.63 s without those fruitless ones.
    """
    if next_due is None:
        return poll
    return min(poll, max(0.0, (next_due - now).total_seconds()))
