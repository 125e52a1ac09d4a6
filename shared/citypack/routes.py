"""``routes.yaml``: the routing tree from a classified request to lead and cooperating units.

In the spirit of Alertmanager: routes are tried in order, depth first; a route
matches when all its conditions hold; the first matching child of a matching
route wins, else the route itself; ``continue: true`` lets later siblings match
too (they add cooperating units). Children inherit ``lead`` and ``cooperating``.
A route that sets ``category`` is a rule: it overrides the classifier.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import time
from functools import cached_property
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from shared.citypack.common import Ident, Strict
from shared.events import Channel, Urgency

Label = Literal["category", "channel", "district", "street", "grid"]
LABELS: tuple[Label, ...] = ("category", "channel", "district", "street", "grid")
PLACE_LABELS: tuple[Label, ...] = ("district", "street", "grid")
_MATCHER = re.compile(r'^\s*(category|channel|district|street|grid)\s*(=~|!~|!=|=)\s*"?(.*?)"?\s*$')
_TIME_RANGE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")


@dataclass(frozen=True)
class Matcher:
    """One Alertmanager-style condition on a label: ``=``, ``!=``, ``=~`` or ``!~``."""

    label: Label
    op: str
    value: str

    @classmethod
    def parse(cls, text: str) -> Matcher:
        found = _MATCHER.match(text)
        if not found:
            raise ValueError(
                f"bad matcher {text!r}: expected '<label> <op> <value>' with label one of "
                f"{', '.join(LABELS)} and op one of = != =~ !~"
            )
        label: Label = found.group(1)  # type: ignore[assignment]  # the regex allows only labels
        op, value = found.group(2), found.group(3)
        if op in ("=~", "!~"):
            try:
                re.compile(value)
            except re.error as error:
                raise ValueError(f"bad regular expression in matcher {text!r}: {error}") from None
        return cls(label, op, value)

    def holds(self, actual: str | None) -> bool:
        value = actual or ""
        if self.op == "=":
            return value == self.value
        if self.op == "!=":
            return value != self.value
        # Anchored like Alertmanager: the whole value must match.
        hit = re.fullmatch(self.value, value) is not None
        return hit if self.op == "=~" else not hit

    def __str__(self) -> str:
        return f"{self.label}{self.op}{self.value}"


@dataclass(frozen=True)
class TimeRange:
    """A daily window in the pack's local time; ``22:00-06:00`` wraps past midnight."""

    start: time
    end: time
    text: str

    @classmethod
    def parse(cls, text: str) -> TimeRange:
        found = _TIME_RANGE.match(text.strip())
        if not found:
            raise ValueError(f"bad time range {text!r}: expected HH:MM-HH:MM")
        h1, m1, h2, m2 = (int(g) for g in found.groups())
        end = time(23, 59, 59, 999999) if h2 == 24 else time(h2, m2)
        if (h1, m1) == (h2 % 24, m2):
            raise ValueError(f"bad time range {text!r}: start and end are the same")
        return cls(time(h1, m1), end, text.strip())

    def contains(self, moment: time) -> bool:
        if self.start < self.end:
            return self.start <= moment < self.end
        return moment >= self.start or moment < self.end


OneOrMany = str | list[str]


class RouteMatch(Strict):
    """Shorthand conditions: each field is one value or a list (any of them)."""

    category: OneOrMany | None = None
    channel: Channel | list[Channel] | None = None
    district: OneOrMany | None = None
    street: OneOrMany | None = None
    grid: OneOrMany | None = None
    keywords: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    time: list[str] = Field(default_factory=list)

    @field_validator("time")
    @classmethod
    def _times(cls, value: list[str]) -> list[str]:
        for text in value:
            TimeRange.parse(text)
        return value

    def values(self, label: Label) -> list[str]:
        raw = getattr(self, label)
        if raw is None:
            return []
        if isinstance(raw, list):
            return [str(v) for v in raw]
        return [str(raw)]

    @cached_property
    def time_ranges(self) -> list[TimeRange]:
        return [TimeRange.parse(text) for text in self.time]


class Route(Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    id: Ident
    match: RouteMatch = Field(default_factory=RouteMatch)
    matchers: list[str] = Field(default_factory=list)
    # Rule fields: a matching route that sets them overrides the classifier.
    category: str | None = None
    urgency: Urgency | None = None
    lead: str | None = None
    cooperating: list[str] | None = None
    continue_: bool = Field(default=False, alias="continue")
    routes: list[Route] = Field(default_factory=list)

    @field_validator("matchers")
    @classmethod
    def _matchers(cls, value: list[str]) -> list[str]:
        for text in value:
            Matcher.parse(text)
        return value

    @cached_property
    def parsed_matchers(self) -> list[Matcher]:
        return [Matcher.parse(text) for text in self.matchers]


class Fallback(Strict):
    """The department of last resort (兜底)."""

    lead: str
    cooperating: list[str] = Field(default_factory=list)
    # True: a case whose place cannot be found goes to the fallback lead (the
    # district government takes what it cannot place). False for packs whose
    # departments serve the whole city whatever the address.
    when_no_jurisdiction: bool = True


class PlaceRule(Strict):
    """Where the pack serves, kept apart from what a request is about.

    A request with no place found is routed by its subject inside ``home`` (the
    hotline serves that district); only categories marked ``needs_place`` in the
    taxonomy then go to a person (``no_place: triage``) or to the fallback lead
    (``no_place: fallback``). A request placed by its address or text in one of the
    ``elsewhere`` districts (name -> other names for it) is set aside for a person to
    transfer (转办) and never auto-dispatched.
    """

    home: str
    elsewhere: dict[str, list[str]] = Field(default_factory=dict)
    no_place: Literal["triage", "fallback"] = "triage"


class ClassifierSettings(Strict):
    model: str = "tfidf-linear"
    words: Literal["jieba", "latin"] = "latin"
    # Below this confidence a case goes to human triage instead of being guessed.
    min_confidence: float = Field(default=0.5, ge=0, le=1)


class RoutesFile(Strict):
    timezone: str = "UTC"
    classifier: ClassifierSettings = Field(default_factory=ClassifierSettings)
    # After this many returns (退单) a case goes to triage instead of another department.
    max_returns: int = Field(default=2, ge=1, le=10)
    fallback: Fallback
    place: PlaceRule | None = None
    routes: list[Route] = Field(default_factory=list)

    @model_validator(mode="after")
    def _timezone(self) -> RoutesFile:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {self.timezone!r}") from None
        if self.place is not None and self.fallback.when_no_jurisdiction:
            raise ValueError(
                "place and fallback.when_no_jurisdiction exclude each other: with a place rule "
                "a request with no place is routed by its subject (set when_no_jurisdiction: false)"
            )
        return self

    def walk(self) -> list[tuple[tuple[int, ...], Route]]:
        """Every route with its index path, depth first, in order."""
        found: list[tuple[tuple[int, ...], Route]] = []

        def visit(routes: list[Route], prefix: tuple[int, ...]) -> None:
            for index, route in enumerate(routes):
                found.append(((*prefix, index), route))
                visit(route.routes, (*prefix, index))

        visit(self.routes, ())
        return found
