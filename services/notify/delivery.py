"""The delivery loop: lease due deliveries from PostgreSQL and send them, signed.

It runs beside the Kafka consumer and never blocks it: the consumer only
inserts rows. Each leased delivery is sent by its own task, within the
endpoint's concurrency limit and timeout, and only while the endpoint's
circuit breaker lets it; the loop keeps leasing for other endpoints meanwhile,
so one slow or dead department does not hold back the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta

import aiohttp
import asyncpg
import orjson
import structlog

from services.notify import domain, store
from services.notify.breaker import Breaker, State
from services.notify.config import GATEWAY, Endpoint, NotifyConfig
from services.notify.domain import Attempt, Failure, RetryPolicy, Verdict
from services.notify.notices import released_at
from shared.aio import wait_any
from shared.batching import GroupCommit
from shared.db import TRANSIENT_DB_ERRORS
from shared.events import utcnow
from shared.logs import mask_text
from shared.metrics import Metrics
from shared.webhooks import sign

log = structlog.get_logger(__name__)
PING_TYPE = "civicroute.endpoint.test.v1"
CLOUDEVENTS_JSON = "application/cloudevents+json"
MAX_ERROR_CHARS = 500


@dataclass(frozen=True)
class DeliverySettings:
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    poll_seconds: float = 0.2
    url_template: str | None = None  # overrides every department's URL (local runs, tests)
    gateway_url: str | None = None
    lease_slack_seconds: float = 10.0


class Deliverer:
    def __init__(
        self,
        pool: asyncpg.Pool,
        config: NotifyConfig,
        secrets: dict[str, list[str]],
        settings: DeliverySettings,
        metrics: Metrics,
        rng: random.Random | None = None,
    ) -> None:
        self.pool = pool
        self.config = config
        self.secrets = secrets
        self.settings = settings
        self.rng = rng or random.Random()  # noqa: S311 - retry jitter, not security
        self.wake = asyncio.Event()
        self.breakers: dict[str, Breaker] = {}
        self.in_flight: dict[int, str] = {}
        self.busy: Counter[str] = Counter()
        # Endpoints with pending deliveries that the pack does not name (it changed since):
        # learnt from the queue, so their deliveries still go or die, never sit forever.
        self.queued_elsewhere: set[str] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        # One connection pool per endpoint, sized to its concurrency: a pool scans all its
        # connections on every request, and one endpoint's sockets never starve another's.
        self.clients: dict[str, aiohttp.ClientSession] = {}
        # Outcomes are written in small batches, one transaction for what finished within a
        # few milliseconds. A caller waits until its outcome is committed, so a delivery
        # stays "in flight" (and its case's next event waits) exactly until it is durable.
        self.settler: GroupCommit[store.Settlement, None] = GroupCommit(self._settle_batch)
        self.outcomes = metrics.counter(
            "deliveries_total",
            "Deliveries by outcome: delivered, retry (an attempt failed, another is due), dead",
            ["department", "outcome"],
        )
        self.attempt_results = metrics.counter(
            "delivery_attempts_total", "HTTP attempts by result", ["department", "result"]
        )
        self.attempt_seconds = metrics.histogram(
            "delivery_attempt_seconds", "Latency of one HTTP attempt", ["department"]
        )
        self.dead = metrics.counter(
            "deliveries_dead_total",
            "Deliveries given up (dead-lettered, replayable): rejected or past the horizon",
            ["department", "reason"],
        )
        self.breaker_state = metrics.gauge(
            "breaker_state", "Circuit breaker per endpoint: 0 closed, 1 half-open, 2 open",
            ["department"],
        )  # fmt: skip
        self.depth = metrics.gauge(
            "pending_deliveries", "Deliveries waiting to be delivered", ["department"]
        )
        self.age = metrics.gauge(
            "oldest_pending_age_seconds",
            "How long the oldest pending delivery has been trying (held notices not counted)",
            ["department"],
        )
        self.stale_connections = metrics.counter(
            "stale_connections_total",
            "Attempts resent at once on a new connection: the endpoint had closed the idle one",
            ["department"],
        )
        self.breaker_opened = metrics.counter(
            "breaker_opened_total", "Times an endpoint's breaker opened", ["department"]
        )

    # --- the loop ---------------------------------------------------------------------

    def breaker(self, name: str) -> Breaker:
        found = self.breakers.get(name)
        if found is None:
            endpoint = self.config.endpoint(name)
            found = self.breakers[name] = Breaker(
                endpoint.breaker_failures, endpoint.breaker_cooldown
            )
        return found

    def slots(self, now: float) -> dict[str, int]:
        """Free attempt slots per endpoint: the pack's, and any other the queue holds."""
        names = set(self.config.endpoints) | self.queued_elsewhere | set(self.busy)
        return {
            name: self.breaker(name).slots(
                now, self.config.endpoint(name).concurrency, self.busy[name]
            )
            for name in names
        }

    @property
    def lease(self) -> timedelta:
        # Longer than any attempt can take (its timeout is enforced), so a live
        # worker's lease never runs out; a crashed worker's does, and the row comes due.
        return timedelta(seconds=self.config.max_timeout + self.settings.lease_slack_seconds)

    async def run(self, stop: asyncio.Event) -> None:
        try:
            with contextlib.suppress(*TRANSIENT_DB_ERRORS):
                await self.refresh_gauges()  # learns endpoints the queue holds beyond the pack
            while not stop.is_set():
                # Cleared before the lease, not after: a wake-up while it runs (a batch
                # committed after its snapshot) must end the wait below at once, not be
                # lost until the next poll.
                self.wake.clear()
                leased = 0
                try:
                    leased = await self.lease_and_send()
                except TRANSIENT_DB_ERRORS as error:
                    log.warning("delivery loop: database unavailable", error=repr(error))
                if leased:
                    continue
                await wait_any([stop, self.wake], self.settings.poll_seconds)
        finally:
            await self.drain()

    async def lease_and_send(self) -> int:
        """Lease what is due and may go now; start one task per delivery. Returns the count."""
        slots = self.slots(time.monotonic())
        async with self.pool.acquire() as conn:  # one statement: no BEGIN and COMMIT
            rows = await store.lease_due(
                conn, slots=slots, in_flight=list(self.in_flight), lease=self.lease
            )
        for row in rows:
            self.in_flight[row["id"]] = row["department"]
            self.busy[row["department"]] += 1
            task = asyncio.create_task(self._deliver(row), name=f"deliver-{row['id']}")
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        return len(rows)

    async def drain(self) -> None:
        """On stop: let attempts in flight finish (bounded by their timeout), then close."""
        if self.tasks:
            _, pending = await asyncio.wait(set(self.tasks), timeout=self.config.max_timeout + 2)
            for task in pending:
                task.cancel()  # its lease runs out and the delivery comes due again
        for client in self.clients.values():
            await client.close()

    async def _deliver(self, row: asyncpg.Record) -> None:
        name = row["department"]
        try:
            attempt = await self.send(row, self.config.endpoint(name))
            self._track(name, attempt)
            await self._settle(row, attempt)
        except TRANSIENT_DB_ERRORS as error:
            # Sent but not recorded: the lease runs out and it is sent again (same webhook-id).
            log.warning(
                "delivery outcome not recorded; will resend",
                case_id=row["case_id"],
                department=name,
                error=repr(error),
            )
        except Exception:
            log.exception("delivery failed unexpectedly", case_id=row["case_id"], department=name)
        finally:
            self.in_flight.pop(row["id"], None)
            self.busy[name] -= 1
            self.wake.set()

    def _track(self, name: str, attempt: Attempt) -> None:
        breaker = self.breaker(name)
        before = breaker.state
        if attempt.endpoint_unhealthy:
            breaker.failed(time.monotonic())
        elif attempt.failure is not Failure.NO_ENDPOINT:
            breaker.succeeded()
        if breaker.state is not before:
            self.breaker_state.labels(name).set(int(breaker.state))
            if breaker.state is State.OPEN:
                self.breaker_opened.labels(name).inc()
            log.warning(
                "circuit breaker changed",
                department=name,
                state=breaker.state.name.lower(),
                consecutive_failures=breaker.consecutive,
            )
        result = "ok" if attempt.delivered else str(attempt.failure)
        self.attempt_results.labels(name, result).inc()

    async def _settle(self, row: asyncpg.Record, attempt: Attempt) -> None:
        now = utcnow()
        tries = row["tries"] + 1
        number = row["attempts"] + 1
        decision = domain.decide(
            attempt,
            tries=tries,
            window_start=row["window_start"],
            now=now,
            policy=self.settings.policy,
            rng=self.rng,
        )
        next_at = decision.next_attempt_at
        if next_at is not None and row["kind"] == "notice":
            emergency = bool(orjson.loads(row["body"]).get("emergency"))
            quiet = self.config.file.notices.quiet_hours
            next_at = released_at(next_at, quiet, self.config.zone, emergency)
        await self.settler.submit(
            store.Settlement(
                delivery_id=row["id"],
                number=number,
                tries=tries,
                attempt=attempt,
                next_at=next_at,
                status=str(decision.verdict),
                dead_reason=decision.dead_reason,
            )
        )
        name = row["department"]
        self.outcomes.labels(name, str(decision.verdict)).inc()
        context = {
            "case_id": row["case_id"],
            "department": name,
            "delivery_id": row["id"],
            "event_type": row["event_type"],
            "attempt": number,
            "status_code": attempt.status_code,
        }
        if decision.verdict is Verdict.DELIVERED:
            log.info("delivered", **context)
        elif decision.verdict is Verdict.DEAD:
            self.dead.labels(name, decision.dead_reason or "unknown").inc()
            log.error(
                "delivery given up",
                reason=decision.dead_reason,
                failure=str(attempt.failure),
                **context,
            )
        elif decision.verdict is Verdict.RETRY and next_at is not None:
            log.info(
                "delivery attempt failed; retrying",
                failure=str(attempt.failure),
                retry_in_seconds=round((next_at - now).total_seconds(), 3),
                **context,
            )

    async def _settle_batch(self, items: list[store.Settlement]) -> list[None]:
        async with self.pool.acquire() as conn:  # one statement: no BEGIN and COMMIT
            await store.settle(conn, items)
        return [None] * len(items)

    # --- one HTTP attempt -------------------------------------------------------------

    def client(self, endpoint: Endpoint) -> aiohttp.ClientSession:
        """The endpoint's own keep-alive pool. aiohttp, not httpx, on this hot path: a
        webhook costs it about a twentieth of the CPU (measured; docs/performance.md)."""
        found = self.clients.get(endpoint.name)
        if found is None:
            size = endpoint.concurrency + 1  # + the endpoint test
            found = self.clients[endpoint.name] = _session(
                # Idle connections go after 4 s: before the 5 s after which common servers
                # (uvicorn, Node.js) close theirs, so a request rarely meets a closed one.
                aiohttp.TCPConnector(limit=size, ttl_dns_cache=300, keepalive_timeout=4)
            )
        return found

    def url_for(self, row_kind: str, endpoint: Endpoint) -> str | None:
        if row_kind == "notice":
            return self.settings.gateway_url
        if self.settings.url_template:
            return self.settings.url_template.format(department=endpoint.name)
        return endpoint.url

    def headers_for(self, endpoint: Endpoint, msg_id: str, body: bytes) -> dict[str, str] | None:
        """Standard Webhooks headers, one signature per current secret; None without one.

        The notice gateway is signed when the secrets file has an entry for it.
        """
        secrets = self.secrets.get(endpoint.name)
        if secrets:
            return sign(secrets, msg_id, body)
        if endpoint.name == GATEWAY:
            return {"webhook-id": msg_id}
        return None

    async def send(self, row: asyncpg.Record, endpoint: Endpoint) -> Attempt:
        body = bytes(row["body"])
        kind = row["kind"]
        url = self.url_for(kind, endpoint)
        headers = self.headers_for(endpoint, row["webhook_id"], body)
        if not url or headers is None:
            missing = "URL" if not url else "secret"
            return Attempt(None, Failure.NO_ENDPOINT, f"no {missing} configured", 0.0)
        headers["content-type"] = CLOUDEVENTS_JSON if kind == "webhook" else "application/json"
        return await self.post(endpoint, url, body, headers)

    async def post(
        self, endpoint: Endpoint, url: str, body: bytes, headers: dict[str, str]
    ) -> Attempt:
        started = time.perf_counter()
        code: int | None = None
        retry_after: float | None = None
        failure: Failure | None
        error_text: str | None = None
        try:
            # asyncio.timeout bounds the whole attempt: connect, send, answer, body.
            async with asyncio.timeout(endpoint.timeout):
                try:
                    code, failure, error_text, retry_after = await self._exchange(
                        self.client(endpoint), url, body, headers
                    )
                except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as error:
                    if isinstance(error, aiohttp.ClientConnectorError):
                        raise  # a new connection failed: the endpoint is down or refusing
                    # A kept-alive connection the endpoint closed while it sat idle in the
                    # pool: the request did not get through. Once more, on a new connection
                    # (the webhook-id makes a repeat harmless should it have got through).
                    self.stale_connections.labels(endpoint.name).inc()
                    async with _session(aiohttp.TCPConnector(force_close=True)) as fresh:
                        code, failure, error_text, retry_after = await self._exchange(
                            fresh, url, body, headers
                        )
        except TimeoutError:
            code, failure = None, Failure.TIMEOUT
            error_text = f"timed out after {endpoint.timeout:g}s"
        except (aiohttp.ClientError, OSError) as error:
            code, failure = None, Failure.CONNECTION
            error_text = f"{type(error).__name__}: {error}"
        seconds = time.perf_counter() - started
        self.attempt_seconds.labels(endpoint.name).observe(seconds)
        if error_text is not None:
            error_text = mask_text(error_text[:MAX_ERROR_CHARS])
        return Attempt(code, failure, error_text, seconds * 1000, retry_after)

    @staticmethod
    async def _exchange(
        client: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, Failure | None, str | None, float | None]:
        """POST once: the status, its failure class, the error text and any Retry-After."""
        error_text: str | None = None
        retry_after: float | None = None
        async with client.post(url, data=body, headers=headers) as response:
            code = response.status
            failure = domain.classify(code)
            if failure is not None:
                answer = await response.content.read(MAX_ERROR_CHARS)
                error_text = f"HTTP {code}: {answer.decode(errors='replace')}"
            if code in (429, 503):
                retry_after = domain.parse_retry_after(
                    response.headers.get("retry-after"), utcnow()
                )
        return code, failure, error_text, retry_after

    async def ping(self, department: str) -> tuple[str, Attempt]:
        """A signed test event to ``department`` now, outside the queue and the breaker."""
        endpoint = self.config.endpoint(department)
        msg_id = f"msg_test_{uuid.uuid4().hex}"
        event = {
            "specversion": "1.0",
            "id": msg_id,
            "source": "/civicroute/notify",
            "type": PING_TYPE,
            "subject": department,
            "time": utcnow().isoformat(),
            "datacontenttype": "application/json",
            "data": {"department": department, "message": "civicroute endpoint test"},
        }
        body = orjson.dumps(event)
        url = self.url_for("webhook", endpoint)
        headers = self.headers_for(endpoint, msg_id, body)
        if not url or headers is None:
            missing = "URL" if not url else "secret"
            return msg_id, Attempt(None, Failure.NO_ENDPOINT, f"no {missing} configured", 0.0)
        headers["content-type"] = CLOUDEVENTS_JSON
        return msg_id, await self.post(endpoint, url, body, headers)

    # --- gauges ------------------------------------------------------------------------

    async def refresh_gauges(self) -> None:
        """Queue depth and oldest pending age per endpoint, breaker states."""
        async with self.pool.acquire() as conn:
            rows = await store.pending_by_department(conn)
        depth, age = self.depth, self.age
        seen = {row["department"] for row in rows}
        self.queued_elsewhere = seen - set(self.config.endpoints)
        for row in rows:
            name = row["department"]
            depth.labels(name).set(row["pending"])
            oldest = row["oldest"]
            age.labels(name).set(max(0.0, (row["now"] - oldest).total_seconds()) if oldest else 0.0)
        for name in set(self.config.endpoints) - seen:
            depth.labels(name).set(0)
            age.labels(name).set(0)
        now = time.monotonic()
        for name, breaker in self.breakers.items():
            self.breaker_state.labels(name).set(int(breaker.current(now)))


def _session(connector: aiohttp.TCPConnector) -> aiohttp.ClientSession:
    """A webhook sender's HTTP session: no cookies kept, bodies left as sent."""
    return aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False
    )
