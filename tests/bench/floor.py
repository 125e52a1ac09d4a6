"""The contract's floor: what a request's bare messaging costs, with none of the logic.

Whatever the services do inside, every request through civicroute is at least:

- Kafka messages, each produced once and read by every consumer group on its topic:
  the request on ``citizen.requests`` (intake), its ``accepted`` event on
  ``requests.accepted`` (router, notify) and its case events on ``case.events``
  (intake, router, notify, escalation);
- signed webhooks, notify → a department's server;
- signed callbacks, a department → escalation's FastAPI.

``python -m tests.bench --floor`` offers exactly that work, at a target rate and in the
counts per request the run's own flows measured, with no PostgreSQL, no validation
beyond the signature, no classification and no state: bare aiokafka producers and
consumers that parse each message, aiohttp posting to the bench's department receiver,
and the receiver's aiohttp posting to a FastAPI route that verifies and parses. Each
kind of work runs alone for the measured window and its processes' CPU is read (the
broker's too, when the bench started it). Their sum is a lower bound on the CPU the
whole system needs at that rate on this machine.

The worker processes are this module's subcommands (``produce``, ``consume``,
``send``, ``callbacks``); :func:`measure` runs them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from deploy.local.procs import Managed, free_port, port_open, wait_for
from deploy.local.stack import REPO
from tests.bench.figures import CpuMeter
from tests.bench.kafka_baseline import MESSAGE_BYTES, service_like_consumer

# Who reads each topic: the README's topic table (each service's consumer in its app.py).
READERS = {
    "citizen.requests.v1": ("intake",),
    "requests.accepted.v1": ("router", "notify"),
    "case.events.v1": ("intake", "router", "notify", "escalation"),
}
# How often a worker sends what fell due: HTTP senders post each request on its own; the
# producers hand the broker 50 ms of messages at a time, fuller batches than the services'
# relays send at these rates (one per transaction), so that the floor errs low.
HTTP_TICK_SECONDS = 0.01
PRODUCE_TICK_SECONDS = 0.05
KEPT_PACE = 0.98  # of the target rate, for a kind's figure to be a measured floor


@dataclass(frozen=True)
class PerRequest:
    """The contract's work for one request, as a run counted it."""

    messages: dict[str, float]  # topic (without namespace) -> messages produced per request
    webhooks: float
    callbacks: float


# Counted in a zh flow at 100/s (2026-11-28, the bench's compressed clocks and 5 % silent
# departments): used when the run measured no flow of its own.
DEFAULT_PER_REQUEST = PerRequest(
    messages={"citizen.requests.v1": 1.0, "requests.accepted.v1": 1.0, "case.events.v1": 4.236},
    webhooks=2.553,
    callbacks=1.866,
)


def per_request(
    published: int, topic_sizes: dict[str, int], webhooks: int, callbacks: int
) -> PerRequest:
    """The work a flow did, per request published (the topics' whole contents)."""
    if published <= 0:
        raise ValueError("nothing was published")
    return PerRequest(
        messages={topic: round(topic_sizes.get(topic, 0) / published, 3) for topic in READERS},
        webhooks=round(webhooks / published, 3),
        callbacks=round(callbacks / published, 3),
    )


def messages_done(produced: dict[str, int], read: int) -> int:
    """Messages every reader of their topic had read: lagging readers lower the pace."""
    expected = sum(n * len(READERS[topic]) for topic, n in produced.items())
    if not expected:
        return 0
    return round(sum(produced.values()) * min(1.0, read / expected))


def floor_figures(
    work: PerRequest, rate: float, measured: dict[str, dict[str, Any]], cores: int
) -> dict[str, Any]:
    """Cores each kind of work needs at ``rate`` requests/s, and what ``cores`` could carry.

    ``measured[kind]`` holds ``units`` (messages, webhooks or callbacks done in the
    window), ``seconds`` (the window) and ``cpu_seconds`` (all its processes). A kind
    whose run fell short of its target is projected from its CPU per unit and marked
    ``kept_pace: false``: fixed costs spread over fewer units, so that projection may
    overstate, and is no longer a lower bound.
    """
    units_per_request = {
        "kafka": sum(work.messages.values()),
        "webhooks": work.webhooks,
        "callbacks": work.callbacks,
    }
    kinds: dict[str, Any] = {}
    total = 0.0
    for kind, run in measured.items():
        if run["units"] <= 0:
            raise ValueError(f"{kind}: no work was done in the window")
        per_unit = run["cpu_seconds"] / run["units"]
        target = units_per_request[kind] * rate
        done = run["units"] / run["seconds"]
        needed = per_unit * target
        total += needed
        kinds[kind] = {
            "target_per_s": round(target, 1),
            "done_per_s": round(done, 1),
            "kept_pace": done >= KEPT_PACE * target,
            "cpu_us_per_unit": round(per_unit * 1e6, 1),
            "cores_at_rate": round(needed, 2),
            "cores_by_process": run.get("cores", {}),
        }
    return {
        "rate": rate,
        "per_request": {
            "kafka_messages_produced": work.messages,
            "kafka_messages_read": round(
                sum(n * len(READERS[topic]) for topic, n in work.messages.items()), 3
            ),
            "webhooks": work.webhooks,
            "callbacks": work.callbacks,
        },
        "kinds": kinds,
        "floor_cores_at_rate": round(total, 2),
        "floor_cpu_ms_per_request": round(total / rate * 1000, 3),
        "max_rps_on_cores": round(cores * rate / total, 1) if total else None,
        "cores": cores,
    }


# ---------------------------------------------------------------------------- the workers


def _paced(rate: float, seconds: float, tick: float) -> Iterator[tuple[int, float]]:
    """(how many are due now, seconds to sleep) every tick, for ``seconds``."""
    started = time.monotonic()
    done = 0
    while (elapsed := time.monotonic() - started) < seconds:
        due = int(rate * elapsed) - done
        done += due
        yield due, tick


def _report(figures: dict[str, Any]) -> None:
    print(orjson.dumps(figures).decode(), flush=True)


async def produce(args: argparse.Namespace) -> None:
    from shared.kafka import make_producer, send_batches

    producer = make_producer(args.bootstrap, idempotent=True, client_id="floor")
    await producer.start()
    # a JSON document of about an event's size: the consumers parse what they read
    payload = orjson.dumps({"data": os.urandom(MESSAGE_BYTES // 2 - 10).hex()})
    sent = 0
    started = time.monotonic()
    try:
        for due, pause in _paced(args.rate, args.seconds, PRODUCE_TICK_SECONDS):
            if due:
                keys = (uuid.uuid4().hex.encode() for _ in range(due))
                await send_batches(producer, [(args.topic, key, payload) for key in keys])
                sent += due
            await asyncio.sleep(pause)
        await producer.flush()
    finally:
        await producer.stop()
    _report({"units": sent, "seconds": round(time.monotonic() - started, 3)})


async def consume(args: argparse.Namespace) -> None:
    consumer = service_like_consumer(args.bootstrap, args.topics.split(","), args.group)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await consumer.start()
    read = 0
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200, max_records=2000)
            for records in batches.values():
                for record in records:
                    orjson.loads(record.value)  # every service parses what it reads
                read += len(records)
    finally:
        await consumer.stop()
    _report({"units": read})


async def send(args: argparse.Namespace) -> None:
    """Post signed JSON bodies at ``--rate`` to ``--url`` (``{department}``, ``{n}`` filled)."""
    import aiohttp

    from shared.secretstore import load_secrets
    from shared.webhooks import sign

    secrets = load_secrets(Path(args.secrets_file))
    departments = sorted(secrets)
    rng = random.Random(1)
    in_flight = asyncio.Semaphore(args.concurrency)
    ok = failed = 0
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=args.concurrency),
        timeout=aiohttp.ClientTimeout(total=30),
    )

    async def post(n: int) -> None:
        nonlocal ok, failed
        department = rng.choice(departments)
        body = orjson.dumps(_body(args.kind, department, n))
        headers = sign(secrets[department], f"floor_{n}", body)
        headers["content-type"] = "application/json"
        url = args.url.format(department=department, n=n)
        try:
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                if response.status < 300:
                    ok += 1
                else:
                    failed += 1
        except (aiohttp.ClientError, TimeoutError):
            failed += 1
        finally:
            in_flight.release()

    tasks: set[asyncio.Task[None]] = set()
    n = 0
    started = time.monotonic()
    for due, pause in _paced(args.rate, args.seconds, HTTP_TICK_SECONDS):
        for _ in range(due):
            await in_flight.acquire()  # a slow server slows the pace, not memory
            task = asyncio.create_task(post(n))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            n += 1
        await asyncio.sleep(pause)
    await asyncio.gather(*tasks)
    await session.close()
    _report({"units": ok, "failed": failed, "seconds": round(time.monotonic() - started, 3)})


def _body(kind: str, department: str, n: int) -> dict[str, Any]:
    if kind == "callback":
        return {"department": department, "actor": "floor", "note": None}
    # a webhook: an event the receiver counts and does not act on
    return {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "type": "civicroute.case.floor.v1",
        "source": "civicroute/floor",
        "time": "2026-11-28T00:00:00+00:00",
        "data": {"case_id": f"floor-{n}", "padding": "x" * (MESSAGE_BYTES - 300)},
    }


class Note(BaseModel):
    """A sign-for's body, as escalation's callback route parses it."""

    department: str
    actor: str
    note: str | None = None


def callbacks(args: argparse.Namespace) -> None:
    """escalation's callback route with nothing behind it: the body read, verified, parsed."""
    from shared.http import make_server
    from shared.secretstore import load_secrets
    from shared.webhooks import SignatureError, verify

    secrets = load_secrets(Path(args.secrets_file))
    app = FastAPI()

    @app.post("/v1/cases/{case_id}/{action}")
    async def act(case_id: str, action: str, request: Request) -> JSONResponse:
        raw = await request.body()
        body = Note.model_validate_json(raw)
        try:
            verify(secrets.get(body.department, []), raw, dict(request.headers))
        except SignatureError as error:
            raise HTTPException(401, str(error)) from error
        return JSONResponse({"case_id": case_id, "action": action, "state": "signed"})

    server = make_server(app, "127.0.0.1", args.port)
    import uvloop

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, lambda: setattr(server, "should_exit", True))
        await server.serve()

    uvloop.run(serve())


# ---------------------------------------------------------------------------- the phase


@dataclass
class FloorRun:
    """Runs each kind of work alone for ``warmup + seconds`` and meters the last ``seconds``."""

    bootstrap: str
    namespace: str
    workdir: Path
    secrets_file: Path
    broker_pid: int | None
    warmup: float
    seconds: float
    say: Callable[[str], None]

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(REPO)}

    @property
    def runtime(self) -> float:
        return self.warmup + self.seconds

    def spawn(self, name: str, argv: list[str]) -> Managed:
        return Managed.spawn(
            name,
            [sys.executable, "-m", *argv],
            log_file=self.workdir / f"{name}.log",
            env=self.env,
            cwd=REPO,
        )

    def worker(self, name: str, *argv: str) -> Managed:
        return self.spawn(name, ["tests.bench.floor", *argv])

    def reported(self, name: str) -> dict[str, Any]:
        """The JSON line a worker printed last."""
        lines = (self.workdir / f"{name}.log").read_text().splitlines()
        return orjson.loads(next(line for line in reversed(lines) if line.startswith("{")))

    async def metered(
        self, procs: dict[str, Managed], senders: list[Managed], *, broker: bool = False
    ) -> dict[str, float]:
        """Cores each process used in the window; returns once the senders are done."""
        pids = {name: proc.pid for name, proc in procs.items()}
        if broker and self.broker_pid:
            pids["kafka"] = self.broker_pid
        meter = CpuMeter(pids)
        await asyncio.sleep(self.warmup)
        meter.begin()
        await asyncio.sleep(self.seconds)
        cores = meter.shares(self.seconds)
        for sender in senders:
            await asyncio.to_thread(sender.popen.wait, self.runtime + 120)
        return cores

    def kind(self, units: int, cores: dict[str, float]) -> dict[str, Any]:
        return {
            "units": units * self.seconds / self.runtime,  # at the pace it kept, in the window
            "seconds": self.seconds,
            "cpu_seconds": sum(cores.values()) * self.seconds,
            "cores": cores,
        }

    async def kafka(self, messages: dict[str, float], partitions: int) -> dict[str, Any]:
        """One producer per topic, one consumer per service reading its subscriptions."""
        from shared.topics import Topic, TopicNames, ensure_topics

        topics = TopicNames(self.namespace)
        await ensure_topics(self.bootstrap, topics, partitions)
        subscriptions: dict[str, list[str]] = {}
        for topic, services in READERS.items():
            for service in services:
                subscriptions.setdefault(service, []).append(topics(Topic(topic)))
        consumers = {
            f"consume-{service}": self.worker(
                f"consume-{service}",
                "consume",
                "--bootstrap",
                self.bootstrap,
                "--group",
                topics.group(service),
                "--topics",
                ",".join(names),
            )
            for service, names in subscriptions.items()
        }
        rates = {topic: rate for topic, rate in messages.items() if rate > 0}
        producers = {
            f"produce-{topic}": self.worker(
                f"produce-{topic}",
                "produce",
                "--bootstrap",
                self.bootstrap,
                "--topic",
                topics(Topic(topic)),
                "--rate",
                str(rate),
                "--seconds",
                str(self.runtime),
            )
            for topic, rate in rates.items()
        }
        try:
            cores = await self.metered(
                {**producers, **consumers}, list(producers.values()), broker=True
            )
            await asyncio.sleep(3)  # the consumers read the last of it
        finally:
            for proc in [*consumers.values(), *producers.values()]:
                proc.stop()
        produced = {topic: self.reported(f"produce-{topic}")["units"] for topic in rates}
        read = sum(self.reported(name)["units"] for name in consumers)
        done = messages_done(produced, read)
        if done < sum(produced.values()):
            self.say(f"floor: kafka consumers had read {read} messages when stopped")
        return self.kind(done, cores)

    async def http(
        self, kind: str, server: Managed, port: int, path: str, rate: float
    ) -> dict[str, Any]:
        """Signed JSON posts from one aiohttp process to ``server`` at ``rate`` a second."""
        try:
            wait_for(lambda: port_open(port), 30, what=server.name, alive=server)
            sender = self.worker(
                f"send-{kind}",
                "send",
                "--url",
                f"http://127.0.0.1:{port}{path}",
                "--rate",
                str(rate),
                "--seconds",
                str(self.runtime),
                "--kind",
                kind,
                "--secrets-file",
                str(self.secrets_file),
            )
            try:
                cores = await self.metered({"sender": sender, "server": server}, [sender])
            finally:
                sender.stop()
        finally:
            server.stop()
        figures = self.reported(f"send-{kind}")
        if figures["failed"]:
            self.say(f"floor: {kind}: {figures['failed']} posts failed")
        return self.kind(figures["units"], cores)


async def measure(run: FloorRun, work: PerRequest, rate: float, partitions: int) -> dict[str, Any]:
    """Each kind of work alone at ``rate`` requests/s; the floor they add up to."""
    receiver_port = free_port()
    measured: dict[str, dict[str, Any]] = {}
    run.say(
        f"floor: kafka at {rate:g} requests/s ({sum(work.messages.values()) * rate:.0f}"
        " messages/s produced)"
    )
    measured["kafka"] = await run.kafka({t: n * rate for t, n in work.messages.items()}, partitions)
    run.say(f"floor: webhooks, {work.webhooks * rate:.0f}/s")
    receiver = run.spawn(
        "floor-receiver",
        [
            "tests.bench.receiver",
            "--port",
            str(receiver_port),
            "--secrets-file",
            str(run.secrets_file),
            # never called: the floor's events ask for no answer
            "--escalation-url",
            "http://127.0.0.1:9",
        ],
    )
    measured["webhooks"] = await run.http(
        "webhook", receiver, receiver_port, "/hooks/{department}", work.webhooks * rate
    )
    run.say(f"floor: callbacks, {work.callbacks * rate:.0f}/s")
    port = free_port()
    server = run.worker(
        "floor-callbacks",
        "callbacks",
        "--port",
        str(port),
        "--secrets-file",
        str(run.secrets_file),
    )
    measured["callbacks"] = await run.http(
        "callback", server, port, "/v1/cases/floor-{n}/sign", work.callbacks * rate
    )
    return floor_figures(work, rate, measured, os.cpu_count() or 1)


def main() -> None:
    parser = argparse.ArgumentParser(description="the floor's worker processes")
    roles = parser.add_subparsers(dest="role", required=True)
    producer = roles.add_parser("produce")
    producer.add_argument("--bootstrap", required=True)
    producer.add_argument("--topic", required=True)
    producer.add_argument("--rate", type=float, required=True)
    producer.add_argument("--seconds", type=float, required=True)
    consumer = roles.add_parser("consume")
    consumer.add_argument("--bootstrap", required=True)
    consumer.add_argument("--group", required=True)
    consumer.add_argument("--topics", required=True)
    sender = roles.add_parser("send")
    sender.add_argument("--url", required=True)
    sender.add_argument("--rate", type=float, required=True)
    sender.add_argument("--seconds", type=float, required=True)
    sender.add_argument("--kind", choices=("webhook", "callback"), required=True)
    sender.add_argument("--secrets-file", required=True)
    sender.add_argument("--concurrency", type=int, default=256)
    server = roles.add_parser("callbacks")
    server.add_argument("--port", type=int, required=True)
    server.add_argument("--secrets-file", required=True)
    args = parser.parse_args()
    if args.role == "callbacks":
        callbacks(args)
        return
    import uvloop

    from shared.heap import settle_heap

    settle_heap()  # as the services do
    role: dict[str, Callable[[argparse.Namespace], Awaitable[None]]] = {
        "produce": produce,
        "consume": consume,
        "send": send,
    }
    uvloop.run(role[args.role](args))


if __name__ == "__main__":
    main()
