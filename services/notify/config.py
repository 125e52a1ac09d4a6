"""``notify.yaml``: notify's own part of a city pack, optional, with sensible defaults.

It holds what only notify needs: which event types each department subscribes
to, endpoint overrides, per-endpoint timeout / concurrency / circuit breaker,
what a confidential case may reveal to departments, and the citizen notices
(templates in Chinese and English, quiet hours in the pack's time zone).
A pack without the file gets the defaults below. Pure: reading the file is
the only I/O, done by :func:`load_notify_config`.
"""

from __future__ import annotations

import string
import sys
from dataclasses import dataclass
from datetime import time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator

from shared.citypack import CityPack, PackError
from shared.citypack.common import Strict
from shared.citypack.loader import YamlDoc, parse, read_yaml
from shared.durations import Duration
from shared.events import EventType

FILE_NAME = "notify.yaml"
# The citizen-notice gateway is one more endpoint of the delivery queue, under this name.
GATEWAY = "notice_gateway"
Language = Literal["zh", "en"]
NoticeKind = Literal["accepted", "dispatched", "resolved", "feedback"]
RevealField = Literal["name", "phone", "email"]
CASE_EVENT_TYPES = frozenset(t.value for t in EventType if t.value.startswith("civicroute.case."))
# Fields each notice template may use.
TEMPLATE_FIELDS: dict[str, frozenset[str]] = {
    "accepted": frozenset({"case_id"}),
    "dispatched": frozenset({"case_id", "department"}),
    "resolved": frozenset({"case_id", "department", "reply"}),
    "feedback": frozenset({"case_id"}),
}


def event_type_name(name: str) -> str:
    """``dispatched`` → ``civicroute.case.dispatched.v1``; full names pass through."""
    full = name if name.startswith("civicroute.") else f"civicroute.case.{name}.v1"
    if full not in CASE_EVENT_TYPES:
        raise ValueError(f"unknown case event type {name!r}")
    return full


class Breaker(Strict):
    failures: int = Field(default=5, ge=1, le=1000, description="consecutive failures to open")
    cooldown: Duration = Field(default=timedelta(seconds=30), description="open → half-open")


class _Tuning(Strict):
    timeout: Duration | None = None
    concurrency: int | None = Field(default=None, ge=1, le=256)
    breaker: Breaker | None = None
    events: list[str] | None = None

    @field_validator("events")
    @classmethod
    def _known_events(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else [event_type_name(v) for v in value]

    @field_validator("timeout")
    @classmethod
    def _positive(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value.total_seconds() <= 0:
            raise ValueError("timeout must be positive")
        return value


class EndpointSettings(_Tuning):
    """How one endpoint is called; unset fields inherit from ``defaults``."""

    url: str | None = Field(default=None, pattern=r"^https?://")


class Defaults(_Tuning):
    timeout: Duration = timedelta(seconds=5)
    concurrency: int = Field(default=8, ge=1, le=256)
    breaker: Breaker = Field(default_factory=Breaker)


class QuietHours(Strict):
    start: time
    end: time

    def contains(self, moment: time) -> bool:
        if self.start <= self.end:
            return self.start <= moment < self.end
        return moment >= self.start or moment < self.end  # the window spans midnight


class Templates(Strict):
    accepted: str
    dispatched: str
    resolved: str
    feedback: str

    @field_validator("accepted", "dispatched", "resolved", "feedback")
    @classmethod
    def _fields(cls, value: str, info: object) -> str:
        kind = getattr(info, "field_name", "")
        allowed = TEMPLATE_FIELDS[kind]
        try:
            used = {field for _, field, _, _ in string.Formatter().parse(value) if field}
        except ValueError as error:
            raise ValueError(f"bad template: {error}") from error
        unknown = sorted(used - allowed)
        if unknown:
            raise ValueError(f"unknown field(s) {unknown}; {kind} may use {sorted(allowed)}")
        return value


DEFAULT_TEMPLATES: dict[str, Templates] = {
    "zh": Templates(
        accepted="【12345】您的诉求已受理，工单号{case_id}。",
        dispatched="【12345】工单{case_id}已派至{department}办理。",
        resolved="【12345】工单{case_id}已由{department}办结：{reply}",
        feedback="【12345】请对工单{case_id}的办理结果评价：回复1满意，2基本满意，3不满意。",
    ),
    "en": Templates(
        accepted="311: your request is received. Case number {case_id}.",
        dispatched="311: case {case_id} was sent to {department}.",
        resolved="311: case {case_id} was resolved by {department}: {reply}",
        feedback="311: how did we do on case {case_id}? Reply 1 satisfied, 2 fair, 3 unsatisfied.",
    ),
}


class Notices(Strict):
    enabled: bool = True
    default_language: Language = "en"
    kinds: list[NoticeKind] = Field(
        default_factory=lambda: ["accepted", "dispatched", "resolved", "feedback"]
    )
    quiet_hours: QuietHours | None = None
    feedback_delay: Duration = timedelta(0)
    templates: dict[Language, Templates] = Field(default_factory=lambda: dict(DEFAULT_TEMPLATES))
    gateway: EndpointSettings = Field(default_factory=EndpointSettings)


class Privacy(Strict):
    # Reporter fields a department may still see on a confidential or anonymous case.
    confidential_reveal: list[RevealField] = Field(default_factory=list)


class NotifyFile(Strict):
    timezone: str = "UTC"
    defaults: Defaults = Field(default_factory=Defaults)
    departments: dict[str, EndpointSettings] = Field(default_factory=dict)
    notices: Notices = Field(default_factory=Notices)
    privacy: Privacy = Field(default_factory=Privacy)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as error:
            raise ValueError(f"unknown time zone {value!r}") from error
        return value


@dataclass(frozen=True)
class Endpoint:
    """One endpoint's resolved settings."""

    name: str
    url: str | None
    timeout: float
    concurrency: int
    breaker_failures: int
    breaker_cooldown: float
    events: frozenset[str]


@dataclass(frozen=True)
class NotifyConfig:
    file: NotifyFile
    zone: ZoneInfo
    endpoints: dict[str, Endpoint]
    default: Endpoint

    def endpoint(self, name: str) -> Endpoint:
        return self.endpoints.get(name) or Endpoint(**{**self.default.__dict__, "name": name})

    def subscribed(self, department: str, event_type: str) -> bool:
        return event_type in self.endpoint(department).events

    @property
    def max_timeout(self) -> float:
        return max([self.default.timeout, *(e.timeout for e in self.endpoints.values())])


def _resolve(
    name: str, own: EndpointSettings, defaults: Defaults, fallback_url: str | None
) -> Endpoint:
    breaker = own.breaker or defaults.breaker
    events = own.events if own.events is not None else defaults.events
    return Endpoint(
        name=name,
        url=own.url or fallback_url,
        timeout=(own.timeout or defaults.timeout).total_seconds(),
        concurrency=own.concurrency or defaults.concurrency,
        breaker_failures=breaker.failures,
        breaker_cooldown=breaker.cooldown.total_seconds(),
        events=frozenset(events) if events is not None else CASE_EVENT_TYPES,
    )


def build_config(model: NotifyFile, pack: CityPack, doc: YamlDoc | None = None) -> NotifyConfig:
    """Resolve every department's endpoint; refuse departments the pack does not list."""
    for name in model.departments:
        if name not in pack.departments:
            message = f"departments.{name}: unknown department (not in departments.yaml)"
            if doc is None:
                raise PackError(f"{FILE_NAME}: {message}")
            raise doc.error(("departments", name), message)
    if GATEWAY in pack.departments:
        raise PackError(f"departments.yaml: {GATEWAY!r} is reserved for the notice gateway")
    endpoints = {
        dep_id: _resolve(
            dep_id,
            model.departments.get(dep_id, EndpointSettings()),
            model.defaults,
            department.webhook_url,
        )
        for dep_id, department in pack.departments.items()
    }
    endpoints[GATEWAY] = _resolve(GATEWAY, model.notices.gateway, model.defaults, None)
    default = _resolve("", EndpointSettings(), model.defaults, None)
    return NotifyConfig(model, ZoneInfo(model.timezone), endpoints, default)


def load_notify_config(pack: CityPack) -> NotifyConfig:
    path = pack.directory / FILE_NAME
    if not path.exists():
        return build_config(NotifyFile(), pack)
    doc = read_yaml(path)
    if doc.data is None:
        return build_config(NotifyFile(), pack, doc)
    return build_config(parse(doc, NotifyFile), pack, doc)


def load_notify_config_or_exit(pack: CityPack) -> NotifyConfig:
    try:
        return load_notify_config(pack)
    except PackError as error:
        print(f"bad city pack: {error}", file=sys.stderr)
        raise SystemExit(2) from None
