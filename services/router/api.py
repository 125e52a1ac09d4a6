"""router's HTTP API: the triage queue for dispatch-centre operators, and the audit trail.

Every call needs an API key (``Authorization: Bearer <key>`` or ``X-Api-Key``)
of a client with role ``operator`` (``ops`` may read too).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Protocol

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from services.router import store
from shared.apikeys import require
from shared.events import Jurisdiction, Urgency

if TYPE_CHECKING:
    from services.router.domain import Decision
    from services.router.model_store import Trained
    from shared.apikeys import ApiKeys
    from shared.citypack import CityPack
    from shared.events import Urgency
    from shared.service import Service


class Router(Protocol):
    """What the HTTP API needs of the service (``app.Router`` provides it)."""

    service: Service
    pack: CityPack
    keys: ApiKeys
    trained: Trained

    async def route_by_hand(
        self,
        case_id: str,
        *,
        category: str,
        lead: str,
        cooperating: list[str],
        urgency: Urgency | None,
        reason: str,
        operator: str,
    ) -> tuple[Decision, int]: ...


READERS = ("operator", "ops")


class Refused(HTTPException):
    """A manual routing the router will not do, with the reason for the operator."""


class RequestView(BaseModel):
    """What the operator needs to decide; never the reporter's name, phone or e-mail."""

    channel: str
    received_at: datetime
    title: str | None
    description: str
    address_text: str | None
    lat: float | None
    long: float | None
    grid_id: str | None
    category_hint: str | None


class TriageItem(BaseModel):
    case_id: str
    attempt: int
    kind: str
    reason: str
    category_guess: str | None
    confidence: float
    candidates: list[str]
    jurisdiction: Jurisdiction
    queued_at: datetime
    request: RequestView


class TriagePage(BaseModel):
    total: int
    items: list[TriageItem]


class ManualRoute(BaseModel):
    model_config = ConfigDict(extra="forbid")

    category: Annotated[str, StringConstraints(min_length=1, max_length=80)]
    lead: Annotated[str, StringConstraints(min_length=1, max_length=80)]
    cooperating: list[str] = Field(default_factory=list, max_length=20)
    urgency: Urgency | None = None
    reason: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=3, max_length=1000)
    ] = Field(description="Why this department: kept in the audit trail and the training data")


class Routed(BaseModel):
    case_id: str
    category: str
    urgency: Urgency
    lead: str
    cooperating: list[str]
    sla_policy: str
    attempt: int


def _item(waiting: store.Waiting) -> TriageItem:
    r = waiting.request
    return TriageItem(
        case_id=waiting.case_id,
        attempt=waiting.attempt,
        kind=waiting.kind,
        reason=waiting.reason,
        category_guess=waiting.category,
        confidence=waiting.confidence,
        candidates=waiting.candidates,
        jurisdiction=waiting.jurisdiction,
        queued_at=waiting.queued_at,
        request=RequestView(
            channel=r.channel.value,
            received_at=r.received_at,
            title=r.title,
            description=r.description,
            address_text=r.location.address_text,
            lat=r.location.lat,
            long=r.location.long,
            grid_id=r.location.grid_id,
            category_hint=r.category_hint,
        ),
    )


def make_router(router: Router) -> APIRouter:
    api = APIRouter(prefix="/v1", tags=["triage"])

    @api.get("/triage", response_model=TriagePage)
    async def list_triage(
        request: Request,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> TriagePage:
        """Cases waiting for a person, oldest first."""
        require(router.keys, request, *READERS)
        async with router.service.pool.acquire() as conn:
            total = await store.count_triage(conn)
            waiting = await store.list_triage(conn, limit, offset)
        return TriagePage(total=total, items=[_item(w) for w in waiting])

    @api.post("/triage/{case_id}/route", response_model=Routed)
    async def route_by_hand(case_id: str, body: ManualRoute, request: Request) -> Routed:
        """Dispatch a waiting case to the department an operator chose, with the reason."""
        client = require(router.keys, request, "operator")
        decision, attempt = await router.route_by_hand(
            case_id,
            category=body.category,
            lead=body.lead,
            cooperating=body.cooperating,
            urgency=body.urgency,
            reason=body.reason,
            operator=client.name,
        )
        return Routed(
            case_id=case_id,
            category=decision.category,
            urgency=decision.urgency,
            lead=decision.lead,
            cooperating=decision.cooperating,
            sla_policy=decision.sla_policy,
            attempt=attempt,
        )

    @api.get("/cases/{case_id}/decisions")
    async def decisions(case_id: str, request: Request) -> dict[str, Any]:
        """Every routing decision of a case with its confidence and reason trace (audit)."""
        require(router.keys, request, *READERS)
        async with router.service.pool.acquire() as conn:
            found = await store.decisions_of(conn, case_id)
        if not found:
            raise HTTPException(404, f"no decisions for case {case_id}")
        return {"case_id": case_id, "decisions": found}

    @api.get("/model")
    async def model(request: Request) -> dict[str, Any]:
        """The classifier in use: version, examples, when it was trained."""
        require(router.keys, request, *READERS)
        meta = {k: v for k, v in router.trained.meta.items() if k != "reliability"}
        return {"city": router.pack.name, **meta}

    return api
