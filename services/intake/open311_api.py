"""Open311 GeoReport v2 under ``/open311/v2/``, in ``.json`` and ``.xml``.

Reads are public (no personal data in them); ``POST requests`` needs an
``api_key`` of a client with role ``app`` or ``platform``.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse

from services.intake import open311 as o3
from services.intake.api import BodyTooLarge, Intake, idempotency_key, read_limited
from services.intake.domain import Rejection
from services.intake.store import CaseFilter, IdempotencyKey, case_for_token, find_cases, get_case
from shared.apikeys import Client, presented_key
from shared.events import utcnow

PREFIX = "/open311/v2"
VIA = "open311"
_ROOTS = {
    "discovery": ("discovery", None),
    "services": ("services", "service"),
    "service_definition": ("service_definition", None),
    "requests": ("service_requests", "request"),
    "errors": ("errors", "error"),
}


def render(fmt: str, kind: str, value: Any, status: int = 200) -> Response:
    if fmt == "xml":
        root, item = _ROOTS[kind]
        return Response(o3.to_xml(root, value, item), status, media_type="text/xml; charset=utf-8")
    return JSONResponse(value, status)


def install(app: FastAPI, intake: Intake) -> None:
    app.include_router(make_router(intake))

    @app.exception_handler(o3.Open311Error)
    async def open311_error(request: Request, error: o3.Open311Error) -> Response:
        fmt = "xml" if request.url.path.endswith(".xml") else "json"
        return render(fmt, "errors", error.body(), error.status)


def make_router(intake: Intake) -> APIRouter:
    router = APIRouter(prefix=PREFIX, tags=["open311"])
    categories = intake.pack.categories
    departments = intake.pack.departments

    def check(fmt: str, params: Mapping[str, str], **path: str) -> str:
        checked = o3.check_format(fmt)
        # PostgreSQL text cannot hold a NUL: refuse it here rather than fail in the query.
        for name, value in [*params.items(), *path.items()]:
            if "\x00" in value:
                raise o3.Open311Error(400, f"{name[:40]!r} contains a NUL character")
        jurisdiction = params.get("jurisdiction_id")
        if jurisdiction and jurisdiction != intake.open311.jurisdiction:
            raise o3.Open311Error(404, f"jurisdiction_id {jurisdiction[:60]!r} not found")
        return checked

    def record(view: Any, extensions: bool) -> dict[str, Any]:
        return o3.request_record(
            view, categories, departments, extensions=extensions, public=intake.pack.public
        )

    @router.get("/discovery.{fmt}")
    async def discovery(fmt: str, request: Request) -> Response:
        """Where the API is, which version and formats it speaks."""
        fmt = check(fmt, request.query_params)
        url = str(request.base_url).rstrip("/") + PREFIX
        body = o3.discovery(url, intake.open311.contact, intake.open311.key_service)
        return render(fmt, "discovery", body)

    @router.get("/services.{fmt}")
    async def services(fmt: str, request: Request) -> Response:
        """Every service (request type) of the city's taxonomy."""
        fmt = check(fmt, request.query_params)
        return render(fmt, "services", [o3.service(c) for c in categories.values()])

    @router.get("/services/{service_code}.{fmt}")
    async def service_definition(service_code: str, fmt: str, request: Request) -> Response:
        """The extra questions (attributes) of one service."""
        fmt = check(fmt, request.query_params)
        category = o3.category_by_code(categories, service_code)
        if category is None:
            raise o3.Open311Error(404, f"service_code {service_code[:40]!r} not found")
        return render(fmt, "service_definition", o3.service_definition(category))

    @router.post("/requests.{fmt}")
    async def post_request(fmt: str, request: Request) -> Response:
        """Create a request: ``application/x-www-form-urlencoded`` with ``api_key``.

        Sending the same ``Idempotency-Key`` header again returns the original
        request; a different form under the same key answers 409.
        """
        started = time.perf_counter()
        fmt = o3.check_format(fmt)
        fields = await _form(request, intake)
        form = dict(fields)
        client = _client(intake, request, form)
        check(fmt, form | dict(request.query_params))
        try:
            key = idempotency_key(request, client)
        except ValueError as error:
            intake.rejected(VIA, Rejection.MALFORMED, "app")
            raise o3.Open311Error(400, str(error)) from error
        token = _token(client, key)
        try:
            payload = o3.submission(fields, categories, source_ref=token, client=client.name)
        except o3.Open311Error:
            intake.rejected(VIA, Rejection.INVALID, "app")
            raise
        outcome = await intake.submit(payload, via=VIA, idempotency=key, started=started)
        if outcome.conflict:
            raise o3.Open311Error(
                409, f"this Idempotency-Key was used for {outcome.case_id} with another request"
            )
        answer = o3.post_response(outcome.case_id, token, form.get("account_id") or None)
        return render(fmt, "requests", [answer])

    @router.get("/requests.{fmt}")
    async def get_requests(fmt: str, request: Request) -> Response:
        """Requests in a window (default: last 90 days; at most 1000 a page).

        Filters: ``service_request_id`` (comma list; overrides the others),
        ``service_code`` (comma list), ``start_date``, ``end_date`` (at most
        90 days apart), ``status`` (open, closed). Extensions: ``page``,
        ``page_size`` (≤ 1000), ``extensions=true`` (adds ``extended_attributes``).
        """
        params = request.query_params
        fmt = check(fmt, params)
        query = o3.parse_request_query(params, utcnow())
        wanted = None
        if query.service_codes is not None:
            wanted = [c.id for c in categories.values() if c.service_code in query.service_codes]
        case_filter = CaseFilter(
            case_ids=query.case_ids,
            start=query.start,
            end=query.end,
            categories=wanted,
            closed=query.closed,
            closed_states=o3.closed_states(),
            limit=query.page_size,
            offset=(query.page - 1) * query.page_size,
        )
        async with intake.pool.acquire() as conn:
            views = await find_cases(conn, case_filter)
        return render(fmt, "requests", [record(v, query.extensions) for v in views])

    @router.get("/requests/{service_request_id}.{fmt}")
    async def get_request(service_request_id: str, fmt: str, request: Request) -> Response:
        """One request, as a list of one."""
        fmt = check(fmt, request.query_params, service_request_id=service_request_id)
        extensions = request.query_params.get("extensions", "").lower() == "true"
        async with intake.pool.acquire() as conn:
            view = await get_case(conn, service_request_id)
        if view is None:
            raise o3.Open311Error(404, f"service_request_id {service_request_id[:40]!r} not found")
        return render(fmt, "requests", [record(view, extensions)])

    @router.get("/tokens/{token}.{fmt}")
    async def get_token(token: str, fmt: str, request: Request) -> Response:
        """The service_request_id a POST's token stands for."""
        fmt = check(fmt, request.query_params, token=token)
        case_id = None
        if token.startswith(TOKEN_PREFIX):
            async with intake.pool.acquire() as conn:
                case_id = await case_for_token(conn, token)
        if case_id is None:
            raise o3.Open311Error(404, f"token {token[:60]!r} not found")
        return render(fmt, "requests", [{"service_request_id": case_id, "token": token}])

    return router


TOKEN_PREFIX = "o311-"  # noqa: S105 - a prefix of public tokens, not a secret


def _token(client: Client, key: IdempotencyKey | None) -> str:
    """The request's source_ref and Open311 token: fixed by the Idempotency-Key, else new."""
    if key is None:
        return TOKEN_PREFIX + uuid.uuid4().hex
    digest = hashlib.sha256(f"{client.name}\x1f{key.key}".encode()).hexdigest()
    return TOKEN_PREFIX + digest[:32]


async def _form(request: Request, intake: Intake) -> list[tuple[str, str]]:
    """The url-encoded form, within the body limit, strictly UTF-8."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        body = await read_limited(request)
    except BodyTooLarge as error:
        intake.rejected(VIA, Rejection.TOO_LARGE, "app")
        raise o3.Open311Error(400, str(error)) from error
    if content_type not in ("", "application/x-www-form-urlencoded"):
        intake.rejected(VIA, Rejection.MALFORMED, "app")
        raise o3.Open311Error(
            400, "send application/x-www-form-urlencoded (media as media_url, not uploads)"
        )
    if not body.strip():
        intake.rejected(VIA, Rejection.EMPTY, "app")
        raise o3.Open311Error(400, "empty form: service_code and a location are required")
    try:
        return parse_qsl(body.decode("utf-8"), keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError) as error:
        intake.rejected(VIA, Rejection.MALFORMED, "app")
        raise o3.Open311Error(400, "the form is not valid UTF-8 url-encoding") from error


def _client(intake: Intake, request: Request, form: Mapping[str, str]) -> Client:
    client = intake.keys.identify(form.get("api_key") or presented_key(request))
    if client is None:
        intake.rejected(VIA, Rejection.UNAUTHORIZED, "app")
        raise o3.Open311Error(403, "api_key missing or not valid")
    if not client.roles & {"app", "platform"}:
        intake.rejected(VIA, Rejection.FORBIDDEN, "app")
        raise o3.Open311Error(403, f"api_key of {client.name} may not create requests")
    return client
