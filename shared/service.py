"""The process skeleton every service shares: start in order, run, stop gracefully.

Start: database pool → migrations → topics → producer → outbox relay,
consumers, background loops and the HTTP server. SIGTERM or SIGINT sets the
stop event; consumers finish and commit the batch in hand, the relay drains,
the HTTP server closes, then the producer and the pool.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import asyncpg
import structlog
from fastapi import FastAPI

from shared.db import connect_pool, migrate, ping
from shared.heap import settle_heap
from shared.http import EmbeddedServer, create_app, make_server
from shared.kafka import (
    ConsumerRuntime,
    DeadLetters,
    Handler,
    RenewingProducer,
    make_producer,
    tolerate_closed_transports,
)
from shared.metrics import Metrics
from shared.outbox import OutboxRelay
from shared.settings import CommonSettings
from shared.topics import Topic, TopicNames, ensure_topics

log = structlog.get_logger(__name__)

Loop = Callable[[asyncio.Event], Awaitable[None]]
SHUTDOWN_GRACE_SECONDS = 15


class Service:
    """One civicroute service process. ``name`` is also its database schema."""

    def __init__(
        self,
        name: str,
        settings: CommonSettings,
        *,
        http_port: int,
        migrations: Path | None,
        refuse_nul_in_bodies: bool = True,
        nul_exempt_paths: tuple[str, ...] = (),
    ) -> None:
        self.name = name
        self.settings = settings
        self.http_port = http_port
        self.migrations = migrations
        self.metrics = Metrics(name)
        self.topics = TopicNames(settings.topic_namespace)
        self.stop = asyncio.Event()
        self.source = f"/civicroute/{name}"
        self._pool: asyncpg.Pool | None = None
        self._producer: RenewingProducer | None = None
        self._dead_letters: DeadLetters | None = None
        self._loops: list[tuple[str, Loop]] = []
        self._server: EmbeddedServer | None = None
        self.app: FastAPI = create_app(
            service=name,
            metrics=self.metrics,
            checks={"postgres": self._check_db, "kafka": self._check_kafka},
            refuse_nul_in_bodies=refuse_nul_in_bodies,
            nul_exempt_paths=nul_exempt_paths,
        )

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("service not started")
        return self._pool

    @property
    def producer(self) -> RenewingProducer:
        if self._producer is None:
            raise RuntimeError("service not started")
        return self._producer

    @property
    def dead_letters(self) -> DeadLetters:
        if self._dead_letters is None:
            raise RuntimeError("service not started")
        return self._dead_letters

    def topic(self, topic: Topic) -> str:
        return self.topics(topic)

    async def start(self) -> None:
        """Connect and migrate; after this, pool and producer are usable."""
        s = self.settings
        self._pool = await connect_pool(s.database_url, self.name, max_size=s.db_pool_size)
        await migrate(self._pool, self.name, self.migrations)
        await ensure_topics(s.kafka_bootstrap, self.topics, s.kafka_partitions)
        client_id = f"civicroute-{self.name}"
        self._producer = RenewingProducer(
            lambda: make_producer(
                s.kafka_bootstrap, idempotent=s.kafka_idempotence, client_id=client_id
            ),
            f"{self.name}-producer",
            self.metrics,
        )
        await self._producer.start()
        self._dead_letters = DeadLetters(
            self._producer, self.topic(Topic.DEADLETTER), self.name, self.metrics
        )
        relay = OutboxRelay(
            dsn=s.database_url, schema=self.name, producer=self._producer, metrics=self.metrics
        )
        self.add_loop("outbox-relay", relay.run)

    def add_consumer(
        self,
        topics: Sequence[Topic],
        handler: Handler,
        *,
        accept: set[str],
        max_batch: int = 500,
    ) -> ConsumerRuntime:
        runtime = ConsumerRuntime.configured(
            self.settings,
            service=self.name,
            topics=[self.topic(t) for t in topics],
            group_id=self.topics.group(self.name),
            handler=handler,
            accept=accept,
            dead_letters=self.dead_letters,
            metrics=self.metrics,
            max_batch=max_batch,
        )
        self.add_loop("consumer", runtime.run)
        return runtime

    def add_loop(self, name: str, loop: Loop) -> None:
        self._loops.append((name, loop))

    async def run(self) -> int:
        """Run every loop and the HTTP server until a signal or a loop's failure."""
        event_loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            event_loop.add_signal_handler(sig, self._request_stop, sig)
        self._server = make_server(self.app, self.settings.http_host, self.http_port)
        settle_heap()
        tasks = {
            asyncio.create_task(loop(self.stop), name=name): name for name, loop in self._loops
        }
        server_task = asyncio.create_task(self._server.serve(), name="http")
        log.info(
            "service started",
            http_port=self.http_port,
            pid=os.getpid(),
            loops=[n for n, _ in self._loops],
        )
        exit_code = 0
        stop_waiter = asyncio.create_task(self.stop.wait())
        done, _ = await asyncio.wait(
            [*tasks, server_task, stop_waiter], return_when=asyncio.FIRST_COMPLETED
        )
        for task in done:
            if task is not stop_waiter and not task.cancelled() and task.exception() is not None:
                log.error(
                    "service loop failed",
                    loop=tasks.get(task, "http"),
                    error=repr(task.exception()),
                    exc_info=task.exception(),
                )
                exit_code = 1
            elif task is server_task and not self.stop.is_set():
                log.error("http server stopped unexpectedly (port in use?)", port=self.http_port)
                exit_code = 1
        self.stop.set()
        self._server.should_exit = True
        _, pending = await asyncio.wait([*tasks, server_task], timeout=SHUTDOWN_GRACE_SECONDS)
        for task in pending:
            log.warning("loop did not stop in time; cancelling", loop=task.get_name())
            task.cancel()
        await self.close()
        log.info("service stopped", exit_code=exit_code)
        return exit_code

    def _request_stop(self, sig: signal.Signals) -> None:
        log.info("stop requested", signal=sig.name)
        self.stop.set()

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
        if self._pool is not None:
            await self._pool.close()

    async def _check_db(self) -> None:
        await ping(self.pool)

    async def _check_kafka(self) -> None:
        await self.producer.client.fetch_all_metadata()


def run_service(main: Callable[[], Awaitable[int]]) -> None:
    """Process entry: uvloop when available, exit code from the service."""
    try:
        import uvloop

        runner: Callable[[Awaitable[int]], int] = uvloop.run  # type: ignore[assignment]
        tolerate_closed_transports()
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        runner = asyncio.run  # type: ignore[assignment]
    sys.exit(runner(main()))
