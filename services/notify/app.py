"""notify wiring: consume case events into the delivery queue; a loop sends them, signed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import httpx
import structlog

from services.notify import domain, store
from shared.aio import wait_any
from shared.citypack import CityPack, load_pack_or_exit
from shared.db import TRANSIENT_DB_ERRORS, claim_new_events
from shared.events import CaseDispatched, EventType, InvalidEvent, utcnow
from shared.kafka import Inbound
from shared.logs import configure_logging
from shared.secretstore import load_secrets_or_exit
from shared.service import Service, run_service
from shared.settings import CommonSettings, load_settings
from shared.topics import Topic
from shared.webhooks import sign

log = structlog.get_logger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"
CASE_EVENT_TYPES = {t.value for t in EventType if t.value.startswith("civicroute.case.")}


class NotifySettings(CommonSettings):
    http_port: int = 8004
    webhook_url_template: str | None = None  # e.g. http://127.0.0.1:9000/hooks/{department}
    webhook_timeout_seconds: float = 5.0
    retry_horizon_seconds: float = 24 * 3600
    delivery_batch: int = 200
    delivery_poll_seconds: float = 0.2
    endpoint_concurrency: int = 8


class Notify:
    def __init__(
        self,
        service: Service,
        pack: CityPack,
        secrets: dict[str, list[str]],
        settings: NotifySettings,
    ) -> None:
        self.service = service
        self.pack = pack
        self.secrets = secrets
        self.settings = settings
        self.wake = asyncio.Event()
        self.client = httpx.AsyncClient(timeout=settings.webhook_timeout_seconds)
        self.limits: dict[str, asyncio.Semaphore] = {}
        m = service.metrics
        self.outcomes = m.counter(
            "deliveries_total", "Webhook delivery attempts by outcome", ["department", "outcome"]
        )
        self.attempt_seconds = m.histogram(
            "delivery_attempt_seconds", "Webhook attempt latency", ["department"]
        )
        self.dead = m.counter("deliveries_dead_total", "Deliveries given up", ["department"])

    def url_for(self, department: str) -> str | None:
        if self.settings.webhook_url_template:
            return self.settings.webhook_url_template.format(department=department)
        found = self.pack.departments.get(department)
        return found.webhook_url if found else None

    async def handle_batch(self, batch: Sequence[Inbound]) -> None:
        async with self.service.pool.acquire() as conn, conn.transaction():
            fresh = await claim_new_events(conn, [item.event.id for item in batch])
            for item in batch:
                if item.event.id not in fresh:
                    continue
                case_id = item.event.subject or getattr(item.payload, "case_id", None)
                if not case_id:
                    raise InvalidEvent("case event without a case_id")
                payload = item.payload
                if isinstance(payload, CaseDispatched):
                    await store.set_holders(conn, case_id, payload.lead, payload.cooperating)
                lead, cooperating = await store.holders(conn, case_id)
                targets = domain.recipients(item.event.type, payload, lead, cooperating)
                if not targets:
                    raise InvalidEvent(f"no department holds case {case_id} for {item.event.type}")
                body = domain.redact_for_department(item.record.value)
                await store.add_deliveries(
                    conn,
                    [
                        store.NewDelivery(
                            webhook_id=domain.webhook_id(item.event.id, department),
                            case_id=case_id,
                            department=department,
                            event_id=item.event.id,
                            event_type=item.event.type,
                            body=body,
                        )
                        for department in dict.fromkeys(targets)
                    ],
                )
        self.wake.set()

    async def delivery_loop(self, stop: asyncio.Event) -> None:
        lease = timedelta(seconds=self.settings.webhook_timeout_seconds * 6)
        try:
            while not stop.is_set():
                try:
                    async with self.service.pool.acquire() as conn, conn.transaction():
                        due = await store.lease_due(conn, self.settings.delivery_batch, lease)
                except TRANSIENT_DB_ERRORS as error:
                    log.warning("delivery loop: database unavailable", error=repr(error))
                    due = []
                if due:
                    await asyncio.gather(*(self._deliver(row) for row in due))
                    continue
                self.wake.clear()
                await wait_any([stop, self.wake], self.settings.delivery_poll_seconds)
        finally:
            await self.client.aclose()

    async def _deliver(self, row) -> None:  # type: ignore[no-untyped-def]
        department = row["department"]
        limit = self.limits.setdefault(
            department, asyncio.Semaphore(self.settings.endpoint_concurrency)
        )
        async with limit:
            code, error, latency_ms = await self._post(row)
        attempts = row["attempts"] + 1
        async with self.service.pool.acquire() as conn, conn.transaction():
            await store.record_attempt(conn, row["id"], attempts, code, latency_ms, error)
            if code is not None and 200 <= code < 300:
                await store.finish(conn, row["id"], "delivered", attempts, code, None)
                self.outcomes.labels(department, "delivered").inc()
                return
            retryable = code is None or code >= 500 or code == 429
            age = (utcnow() - row["created_at"]).total_seconds()
            if retryable and age < self.settings.retry_horizon_seconds:
                at = utcnow() + domain.retry_delay(attempts)
                await store.reschedule(conn, row["id"], attempts, at, code, error)
                self.outcomes.labels(department, "retry").inc()
                return
            await store.finish(conn, row["id"], "dead", attempts, code, error)
            self.outcomes.labels(department, "dead").inc()
            self.dead.labels(department).inc()
            log.error(
                "delivery given up",
                case_id=row["case_id"],
                department=department,
                status_code=code,
                error=error,
            )

    async def _post(self, row) -> tuple[int | None, str | None, float]:  # type: ignore[no-untyped-def]
        """One signed POST: (status code or None, error text or None, latency in ms)."""
        department = row["department"]
        url = self.url_for(department)
        if not url:
            return None, "no webhook URL configured", 0.0
        body = bytes(row["body"])
        headers = sign(self.secrets[department], row["webhook_id"], body)
        headers["content-type"] = "application/cloudevents+json"
        started = time.perf_counter()
        try:
            response = await self.client.post(url, content=body, headers=headers)
        except httpx.HTTPError as error:
            code, error_text = None, f"{type(error).__name__}: {error}"[:500]
        else:
            code = response.status_code
            error_text = None if response.is_success else response.text[:500]
        seconds = time.perf_counter() - started
        self.attempt_seconds.labels(department).observe(seconds)
        return code, error_text, seconds * 1000


async def run(settings: NotifySettings, pack: CityPack, secrets: dict[str, list[str]]) -> int:
    service = Service("notify", settings, http_port=settings.http_port, migrations=MIGRATIONS)
    await service.start()
    notify = Notify(service, pack, secrets, settings)
    service.add_consumer([Topic.CASE_EVENTS], notify.handle_batch, accept=CASE_EVENT_TYPES)
    service.add_loop("deliveries", notify.delivery_loop)
    return await service.run()


def main() -> None:
    settings = load_settings(NotifySettings)
    configure_logging("notify", settings.log_level)
    pack = load_pack_or_exit(settings.city_dir)
    secrets = load_secrets_or_exit(settings.secrets_file, list(pack.departments))
    run_service(lambda: run(settings, pack, secrets))
