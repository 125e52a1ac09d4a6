"""Due-time arithmetic for SLA clocks, on wall time or on a working-day calendar. Pure.

Definitions (documented in the README section on escalation):

- Whole days of an allowance advance the *local* calendar date and keep the local
  time of day: ``7d`` from 10:00 is 10:00 seven days later, even across a DST change.
  A local time that does not exist that day (spring forward) moves forward by the gap;
  an ambiguous one (fall back) takes the first occurrence.
- The rest (hours, minutes, seconds) is elapsed time: ``2h`` is two real hours.
- On the working-day calendar only working days count. A clock started on a
  non-working day starts at 00:00 of the next working day; whole days step over
  non-working days (make-up working days count); elapsed time that reaches the end
  of a working day continues at 00:00 of the next one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from shared.citypack.sla import Basis, ClockSpec, SlaFile, SlaPolicy
from shared.events import Clock
from shared.workdays import WorkCalendar, make_calendar

# No arrangement has ever had more than a few weeks off in a row; a longer search means a
# calendar that never works (a configuration error), not a date to wait for.
MAX_DAYS_OFF = 366


class CalendarError(ValueError):
    pass


@dataclass(frozen=True)
class ClockMath:
    """The pack's timezone and working-day calendar, to add clock allowances to instants."""

    tz: ZoneInfo
    calendar: WorkCalendar

    @classmethod
    def for_sla(cls, sla: SlaFile) -> ClockMath:
        return cls(ZoneInfo(sla.timezone), make_calendar(sla.calendar))

    def due(self, start: datetime, spec: ClockSpec) -> datetime:
        """When a clock started at ``start`` with allowance ``spec`` runs out (UTC)."""
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        if spec.basis is Basis.WALL:
            moved = self._local_days(start, spec.days, working=False)
            return moved.astimezone(UTC) + spec.rest
        begin = self._working_start(start)
        moved = self._local_days(begin, spec.days, working=True)
        return self._add_working_elapsed(moved, spec.rest).astimezone(UTC)

    def deadlines(self, start: datetime, policy: SlaPolicy) -> dict[Clock, datetime]:
        return {
            Clock.SIGN_FOR: self.due(start, policy.sign_for),
            Clock.CONTACT: self.due(start, policy.contact),
            Clock.RESOLVE: self.due(start, policy.resolve),
        }

    # --- helpers -----------------------------------------------------------------------

    def _local(self, day: date, at: time) -> datetime:
        """A local wall time as an aware instant; gaps move forward, folds take the first."""
        naive = datetime.combine(day, at)
        return naive.replace(tzinfo=self.tz).astimezone(UTC).astimezone(self.tz)

    def _local_days(self, start: datetime, days: int, *, working: bool) -> datetime:
        if days == 0:
            return start
        local = start.astimezone(self.tz)
        day = local.date()
        for _ in range(days):
            day = self._next_workday(day) if working else day + timedelta(days=1)
        return self._local(day, local.time().replace(tzinfo=None))

    def _working_start(self, start: datetime) -> datetime:
        local = start.astimezone(self.tz)
        if self.calendar.is_workday(local.date()):
            return local
        return self._local(self._next_workday(local.date()), time(0))

    def _add_working_elapsed(self, start: datetime, elapsed: timedelta) -> datetime:
        current = start.astimezone(self.tz)
        remaining = elapsed
        while remaining > timedelta(0):
            day_end = self._local(current.date() + timedelta(days=1), time(0))
            available = day_end.astimezone(UTC) - current.astimezone(UTC)
            if remaining <= available:
                return (current.astimezone(UTC) + remaining).astimezone(self.tz)
            remaining -= available
            current = self._local(self._next_workday(current.date()), time(0))
        return current

    def _next_workday(self, day: date) -> date:
        for step in range(1, MAX_DAYS_OFF + 1):
            candidate = day + timedelta(days=step)
            if self.calendar.is_workday(candidate):
                return candidate
        raise CalendarError(f"{self.calendar.name}: no working day within a year after {day}")


@dataclass(frozen=True)
class SlaClocks:
    """A pack's deadlines: (policy name, due per clock) for a category, urgency and start."""

    sla: SlaFile
    math: ClockMath

    @classmethod
    def for_sla(cls, sla: SlaFile) -> SlaClocks:
        return cls(sla, ClockMath.for_sla(sla))

    def __call__(
        self, category: str, urgency: str, start: datetime
    ) -> tuple[str, dict[Clock, datetime]]:
        name, policy = self.sla.policy(category, urgency)
        return name, self.math.deadlines(start, policy)
