"""The department callback API (the "ack webhook"), signed per Standard Webhooks."""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
import structlog
from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field, ValidationError

from services.escalation import store
from shared.events import CaseSigned, EventType, utcnow
from shared.outbox import enqueue
from shared.webhooks import SignatureError, verify

if TYPE_CHECKING:
    from services.escalation.app import Escalation

log = structlog.get_logger(__name__)
MAX_CALLBACK_BYTES = 64 * 1024


class SignBody(BaseModel):
    department: str = Field(min_length=1, max_length=80)
    actor: str | None = Field(default=None, max_length=120)
    note: str | None = Field(default=None, max_length=2000)


class CaseAnswer(BaseModel):
    case_id: str
    state: str
    department: str


async def authenticate(
    escalation: Escalation, request: Request, model: type[SignBody]
) -> tuple[str, SignBody]:
    """Verify the signature with the claimed department's secret; return webhook-id and body."""
    body = await request.body()
    if len(body) > MAX_CALLBACK_BYTES:
        raise HTTPException(413, "callback body over 64 KiB")
    try:
        parsed = model.model_validate(orjson.loads(body))
    except (orjson.JSONDecodeError, ValidationError) as error:
        raise HTTPException(422, f"bad callback body: {error}") from error
    secrets = escalation.secrets.get(parsed.department, [])
    try:
        webhook_id = verify(secrets, body, dict(request.headers))
    except SignatureError as error:
        raise HTTPException(401, f"signature refused: {error}") from error
    return webhook_id, parsed


def make_router(escalation: Escalation) -> APIRouter:
    router = APIRouter(prefix="/v1/cases", tags=["department callbacks"])

    @router.post("/{case_id}/sign", response_model=CaseAnswer)
    async def sign(case_id: str, request: Request) -> CaseAnswer:
        """The department signs for (签收) a case it was dispatched; stops the sign-for clock."""
        webhook_id, body = await authenticate(escalation, request, SignBody)
        async with escalation.service.pool.acquire() as conn, conn.transaction():
            if not await store.remember_callback(
                conn, webhook_id, body.department, case_id, "sign"
            ):
                raise HTTPException(401, "webhook-id already used (replay)")
            case = await store.lock_case(conn, case_id)
            if case is None:
                raise HTTPException(404, f"no case {case_id}")
            if case["lead"] != body.department:
                raise HTTPException(403, f"{body.department} does not hold case {case_id}")
            if case["state"] != "dispatched":
                if case["state"] == "signed" and case["signed_by"] == body.actor:
                    return CaseAnswer(case_id=case_id, state="signed", department=body.department)
                raise HTTPException(409, f"case {case_id} is {case['state']}, cannot sign")
            now = utcnow()
            await store.mark_signed(conn, case_id, now, body.actor)
            payload = CaseSigned(
                case_id=case_id,
                department=body.department,
                actor=body.actor,
                at=now,
                note=body.note,
            )
            await enqueue(
                conn,
                escalation.service.name,
                [escalation.event(EventType.CASE_SIGNED, case_id, payload)],
            )
        log.info("case signed", case_id=case_id, department=body.department)
        return CaseAnswer(case_id=case_id, state="signed", department=body.department)

    return router
