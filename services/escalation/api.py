"""escalation's HTTP API.

- The department callback API (the "ack webhook"): sign, contact, progress, extend,
  return, resolve, feedback. Each request is signed per Standard Webhooks with the
  department's secret; the department named in the body must hold the case.
- Supervisors approve or refuse extensions; ops and supervisors read cases and reports
  (API keys with roles, ``shared/apikeys.py``).
- mySociety's Open311 ``servicerequestupdates``, mapped onto the same actions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import TYPE_CHECKING, Any, Protocol
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo

import orjson
from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from services.escalation import lifecycle, open311, report, store
from services.escalation.lifecycle import Case, Outcome, Refused
from shared.apikeys import presented_key, require
from shared.events import Clock, Rating
from shared.webhooks import SignatureError, verify

if TYPE_CHECKING:
    import asyncpg

    from services.escalation.clocks import SlaClocks
    from shared.apikeys import ApiKeys
    from shared.citypack import CityPack


@dataclass(frozen=True)
class Answer:
    """What a caller is told of its action: the status and the body."""

    status: int
    body: dict[str, Any]


# A decision on a locked case at an instant: the lifecycle function to apply.
Decide = Callable[[Case, datetime], Outcome]


class Escalation(Protocol):
    """What the HTTP API needs of the service (``app.Escalation`` provides it)."""

    pool: asyncpg.Pool
    pack: CityPack
    secrets: dict[str, list[str]]
    api_keys: ApiKeys
    clocks: SlaClocks
    now: Callable[[], datetime]

    async def act(
        self,
        case_id: str,
        action: str,
        decide: Decide,
        callback: tuple[str, str, str] | None = None,
    ) -> Answer: ...


MAX_CALLBACK_BYTES = 64 * 1024
READERS = ("supervisor", "ops", "operator", "platform")
REPORT_READERS = ("supervisor", "ops")
RATERS = ("platform", "operator")


# --- request bodies --------------------------------------------------------------------------


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    department: str = Field(min_length=1, max_length=80)
    actor: str | None = Field(default=None, max_length=120)


class NoteBody(Body):
    note: str | None = Field(default=None, max_length=4000)


class ProgressBody(Body):
    note: str = Field(min_length=1, max_length=4000)


class ExtendBody(Body):
    reason: str = Field(min_length=1, max_length=2000)
    new_due: AwareDatetime


class ReturnBody(Body):
    reason: str = Field(min_length=1, max_length=2000)


class ResolveBody(Body):
    reply: str = Field(min_length=1, max_length=4000)


class FeedbackBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    department: str | None = Field(default=None, min_length=1, max_length=80)
    actor: str | None = Field(default=None, max_length=120)
    rating: Rating
    note: str | None = Field(default=None, max_length=4000)


class DecisionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(default=None, max_length=2000)


class RefusalBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=2000)


# --- views -------------------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def clock_view(case: Case, clock: Clock, now: datetime) -> dict[str, Any]:
    stopped = {
        Clock.SIGN_FOR: case.signed_at,
        Clock.CONTACT: case.contacted_at,
        Clock.RESOLVE: case.resolved_at,
    }[clock]
    due = case.due(clock)
    running = case.running(clock)
    return {
        "due": _iso(due),
        "running": running,
        "met_at": _iso(stopped),
        "breached": bool(
            due is not None and ((stopped is not None and stopped > due) or (running and now > due))
        ),
    }


def case_view(case: Case, now: datetime) -> dict[str, Any]:
    pending = case.pending
    return {
        "case_id": case.case_id,
        "state": case.state.value,
        "lead": case.lead,
        "cooperating": list(case.cooperating),
        "category": case.category,
        "urgency": case.urgency,
        "sla_policy": case.sla_policy,
        "attempt": case.attempt,
        "return_count": case.return_count,
        "excluded": list(case.excluded),
        "escalation_level": case.level,
        "dispatched_at": _iso(case.dispatched_at),
        "clocks": {clock.value: clock_view(case, clock, now) for clock in Clock},
        "overdue": case.overdue,
        "pending_extension": (
            {
                "new_due": _iso(pending.new_due),
                "reason": pending.reason,
                "requested_at": _iso(pending.requested_at),
            }
            if pending
            else None
        ),
        "rating": case.rating.value if case.rating else None,
        "reopen_count": case.reopen_count,
        "closed_at": _iso(case.closed_at),
    }


# --- authentication ----------------------------------------------------------------------------


def _parse(model: type[BaseModel], raw: bytes) -> Any:
    if len(raw) > MAX_CALLBACK_BYTES:
        raise HTTPException(413, "callback body over 64 KiB")
    try:
        return model.model_validate(orjson.loads(raw))
    except orjson.JSONDecodeError as error:
        raise HTTPException(400, f"body is not JSON: {error}") from error
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
            for e in error.errors(include_url=False, include_input=False)
        )
        raise HTTPException(422, f"bad callback body: {problems}") from error


def _verify(escalation: Escalation, department: str, raw: bytes, request: Request) -> str:
    try:
        return verify(escalation.secrets.get(department, []), raw, dict(request.headers))
    except SignatureError as error:
        raise HTTPException(401, f"signature refused: {error}") from error


def _digest(request: Request, raw: bytes) -> str:
    return hashlib.sha256(f"{request.method} {request.url.path}\n".encode() + raw).hexdigest()


def _http(refused: Refused) -> HTTPException:
    return HTTPException(refused.status, refused.message)


def _respond(answer: Answer) -> JSONResponse:
    return JSONResponse(answer.body, status_code=answer.status)


async def _act(
    escalation: Escalation,
    case_id: str,
    action: str,
    decide: Callable[[Case, datetime], Outcome],
    callback: tuple[str, str, str] | None = None,
) -> JSONResponse:
    """Apply the action; a refusal becomes its HTTP error (nothing changed)."""
    try:
        return _respond(await escalation.act(case_id, action, decide, callback))
    except Refused as refused:
        raise _http(refused) from None


# A department action: (case, parsed body, now) → outcome.
Action = Callable[[Case, Any, datetime], Outcome]

ACTIONS: dict[str, tuple[type[Body], Action]] = {
    "sign": (NoteBody, lambda c, b, now: lifecycle.sign(c, b.department, b.actor, b.note, now)),
    "contact": (
        NoteBody,
        lambda c, b, now: lifecycle.contact(c, b.department, b.actor, b.note, now),
    ),
    "progress": (
        ProgressBody,
        lambda c, b, now: lifecycle.progress(c, b.department, b.actor, b.note, now),
    ),
    "extend": (
        ExtendBody,
        lambda c, b, now: lifecycle.request_extension(
            c, b.department, b.actor, b.reason, b.new_due.astimezone(UTC), now
        ),
    ),
    "return": (
        ReturnBody,
        lambda c, b, now: lifecycle.give_back(c, b.department, b.actor, b.reason, now),
    ),
    "resolve": (
        ResolveBody,
        lambda c, b, now: lifecycle.resolve(c, b.department, b.actor, b.reply, now),
    ),
}


async def signed_action(
    escalation: Escalation, case_id: str, action: str, raw: bytes, request: Request
) -> JSONResponse:
    """Parse, authenticate and apply one department action signed per Standard Webhooks."""
    model, apply = ACTIONS[action]
    body = _parse(model, raw)
    webhook_id = _verify(escalation, body.department, raw, request)
    callback = (webhook_id, body.department, _digest(request, raw))
    return await _act(
        escalation, case_id, action, lambda case, now: apply(case, body, now), callback
    )


def make_router(escalation: Escalation) -> APIRouter:
    router = APIRouter()
    keys = escalation.api_keys

    def department_endpoint(action: str, summary: str) -> None:
        async def endpoint(case_id: str, request: Request) -> JSONResponse:
            raw = await request.body()
            return await signed_action(escalation, case_id, action, raw, request)

        endpoint.__name__ = f"case_{action}"
        router.add_api_route(
            f"/v1/cases/{{case_id}}/{action}",
            endpoint,
            methods=["POST"],
            summary=summary,
            tags=["department callbacks"],
        )

    department_endpoint("sign", "Sign for (签收) a dispatched case; stops the sign-for clock")
    department_endpoint("contact", "First contact with the citizen; stops the contact clock")
    department_endpoint("progress", "A progress note")
    department_endpoint("extend", "Ask for an extension (延期) of the resolve deadline")
    department_endpoint("return", "Not ours (退单): the router re-routes it without us")
    department_endpoint("resolve", "Resolved (办结), with the reply to the citizen")

    @router.post("/v1/cases/{case_id}/feedback", tags=["citizen side"])
    async def feedback(case_id: str, request: Request) -> JSONResponse:
        """The citizen's rating, from the citizen's side only: the call-back centre's return
        visit (回访) or the platform, with an API key (roles platform or operator). A
        department never rates a case, its own or another's: its signed attempt gets 403 and
        changes nothing. Unsatisfied reopens the case."""
        raw = await request.body()
        if presented_key(request) is None:
            raise HTTPException(
                403,
                "a department cannot rate a case: ratings come from the citizen's side "
                "(the call-back centre's return visit or the citizen's app)",
            )
        rater = require(keys, request, *RATERS).name
        body: FeedbackBody = _parse(FeedbackBody, raw)
        return await _act(
            escalation,
            case_id,
            "feedback",
            lambda case, now: lifecycle.rate(
                case, body.rating, body.actor or rater, body.note, now, escalation.clocks
            ),
        )

    @router.post("/v1/cases/{case_id}/extend/approve", tags=["supervisors"])
    async def approve(case_id: str, request: Request, body: DecisionBody) -> JSONResponse:
        """Approve the pending extension: the resolve clock moves to the date asked for."""
        supervisor = require(keys, request, "supervisor").name
        return await _act(
            escalation,
            case_id,
            "extension_approve",
            lambda case, now: lifecycle.approve_extension(case, supervisor, body.note, now),
        )

    @router.post("/v1/cases/{case_id}/extend/refuse", tags=["supervisors"])
    async def refuse(case_id: str, request: Request, body: RefusalBody) -> JSONResponse:
        """Refuse the pending extension: the resolve deadline stays."""
        supervisor = require(keys, request, "supervisor").name
        return await _act(
            escalation,
            case_id,
            "extension_refuse",
            lambda case, now: lifecycle.refuse_extension(case, supervisor, body.reason, now),
        )

    @router.get("/v1/cases/{case_id}", tags=["cases"])
    async def get_case(case_id: str, request: Request) -> JSONResponse:
        """The case with its clocks and its timeline (oldest first)."""
        require(keys, request, *READERS)
        async with escalation.pool.acquire() as conn:
            case = await store.load_case(conn, case_id)
            if case is None:
                raise HTTPException(404, f"no case {case_id}")
            entries = await store.timeline(conn, case_id)
        view = case_view(case, escalation.now())
        view["timeline"] = [
            {
                "at": _iso(row["at"]),
                "type": row["type"],
                "department": row["department"],
                "actor": row["actor"],
                "detail": row["detail"],
            }
            for row in entries
        ]
        return JSONResponse(view)

    @router.get("/v1/reports/departments", tags=["reports"])
    async def departments_report(
        request: Request,
        start: str = Query(alias="from", description="ISO date or datetime, inclusive"),
        end: str = Query(alias="to", description="ISO date or datetime, exclusive"),
        fmt: str | None = Query(default=None, alias="format", pattern="^(json|csv)$"),
    ) -> Response:
        """Per department: counts and the response, resolution and satisfaction rates over
        the cases dispatched in [from, to). Dates are local midnight in the pack's timezone."""
        require(keys, request, *REPORT_READERS)
        tz = ZoneInfo(escalation.pack.sla.timezone)
        since, until = _instant(start, "from", tz), _instant(end, "to", tz)
        if until <= since:
            raise HTTPException(422, "'to' must be after 'from'")
        now = escalation.now()
        async with escalation.pool.acquire() as conn:
            lines = report.build(await store.department_facts(conn, since, until, now))
        wants_csv = fmt == "csv" or (
            fmt is None and "text/csv" in request.headers.get("accept", "")
        )
        if wants_csv:
            return Response(report.as_csv(lines), media_type="text/csv; charset=utf-8")
        return JSONResponse(
            {
                "from": since.isoformat(),
                "to": until.isoformat(),
                "as_of": now.isoformat(),
                "departments": report.as_json(lines),
            }
        )

    @router.get("/v1/reports/overdue", tags=["reports"])
    async def overdue_report(
        request: Request, limit: int = Query(default=500, ge=1, le=10_000)
    ) -> JSONResponse:
        """Open cases past a deadline, the longest overdue first."""
        require(keys, request, *REPORT_READERS)
        now = escalation.now()
        async with escalation.pool.acquire() as conn:
            rows = await store.overdue_cases(conn, now, limit)
        cases = [
            {
                "case_id": row["case_id"],
                "state": row["state"],
                "lead": row["lead"],
                "category": row["category"],
                "urgency": row["urgency"],
                "escalation_level": row["level"],
                "overdue": {
                    clock.value: _iso(row[f"{clock.value}_overdue_since"])
                    for clock in Clock
                    if row[f"{clock.value}_overdue_since"] is not None
                },
            }
            for row in rows
        ]
        return JSONResponse({"as_of": now.isoformat(), "count": len(cases), "cases": cases})

    @router.post("/open311/v2/servicerequestupdates.{fmt}", tags=["open311"])
    async def open311_update(fmt: str, request: Request) -> Response:
        """mySociety's service request updates (form-encoded), signed per Standard Webhooks
        by the department named in the ``department`` field."""
        if fmt not in ("json", "xml"):
            return _open311_error(fmt, 404, "format must be json or xml")
        raw = await request.body()
        form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        try:
            update = open311.to_action(form)
        except open311.BadUpdate as error:
            return _open311_error(fmt, 400, str(error))
        _, apply = ACTIONS[update.action]
        model = ACTIONS[update.action][0]
        try:
            body = model.model_validate(update.body)
        except ValidationError as error:
            return _open311_error(fmt, 400, str(error.errors()[0]["msg"]))
        try:
            webhook_id = _verify(escalation, body.department, raw, request)
        except HTTPException as error:
            return _open311_error(fmt, 401, str(error.detail))
        try:
            await escalation.act(
                update.case_id,
                update.action,
                lambda case, now: apply(case, body, now),
                callback=(webhook_id, body.department, _digest(request, raw)),
            )
        except Refused as refused:
            status = refused.status if refused.status in (401, 403, 404) else 400
            return _open311_error(fmt, status, refused.message)
        if fmt == "xml":
            xml = (
                '<?xml version="1.0" encoding="utf-8"?><service_request_updates>'
                f"<request_update><update_id>{escape(webhook_id)}</update_id></request_update>"
                "</service_request_updates>"
            )
            return Response(xml, media_type="text/xml; charset=utf-8")
        return JSONResponse([{"update_id": webhook_id}])

    return router


def _open311_error(fmt: str, status: int, description: str) -> Response:
    if fmt == "xml":
        xml = (
            '<?xml version="1.0" encoding="utf-8"?><errors><error>'
            f"<code>{status}</code><description>{escape(description)}</description>"
            "</error></errors>"
        )
        return Response(xml, status_code=status, media_type="text/xml; charset=utf-8")
    return JSONResponse([{"code": status, "description": description}], status_code=status)


def _instant(text: str, name: str, tz: ZoneInfo) -> datetime:
    """An ISO date (local midnight in ``tz``) or an ISO datetime (naive = ``tz``)."""
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time(0), tz).astimezone(UTC)
        value = datetime.fromisoformat(text)
    except ValueError as error:
        raise HTTPException(422, f"'{name}' is not an ISO date or datetime: {text!r}") from error
    return (value if value.tzinfo else value.replace(tzinfo=tz)).astimezone(UTC)
