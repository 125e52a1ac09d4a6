"""The event contract: the CloudEvents 1.0 envelope and a typed payload per event type.

Every Kafka message in civicroute is a structured-mode CloudEvent (JSON). The
``type`` names the payload model in :data:`PAYLOADS`; consumers ignore types
they do not know and tolerate fields they do not know.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from shared.channels import SubmittedRequest

SPECVERSION = "1.0"


class EventType(StrEnum):
    REQUEST_SUBMITTED = "civicroute.request.submitted.v1"
    REQUEST_ACCEPTED = "civicroute.request.accepted.v1"
    CASE_DISPATCHED = "civicroute.case.dispatched.v1"
    CASE_TRIAGED = "civicroute.case.triaged.v1"
    CASE_SIGNED = "civicroute.case.signed.v1"
    CASE_CONTACTED = "civicroute.case.contacted.v1"
    CASE_PROGRESSED = "civicroute.case.progressed.v1"
    CASE_EXTENSION_REQUESTED = "civicroute.case.extension_requested.v1"
    CASE_EXTENDED = "civicroute.case.extended.v1"
    CASE_EXTENSION_REFUSED = "civicroute.case.extension_refused.v1"
    CASE_RETURNED = "civicroute.case.returned.v1"
    CASE_RESOLVED = "civicroute.case.resolved.v1"
    CASE_RATED = "civicroute.case.rated.v1"
    CASE_REOPENED = "civicroute.case.reopened.v1"
    CASE_CLOSED = "civicroute.case.closed.v1"
    CASE_ESCALATED = "civicroute.case.escalated.v1"
    CASE_DEADLINES_SET = "civicroute.case.deadlines_set.v1"
    MESSAGE_DEADLETTERED = "civicroute.message.deadlettered.v1"


class Channel(StrEnum):
    HOTLINE = "hotline"
    APP = "app"
    GRID = "grid"


class Urgency(StrEnum):
    EMERGENCY = "emergency"
    UTILITIES = "utilities"
    GENERAL = "general"
    COMPLEX = "complex"


class Clock(StrEnum):
    SIGN_FOR = "sign_for"
    CONTACT = "contact"
    RESOLVE = "resolve"


class Rating(StrEnum):
    SATISFIED = "satisfied"
    BASICALLY_SATISFIED = "basically_satisfied"
    UNSATISFIED = "unsatisfied"


def utcnow() -> datetime:
    return datetime.now(UTC)


class Payload(BaseModel):
    """Base of every payload: unknown fields from newer producers are kept, not refused."""

    model_config = ConfigDict(extra="allow")


# --- the canonical request (intake's output) ---------------------------------------------


class Reporter(Payload):
    """Who reported it. Personal data: never logged, never a metric label."""

    name: str | None = None
    phone: str | None = None
    email: str | None = None
    anonymous: bool = False
    confidential: bool = False
    language: Literal["zh", "en"] | None = None


class Location(Payload):
    address_text: str | None = None
    lat: float | None = Field(default=None, ge=-90, le=90)
    long: float | None = Field(default=None, ge=-180, le=180)
    grid_id: str | None = None


class CitizenRequest(Payload):
    case_id: str
    channel: Channel
    source_ref: str
    received_at: AwareDatetime
    submitted_at: AwareDatetime | None = None
    title: str | None = None
    description: str
    category_hint: str | None = None
    category_trusted: bool = False
    urgency_hint: Urgency | None = None
    location: Location = Field(default_factory=Location)
    media_urls: list[str] = Field(default_factory=list)
    reporter: Reporter = Field(default_factory=Reporter)
    grid_worker_id: str | None = None
    extras: dict[str, Any] = Field(default_factory=dict)


# --- router's output -----------------------------------------------------------------------


class Jurisdiction(Payload):
    district: str | None = None
    street: str | None = None
    grid_id: str | None = None
    # home: no place found; the pack's home jurisdiction is assumed (routes.yaml `place`)
    method: Literal["grid", "point", "address", "home", "fallback"] = "fallback"


class CaseDispatched(Payload):
    case_id: str
    category: str
    urgency: Urgency
    jurisdiction: Jurisdiction
    lead: str
    cooperating: list[str] = Field(default_factory=list)
    sla_policy: str
    confidence: float = Field(ge=0, le=1)
    trace: list[str] = Field(default_factory=list)
    route_id: str | None = None
    attempt: int = Field(default=1, ge=1)
    excluded: list[str] = Field(default_factory=list)
    dispatched_at: AwareDatetime
    request: CitizenRequest


class CaseTriaged(Payload):
    case_id: str
    reason: str
    # low_confidence, no_route, no_place, out_of_jurisdiction, returns, all_excluded
    kind: str | None = None
    confidence: float = Field(ge=0, le=1)
    candidates: list[str] = Field(default_factory=list)
    trace: list[str] = Field(default_factory=list)
    triaged_at: AwareDatetime
    request: CitizenRequest


# --- a department's actions (escalation's output) -------------------------------------------


class CaseAction(Payload):
    case_id: str
    department: str
    actor: str | None = None
    at: AwareDatetime
    note: str | None = None


class CaseSigned(CaseAction):
    pass


class CaseContacted(CaseAction):
    pass


class CaseProgressed(CaseAction):
    pass


class CaseExtensionRequested(CaseAction):
    new_due: AwareDatetime
    reason: str


class CaseExtended(CaseAction):
    new_due: AwareDatetime
    approved_by: str


class CaseExtensionRefused(CaseAction):
    refused_by: str
    reason: str


class CaseReturned(CaseAction):
    reason: str
    return_count: int = Field(ge=1)
    excluded: list[str] = Field(default_factory=list)


class CaseResolved(CaseAction):
    reply: str
    overdue: bool = False


class CaseRated(CaseAction):
    rating: Rating


class CaseReopened(CaseAction):
    reason: str


class CaseClosed(CaseAction):
    pass


class CaseEscalated(Payload):
    case_id: str
    department: str
    clock: Clock
    level: int = Field(ge=1, le=3)
    repeat: int = Field(default=0, ge=0)
    due_at: AwareDatetime
    fired_at: AwareDatetime
    targets: list[str] = Field(default_factory=list)


class CaseDeadlinesSet(Payload):
    """The case's clocks as escalation set or moved them (dispatch, extension, reopening)."""

    case_id: str
    department: str
    sla_policy: str
    sign_for_due: AwareDatetime | None = None
    contact_due: AwareDatetime | None = None
    resolve_due: AwareDatetime | None = None
    reason: str = "dispatched"


class MessageDeadLettered(Payload):
    reason: str
    service: str
    topic: str
    partition: int
    offset: int
    key_b64: str | None = None
    value_b64: str
    at: AwareDatetime


PAYLOADS: dict[str, type[BaseModel]] = {
    EventType.REQUEST_SUBMITTED: SubmittedRequest,
    EventType.REQUEST_ACCEPTED: CitizenRequest,
    EventType.CASE_DISPATCHED: CaseDispatched,
    EventType.CASE_TRIAGED: CaseTriaged,
    EventType.CASE_SIGNED: CaseSigned,
    EventType.CASE_CONTACTED: CaseContacted,
    EventType.CASE_PROGRESSED: CaseProgressed,
    EventType.CASE_EXTENSION_REQUESTED: CaseExtensionRequested,
    EventType.CASE_EXTENDED: CaseExtended,
    EventType.CASE_EXTENSION_REFUSED: CaseExtensionRefused,
    EventType.CASE_RETURNED: CaseReturned,
    EventType.CASE_RESOLVED: CaseResolved,
    EventType.CASE_RATED: CaseRated,
    EventType.CASE_REOPENED: CaseReopened,
    EventType.CASE_CLOSED: CaseClosed,
    EventType.CASE_ESCALATED: CaseEscalated,
    EventType.CASE_DEADLINES_SET: CaseDeadlinesSet,
    EventType.MESSAGE_DEADLETTERED: MessageDeadLettered,
}


# --- the envelope ----------------------------------------------------------------------------


class CloudEvent(BaseModel):
    """CloudEvents 1.0, structured mode. Extension attributes are allowed and kept."""

    model_config = ConfigDict(extra="allow")

    specversion: Literal["1.0"]
    id: Annotated[str, Field(min_length=1, max_length=200)]
    source: Annotated[str, Field(min_length=1, max_length=500)]
    type: Annotated[str, Field(min_length=1, max_length=200)]
    time: AwareDatetime | None = None
    subject: str | None = None
    datacontenttype: str | None = "application/json"
    data: Any = None

    def payload(self) -> BaseModel | None:
        """The typed payload, or None for a type this version does not know.

        Raises InvalidEvent when the type is known but the data does not fit it.
        """
        model = PAYLOADS.get(self.type)
        if model is None:
            return None
        try:
            return model.model_validate(self.data)
        except ValidationError as error:
            raise InvalidEvent(f"invalid {self.type} data: {_summarise(error)}") from error


class InvalidEvent(ValueError):
    """A message that no retry will fix: it goes to the dead-letter topic with this reason."""


def _summarise(error: ValidationError, limit: int = 5) -> str:
    items = error.errors(include_url=False, include_input=False)
    shown = [
        f"{'.'.join(str(p) for p in item['loc']) or '<root>'}: {item['msg']}" for item in items
    ]
    more = f" (+{len(shown) - limit} more)" if len(shown) > limit else ""
    return "; ".join(shown[:limit]) + more


def new_event(
    event_type: EventType | str,
    *,
    source: str,
    subject: str | None,
    data: BaseModel,
    time: datetime | None = None,
    event_id: str | None = None,
) -> CloudEvent:
    return CloudEvent(
        specversion=SPECVERSION,
        id=event_id or str(uuid.uuid4()),
        source=source,
        type=str(event_type),
        time=time or utcnow(),
        subject=subject,
        data=data.model_dump(mode="json", exclude_none=False),
    )


def encode(event: CloudEvent) -> bytes:
    return event.model_dump_json(exclude_none=True).encode()


def parse_document(raw: bytes | None) -> dict[str, Any]:
    """The JSON object of one Kafka value; InvalidEvent when it is not one."""
    if raw is None or not raw:
        raise InvalidEvent("empty message")
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise InvalidEvent(f"malformed JSON: {error}") from error
    if not isinstance(document, dict):
        raise InvalidEvent(f"not a CloudEvent: a JSON {type(document).__name__}, not an object")
    return document


def envelope(document: dict[str, Any]) -> CloudEvent:
    """Validate a parsed document as a CloudEvent; InvalidEvent with the reason if not."""
    try:
        return CloudEvent.model_validate(document)
    except ValidationError as error:
        raise InvalidEvent(f"not a CloudEvent: {_summarise(error)}") from error


def decode(raw: bytes | None) -> CloudEvent:
    """Parse one Kafka value; raise InvalidEvent with a reason a human can act on."""
    return envelope(parse_document(raw))
