"""intake wiring: the Kafka consumer, the HTTP APIs and the outbox, around store and domain."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import structlog
from aiokafka.structs import ConsumerRecord
from fastapi import FastAPI
from pydantic import Field

from services.intake import api, open311_api
from services.intake.domain import (
    ChannelPayload,
    Rejection,
    guess_channel,
    hint_of,
    rejection_of,
    resolve_category,
)
from services.intake.lifecycle import CASE_EVENT_TYPES, CaseView, Change, change_for
from services.intake.open311 import Open311Config
from services.intake.store import (
    Acceptance,
    IdempotencyKey,
    Submission,
    accept,
    accept_many,
    apply_changes,
    claim_and_find,
    get_case,
)
from shared.apikeys import ApiKeys, ApiKeysError
from shared.channels import MAX_BODY_BYTES, SubmittedRequest
from shared.citypack import CityPack, load_pack_or_exit
from shared.events import EventType, InvalidEvent, new_event, utcnow
from shared.kafka import ConsumerRuntime, DeadLetters, Inbound, Publisher
from shared.logs import configure_logging
from shared.metrics import Metrics
from shared.outbox import enqueue
from shared.service import Service, run_service
from shared.settings import CommonSettings, load_settings
from shared.topics import Topic, TopicNames

log = structlog.get_logger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"
# intake's request models strip control characters (NUL included) from text themselves,
# and its Open311 API answers NULs in Open311's own error format (shared.http.RefuseNul).
NUL_HANDLING: dict[str, Any] = {
    "refuse_nul_in_bodies": False,
    "nul_exempt_paths": (open311_api.PREFIX,),
}
SERVICE = "intake"


class IntakeSettings(CommonSettings):
    http_port: int = 8001
    open311_jurisdiction: str | None = Field(
        default=None,
        description="Open311 jurisdiction_id this server answers for (default: the city name)",
        max_length=100,
    )
    open311_contact: str = Field(
        default="", description="Open311 discovery: who to contact about the API", max_length=500
    )
    open311_key_service: str = Field(
        default="", description="Open311 discovery: where clients ask for an api_key"
    )


class Intake:
    """Takes requests from Kafka and HTTP; keeps the public view of each case."""

    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        metrics: Metrics,
        topics: TopicNames,
        pack: CityPack,
        keys: ApiKeys,
        open311: Open311Config,
    ) -> None:
        self.pool = pool
        self.metrics = metrics
        self.topics = topics
        self.pack = pack
        self.keys = keys
        self.open311 = open311
        self.source = f"/civicroute/{SERVICE}"
        m = metrics
        self._received = m.counter(
            "requests_received_total", "Requests received, valid or not", ["channel", "via"]
        )
        self._accepted = m.counter(
            "requests_accepted_total", "Requests accepted as new cases", ["channel", "via"]
        )
        self._duplicates = m.counter(
            "requests_duplicate_total",
            "Repeat deliveries recognised (original case returned)",
            ["channel", "via"],
        )
        self._rejected = m.counter(
            "requests_rejected_total", "Requests refused", ["channel", "via", "reason"]
        )
        self._latency = m.histogram(
            "acceptance_seconds",
            "From receipt (HTTP) or publication (Kafka) to durable acceptance",
            ["via"],
        )
        self._projected = m.counter(
            "case_events_projected_total", "Case events folded into the public view", ["kind"]
        )

    # --- accepting ----------------------------------------------------------------------------

    def submission(self, payload: ChannelPayload) -> Submission:
        category = resolve_category(hint_of(payload), self.pack.categories)
        return Submission(payload, utcnow(), category)

    async def announce(self, conn: asyncpg.Connection, outcomes: Sequence[Acceptance]) -> None:
        """Queue the accepted event of each new case, in order, in the caller's transaction."""
        topic = self.topics(Topic.REQUESTS_ACCEPTED)
        await enqueue(
            conn,
            SERVICE,
            [
                (
                    topic,
                    outcome.case_id,
                    new_event(
                        EventType.REQUEST_ACCEPTED,
                        source=self.source,
                        subject=outcome.case_id,
                        data=outcome.request,
                    ),
                )
                for outcome in outcomes
                if outcome.created and outcome.request is not None
            ],
        )

    async def submit(
        self,
        payload: ChannelPayload,
        *,
        via: str,
        idempotency: IdempotencyKey | None,
        started: float,
    ) -> Acceptance:
        """An HTTP submission: accept it in its own transaction and count the outcome."""
        async with self.pool.acquire() as conn, conn.transaction():
            outcome = await accept(conn, self.submission(payload), idempotency=idempotency)
            await self.announce(conn, [outcome])
        if outcome.conflict:
            self.rejected(via, Rejection.CONFLICT, payload.channel)
        else:
            self.counted(payload.channel, via, outcome, time.perf_counter() - started)
        return outcome

    def counted(self, channel: str, via: str, outcome: Acceptance, seconds: float) -> None:
        self._received.labels(channel, via).inc()
        if outcome.created:
            self._accepted.labels(channel, via).inc()
            self._latency.labels(via).observe(max(0.0, seconds))
            log.info("request accepted", case_id=outcome.case_id, channel=channel, via=via)
        else:
            self._duplicates.labels(channel, via).inc()

    def rejected(self, via: str, reason: Rejection, channel: str = "unknown") -> None:
        self._received.labels(channel, via).inc()
        self._rejected.labels(channel, via, reason.value).inc()
        log.info("request rejected", via=via, reason=reason.value, channel=channel)

    # --- Kafka ----------------------------------------------------------------------------------

    async def handle_batch(self, batch: Sequence[Inbound]) -> None:
        """Requests become cases; case events update the public view; all in one transaction.

        A request over the size limit or in conflict with an accepted one raises
        InvalidEvent: the runtime retries the batch message by message and
        dead-letters just that one, with the reason.
        """
        for item in batch:
            size = len(item.record.value or b"")
            if item.event.type == EventType.REQUEST_SUBMITTED and size > MAX_BODY_BYTES:
                raise InvalidEvent(f"too_large: {size} bytes, over the {MAX_BODY_BYTES} limit")
        requests: list[tuple[Inbound, ChannelPayload]] = []
        changes: list[tuple[str, Change]] = []
        async with self.pool.acquire() as conn, conn.transaction():
            fresh, known = await claim_and_find(
                conn,
                [item.event.id for item in batch],
                [
                    (item.payload.root.channel, item.payload.root.source_ref)
                    for item in batch
                    if isinstance(item.payload, SubmittedRequest)
                ],
            )
            for item in batch:
                if item.event.id not in fresh:
                    continue
                if isinstance(item.payload, SubmittedRequest):
                    requests.append((item, item.payload.root))
                    continue
                change = change_for(item.event.type, item.payload)
                if change is not None:
                    changes.append((item.event.id, change))
            outcomes = (
                await accept_many(
                    conn, [self.submission(payload) for _, payload in requests], known
                )
                if requests
                else []
            )
            for (_, payload), outcome in zip(requests, outcomes, strict=True):
                if outcome.conflict:
                    raise InvalidEvent(
                        f"conflict: {payload.channel}:{payload.source_ref} was accepted as"
                        f" {outcome.case_id} with different content"
                    )
            await self.announce(conn, outcomes)
            # After the requests: an event can only name a case whose acceptance committed.
            await apply_changes(conn, changes)
        for _, change in changes:
            self._projected.labels(change.kind).inc()
        now = time.time()
        for (item, payload), outcome in zip(requests, outcomes, strict=True):
            self.counted(payload.channel, "kafka", outcome, now - item.record.timestamp / 1000)

    def consumer(self, settings: CommonSettings, producer: Publisher) -> ConsumerRuntime:
        """The consumer of citizen.requests.v1 and case.events.v1 (group civicroute.intake)."""
        dead_letters = _CountingDeadLetters(self, producer)
        return ConsumerRuntime.configured(
            settings,
            service=SERVICE,
            topics=[self.topics(Topic.CITIZEN_REQUESTS), self.topics(Topic.CASE_EVENTS)],
            group_id=self.topics.group(SERVICE),
            handler=self.handle_batch,
            accept={EventType.REQUEST_SUBMITTED, *CASE_EVENT_TYPES},
            dead_letters=dead_letters,
            metrics=self.metrics,
        )

    # --- reading --------------------------------------------------------------------------------

    async def case(self, case_id: str) -> CaseView | None:
        async with self.pool.acquire() as conn:
            return await get_case(conn, case_id)

    def install(self, app: FastAPI) -> None:
        """Add the /v1 and /open311/v2 APIs to ``app``."""
        app.include_router(api.make_router(self))
        open311_api.install(app, self)
        _document_payloads(app)


class _CountingDeadLetters(DeadLetters):
    """Dead letters as usual; a refused citizen request is also counted by reason."""

    def __init__(self, intake: Intake, producer: Publisher) -> None:
        topics = intake.topics
        super().__init__(producer, topics(Topic.DEADLETTER), SERVICE, intake.metrics)
        self._intake = intake
        self._requests_topic = topics(Topic.CITIZEN_REQUESTS)

    async def send(self, record: ConsumerRecord, reason: str) -> None:
        await super().send(record, reason)
        if record.topic == self._requests_topic:
            self._intake.rejected("kafka", rejection_of(reason), _claimed_channel(record.value))


def _claimed_channel(raw: bytes | None) -> str:
    try:
        envelope = orjson.loads(raw or b"")
    except orjson.JSONDecodeError:
        return "unknown"
    return guess_channel(envelope.get("data") if isinstance(envelope, dict) else None)


def _document_payloads(app: FastAPI) -> None:
    """Put the channel payload schemas into the OpenAPI document's components."""
    build = app.openapi

    def openapi() -> dict[str, object]:
        if app.openapi_schema is None:
            document = build()
            schema = SubmittedRequest.model_json_schema(ref_template="#/components/schemas/{model}")
            components = document.setdefault("components", {}).setdefault("schemas", {})
            components.update(schema.pop("$defs", {}))
            components["ChannelPayload"] = schema
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


async def run(settings: IntakeSettings) -> int:
    pack = load_pack_or_exit(settings.city_dir)
    try:
        keys = ApiKeys.load(settings.api_keys_file)
    except ApiKeysError as error:
        print(f"bad settings: CIVIC_API_KEYS_FILE {error}", file=sys.stderr)
        return 2
    service = Service(
        SERVICE, settings, http_port=settings.http_port, migrations=MIGRATIONS, **NUL_HANDLING
    )
    await service.start()
    intake = Intake(
        pool=service.pool,
        metrics=service.metrics,
        topics=service.topics,
        pack=pack,
        keys=keys,
        open311=Open311Config(
            jurisdiction=settings.open311_jurisdiction or settings.city,
            contact=settings.open311_contact,
            key_service=settings.open311_key_service,
        ),
    )
    runtime = intake.consumer(settings, service.producer)
    service.add_loop("consumer", runtime.run)
    intake.install(service.app)
    if not keys.by_hash:
        log.warning("no API keys configured: POST /v1/requests and Open311 POST refuse all")
    return await service.run()


def main() -> None:
    settings = load_settings(IntakeSettings)
    configure_logging(SERVICE, settings.log_level)
    run_service(lambda: run(settings))
