"""The HTTP face every service shares."""

from __future__ import annotations

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from shared.http import RETRY_AFTER_SECONDS, create_app
from shared.metrics import Metrics


def app_and_client() -> tuple[FastAPI, httpx.AsyncClient]:
    app = create_app(
        service="test", metrics=Metrics("test", registry=CollectorRegistry()), checks={}
    )
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return app, httpx.AsyncClient(transport=transport, base_url="http://test")


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "Connection refused"),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.InterfaceError("connection is closed"),
    ],
)
async def test_an_unreachable_database_answers_503_with_retry_after_not_500(
    error: Exception,
) -> None:
    app, client = app_and_client()

    @app.post("/v1/cases/{case_id}/sign")
    async def sign(case_id: str) -> dict[str, str]:
        raise error

    async with client:
        response = await client.post("/v1/cases/CR1/sign")
    assert response.status_code == 503
    assert response.headers["retry-after"] == str(RETRY_AFTER_SECONDS)
    assert "try again" in response.json()["detail"]


async def test_other_errors_are_still_server_errors() -> None:
    app, client = app_and_client()

    @app.get("/boom")
    async def boom() -> None:
        raise ValueError("a bug")

    async with client:
        response = await client.get("/boom")
    assert response.status_code == 500
