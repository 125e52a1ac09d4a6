"""The HTTP face every service shares: ``/healthz``, ``/readyz``, ``/metrics``.

Services add their own routers to the app this returns and serve it with
:class:`EmbeddedServer`, which runs inside the service's event loop and leaves
signal handling to the service.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator, Mapping

import structlog
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from shared.db import TRANSIENT_DB_ERRORS
from shared.metrics import Metrics

log = structlog.get_logger(__name__)

ReadinessCheck = Callable[[], Awaitable[None]]
# What a client is told to wait before trying again while the database is unreachable.
RETRY_AFTER_SECONDS = 2


def create_app(
    *,
    service: str,
    metrics: Metrics,
    checks: Mapping[str, ReadinessCheck],
    title: str | None = None,
    description: str = "",
) -> FastAPI:
    app = FastAPI(title=title or f"civicroute {service}", description=description, version="1")

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
