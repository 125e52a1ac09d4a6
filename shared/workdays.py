"""Working-day calendars for SLA clocks: which local dates are working days.

- :class:`ChineseWorkdays`: the State Council's holiday arrangement, from the
  ``chinesecalendar`` package: public holidays off, make-up working days (调休,
  often a Saturday or Sunday) on. For a year the installed package does not
  cover yet, it falls back to Monday–Friday and says so through ``covers``.
- :class:`HolidayWorkdays`: Monday–Friday minus a country's public holidays
  (the ``holidays`` package), e.g. US/NY for New York City.
- :class:`Weekdays`: Monday–Friday.
"""

from __future__ import annotations

from datetime import date
from functools import lru_cache
from typing import TYPE_CHECKING, Protocol

import chinese_calendar
import holidays

if TYPE_CHECKING:  # the pack loader imports this module: no import back at run time
    from shared.citypack.sla import CalendarConfig


class WorkCalendar(Protocol):
    name: str

    def is_workday(self, day: date) -> bool: ...

    def covers(self, day: date) -> bool:
        """False when the calendar's data does not reach ``day`` (weekday rule used)."""
        ...


class Weekdays:
    name = "weekdays"

    def is_workday(self, day: date) -> bool:
        return day.weekday() < 5

    def covers(self, day: date) -> bool:
        return True


class ChineseWorkdays:
    name = "chinese"

    def is_workday(self, day: date) -> bool:
        return _chinese_workday(day)

    def covers(self, day: date) -> bool:
        return _chinese_covers(day.year)


@lru_cache(maxsize=8192)
def _chinese_workday(day: date) -> bool:
    if not _chinese_covers(day.year):
        return day.weekday() < 5
    return bool(chinese_calendar.is_workday(day))


@lru_cache(maxsize=64)
def _chinese_covers(year: int) -> bool:
    try:
        chinese_calendar.is_workday(date(year, 6, 1))
    except NotImplementedError:
        return False
    return True


class HolidayWorkdays:
    def __init__(self, country: str, subdiv: str | None = None, ignore: list[str] | None = None):
        # Raises NotImplementedError for an unknown country or subdivision.
        self._holidays = holidays.country_holidays(country, subdiv=subdiv)
        self._ignore = set(ignore or [])
        self.name = f"holidays:{country}" + (f"-{subdiv}" if subdiv else "")

    def is_workday(self, day: date) -> bool:
        if day.weekday() >= 5:
            return False
        names = self._holidays.get_list(day)
        return not any(name not in self._ignore for name in names)

    def covers(self, day: date) -> bool:
        return True


def make_calendar(config: CalendarConfig) -> WorkCalendar:
    """The calendar an ``sla.yaml`` names; ValueError if it cannot be built."""
    if config.kind == "chinese":
        return ChineseWorkdays()
    if config.kind == "holidays":
        assert config.country is not None
        try:
            return HolidayWorkdays(config.country, config.subdiv, config.ignore)
        except NotImplementedError as error:
            raise ValueError(str(error)) from error
    return Weekdays()
