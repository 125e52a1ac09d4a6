"""The escalation ladder's arithmetic: which timers a clock arms, and which follow one that
fired. Pure.

Per clock, a deadline arms a *breach* timer (level 0, at the deadline: the clock is
marked breached, nothing is sent) and the ladder's first level. A level repeats every
``repeat`` until the next level's time comes; the top level repeats while the clock
stays unmet. Timers that were missed (every replica down) fire once when found: a
level's missed repeats collapse into the next future one.

A level's firings never overlap the next level's, so the ladder is one chain: each
firing arms the single timer after it. A clock thus holds at most two timers (its
breach mark and its next rung), and a firing writes one timer, not two.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from shared.citypack.sla import LadderStep

BREACH = 0


@dataclass(frozen=True)
class TimerSpec:
    level: int
    repeat: int
    due_at: datetime


def arm(ladder: list[LadderStep], deadline: datetime) -> list[TimerSpec]:
    """The timers a freshly set deadline needs: the breach mark and the first level."""
    step = ladder[0]
    return [TimerSpec(BREACH, 0, deadline), TimerSpec(step.level, 0, deadline + step.after)]


def next_timer(
    ladder: list[LadderStep], deadline: datetime, fired: TimerSpec, now: datetime
) -> TimerSpec | None:
    """The rung after ``fired`` (at ``now``): its next repeat while that comes before the
    next level's time, else the next level; None after the breach mark or a top level
    without repeat."""
    if fired.level == BREACH:
        return None
    index = next(i for i, step in enumerate(ladder) if step.level == fired.level)
    step = ladder[index]
    higher = ladder[index + 1] if index + 1 < len(ladder) else None
    takeover = deadline + higher.after if higher is not None else None
    if step.repeat is not None and step.repeat.total_seconds() > 0:
        repeat, again = fired.repeat + 1, fired.due_at + step.repeat
        if again <= now:  # missed repeats (downtime): skip to the next one still ahead
            steps = (now - fired.due_at) // step.repeat + 1
            repeat, again = fired.repeat + steps, fired.due_at + steps * step.repeat
        if takeover is None or again < takeover:
            return TimerSpec(step.level, repeat, again)
    if higher is not None:
        assert takeover is not None
        return TimerSpec(higher.level, 0, max(takeover, fired.due_at))
    return None


def targets_of(ladder: list[LadderStep], level: int) -> list[str]:
    return next((list(step.targets) for step in ladder if step.level == level), [])
