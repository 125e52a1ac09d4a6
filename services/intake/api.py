"""intake's own HTTP API: the platform and citizens' apps post requests and follow them."""

from __future__ import annotations

import re
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import orjson
import structlog
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError

from services.intake.domain import Rejection, guess_channel, is_json_media_type
from services.intake.lifecycle import CaseView, open311_status
from services.intake.open311 import public_address, public_step
from services.intake.store import IdempotencyKey
from shared.apikeys import ROLES, Client, require
from shared.channels import MAX_BODY_BYTES, SubmittedRequest
from shared.events import Location, Reporter
from shared.logs import mask_text

if TYPE_CHECKING:
    import asyncpg

    from services.intake.domain import ChannelPayload
    from services.intake.open311 import Open311Config
    from services.intake.store import Acceptance
    from shared.apikeys import ApiKeys
    from shared.citypack import CityPack


class Intake(Protocol):
    """What the HTTP APIs need of the service (``app.Intake`` provides it)."""

    pool: asyncpg.Pool
    pack: CityPack
    keys: ApiKeys
    open311: Open311Config

    def rejected(self, via: str, reason: Rejection, channel: str = "unknown") -> None: ...

    async def submit(
        self,
        payload: ChannelPayload,
        *,
        via: str,
        idempotency: IdempotencyKey | None,
        started: float,
    ) -> Acceptance: ...

    async def case(self, case_id: str) -> CaseView | None: ...


log = structlog.get_logger(__name__)
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


class BodyTooLarge(Exception):
    pass


async def read_limited(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The request body, refusing more than ``limit`` bytes without reading them all."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"body of {declared} bytes is over the {limit}-byte limit")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"body is over the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def idempotency_key(request: Request, client: Client) -> IdempotencyKey | None:
    """The ``Idempotency-Key`` header, scoped to the calling client; ValueError if malformed."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not _IDEMPOTENCY_KEY.match(key):
        raise ValueError("Idempotency-Key must be 1-255 visible ASCII characters")
    return IdempotencyKey(client.name, key)


class AcceptedResponse(BaseModel):
    case_id: str = Field(description="The case number: quote it to follow the request")
    status: str = Field(description="Always `accepted`")
    duplicate: bool = Field(description="True when this request had been accepted before")


class HistoryStep(BaseModel):
    at: str | None
    kind: str = Field(description="dispatched, triaged, signed, contacted, progressed, …")
    state: str | None = Field(description="The lifecycle state after this step")
    agency: str | None = Field(description="The department's display name")
    note: str | None = Field(description="The department's public words (reply, progress)")


class RequestView(BaseModel):
    """A case's public view; ``reporter``, ``source_ref`` and ``extras`` only for the platform."""

    case_id: str
    channel: str
    state: str = Field(description="Lifecycle state: received, triage, dispatched, signed, …")
    status: str = Field(description="Open311 status: open or closed")
    received_at: str
    requested_at: str
    updated_at: str
    expected_at: str | None = Field(description="When it is due to be resolved (SLA)")
    agency_responsible: str | None = Field(description="The lead department's display name")
    category: str | None = Field(description="Taxonomy id: the hint, then the router's choice")
    title: str | None
    description: str
    location: Location
    media_urls: list[str]
    history: list[HistoryStep]
    source_ref: str | None = None
    reporter: Reporter | None = None
    extras: dict[str, Any] | None = None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def request_view(view: CaseView, intake: Intake, *, personal: bool) -> dict[str, Any]:
    request = view.request
    departments = intake.pack.departments
    department = departments.get(view.department or "")
    hide = (lambda text: text) if personal else mask_text
    location = request.location.model_dump(mode="json")
    if not personal:
        location["address_text"] = public_address(request)
    result = RequestView(
        case_id=request.case_id,
        channel=request.channel.value,
        state=view.state,
        status=open311_status(view.state),
        received_at=request.received_at.isoformat(),
        requested_at=view.requested_at.isoformat(),
        updated_at=view.updated_at.isoformat(),
        expected_at=_iso(view.resolve_due),
        agency_responsible=department.name if department else view.department,
        category=view.category,
        title=hide(request.title) if request.title else None,
        description=hide(request.description),
        location=Location.model_validate(location),
        media_urls=list(request.media_urls),
        history=[HistoryStep(**public_step(s, departments)) for s in view.history],
    )
    if personal:
        result.source_ref = request.source_ref
        result.reporter = request.reporter
        result.extras = request.extras
    return result.model_dump(mode="json", exclude_none=not personal)


def channels_for(client: Client) -> frozenset[str]:
    """The channels a client may submit: the platform all three, a citizen app only ``app``."""
    if "platform" in client.roles:
        return frozenset({"hotline", "app", "grid"})
    return frozenset({"app"})


def make_router(intake: Intake) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["requests"])

    def authorise(request: Request, *roles: str) -> Client:
        try:
            return require(intake.keys, request, *roles)
        except HTTPException as error:
            reason = Rejection.UNAUTHORIZED if error.status_code == 401 else Rejection.FORBIDDEN
            if request.method == "POST":
                intake.rejected("http", reason)
            raise

    def refusal(status: int, reason: Rejection, detail: str) -> HTTPException:
        intake.rejected("http", reason)
        return HTTPException(status, detail)

    @router.post(
        "/requests",
        status_code=201,
        response_model=AcceptedResponse,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/ChannelPayload"}}
                },
            }
        },
        responses={
            200: {"description": "Sent before: the original case", "model": AcceptedResponse},
            400: {"description": "Empty, not UTF-8 or not JSON"},
            401: {"description": "No API key, or an unknown one"},
            403: {"description": "The key may not submit requests"},
            409: {"description": "Same source_ref or Idempotency-Key, different content"},
            413: {"description": "Body over 64 KiB"},
            415: {"description": "A Content-Type other than JSON"},
            422: {"description": "Field-level errors: detail[].loc, msg, type"},
        },
    )
    async def post_request(request: Request) -> JSONResponse:
        """Submit one request in any channel's format (hotline, app, grid).

        Resending it is safe: the same ``(channel, source_ref)``, or the same
        ``Idempotency-Key`` header with the same body, answers 200 with the
        original case and creates nothing.
        """
        started = time.perf_counter()
        client = authorise(request, "platform", "app")
        if not is_json_media_type(request.headers.get("content-type")):
            raise refusal(
                415,
                Rejection.MEDIA_TYPE,
                "the body must be JSON, sent with Content-Type: application/json",
            )
        try:
            body = await read_limited(request)
            key = idempotency_key(request, client)
        except BodyTooLarge as error:
            raise refusal(413, Rejection.TOO_LARGE, str(error)) from error
        except ValueError as error:
            raise refusal(400, Rejection.MALFORMED, str(error)) from error
        if not body.strip():
            raise refusal(400, Rejection.EMPTY, "empty body: send one channel payload as JSON")
        try:
            payload = SubmittedRequest.model_validate_json(body).root
        except ValidationError as error:
            items = error.errors(include_url=False, include_input=False)
            if any(item["type"] == "json_invalid" for item in items):
                raise refusal(
                    400, Rejection.MALFORMED, f"not UTF-8 JSON: {items[0]['msg']}"
                ) from error
            channel = guess_channel(_loose_json(body))
            detail = [{"loc": list(i["loc"]), "msg": i["msg"], "type": i["type"]} for i in items]
            intake.rejected("http", Rejection.INVALID, channel)
            return JSONResponse({"detail": detail}, status_code=422)
        if payload.channel not in channels_for(client):
            # hotline tickets carry an operator's urgency and grid reports a trusted checklist
            # category: both steer routing and deadlines, so only the appeal platform sends them
            raise refusal(
                403,
                Rejection.FORBIDDEN,
                f"this key may submit only channel(s) {', '.join(sorted(channels_for(client)))}:"
                f" {payload.channel} requests come from the appeal platform",
            )
        outcome = await intake.submit(payload, via="http", idempotency=key, started=started)
        if outcome.conflict:
            raise HTTPException(
                409,
                f"{payload.channel}:{payload.source_ref} (or this Idempotency-Key) was accepted"
                f" as {outcome.case_id} with other content",
            )
        result = AcceptedResponse(
            case_id=outcome.case_id, status="accepted", duplicate=not outcome.created
        )
        return JSONResponse(
            result.model_dump(),
            status_code=201 if outcome.created else 200,
            headers={"Location": f"/v1/requests/{outcome.case_id}"},
        )

    @router.get(
        "/requests/{case_id}",
        response_model=RequestView,
        response_model_exclude_none=True,
        responses={401: {}, 403: {}, 404: {"description": "No such case"}},
    )
    async def get_one(case_id: str, request: Request) -> JSONResponse:
        """A case's status and public history; personal data only for the platform's key."""
        client = authorise(request, *ROLES)
        view = await intake.case(case_id)
        if view is None:
            raise HTTPException(404, f"no request {case_id[:40]}")
        return JSONResponse(request_view(view, intake, personal="platform" in client.roles))

    return router


def _loose_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
