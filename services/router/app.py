"""router wiring: consume accepted requests, decide, store the decision, dispatch via the outbox."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import structlog

from services.router import domain, store
from shared.citypack import CityPack, load_pack_or_exit
from shared.db import claim_new_events
from shared.events import CaseDispatched, CitizenRequest, EventType, new_event, utcnow
from shared.kafka import Inbound
from shared.logs import configure_logging
from shared.outbox import enqueue
from shared.service import Service, run_service
from shared.settings import CommonSettings, load_settings
from shared.topics import Topic

log = structlog.get_logger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"


class RouterSettings(CommonSettings):
    http_port: int = 8002


class Router:
    def __init__(self, service: Service, pack: CityPack) -> None:
        self.service = service
        self.pack = pack
        m = service.metrics
        self.dispatched = m.counter(
            "dispatches_total", "Cases dispatched", ["department", "category"]
        )
        self.latency = m.histogram("routing_seconds", "Time to decide one case")

    async def handle_batch(self, batch: Sequence[Inbound]) -> None:
        decided: list[tuple[str, domain.Decision]] = []
        async with self.service.pool.acquire() as conn, conn.transaction():
            fresh = await claim_new_events(conn, [item.event.id for item in batch])
            messages = []
            for item in batch:
                if item.event.id not in fresh:
                    continue
                request = item.payload
                assert isinstance(request, CitizenRequest)
                if not await store.save_case(conn, request):
                    continue  # the same case accepted twice under two event ids
                started = time.perf_counter()
                classification = domain.classify(request, self.pack)
                decision = domain.route(request, self.pack, classification, excluded=set())
                self.latency.observe(time.perf_counter() - started)
                await store.save_decision(conn, request.case_id, 1, decision)
                messages.append(self._dispatch_message(request, decision))
                decided.append((request.case_id, decision))
            await enqueue(conn, self.service.name, messages)
        for case_id, decision in decided:
            self.dispatched.labels(decision.lead, decision.category).inc()
            log.info(
                "case dispatched",
                case_id=case_id,
                lead=decision.lead,
                category=decision.category,
                confidence=round(decision.confidence, 3),
            )

    def _dispatch_message(self, request: CitizenRequest, decision: domain.Decision):  # type: ignore[no-untyped-def]
        payload = CaseDispatched(
            case_id=request.case_id,
            category=decision.category,
            urgency=decision.urgency,
            jurisdiction=decision.jurisdiction,
            lead=decision.lead,
            cooperating=decision.cooperating,
            sla_policy=decision.sla_policy,
            confidence=decision.confidence,
            trace=decision.trace,
            route_id=decision.route_id,
            dispatched_at=utcnow(),
            request=request,
        )
        event = new_event(
            EventType.CASE_DISPATCHED,
            source=self.service.source,
            subject=request.case_id,
            data=payload,
        )
        return self.service.topic(Topic.CASE_EVENTS), request.case_id, event


async def run(settings: RouterSettings, pack: CityPack) -> int:
    service = Service("router", settings, http_port=settings.http_port, migrations=MIGRATIONS)
    await service.start()
    router = Router(service, pack)
    service.add_consumer(
        [Topic.REQUESTS_ACCEPTED], router.handle_batch, accept={EventType.REQUEST_ACCEPTED}
    )
    return await service.run()


def main() -> None:
    settings = load_settings(RouterSettings)
    configure_logging("router", settings.log_level)
    pack = load_pack_or_exit(settings.city_dir)
    run_service(lambda: run(settings, pack))
