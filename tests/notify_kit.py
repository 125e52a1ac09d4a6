"""Test kit for notify: a real local webhook server with scripted answers, event builders,
and notify's delivery machinery run in-process against the real PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import yaml
from aiokafka.structs import ConsumerRecord
from fastapi import FastAPI, Request, Response
from prometheus_client import CollectorRegistry

from services.notify.app import MIGRATIONS
from services.notify.config import load_notify_config
from services.notify.delivery import Deliverer, DeliverySettings
from services.notify.domain import RetryPolicy
from services.notify.ingest import Ingest
from shared.citypack import load_pack
from shared.db import connect_pool, migrate
from shared.events import (
    PAYLOADS,
    CaseDispatched,
    CitizenRequest,
    CloudEvent,
    EventType,
    Jurisdiction,
    Reporter,
    Urgency,
    encode,
    new_event,
    utcnow,
)
from shared.http import EmbeddedServer, make_server
from shared.kafka import Inbound
from shared.metrics import Metrics
from shared.webhooks import SignatureError, new_secret, verify

# --- a webhook endpoint with scripted answers --------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int = 204
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    hang: bool = False


# Decides the answer from how many times this webhook-id was tried before (0 first).
Script = Callable[[int, dict[str, Any]], Answer]


def ok(_tries: int, _event: dict[str, Any]) -> Answer:
    return Answer()


def slow(seconds: float) -> Script:
    return lambda _tries, _event: Answer(delay=seconds)


def fail_first(count: int, status: int = 500, headers: dict[str, str] | None = None) -> Script:
    return lambda tries, _event: Answer(status, headers or {}) if tries < count else Answer()


def always(status: int) -> Script:
    return lambda _tries, _event: Answer(status)


def hang_first(count: int) -> Script:
    return lambda tries, _event: Answer(hang=True) if tries < count else Answer()


@dataclass(frozen=True)
class Hit:
    """One HTTP attempt as the endpoint saw it."""

    department: str
    webhook_id: str
    event: dict[str, Any]
    status: int
    at: float  # arrival; for ``received``, when the answer went back
    valid_signatures: int

    @property
    def case_id(self) -> str:
        return str(self.event.get("subject") or self.event.get("case_id"))


@dataclass
class HookServer:
    """``POST /hooks/{department}`` verifies every signature and answers per script;
    ``POST /gateway`` is the citizen-notice gateway. Counts repeats per webhook-id."""

    secrets: dict[str, list[str]]
    scripts: dict[str, Script] = field(default_factory=dict)
    hits: list[Hit] = field(default_factory=list)
    received: list[Hit] = field(default_factory=list)  # first success per webhook-id, in order
    successes: Counter[str] = field(default_factory=Counter)
    tries: Counter[str] = field(default_factory=Counter)
    in_flight: Counter[str] = field(default_factory=Counter)
    max_in_flight: Counter[str] = field(default_factory=Counter)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0
    _server: EmbeddedServer | None = None
    _task: asyncio.Task[None] | None = None

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/hooks/{department}")
        async def hook(department: str, request: Request) -> Response:
            body = await request.body()
            headers = dict(request.headers)
            valid = 0
            for secret in self.secrets.get(department, []):
                with contextlib.suppress(SignatureError):
                    verify([secret], body, headers)
                    valid += 1
            if not valid:
                return Response("bad signature", status_code=401)
            return await self._answer(department, headers["webhook-id"], body, valid)

        @app.post("/gateway")
        async def gateway(request: Request) -> Response:
            body = await request.body()
            return await self._answer("gateway", request.headers["webhook-id"], body, 0)

        return app

    async def _answer(self, department: str, webhook_id: str, body: bytes, valid: int) -> Response:
        event = orjson.loads(body)
        tries = self.tries[webhook_id]
        self.tries[webhook_id] += 1
        answer = self.scripts.get(department, ok)(tries, event)
        loop = asyncio.get_running_loop()
        hit = Hit(department, webhook_id, event, answer.status, loop.time(), valid)
        self.hits.append(hit)
        self.in_flight[department] += 1
        self.max_in_flight[department] = max(
            self.max_in_flight[department], self.in_flight[department]
        )
        try:
            if answer.hang:
                await self.release.wait()
            if answer.delay:
                await asyncio.sleep(answer.delay)
        finally:
            self.in_flight[department] -= 1
        if 200 <= answer.status < 300:
            self.successes[webhook_id] += 1
            if self.successes[webhook_id] == 1:
                self.received.append(replace(hit, at=loop.time()))
        return Response(status_code=answer.status, headers=answer.headers)

    async def start(self) -> None:
        self._server = make_server(self.app(), "127.0.0.1", self.port)
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.02)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.release.set()
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def hook_template(self) -> str:
        return f"{self.url}/hooks/{{department}}"

    @property
    def gateway_url(self) -> str:
        return f"{self.url}/gateway"

    def of(self, department: str) -> list[Hit]:
        return [h for h in self.received if h.department == department]

    def attempts_of(self, department: str) -> list[Hit]:
        return [h for h in self.hits if h.department == department]

    def order_by_case(self, department: str) -> dict[str, list[str]]:
        """Event ids per case in the order they first arrived."""
        found: dict[str, list[str]] = defaultdict(list)
        for hit in self.of(department):
            found[hit.case_id].append(str(hit.event["id"]))
        return dict(found)


# --- events -----------------------------------------------------------------------------------


def citizen_request(
    case_id: str,
    *,
    phone: str | None = "13812345678",
    name: str | None = "张先生",
    email: str | None = None,
    language: str | None = None,
    confidential: bool = False,
    urgency_hint: Urgency | None = None,
) -> CitizenRequest:
    return CitizenRequest(
        case_id=case_id,
        channel="hotline",
        source_ref=f"ref-{case_id}",
        received_at=utcnow(),
        description="垃圾桶满了好几天没人清运",
        urgency_hint=urgency_hint,
        reporter=Reporter(
            name=name, phone=phone, email=email, language=language, confidential=confidential
        ),
    )


def accepted(request: CitizenRequest) -> CloudEvent:
    return new_event(
        EventType.REQUEST_ACCEPTED, source="/civicroute/intake", subject=request.case_id,
        data=request,
    )  # fmt: skip


def dispatched(
    case_id: str,
    lead: str,
    cooperating: tuple[str, ...] = (),
    *,
    urgency: Urgency = Urgency.GENERAL,
    request: CitizenRequest | None = None,
) -> CloudEvent:
    payload = CaseDispatched(
        case_id=case_id,
        category="litter",
        urgency=urgency,
        jurisdiction=Jurisdiction(),
        lead=lead,
        cooperating=list(cooperating),
        sla_policy=urgency.value,
        confidence=0.9,
        dispatched_at=utcnow(),
        request=request or citizen_request(case_id),
    )
    return new_event(
        EventType.CASE_DISPATCHED, source="/civicroute/router", subject=case_id, data=payload
    )


def case_action(event_type: EventType, case_id: str, department: str, **extra: Any) -> CloudEvent:
    """Any department action event: signed, progressed, resolved (needs reply=…), …"""
    model = PAYLOADS[event_type]
    data = model.model_validate(
        {"case_id": case_id, "department": department, "at": utcnow(), **extra}
    )
    return new_event(event_type, source="/civicroute/escalation", subject=case_id, data=data)


def inbound(event: CloudEvent, offset: int = 0) -> Inbound:
    topic = "requests.accepted.v1" if event.type == EventType.REQUEST_ACCEPTED else "case.events.v1"
    value = encode(event)
    record = ConsumerRecord(
        topic=topic,
        partition=0,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=(event.subject or "").encode(),
        value=value,
        checksum=None,
        serialized_key_size=0,
        serialized_value_size=len(value),
        headers=(),
    )
    return Inbound(event, event.payload(), record)  # type: ignore[arg-type]


# --- notify in-process ----------------------------------------------------------------------


def pack_secrets(pack_dir: Path) -> dict[str, list[str]]:
    return {department: [new_secret()] for department in load_pack(pack_dir).departments}


def write_notify_yaml(pack_dir: Path, document: dict[str, Any]) -> None:
    (pack_dir / "notify.yaml").write_text(yaml.safe_dump(document, allow_unicode=True))


@dataclass
class Harness:
    pool: asyncpg.Pool
    ingest: Ingest
    deliverer: Deliverer
    registry: CollectorRegistry
    server: HookServer
    stop: asyncio.Event
    task: asyncio.Task[None] | None = None
    offset: int = 0

    async def publish(self, *events: CloudEvent) -> None:
        """What the consumer does with a batch: claim, queue, commit; then wake the loop."""
        items = []
        for event in events:
            self.offset += 1
            items.append(inbound(event, self.offset))
        async with self.pool.acquire() as conn, conn.transaction():
            await self.ingest.apply(conn, items, utcnow())
        self.deliverer.wake.set()

    def metric(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(f"civicroute_notify_{name}", labels)
        return value or 0.0

    async def rows(self, query: str = "", *args: Any) -> list[asyncpg.Record]:
        async with self.pool.acquire() as conn:
            return await conn.fetch(
                "SELECT * FROM deliveries " + query + " ORDER BY id",
                *args,
            )

    async def settled(self) -> bool:
        return not await self.rows("WHERE status = 'pending'")


def fast_policy(
    schedule: tuple[float, ...] = (0.2, 0.4, 0.8), horizon: float = 60.0
) -> DeliverySettings:
    return DeliverySettings(
        policy=RetryPolicy(schedule, horizon, 0.1), poll_seconds=0.05, lease_slack_seconds=2
    )


@contextlib.asynccontextmanager
async def notify_harness(
    database_url: str,
    pack_dir: Path,
    server: HookServer,
    *,
    delivery: DeliverySettings | None = None,
    notices: bool = False,
    run: bool = True,
) -> AsyncIterator[Harness]:
    pack = load_pack(pack_dir)
    config = load_notify_config(pack)
    pool = await connect_pool(database_url, "notify", max_size=8)
    await migrate(pool, "notify", MIGRATIONS)
    registry = CollectorRegistry()
    metrics = Metrics("notify", registry)
    base = delivery or fast_policy()
    settings = DeliverySettings(
        policy=base.policy,
        poll_seconds=base.poll_seconds,
        url_template=server.hook_template,
        gateway_url=server.gateway_url,
        lease_slack_seconds=base.lease_slack_seconds,
    )
    deliverer = Deliverer(pool, config, server.secrets, settings, metrics)
    ingest = Ingest(pack, config, metrics, notices_on=notices)
    harness = Harness(pool, ingest, deliverer, registry, server, asyncio.Event())
    if run:
        harness.task = asyncio.create_task(deliverer.run(harness.stop))
    try:
        yield harness
    finally:
        harness.stop.set()
        server.release.set()
        if harness.task is not None:
            await harness.task
        else:
            await deliverer.drain()
        await pool.close()


def new_case_id() -> str:
    return f"CR{uuid.uuid4().hex[:10].upper()}"


@contextlib.asynccontextmanager
async def notify_serving(
    database_url: str,
    pack_dir: Path,
    secrets: dict[str, list[str]] | None = None,
    *,
    scripts: dict[str, Script] | None = None,
    **options: Any,
) -> AsyncIterator[tuple[Harness, HookServer]]:
    """A started HookServer and notify in-process delivering to it; both stopped after."""
    server = HookServer(secrets or pack_secrets(pack_dir), scripts=dict(scripts or {}))
    await server.start()
    try:
        async with notify_harness(database_url, pack_dir, server, **options) as notify:
            yield notify, server
    finally:
        await server.stop()
