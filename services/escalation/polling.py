"""How long a timer loop waits before it claims again after a short batch. Pure: no I/O."""

from __future__ import annotations

from datetime import datetime

# Due timers another loop holds (SKIP LOCKED passes over them) are that loop's to fire.
# Claiming again at once would walk past every held row and find nothing; in a burst of
# thousands, loops spinning so took a sixth of PostgreSQL's time. A batch takes some
# tens of milliseconds, so the held timers are fired or released by the next look.
HELD_BACKOFF_SECONDS = 0.05


def seconds_until_next_claim(next_due: datetime | None, now: datetime, poll: float) -> float:
    """After a batch that was not full: until the next timer falls due, at most ``poll``
    (another replica may arm an earlier one meanwhile); a short backoff when that time has
    passed, since those timers are held by another loop."""
    if next_due is None:
        return poll
    until = (next_due - now).total_seconds()
    if until <= 0:
        return min(poll, HELD_BACKOFF_SECONDS)
    return min(poll, until)
