"""The ops API: the delivery ledger, replays and endpoint tests. Every call needs role ``ops``."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import asyncpg
import structlog
from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel

from services.notify import store
from services.notify.config import GATEWAY
from services.notify.delivery import Deliverer
from shared.apikeys import ApiKeys, require

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Ops:
    """What the ops API works with."""

    pool: asyncpg.Pool
    keys: ApiKeys
    deliverer: Deliverer
    departments: Collection[str]


class AttemptOut(BaseModel):
    attempt: int
    at: datetime
    status_code: int | None
    latency_ms: float
    error: str | None
    retry_after_seconds: float | None


class DeliveryOut(BaseModel):
    id: int
    webhook_id: str
    kind: Literal["webhook", "notice"]
    case_id: str
    department: str
    event_id: str
    event_type: str
    status: Literal["pending", "delivered", "dead"]
    attempts: int
    tries: int
    next_attempt_at: datetime | None
    window_start: datetime
    last_status_code: int | None
    last_error: str | None
    dead_reason: str | None
    replays: int
    created_at: datetime
    finished_at: datetime | None
    attempt_log: list[AttemptOut] = []


class DeliveryPage(BaseModel):
    deliveries: list[DeliveryOut]
    next_after: int | None  # pass as ?after= for the next page; null on the last one


class EndpointTest(BaseModel):
    department: str
    webhook_id: str
    delivered: bool
    status_code: int | None
    latency_ms: float
    error: str | None


async def _with_attempts(ops: Ops, rows: list) -> list[DeliveryOut]:  # type: ignore[type-arg]
    async with ops.pool.acquire() as conn:
        attempts = await store.attempts(conn, [row["id"] for row in rows])
    by_delivery: dict[int, list[AttemptOut]] = {}
    for attempt in attempts:
        fields = dict(attempt)
        by_delivery.setdefault(fields.pop("delivery_id"), []).append(AttemptOut(**fields))
    return [
        DeliveryOut(
            **{
                **dict(row),
                "next_attempt_at": row["next_attempt_at"] if row["status"] == "pending" else None,
            },
            attempt_log=by_delivery.get(row["id"], []),
        )
        for row in rows
    ]


def make_router(ops: Ops) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["ops"])

    @router.get("/deliveries", response_model=DeliveryPage)
    async def deliveries(
        request: Request,
        case_id: str | None = Query(default=None, max_length=200),
        department: str | None = Query(default=None, max_length=80),
        status: Literal["pending", "delivered", "dead"] | None = None,
        kind: Literal["webhook", "notice"] | None = None,
        after: int = Query(default=0, ge=0, description="id after which the page starts"),
        limit: int = Query(default=100, ge=1, le=1000),
    ) -> DeliveryPage:
        """The delivery ledger: each delivery with every attempt (status code, latency, error)."""
        require(ops.keys, request, "ops")
        async with ops.pool.acquire() as conn:
            rows = await store.ledger(
                conn,
                case_id=case_id,
                department=department,
                status=status,
                kind=kind,
                after_id=after,
                limit=limit,
            )
        out = await _with_attempts(ops, rows)
        return DeliveryPage(deliveries=out, next_after=out[-1].id if len(out) == limit else None)

    @router.get("/deliveries/{delivery_id}", response_model=DeliveryOut)
    async def one_delivery(delivery_id: int, request: Request) -> DeliveryOut:
        require(ops.keys, request, "ops")
        async with ops.pool.acquire() as conn:
            row = await store.delivery(conn, delivery_id)
        if row is None:
            raise HTTPException(404, f"no delivery {delivery_id}")
        return (await _with_attempts(ops, [row]))[0]

    @router.post("/deliveries/{delivery_id}/replay", response_model=DeliveryOut, status_code=202)
    async def replay(delivery_id: int, request: Request) -> DeliveryOut:
        """Send a delivered or dead delivery again: same webhook-id, a fresh retry window."""
        client = require(ops.keys, request, "ops")
        async with ops.pool.acquire() as conn, conn.transaction():
            row = await store.replay(conn, delivery_id)
            if row is None:
                existing = await store.delivery(conn, delivery_id)
        if row is None:
            if existing is None:
                raise HTTPException(404, f"no delivery {delivery_id}")
            raise HTTPException(409, f"delivery {delivery_id} is still pending")
        ops.deliverer.wake.set()
        log.info(
            "delivery replayed",
            delivery_id=delivery_id,
            case_id=row["case_id"],
            department=row["department"],
            by=client.name,
        )
        return (await _with_attempts(ops, [row]))[0]

    @router.post("/endpoints/{department}/test", response_model=EndpointTest)
    async def test_endpoint(department: str, request: Request) -> EndpointTest:
        """Send a signed test event (type civicroute.endpoint.test.v1) and report the answer."""
        client = require(ops.keys, request, "ops")
        if department not in ops.departments or department == GATEWAY:
            raise HTTPException(404, f"no department {department!r} in this city pack")
        webhook_id, attempt = await ops.deliverer.ping(department)
        log.info(
            "endpoint tested",
            department=department,
            status_code=attempt.status_code,
            delivered=attempt.delivered,
            by=client.name,
        )
        return EndpointTest(
            department=department,
            webhook_id=webhook_id,
            delivered=attempt.delivered,
            status_code=attempt.status_code,
            latency_ms=round(attempt.latency_ms, 3),
            error=attempt.error,
        )

    return router
