"""``make run``: the whole system on this machine, no Docker.

Starts PostgreSQL and a Kafka broker (Apache Kafka when Java and Maven are
here, else tansu — said in one log line), the four services, a demo department
receiver that signs for what it gets, and a trickle of demo requests. Ctrl-C
stops everything, children first, infrastructure last.

``CIVIC_KAFKA_BOOTSTRAP`` / ``CIVIC_DATABASE_URL`` point it at an existing
broker and database instead of starting its own.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import structlog

from deploy.local.demo import demo_payloads, publish
from deploy.local.kafka import KafkaBroker, TansuBroker, cache_dir, java_available
from deploy.local.postgres import PostgresServer
from deploy.local.procs import Managed, free_port
from deploy.local.stack import REPO, ServiceSet, write_api_keys, write_secrets
from shared.aio import sleep_or_stop
from shared.citypack import load_pack_or_exit
from shared.kafka import make_producer, start_with_retry
from shared.logs import configure_logging
from shared.settings import DEFAULT_CITIES_DIR
from shared.topics import Topic, TopicNames, ensure_topics

log = structlog.get_logger("run")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run civicroute locally")
    parser.add_argument("--city", default=os.environ.get("CIVIC_CITY", "demo-zh"))
    parser.add_argument(
        "--rate", type=float, default=0.5, help="demo requests per second (0: none)"
    )
    parser.add_argument("--workdir", type=Path, default=None, help="where logs and data go")
    parser.add_argument("--broker", choices=["auto", "kafka", "tansu"], default="auto")
    return parser.parse_args()


async def trickle(
    bootstrap: str, topic: str, rate: float, stop: asyncio.Event, idempotent: bool
) -> None:
    producer = make_producer(bootstrap, idempotent=idempotent, client_id="demo-platform")
    await start_with_retry(producer, "demo-platform")
    try:
        for payload in demo_payloads():
            if stop.is_set():
                return
            key = await publish(producer, topic, payload)
            log.info("demo request published", key=key)
            await sleep_or_stop(stop, 1 / rate)
    finally:
        await producer.stop()


def main() -> None:
    args = parse_args()
    configure_logging("run")
    workdir = args.workdir or cache_dir() / "run" / time.strftime("%Y%m%d-%H%M%S")
    workdir.mkdir(parents=True, exist_ok=True)
    pack = load_pack_or_exit(DEFAULT_CITIES_DIR / args.city)
    started: list[object] = []
    department: Managed | None = None
    services: ServiceSet | None = None
    try:
        database_url = os.environ.get("CIVIC_DATABASE_URL")
        if not database_url:
            postgres = PostgresServer(workdir / "postgres")
            postgres.start()
            started.append(postgres)
            database_url = postgres.url()
            log.info("postgres started", port=postgres.port, seconds=round(postgres.started_in, 2))
        bootstrap = os.environ.get("CIVIC_KAFKA_BOOTSTRAP")
        idempotent = True
        if not bootstrap:
            use_kafka = args.broker == "kafka" or (args.broker == "auto" and java_available())
            broker: KafkaBroker | TansuBroker
            if use_kafka:
                broker = KafkaBroker(workdir / "kafka")
            else:
                broker = TansuBroker(workdir / "tansu")
                idempotent = False
                log.warning(
                    "no Java here: using the tansu broker (memory only, no idempotent producer)"
                )
            broker.start()
            started.append(broker)
            bootstrap = broker.bootstrap
            log.info(
                "broker started",
                broker=broker.version,
                bootstrap=bootstrap,
                seconds=round(broker.started_in, 2),
            )
        secrets_file = workdir / "secrets.yaml"
        write_secrets(secrets_file, list(pack.departments))
        keys = write_api_keys(
            workdir / "api-keys.yaml", {"demo-platform": "platform", "demo-app": "app"}
        )
        keys_note = workdir / "api-keys.txt"  # for the person at the keyboard, not the logs
        keys_note.write_text("".join(f"{name} {key}\n" for name, key in keys.items()))
        keys_note.chmod(0o600)
        department_port = free_port()
        env = {
            "CIVIC_KAFKA_BOOTSTRAP": bootstrap,
            "CIVIC_DATABASE_URL": database_url,
            "CIVIC_CITY": args.city,
            "CIVIC_SECRETS_FILE": str(secrets_file),
            "CIVIC_API_KEYS_FILE": str(workdir / "api-keys.yaml"),
            "CIVIC_KAFKA_IDEMPOTENCE": str(idempotent).lower(),
            "CIVIC_WEBHOOK_URL_TEMPLATE": f"http://127.0.0.1:{department_port}/hooks/{{department}}",
        }
        services = ServiceSet(workdir, env, passthrough=True)
        for name, port in (
            ("intake", 8001),
            ("router", 8002),
            ("escalation", 8003),
            ("notify", 8004),
        ):
            if _free(port):
                services.ports[name] = port
        asyncio.run(ensure_topics(bootstrap, TopicNames(), 6))
        department = Managed.spawn(
            "department",
            [
                sys.executable,
                "-m",
                "deploy.local.department",
                "--port",
                str(department_port),
                "--secrets-file",
                str(secrets_file),
                "--escalation-url",
                services.url("escalation"),
            ],
            env={**os.environ, "PYTHONPATH": str(REPO)},
            cwd=REPO,
            stdout=sys.stdout.buffer,  # type: ignore[arg-type]
        )
        services.start()
        log.info(
            "civicroute running",
            **{f"{s}_url": services.url(s) for s in services.ports},
            workdir=str(workdir),
            api_keys_file=str(keys_note),
            hint="Ctrl-C stops everything",
        )
        asyncio.run(_until_signal(bootstrap, args.rate, idempotent))
    finally:
        if department is not None:
            department.stop()
        if services is not None:
            services.stop()
        for thing in reversed(started):
            thing.stop()  # type: ignore[attr-defined]
        log.info("stopped; logs kept", workdir=str(workdir))


def _free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


async def _until_signal(bootstrap: str, rate: float, idempotent: bool) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if rate > 0:
        await trickle(bootstrap, TopicNames()(Topic.CITIZEN_REQUESTS), rate, stop, idempotent)
    await stop.wait()


if __name__ == "__main__":
    main()
