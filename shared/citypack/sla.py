"""``sla.yaml``: response deadlines per urgency and category, the calendar they run on,
and the escalation ladder that climbs when one passes unmet.

A clock is written either as a duration (``2h``: wall time, 7×24) or as
``{within: 7d, calendar: working}``: time counted only on the pack's working
days (weekends and public holidays skipped, make-up working days counted).
"""

from __future__ import annotations

import re
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, model_validator

from shared.citypack.common import Strict
from shared.durations import Duration, format_duration, parse_duration

_DAYS = re.compile(r"^(\d+)d")


class Basis(StrEnum):
    WALL = "wall"
    WORKING = "working"


class ClockSpec(Strict):
    """One clock's allowance. ``days`` advance the local calendar date (keeping the local
    time of day, so DST never shifts a 7-day deadline by an hour); ``rest`` is elapsed time."""

    days: int = Field(default=0, ge=0)
    rest: timedelta = timedelta(0)
    basis: Basis = Basis.WALL

    @model_validator(mode="before")
    @classmethod
    def _from_yaml(cls, value: Any) -> Any:
        if isinstance(value, str | int | float | timedelta):
            return _split(value, Basis.WALL)
        if isinstance(value, dict) and "within" in value:
            unknown = set(value) - {"within", "calendar"}
            if unknown:
                raise ValueError(f"unknown key(s) {sorted(unknown)}: use within and calendar")
            return _split(value["within"], Basis(value.get("calendar", Basis.WALL)))
        return value

    @model_validator(mode="after")
    def _positive(self) -> ClockSpec:
        if self.days == 0 and self.rest <= timedelta(0):
            raise ValueError("a clock must allow some time (e.g. 15m, 2h, 7d)")
        return self

    @property
    def nominal(self) -> timedelta:
        """The allowance as plain elapsed time (what it would be on a wall clock without DST)."""
        return timedelta(days=self.days) + self.rest

    def never_after(self, other: ClockSpec) -> bool:
        """True when this clock always ends no later than ``other`` (both started together).

        A working-day allowance is never shorter than its nominal wall time, so a wall clock
        within another's nominal time is within it; a working clock is only comparable with
        another working clock."""
        if self.basis is Basis.WORKING and other.basis is not Basis.WORKING:
            return False
        return self.nominal <= other.nominal

    def describe(self) -> str:
        text = format_duration(self.nominal)
        return f"{text} working" if self.basis is Basis.WORKING else text


def _split(value: str | int | float | timedelta, basis: Basis) -> dict[str, Any]:
    if isinstance(value, str):
        cleaned = value.strip().replace(" ", "")
        parse_duration(cleaned)  # validates the whole text
        match = _DAYS.match(cleaned)
        if match is None:
            return {"days": 0, "rest": parse_duration(cleaned), "basis": basis}
        tail = cleaned[match.end() :]
        rest = parse_duration(tail) if tail else timedelta(0)
        return {"days": int(match.group(1)), "rest": rest, "basis": basis}
    elapsed = parse_duration(value)
    return {"days": 0, "rest": elapsed, "basis": basis}


class SlaPolicy(Strict):
    sign_for: ClockSpec
    contact: ClockSpec
    resolve: ClockSpec

    def clock_past_resolve(self) -> str | None:
        """The first clock that may end after the resolve clock, if any."""
        for clock in ("sign_for", "contact"):
            if not getattr(self, clock).never_after(self.resolve):
                return clock
        return None


class PolicyOverride(Strict):
    """Per-category changes to the urgency's policy; clocks not named are inherited."""

    sign_for: ClockSpec | None = None
    contact: ClockSpec | None = None
    resolve: ClockSpec | None = None


# Who a level notifies: role names, as the departments' contact lists name them.
Target = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]+$")]


class LadderStep(Strict):
    level: int = Field(ge=1, le=3)
    after: Duration
    repeat: Duration | None = None
    targets: list[Target] = Field(default_factory=list)


class CalendarConfig(Strict):
    """Which days are working days.

    ``chinese``: the State Council's public holidays and make-up working days (the
    ``chinesecalendar`` package); ``holidays``: weekends plus a country's public
    holidays (the ``holidays`` package), minus the names in ``ignore``;
    ``weekdays``: Monday to Friday.
    """

    kind: Literal["chinese", "holidays", "weekdays"] = "weekdays"
    country: str | None = None
    subdiv: str | None = None
    ignore: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _country_for_holidays(self) -> CalendarConfig:
        if self.kind == "holidays" and not self.country:
            raise ValueError("calendar kind 'holidays' needs a country (e.g. US)")
        return self


class SlaFile(Strict):
    timezone: str = "UTC"
    calendar: CalendarConfig = Field(default_factory=CalendarConfig)
    policies: dict[str, SlaPolicy] = Field(min_length=1)
    categories: dict[str, PolicyOverride] = Field(default_factory=dict)
    ladder: list[LadderStep] = Field(min_length=1)

    def policy(self, category: str | None, urgency: str) -> tuple[str, SlaPolicy]:
        """The effective policy and its name: the urgency's, with the category's overrides.

        The urgency's deadlines are an upper bound: a category's clock applies only where it
        is tighter, so an emergency heating failure keeps the emergency clocks."""
        name = urgency if urgency in self.policies else "general"
        base = self.policies[name]
        override = self.categories.get(category) if category else None
        if override is None:
            return name, base
        clocks = {
            clock: mine
            for clock in ("sign_for", "contact", "resolve")
            if (mine := getattr(override, clock)) is not None
            and mine.never_after(getattr(base, clock))
            and mine != getattr(base, clock)
        }
        if not clocks:
            return name, base
        return f"{name}/{category}", base.model_copy(update=clocks)
