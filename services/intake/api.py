"""intake's HTTP API: citizens' apps and the platform may post requests directly."""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog
from fastapi import APIRouter, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from services.intake.store import get_request
from shared.channels import SubmittedRequest

if TYPE_CHECKING:
    from services.intake.app import Intake

log = structlog.get_logger(__name__)


class AcceptedResponse(BaseModel):
    case_id: str
    status: str
    duplicate: bool


class RequestView(BaseModel):
    case_id: str
    channel: str
    received_at: str
    description: str


def make_router(intake: Intake) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["requests"])

    @router.post("/requests", status_code=201, response_model=AcceptedResponse)
    async def post_request(body: SubmittedRequest) -> JSONResponse:
        """Submit one request in any channel's format. Resending the same request is safe."""
        payload = body.root
        async with intake.service.pool.acquire() as conn, conn.transaction():
            outcome = await intake.accept_one(conn, payload)
        if outcome.conflict:
            raise HTTPException(
                409,
                f"{payload.channel}:{payload.source_ref} was already accepted with other content",
            )
        intake.count(payload.channel, "http", outcome)
        if outcome.created:
            log.info("request accepted", case_id=outcome.case_id, channel=payload.channel)
        result = AcceptedResponse(
            case_id=outcome.case_id, status="accepted", duplicate=not outcome.created
        )
        return JSONResponse(result.model_dump(), status_code=201 if outcome.created else 200)

    @router.get("/requests/{case_id}", response_model=RequestView)
    async def get_one(case_id: str) -> RequestView:
        async with intake.service.pool.acquire() as conn:
            request = await get_request(conn, case_id)
        if request is None:
            raise HTTPException(404, f"no request {case_id}")
        return RequestView(
            case_id=request.case_id,
            channel=request.channel,
            received_at=request.received_at.isoformat(),
            description=request.description,
        )

    return router
