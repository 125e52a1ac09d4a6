"""The escalation ladder's arithmetic: which timers a clock arms, and which follow one that
fired. Pure.

A clock passing its deadline unmet is marked *breached* (recorded, nothing sent), and the
ladder climbs: level *n* fires ``after`` past the deadline and repeats every ``repeat``
until the next level's time comes; the top level repeats while the clock stays unmet.
Timers that were missed (every replica down) fire once when found: a level's missed
repeats collapse into the next future one.

A level's firings never overlap the next level's, so the ladder is one chain, the breach
mark at its head, and each firing arms the single timer after it. A running clock thus
holds one timer. When the first level starts at the deadline (the packs' usual ``0s``),
that level's first firing is also the breach mark; otherwise a timer of level ``BREACH``
marks the breach and arms the first level. Most clocks are met before their deadline, so
arming and disarming them is the common case: one timer each, not two.
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


def arm(ladder: list[LadderStep], deadline: datetime) -> TimerSpec:
    """The timer a freshly set deadline needs: the chain's head, due at the deadline."""
    first = ladder[0]
    if first.after.total_seconds() == 0:
        return TimerSpec(first.level, 0, deadline)
    return TimerSpec(BREACH, 0, deadline)


def marks_breach(ladder: list[LadderStep], fired: TimerSpec, deadline: datetime) -> bool:
    """Whether ``fired`` is the chain's head, whose firing records the clock's breach.

    Judged by the timer itself (its first firing, at the deadline) as well as the ladder,
    so a pack changed between arming and firing still records the breach once: a second
    head (old timers beside new ones) finds the breach recorded and records nothing.
    """
    if fired.level == BREACH:
        return True
    return fired.level == ladder[0].level and fired.repeat == 0 and fired.due_at == deadline


def next_timer(
    ladder: list[LadderStep], deadline: datetime, fired: TimerSpec, now: datetime
) -> TimerSpec | None:
    """The rung after ``fired`` (at ``now``): the first level after a ``BREACH`` mark; a
    level's next repeat while that comes before the next level's time, else the next
    level; None after a top level without repeat."""
    if fired.level == BREACH:
        first = ladder[0]
        return TimerSpec(first.level, 0, max(deadline + first.after, fired.due_at))
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
