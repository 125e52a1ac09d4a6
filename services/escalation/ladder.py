"""The escalation ladder's arithmetic: which timer follows the one that just fired. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from shared.citypack.sla import LadderStep


@dataclass(frozen=True)
class TimerSpec:
    level: int
    repeat: int
    due_at: datetime


def first_timer(ladder: list[LadderStep], deadline: datetime) -> TimerSpec:
    step = ladder[0]
    return TimerSpec(step.level, 0, deadline + step.after)


def next_timers(ladder: list[LadderStep], deadline: datetime, fired: TimerSpec) -> list[TimerSpec]:
    """After ``fired``: its repeat (while the next level has not taken over) and the next level.

    A level repeats every ``repeat`` until the next level's time comes; the top
    level repeats for as long as the clock stays unmet (if it has a repeat).
    """
    index = next(i for i, step in enumerate(ladder) if step.level == fired.level)
    step = ladder[index]
    higher = ladder[index + 1] if index + 1 < len(ladder) else None
    takeover = deadline + higher.after if higher is not None else None
    timers: list[TimerSpec] = []
    if step.repeat is not None and step.repeat.total_seconds() > 0:
        again = fired.due_at + step.repeat
        if takeover is None or again < takeover:
            timers.append(TimerSpec(step.level, fired.repeat + 1, again))
    if higher is not None and fired.repeat == 0:
        timers.append(TimerSpec(higher.level, 0, max(takeover, fired.due_at)))  # type: ignore[type-var]
    return timers


def targets_of(ladder: list[LadderStep], level: int) -> list[str]:
    return next((list(step.targets) for step in ladder if step.level == level), [])
