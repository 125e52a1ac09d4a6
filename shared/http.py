"""The HTTP face every service shares: ``/healthz``, ``/readyz``, ``/metrics``.

Services add their own routers to the app this returns and serve it with
:class:`EmbeddedServer`, which runs inside the service's event loop and leaves
signal handling to the service.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator, Mapping

import asyncpg
import orjson
import structlog
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.db import TRANSIENT_DB_ERRORS
from shared.metrics import Metrics

log = structlog.get_logger(__name__)

ReadinessCheck = Callable[[], Awaitable[None]]
# What a client is told to wait before trying again while the database is unreachable.
RETRY_AFTER_SECONDS = 2


def _holds_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(v) for v in value)
    return False


def body_holds_nul(body: bytes) -> bool:
    """A NUL character anywhere in a body: raw, or as a JSON string's ``\\u0000``.

    PostgreSQL's text and jsonb cannot store it; refused up front, it never reaches a
    transaction it would fail (nor a batch shared with other callers)."""
    if b"\x00" in body:
        return True
    if b"\\u0000" not in body:
        return False
    try:
        return _holds_nul(orjson.loads(body))
    except orjson.JSONDecodeError:
        return False  # not JSON: the route's own parsing refuses it


class RefuseNul:
    """ASGI middleware: 400 for a NUL character in the path, the query or (unless the
    service cleans its text itself, as intake does) a request body."""

    def __init__(self, app: ASGIApp, *, bodies: bool = True, exempt: tuple[str, ...] = ()) -> None:
        self.app = app
        self.bodies = bodies
        # Path prefixes whose routes answer NULs themselves, in their protocol's own error
        # format (intake's Open311 API).
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.exempt):
            await self.app(scope, receive, send)
            return
        if "\x00" in scope["path"] or _query_holds_nul(scope.get("query_string", b"")):
            await _refuse(send, "a NUL character in the path or query is not allowed")
            return
        if not self.bodies or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message]), send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body_holds_nul(body):
            await _refuse(send, "a NUL character in the request body is not allowed")
            return
        await self.app(scope, _replay([{"type": "http.request", "body": body}]), send)


def _query_holds_nul(query: bytes) -> bool:
    return b"\x00" in query or b"%00" in query


def _replay(messages: list[Message]) -> Receive:
    pending = list(messages)

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        return {"type": "http.disconnect"}

    return receive


async def _refuse(send: Send, detail: str) -> None:
    body = orjson.dumps({"detail": detail})
    await send(
        {
            "type": "http.response.start",
            "status": 400,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def create_app(
    *,
    service: str,
    metrics: Metrics,
    checks: Mapping[str, ReadinessCheck],
    title: str | None = None,
    description: str = "",
    refuse_nul_in_bodies: bool = True,
    nul_exempt_paths: tuple[str, ...] = (),
) -> FastAPI:
    app = FastAPI(title=title or f"civicroute {service}", description=description, version="1")
    app.add_middleware(RefuseNul, bodies=refuse_nul_in_bodies, exempt=nul_exempt_paths)

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok", "service": service}

    @app.get("/readyz", tags=["ops"])
    async def readyz() -> JSONResponse:
        """Readiness: every dependency (Kafka, PostgreSQL, …) answered just now."""
        results: dict[str, str] = {}
        for name, check in checks.items():
            try:
                await asyncio.wait_for(check(), timeout=3)
                results[name] = "ok"
            except Exception as error:
                results[name] = f"failed: {type(error).__name__}"
        ready = all(value == "ok" for value in results.values())
        return JSONResponse(
            {"status": "ready" if ready else "not ready", "checks": results},
            status_code=200 if ready else 503,
        )

    @app.get("/metrics", tags=["ops"])
    async def prometheus_metrics() -> Response:
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, error: RequestValidationError) -> JSONResponse:
        # Field-level messages without echoing the input back (it may hold personal data).
        detail = [
            {"loc": list(item.get("loc", ())), "msg": item.get("msg"), "type": item.get("type")}
            for item in error.errors()
        ]
        return JSONResponse({"detail": detail}, status_code=422)

    async def database_unavailable(request: Request, error: Exception) -> JSONResponse:
        # The database restarting is not the client's fault nor a bug: nothing was changed
        # (the transaction did not commit), so the same request may simply be sent again.
        log.warning("database unavailable", path=request.url.path, error=repr(error))
        return JSONResponse(
            {"detail": "the database is unavailable; nothing was changed, try again shortly"},
            status_code=503,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    for error_type in TRANSIENT_DB_ERRORS:
        app.add_exception_handler(error_type, database_unavailable)

    async def out_of_range(request: Request, error: Exception) -> JSONResponse:
        # A value the database or the calendar cannot hold (an integer past int64, a date
        # past year 9999): the client's input, not a fault; nothing was committed.
        log.warning("value out of range", path=request.url.path, error=type(error).__name__)
        return JSONResponse(
            {"detail": "a value in the request is out of range; nothing was changed"},
            status_code=400,
        )

    for error_type in (OverflowError, asyncpg.exceptions.DataError):
        app.add_exception_handler(error_type, out_of_range)

    return app


class EmbeddedServer(uvicorn.Server):
    """uvicorn inside our loop: the service owns SIGTERM/SIGINT, not uvicorn."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def make_server(app: FastAPI, host: str, port: int) -> EmbeddedServer:
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=5,
    )
    return EmbeddedServer(config)
