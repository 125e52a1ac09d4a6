"""An in-process escalation on a real PostgreSQL database, driven like the real thing:
router events through its consumer handler, department callbacks through its HTTP API
(signed per Standard Webhooks), supervisors and ops with API keys."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import yaml
from aiokafka.structs import ConsumerRecord
from prometheus_client import CollectorRegistry

from services.escalation import api
from services.escalation.app import MIGRATIONS, Escalation, EscalationSettings
from shared.apikeys import ApiKeys, hash_key
from shared.citypack import load_pack
from shared.db import connect_pool, migrate
from shared.events import (
    CaseDispatched,
    CaseTriaged,
    CitizenRequest,
    CloudEvent,
    EventType,
    Jurisdiction,
    Urgency,
    decode,
    encode,
    new_event,
    utcnow,
)
from shared.http import create_app
from shared.kafka import Inbound
from shared.metrics import Metrics
from shared.topics import TopicNames
from shared.webhooks import new_secret, sign

ROLE_KEYS = {
    "supervisor": "ck_test_supervisor",
    "ops": "ck_test_ops",
    "platform": "ck_test_platform",
    "app": "ck_test_app",
}


def set_sla(pack: Path, policy: dict[str, Any], ladder: list[dict[str, Any]], **extra: Any) -> None:
    """Give every urgency the same (short) policy, for tests that wait on real time."""
    (pack / "sla.yaml").write_text(
        yaml.safe_dump(
            {
                "policies": dict.fromkeys(("emergency", "utilities", "general", "complex"), policy),
                "ladder": ladder,
                **extra,
            }
        )
    )


def write_api_keys(path: Path) -> Path:
    clients = [
        {"name": f"test-{role}", "roles": [role], "sha256": hash_key(key)}
        for role, key in ROLE_KEYS.items()
    ]
    path.write_text(yaml.safe_dump({"clients": clients}))
    return path


def record_for(event: CloudEvent) -> ConsumerRecord:  # type: ignore[type-arg]
    value = encode(event)
    key = (event.subject or "").encode()
    return ConsumerRecord(
        topic="case.events.v1",
        partition=0,
        offset=0,
        timestamp=0,
        timestamp_type=0,
        key=key,
        value=value,
        checksum=None,
        serialized_key_size=len(key),
        serialized_value_size=len(value),
        headers=[],
    )


@dataclass
class Harness:
    escalation: Escalation
    client: httpx.AsyncClient
    secrets: dict[str, list[str]]
    pool: asyncpg.Pool
    registry: CollectorRegistry
    sent: list[str] = field(default_factory=list)

    # --- the router's events ---------------------------------------------------------------

    async def deliver(self, event_type: EventType, payload: Any) -> CloudEvent:
        event = new_event(
            event_type, source="/civicroute/router", subject=payload.case_id, data=payload
        )
        await self.redeliver(event)
        return event

    async def redeliver(self, event: CloudEvent) -> None:
        await self.escalation.handle_batch([Inbound(event, event.payload(), record_for(event))])  # type: ignore[arg-type]

    async def dispatch(
        self,
        case_id: str,
        *,
        lead: str = "community_committee",
        category: str = "sanitation.litter",
        urgency: Urgency = Urgency.GENERAL,
        attempt: int = 1,
        at: datetime | None = None,
        excluded: list[str] | None = None,
    ) -> CloudEvent:
        payload = CaseDispatched(
            case_id=case_id,
            category=category,
            urgency=urgency,
            jurisdiction=Jurisdiction(),
            lead=lead,
            sla_policy=urgency.value,
            confidence=0.9,
            attempt=attempt,
            excluded=excluded or [],
            dispatched_at=at or utcnow(),
            request=citizen_request(case_id, at),
        )
        return await self.deliver(EventType.CASE_DISPATCHED, payload)

    async def triage(self, case_id: str, at: datetime | None = None) -> CloudEvent:
        payload = CaseTriaged(
            case_id=case_id,
            reason="no route after two returns",
            confidence=0.3,
            triaged_at=at or utcnow(),
            request=citizen_request(case_id, at),
        )
        return await self.deliver(EventType.CASE_TRIAGED, payload)

    # --- departments, signed ---------------------------------------------------------------

    def signed(
        self,
        body: dict[str, Any],
        *,
        secret_of: str | None = None,
        webhook_id: str | None = None,
        timestamp: datetime | None = None,
    ) -> tuple[bytes, dict[str, str]]:
        raw = orjson.dumps(body)
        department = secret_of or str(body.get("department"))
        webhook_id = webhook_id or f"msg_{uuid.uuid4().hex}"
        headers = sign(self.secrets[department], webhook_id, raw, timestamp)
        headers["content-type"] = "application/json"
        self.sent.append(webhook_id)
        return raw, headers

    async def call(
        self, case_id: str, action: str, body: dict[str, Any], **how: Any
    ) -> httpx.Response:
        raw, headers = self.signed(body, **how)
        return await self.client.post(f"/v1/cases/{case_id}/{action}", content=raw, headers=headers)

    async def as_role(self, role: str, method: str, url: str, **kwargs: Any) -> httpx.Response:
        headers = {"authorization": f"Bearer {ROLE_KEYS[role]}", **kwargs.pop("headers", {})}
        return await self.client.request(method, url, headers=headers, **kwargs)

    # --- what it wrote -------------------------------------------------------------------------

    async def outbox(self, case_id: str | None = None) -> list[CloudEvent]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch("SELECT value FROM outbox ORDER BY id")
        events = [decode(row["value"]) for row in rows]
        return [e for e in events if case_id is None or e.subject == case_id]

    async def outbox_types(self, case_id: str) -> list[str]:
        return [
            e.type.removeprefix("civicroute.case.").removesuffix(".v1")
            for e in await self.outbox(case_id)
        ]

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        async with self.pool.acquire() as conn:
            return await conn.fetch(query, *args)

    async def snapshot(self, case_id: str) -> tuple[Any, ...]:
        """Everything an action could change for a case: to prove a refusal changed nothing."""
        async with self.pool.acquire() as conn:
            return (
                await conn.fetch("SELECT * FROM cases WHERE case_id = $1", case_id),
                await conn.fetch("SELECT * FROM assignments WHERE case_id = $1", case_id),
                await conn.fetch("SELECT id FROM timeline WHERE case_id = $1", case_id),
                await conn.fetch(
                    "SELECT clock, level, repeat, due_at FROM timers WHERE case_id = $1"
                    " ORDER BY 1, 2, 3",
                    case_id,
                ),
                await conn.fetchval("SELECT count(*) FROM outbox"),
            )

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        return self.registry.get_sample_value(f"civicroute_escalation_{name}", labels or {})


def citizen_request(case_id: str, at: datetime | None) -> CitizenRequest:
    return CitizenRequest(
        case_id=case_id,
        channel="hotline",
        source_ref=f"BJ-{case_id}",
        received_at=at or utcnow(),
        description="小区垃圾好几天没人清运",
    )


HarnessFactory = Callable[..., Any]


@pytest.fixture
async def make_harness(
    database_url: str, city_pack: Path, tmp_path: Path
) -> AsyncIterator[HarnessFactory]:
    """``await make_harness()`` after editing ``city_pack``; several share one database."""
    made: list[Harness] = []
    shared_secrets: dict[str, list[str]] = {}
    keys_file = write_api_keys(tmp_path / "api-keys.yaml")

    async def factory(clock: Callable[[], datetime] = utcnow, **settings: Any) -> Harness:
        pack = load_pack(city_pack)
        if not shared_secrets:
            shared_secrets.update({d: [new_secret()] for d in pack.departments})
        pool = await connect_pool(database_url, "escalation", max_size=4)
        await migrate(pool, "escalation", MIGRATIONS)
        registry = CollectorRegistry()
        escalation = Escalation(
            pool=pool,
            pack=pack,
            secrets=shared_secrets,
            api_keys=ApiKeys.load(keys_file),
            metrics=Metrics("escalation", registry),
            topics=TopicNames("test."),
            clock=clock,
            settings=EscalationSettings(
                kafka_bootstrap="127.0.0.1:9", database_url=database_url, **settings
            ),
        )
        # the service's own HTTP face (shared.http): its guards and error answers included
        app = create_app(
            service="escalation", metrics=Metrics("http", CollectorRegistry()), checks={}
        )
        app.include_router(api.make_router(escalation))
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://esc")
        harness = Harness(escalation, client, shared_secrets, pool, registry)
        made.append(harness)
        return harness

    yield factory
    for harness in made:
        await harness.client.aclose()
        await harness.pool.close()
