"""notify wiring: consume events into the delivery queue; a loop sends them, signed."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

import structlog
from pydantic import Field, field_validator

from services.notify import api
from services.notify.config import NotifyConfig, load_notify_config_or_exit
from services.notify.delivery import Deliverer, DeliverySettings
from services.notify.domain import RETRY_HORIZON, RETRY_JITTER, RETRY_SCHEDULE, RetryPolicy
from services.notify.ingest import Ingest
from shared.aio import sleep_or_stop
from shared.apikeys import ApiKeys, ApiKeysError
from shared.citypack import CityPack, load_pack_or_exit
from shared.db import TRANSIENT_DB_ERRORS
from shared.events import EventType, utcnow
from shared.kafka import Inbound
from shared.logs import configure_logging
from shared.secretstore import load_secrets_or_exit
from shared.service import Service, run_service
from shared.settings import CommonSettings, load_settings
from shared.topics import Topic

log = structlog.get_logger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"
CASE_EVENT_TYPES = {t.value for t in EventType if t.value.startswith("civicroute.case.")}
ACCEPTS = CASE_EVENT_TYPES | {EventType.REQUEST_ACCEPTED.value}


class NotifySettings(CommonSettings):
    http_port: int = 8004
    webhook_url_template: str | None = Field(
        default=None,
        description="Overrides every department's webhook URL, e.g. http://host/hooks/{department}",
    )
    notice_gateway_url: str | None = Field(
        default=None, description="SMS/e-mail gateway endpoint; unset: no citizen notices"
    )
    retry_schedule_seconds: list[float] = Field(
        default=list(RETRY_SCHEDULE), min_length=1, description="Waits between tries"
    )
    retry_jitter: float = Field(default=RETRY_JITTER, ge=0, lt=1)
    retry_horizon_seconds: float = Field(default=RETRY_HORIZON, gt=0)
    delivery_poll_seconds: float = Field(default=0.2, gt=0)
    stats_interval_seconds: float = Field(default=5.0, gt=0)
    delivery_lease_slack_seconds: float = Field(
        default=10.0, gt=0, description="Lease beyond the longest timeout; a crash delays by it"
    )

    @field_validator("retry_schedule_seconds")
    @classmethod
    def _non_negative(cls, value: list[float]) -> list[float]:
        if any(step < 0 for step in value):
            raise ValueError("retry delays must be >= 0")
        return value

    @field_validator("webhook_url_template")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is not None and "{department}" not in value:
            raise ValueError("must contain {department}")
        return value

    def delivery(self) -> DeliverySettings:
        return DeliverySettings(
            policy=RetryPolicy(
                tuple(self.retry_schedule_seconds), self.retry_horizon_seconds, self.retry_jitter
            ),
            poll_seconds=self.delivery_poll_seconds,
            url_template=self.webhook_url_template,
            gateway_url=self.notice_gateway_url,
            lease_slack_seconds=self.delivery_lease_slack_seconds,
        )


class Notify:
    def __init__(
        self,
        service: Service,
        pack: CityPack,
        config: NotifyConfig,
        secrets: dict[str, list[str]],
        settings: NotifySettings,
        keys: ApiKeys,
    ) -> None:
        self.service = service
        self.pack = pack
        self.config = config
        self.settings = settings
        self.keys = keys
        self.deliverer = Deliverer(
            service.pool, config, secrets, settings.delivery(), service.metrics
        )
        self.ingest = Ingest(
            pack, config, service.metrics, notices_on=settings.notice_gateway_url is not None
        )

    async def handle_batch(self, batch: Sequence[Inbound]) -> None:
        async with self.service.pool.acquire() as conn, conn.transaction():
            queued = await self.ingest.apply(conn, batch, utcnow())
        if queued:
            self.deliverer.wake.set()

    async def stats_loop(self, stop: asyncio.Event) -> None:
        while not await sleep_or_stop(stop, self.settings.stats_interval_seconds):
            try:
                await self.deliverer.refresh_gauges()
            except TRANSIENT_DB_ERRORS as error:
                log.warning("queue gauges not refreshed", error=repr(error))


async def run(
    settings: NotifySettings,
    pack: CityPack,
    config: NotifyConfig,
    secrets: dict[str, list[str]],
    keys: ApiKeys,
) -> int:
    service = Service("notify", settings, http_port=settings.http_port, migrations=MIGRATIONS)
    await service.start()
    notify = Notify(service, pack, config, secrets, settings, keys)
    service.add_consumer(
        [Topic.CASE_EVENTS, Topic.REQUESTS_ACCEPTED], notify.handle_batch, accept=ACCEPTS
    )
    service.add_loop("deliveries", notify.deliverer.run)
    service.add_loop("queue-gauges", notify.stats_loop)
    ops = api.Ops(service.pool, keys, notify.deliverer, set(pack.departments))
    service.app.include_router(api.make_router(ops))
    if settings.notice_gateway_url is None:
        log.info("citizen notices off: CIVIC_NOTICE_GATEWAY_URL is not set")
    return await service.run()


def main() -> None:
    settings = load_settings(NotifySettings)
    configure_logging("notify", settings.log_level)
    pack = load_pack_or_exit(settings.city_dir)
    config = load_notify_config_or_exit(pack)
    secrets = load_secrets_or_exit(settings.secrets_file, list(pack.departments))
    try:
        keys = ApiKeys.load(settings.api_keys_file)
    except ApiKeysError as error:
        print(f"bad API keys: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    run_service(lambda: run(settings, pack, config, secrets, keys))
