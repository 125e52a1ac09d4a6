"""intake wiring: the Kafka consumer, the HTTP API and the outbox, around store and domain."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import asyncpg
import structlog

from services.intake import api
from services.intake.domain import ChannelPayload
from services.intake.store import Acceptance, accept
from shared.db import claim_new_events
from shared.events import EventType, InvalidEvent, new_event, utcnow
from shared.kafka import Inbound
from shared.logs import configure_logging
from shared.outbox import enqueue
from shared.service import Service, run_service
from shared.settings import CommonSettings, load_settings
from shared.topics import Topic

log = structlog.get_logger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"


class IntakeSettings(CommonSettings):
    http_port: int = 8001


class Intake:
    def __init__(self, service: Service) -> None:
        self.service = service
        m = service.metrics
        self.received = m.counter(
            "requests_received_total", "Requests received", ["channel", "via"]
        )
        self.accepted = m.counter(
            "requests_accepted_total", "Requests accepted as new cases", ["channel"]
        )
        self.duplicates = m.counter(
            "requests_duplicate_total", "Repeat deliveries recognised", ["channel"]
        )
        self.rejected = m.counter("requests_rejected_total", "Requests refused", ["reason"])
        self.latency = m.histogram("intake_seconds", "Time from receipt to durable acceptance")

    async def accept_one(self, conn: asyncpg.Connection, payload: ChannelPayload) -> Acceptance:
        """Store the request and queue its accepted event, in the caller's transaction."""
        outcome = await accept(conn, payload, utcnow())
        if outcome.created and outcome.request is not None:
            event = new_event(
                EventType.REQUEST_ACCEPTED,
                source=self.service.source,
                subject=outcome.case_id,
                data=outcome.request,
            )
            topic = self.service.topic(Topic.REQUESTS_ACCEPTED)
            await enqueue(conn, self.service.name, [(topic, outcome.case_id, event)])
        return outcome

    async def handle_batch(self, batch: Sequence[Inbound]) -> None:
        started = time.perf_counter()
        outcomes: list[tuple[str, Acceptance]] = []
        async with self.service.pool.acquire() as conn, conn.transaction():
            fresh = await claim_new_events(conn, [item.event.id for item in batch])
            for item in batch:
                if item.event.id not in fresh:
                    continue
                payload = item.payload.root  # type: ignore[attr-defined]
                outcome = await self.accept_one(conn, payload)
                if outcome.conflict:
                    raise InvalidEvent(
                        f"conflict: {payload.channel}:{payload.source_ref} was already accepted "
                        f"as {outcome.case_id} with different content"
                    )
                outcomes.append((payload.channel, outcome))
        for channel, outcome in outcomes:
            self.count(channel, "kafka", outcome)
            if outcome.created:
                log.info("request accepted", case_id=outcome.case_id, channel=channel)
        if outcomes:
            self.latency.observe((time.perf_counter() - started) / len(outcomes))

    def count(self, channel: str, via: str, outcome: Acceptance) -> None:
        self.received.labels(channel, via).inc()
        if outcome.created:
            self.accepted.labels(channel).inc()
        else:
            self.duplicates.labels(channel).inc()


async def run(settings: IntakeSettings) -> int:
    service = Service("intake", settings, http_port=settings.http_port, migrations=MIGRATIONS)
    await service.start()
    intake = Intake(service)
    service.add_consumer(
        [Topic.CITIZEN_REQUESTS], intake.handle_batch, accept={EventType.REQUEST_SUBMITTED}
    )
    service.app.include_router(api.make_router(intake))
    return await service.run()


def main() -> None:
    settings = load_settings(IntakeSettings)
    configure_logging("intake", settings.log_level)
    run_service(lambda: run(settings))
