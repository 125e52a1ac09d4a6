"""escalation wiring: consume dispatches, keep the durable timers, serve the callback API."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import structlog

from services.escalation import api, ladder, store
from shared.aio import sleep_or_stop
from shared.citypack import CityPack, load_pack_or_exit
from shared.db import TRANSIENT_DB_ERRORS, claim_new_events
from shared.events import CaseDispatched, CaseEscalated, Clock, EventType, new_event, utcnow
from shared.kafka import Inbound
from shared.logs import configure_logging
from shared.outbox import enqueue
from shared.secretstore import load_secrets_or_exit
from shared.service import Service, run_service
from shared.settings import CommonSettings, load_settings
from shared.topics import Topic

log = structlog.get_logger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"


class EscalationSettings(CommonSettings):
    http_port: int = 8003
    timer_batch: int = 500
    timer_poll_seconds: float = 0.25


class Escalation:
    def __init__(
        self,
        service: Service,
        pack: CityPack,
        secrets: dict[str, list[str]],
        settings: EscalationSettings,
    ) -> None:
        self.service = service
        self.pack = pack
        self.secrets = secrets
        self.settings = settings
        m = service.metrics
        self.escalations = m.counter(
            "escalations_total", "Escalations fired", ["level", "department", "clock"]
        )
        self.lateness = m.histogram(
            "timer_lateness_seconds", "How long after its due time a timer fired"
        )

    def event(self, event_type: EventType, case_id: str, payload):  # type: ignore[no-untyped-def]
        event = new_event(event_type, source=self.service.source, subject=case_id, data=payload)
        return self.service.topic(Topic.CASE_EVENTS), case_id, event

    async def handle_batch(self, batch: Sequence[Inbound]) -> None:
        async with self.service.pool.acquire() as conn, conn.transaction():
            fresh = await claim_new_events(conn, [item.event.id for item in batch])
            for item in batch:
                if item.event.id not in fresh:
                    continue
                case = item.payload
                assert isinstance(case, CaseDispatched)
                _, policy = self.pack.policy_for(case.urgency)
                deadline = case.dispatched_at + policy.sign_for
                if await store.open_case(conn, case, deadline):
                    first = ladder.first_timer(self.pack.sla.ladder, deadline)
                    await store.arm(conn, case.case_id, Clock.SIGN_FOR, deadline, [first])
                    log.info(
                        "case opened",
                        case_id=case.case_id,
                        lead=case.lead,
                        sign_for_due=deadline.isoformat(),
                    )

    async def timer_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                fired = await self.fire_due_timers()
                if fired >= self.settings.timer_batch:
                    continue
                async with self.service.pool.acquire() as conn:
                    upcoming = await store.next_due(conn)
            except TRANSIENT_DB_ERRORS as error:
                log.warning("timer loop: database unavailable", error=repr(error))
                upcoming = None
            wait = self.settings.timer_poll_seconds
            if upcoming is not None:
                wait = min(wait, max(0.0, (upcoming - utcnow()).total_seconds()))
            await sleep_or_stop(stop, wait)

    async def fire_due_timers(self) -> int:
        now = utcnow()
        fired: list[tuple[str, str, int, datetime]] = []
        async with self.service.pool.acquire() as conn, conn.transaction():
            timers = await store.claim_due_timers(conn, self.settings.timer_batch)
            if not timers:
                return 0
            await store.delete_timers(conn, [t["id"] for t in timers])
            messages = []
            for timer in timers:
                clock = Clock(timer["clock"])
                if clock is Clock.SIGN_FOR and timer["state"] != "dispatched":
                    continue  # signed for in the meantime: the clock stopped
                if not await store.record_escalation(conn, timer, now):
                    continue
                spec = ladder.TimerSpec(timer["level"], timer["repeat"], timer["due_at"])
                payload = CaseEscalated(
                    case_id=timer["case_id"],
                    department=timer["lead"],
                    clock=clock,
                    level=timer["level"],
                    repeat=timer["repeat"],
                    due_at=timer["deadline"],
                    fired_at=now,
                    targets=ladder.targets_of(self.pack.sla.ladder, timer["level"]),
                )
                messages.append(self.event(EventType.CASE_ESCALATED, timer["case_id"], payload))
                await store.arm(
                    conn,
                    timer["case_id"],
                    clock,
                    timer["deadline"],
                    ladder.next_timers(self.pack.sla.ladder, timer["deadline"], spec),
                )
                fired.append((timer["case_id"], timer["lead"], timer["level"], timer["due_at"]))
            await enqueue(conn, self.service.name, messages)
        for case_id, lead, level, due_at in fired:
            self.escalations.labels(str(level), lead, Clock.SIGN_FOR.value).inc()
            self.lateness.observe(max(0.0, (now - due_at).total_seconds()))
            log.warning("case escalated", case_id=case_id, department=lead, level=level)
        return len(timers)


async def run(settings: EscalationSettings, pack: CityPack, secrets: dict[str, list[str]]) -> int:
    service = Service("escalation", settings, http_port=settings.http_port, migrations=MIGRATIONS)
    await service.start()
    escalation = Escalation(service, pack, secrets, settings)
    service.add_consumer(
        [Topic.CASE_EVENTS], escalation.handle_batch, accept={EventType.CASE_DISPATCHED}
    )
    service.add_loop("timers", escalation.timer_loop)
    service.app.include_router(api.make_router(escalation))
    return await service.run()


def main() -> None:
    settings = load_settings(EscalationSettings)
    configure_logging("escalation", settings.log_level)
    pack = load_pack_or_exit(settings.city_dir)
    secrets = load_secrets_or_exit(settings.secrets_file, list(pack.departments))
    run_service(lambda: run(settings, pack, secrets))
