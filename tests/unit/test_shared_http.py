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


def recording_app() -> tuple[FastAPI, httpx.AsyncClient, list[object]]:
    app, client = app_and_client()
    seen: list[object] = []

    @app.post("/v1/cases/{case_id}/progress")
    async def progress(case_id: str, body: dict[str, object]) -> dict[str, str]:
        seen.append((case_id, body))
        return {"case_id": case_id}

    @app.get("/v1/cases/{case_id}")
    async def read(case_id: str, department: str | None = None) -> dict[str, str]:
        seen.append(case_id)
        return {"case_id": case_id}

    return app, client, seen


@pytest.mark.parametrize(
    ("method", "url", "body"),
    [
        ("GET", "/v1/cases/CR%00", None),
        ("GET", "/v1/cases/CR1?department=water%00", None),
        ("POST", "/v1/cases/CR1/progress", b'{"note": "fixed\\u0000", "actor": "x"}'),
        ("POST", "/v1/cases/CR1/progress", b'{"items": [{"deep": ["a", "b\\u0000"]}]}'),
        ("POST", "/v1/cases/CR1/progress", b'{"note": "raw \x00 byte"}'),
    ],
)
async def test_a_nul_character_anywhere_gets_400_and_never_reaches_the_handler(
    method: str, url: str, body: bytes | None
) -> None:
    _, client, seen = recording_app()
    async with client:
        response = await client.request(
            method, url, content=body, headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 400
    assert "NUL" in response.json()["detail"]
    assert seen == []


async def test_an_escaped_backslash_before_u0000_is_text_not_a_nul() -> None:
    _, client, seen = recording_app()
    async with client:
        response = await client.post(
            "/v1/cases/CR1/progress",
            content=b'{"note": "path C:\\\\u0000 stays"}',
            headers={"Content-Type": "application/json"},
        )
    assert response.status_code == 200, response.text
    assert seen == [("CR1", {"note": "path C:\\u0000 stays"})]


@pytest.mark.parametrize(
    "error", [OverflowError("date value out of range"), asyncpg.DataError("bigint out of range")]
)
async def test_a_value_out_of_range_is_the_clients_400_not_a_500(error: Exception) -> None:
    app, client = app_and_client()

    @app.get("/v1/deliveries/{delivery_id}")
    async def delivery(delivery_id: int) -> dict[str, int]:
        raise error

    async with client:
        response = await client.get("/v1/deliveries/99999999999999999999999")
    assert response.status_code == 400
    assert "out of range" in response.json()["detail"]
