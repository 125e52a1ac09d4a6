"""How long a timer loop waits before it claims again after a short batch. Pure: no I/O."""

from __future__ import annotations

from datetime import datetime

# Due timers another loop holds (SKIP LOCKED passes over them) are that loop's to fire.
# Claiming again at once would walk past every held row and find nothing: in the bench's
# burst of 10,000, 131 claims at 8.3 ms each (a sixth of PostgreSQL's time) fell to 108 at
# 6.9 ms with this backoff. A batch takes tens to hundreds of milliseconds, so a look
# every 50 ms finds the held timers fired, or released by a loop that failed.
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
