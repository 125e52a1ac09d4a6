"""``make bench``: the whole system under load, on the local Apache Kafka and PostgreSQL.

Phases, each on a fresh database and topic namespace:

1. ``baseline`` — a bare aiokafka produce→consume round trip on the same broker.
2. ``nyc`` — the real NYC 311 requests replayed in arrival order, compressed to
   ``--rate``, through the four services with the ``nyc`` pack.
3. ``zh`` — a synthetic mixed-channel load (hotline, app, grid) with the Chinese pack.
4. ``timers`` — ``--timers`` armed timers in PostgreSQL, ``--burst`` of them due in
   the same second, fired by escalation.
5. ``floor`` (``--floor``) — the contract's bare messaging (Kafka, signed webhooks and
   callbacks) at ``--floor-rate`` with none of the logic: a lower bound on the CPU the
   whole system needs at that rate (``tests/bench/floor.py``).

Department receivers (separate processes) sign for and resolve cases after random
delays; a fraction never answer, so escalations fire. The last line printed is
one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import yaml

from deploy.local.kafka import KafkaBroker, cache_dir
from deploy.local.postgres import PostgresServer
from deploy.local.procs import Managed, free_port, wait_for
from deploy.local.stack import REPO, ServiceSet, write_secrets
from shared.citypack import load_pack
from shared.heap import settle_heap
from shared.settings import DEFAULT_CITIES_DIR
from shared.topics import TopicNames, ensure_topics
from tests.bench import floor, load, pg_statements
from tests.bench.figures import CpuMeter, percentile, rss_mb, summarise_flow
from tests.bench.kafka_baseline import kafka_round_trip, warm_broker
from tests.bench.profiles import start_profiles
from tests.bench.timers import timer_burst

NYC_SAMPLE = DEFAULT_CITIES_DIR / "nyc" / "examples" / "nyc311.csv"

# Short clocks so that deadlines pass, and the ladder climbs, inside the run.
BENCH_SLA = {
    "policies": {
        name: {"sign_for": "30s", "contact": "45s", "resolve": "60s"}
        for name in ("emergency", "utilities", "general", "complex")
    },
    "ladder": [
        {"level": 1, "after": "0s", "targets": ["duty_contact", "supervisor"]},
        {"level": 2, "after": "5s", "targets": ["district_supervision"]},
        {"level": 3, "after": "10s", "targets": ["city_centre"]},
    ],
}
# Departments hear of dispatches and escalations; signing and resolving are theirs.
BENCH_NOTIFY = {"defaults": {"events": ["dispatched", "escalated"], "concurrency": 32}}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=100, help="requests per second offered")
    parser.add_argument("--duration", type=float, default=60, help="measured seconds per source")
    parser.add_argument("--warmup", type=float, default=10, help="seconds of load before measuring")
    parser.add_argument(
        "--drain", type=float, default=120, help="max seconds to wait for stragglers"
    )
    parser.add_argument("--sources", default="nyc,zh", help="comma list of nyc, zh (or none)")
    parser.add_argument(
        "--bootstrap",
        default=os.environ.get("CIVIC_KAFKA_BOOTSTRAP"),
        help="an existing Kafka; default: start one",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("CIVIC_DATABASE_URL"),
        help="an existing PostgreSQL (its database is used as the admin db)",
    )
    parser.add_argument("--nyc-data", type=Path, default=NYC_SAMPLE, help="NYC 311 CSV to replay")
    parser.add_argument("--timers", type=int, default=1_000_000, help="armed timers (0: skip)")
    parser.add_argument("--burst", type=int, default=10_000, help="timers due in the same second")
    parser.add_argument(
        "--silent-fraction",
        type=float,
        default=0.05,
        help="share of cases whose department never answers",
    )
    parser.add_argument(
        "--timer-replicas", type=int, default=2, help="escalation processes firing the burst"
    )
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument(
        "--durable",
        action="store_true",
        help="run the bench's PostgreSQL with fsync and synchronous commit on (default off)",
    )
    parser.add_argument(
        "--broker-warmup",
        type=float,
        default=60,
        help="seconds of steady traffic on a broker the bench started, before measuring",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="measure the contract's bare messaging at --floor-rate (a lower bound on CPU)",
    )
    parser.add_argument("--floor-rate", type=float, default=1000, help="requests/s for --floor")
    parser.add_argument(
        "--floor-seconds", type=float, default=20, help="measured seconds per kind of work"
    )
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample every service with py-spy during the measured window, and record"
        " PostgreSQL's heaviest statements (pg_stat_statements, when installed)",
    )
    return parser.parse_args()


def say(message: str) -> None:
    print(f"[bench] {message}", flush=True)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-", dir=cache_dir()))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.started: list[Any] = []
        self.bootstrap: str = args.bootstrap or ""
        self.admin_url: str = args.database_url or ""
        self.statement_stats = False  # pg_stat_statements loaded (--profile, our own server)
        self.fresh_broker = False

    def start_infra(self) -> None:
        if not self.admin_url:
            postgres = PostgresServer(self.workdir / "postgres", durable=self.args.durable)
            # Each phase starts on a fresh database whose queue tables grow from nothing
            # to tens of thousands of rows within the minute it measures. With the
            # default minute between autovacuum visits the planner would judge them by
            # their empty first seconds (seq scans of whole tables); a deployed server
            # is past that, so the bench's server looks at them every 5 s.
            # Commit times let the timer phase measure lateness at commit, not claim.
            postgres.settings = ("autovacuum_naptime=5s", "track_commit_timestamp=on")
            if self.args.profile and pg_statements.available(postgres.bin_dir):
                postgres.settings += pg_statements.SETTINGS
                self.statement_stats = True
            postgres.start()
            self.started.append(postgres)
            self.admin_url = postgres.url()
            say(f"postgres ready in {postgres.started_in:.1f}s")
        if not self.bootstrap:
            broker = KafkaBroker(self.workdir / "kafka", heap="1g")
            broker.start()
            self.started.append(broker)
            self.bootstrap = broker.bootstrap
            self.fresh_broker = True
            say(f"kafka {broker.version} ready in {broker.started_in:.1f}s")

    def stop_infra(self) -> None:
        for thing in reversed(self.started):
            thing.stop()

    async def fresh_database(self, name: str) -> str:
        conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        base, _, _ = self.admin_url.rpartition("/")
        return f"{base}/{name}"

    def bench_pack(self, city: str) -> Path:
        target = self.workdir / "cities" / city
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(DEFAULT_CITIES_DIR / city, target)
        (target / "sla.yaml").write_text(
            yaml.safe_dump({**_timezone_of(target), **BENCH_SLA}, allow_unicode=True)
        )
        (target / "notify.yaml").write_text(yaml.safe_dump(BENCH_NOTIFY))
        return target

    async def flow(self, source: str) -> dict[str, Any]:
        args = self.args
        city = "nyc" if source == "nyc" else "demo-zh"
        run = uuid.uuid4().hex[:8]
        pack_dir = self.bench_pack(city)
        phase_dir = self.workdir / source
        phase_dir.mkdir(exist_ok=True)
        database = f"bench_{source}_{run}"
        database_url = await self.fresh_database(database)
        topics = TopicNames(f"bench{run}.")
        await ensure_topics(self.bootstrap, topics, args.partitions)
        secrets_file = phase_dir / "secrets.yaml"
        write_secrets(secrets_file, list(load_pack(pack_dir).departments))
        receiver_port = free_port()
        services = ServiceSet(phase_dir, {})
        services.env = {
            "CIVIC_KAFKA_BOOTSTRAP": self.bootstrap,
            "CIVIC_DATABASE_URL": database_url,
            "CIVIC_CITY": city,
            "CIVIC_CITIES_DIR": str(pack_dir.parent),
            "CIVIC_TOPIC_NAMESPACE": topics.namespace,
            "CIVIC_KAFKA_PARTITIONS": str(args.partitions),
            "CIVIC_SECRETS_FILE": str(secrets_file),
            "CIVIC_WEBHOOK_URL_TEMPLATE": f"http://127.0.0.1:{receiver_port}/hooks/{{department}}",
            "CIVIC_LOG_LEVEL": "warning",
            "CIVIC_DB_POOL_SIZE": "12",
        }
        receiver = Managed.spawn(
            "receiver",
            [
                sys.executable,
                "-m",
                "tests.bench.receiver",
                "--port",
                str(receiver_port),
                "--secrets-file",
                str(secrets_file),
                "--escalation-url",
                services.url("escalation"),
                "--silent-fraction",
                str(args.silent_fraction),
            ],
            log_file=phase_dir / "receiver.log",
            env={**os.environ, "PYTHONPATH": str(REPO)},
            cwd=REPO,
        )
        try:
            wait_for(
                lambda: _answers(f"http://127.0.0.1:{receiver_port}/stats"),
                30,
                what="bench receiver",
                alive=receiver,
                log_file=phase_dir / "receiver.log",
            )
            say(f"{source}: starting the services (city pack {city})")
            services.start(timeout=180)
            total = args.warmup + args.duration
            if source == "nyc":
                schedule = load.nyc_replay(args.nyc_data, args.rate, total, run)
            else:
                schedule = load.zh_synthetic(pack_dir, args.rate, total, run)
            say(
                f"{source}: offering {args.rate:g} requests/s for {total:g}s "
                f"({args.warmup:g}s warm-up)"
            )
            rss: dict[str, float] = {}
            profiles = (
                start_profiles(services.procs, phase_dir, args.warmup + args.duration)
                if args.profile
                else []
            )
            if self.statement_stats:
                await pg_statements.reset(self.admin_url)
            meter = CpuMeter(self._pids(services, receiver), alone=frozenset({"bench"}))
            published, started = await _publish(
                self.bootstrap, topics, schedule, services, rss, meter, args.warmup
            )
            cores = meter.shares(args.duration)
            if self.statement_stats:
                top = await pg_statements.write_top(
                    self.admin_url, database, phase_dir / "pg-statements.txt"
                )
                say(f"{source}: PostgreSQL's heaviest statements (all in pg-statements.txt):")
                for line in top:
                    print(f"    {line}", flush=True)
            for profile in profiles:
                await asyncio.to_thread(profile.popen.wait, 60)  # py-spy writes when done
                profile.stop(timeout=10)
            window = (started + args.warmup, started + total)
            say(f"{source}: published {len(published)}; waiting for deliveries")
            stats = await _drain(f"http://127.0.0.1:{receiver_port}/stats", published, args.drain)
            escalation_lateness = await _escalation_lateness(database_url)
            triaged = await _triaged(database_url)
            queued = await _still_queued(database_url)
            dead_letters = await _count_dead_letters(self.bootstrap, topics)
            work = floor.per_request(
                len(published),
                await _topic_sizes(self.bootstrap, topics, args.partitions),
                stats["webhooks"],
                sum(stats["callbacks"].values()),
            )
            figures = summarise_flow(published, stats, window, triaged, queued)
            figures |= {
                "rss_mb": rss,
                "cpu_cores": cores,
                "escalation_lateness_p99_ms": escalation_lateness,
                "dead_letters": dead_letters,
                "callbacks": stats["callbacks"],
                "events_by_type": stats["events_by_type"],
                "bad_signatures": stats["bad_signatures"],
                "silent_cases": stats["silent_cases"],
                "callback_retries": stats["callback_retries"],
                "callback_p50_p99_s": stats["callback_p50_p99_s"],
                "per_request": dataclasses.asdict(work),
            }
            say(f"{source}: {orjson.dumps(_brief(figures)).decode()}")
            return figures
        finally:
            services.stop()
            receiver.stop()

    async def floor(self, flows: dict[str, Any]) -> dict[str, Any]:
        """The contract's bare messaging at --floor-rate, in the counts the last flow had."""
        args = self.args
        last = next(reversed(flows.values()), None)
        work = floor.PerRequest(**last["per_request"]) if last else floor.DEFAULT_PER_REQUEST
        workdir = self.workdir / "floor"
        secrets_file = workdir / "secrets.yaml"
        workdir.mkdir(parents=True, exist_ok=True)
        write_secrets(secrets_file, [f"department-{n}" for n in range(16)])
        brokers = [t for t in self.started if isinstance(t, KafkaBroker) and t.process]
        run = floor.FloorRun(
            bootstrap=self.bootstrap,
            namespace=f"floor{uuid.uuid4().hex[:8]}.",
            workdir=workdir,
            secrets_file=secrets_file,
            broker_pid=brokers[0].process.pid if brokers else None,
            warmup=5,
            seconds=args.floor_seconds,
            say=say,
        )
        return await floor.measure(run, work, args.floor_rate, args.partitions)

    def _pids(self, services: ServiceSet, receiver: Managed) -> dict[str, int]:
        pids = {name: proc.pid for name, proc in services.procs.items()}
        pids["receivers"] = receiver.pid
        pids["bench"] = os.getpid()
        for thing in self.started:
            if thing.process is not None:
                pids["kafka" if isinstance(thing, KafkaBroker) else "postgres"] = thing.process.pid
        return pids


def _timezone_of(pack_dir: Path) -> dict[str, Any]:
    original = yaml.safe_load((DEFAULT_CITIES_DIR / pack_dir.name / "sla.yaml").read_text())
    return {k: original[k] for k in ("timezone", "calendar") if k in original}


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


async def _publish(
    bootstrap: str,
    topics: TopicNames,
    schedule: Any,
    services: ServiceSet,
    rss: dict[str, float],
    meter: CpuMeter,
    warmup: float,
) -> tuple[dict[str, float], float]:
    """Publish on schedule; returns source_ref → publication time, and the start time."""
    from shared.kafka import make_producer
    from shared.topics import Topic

    producer = make_producer(bootstrap, idempotent=True, client_id="bench-platform")
    await producer.start()
    topic = topics(Topic.CITIZEN_REQUESTS)
    published: dict[str, float] = {}
    started = time.time()
    last_sample = 0.0
    measuring = False
    pending = []
    try:
        for offset, payload in schedule:
            delay = started + offset - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            now = time.time()
            if not measuring and now >= started + warmup:
                measuring = True
                meter.begin()
            payload["bench_t"] = now
            event = load_event(payload)
            key = f"{payload['channel']}:{payload['source_ref']}".encode()
            pending.append(await producer.send(topic, event, key=key))
            published[payload["source_ref"]] = now
            if now - last_sample >= 1.0:
                last_sample = now
                for name, proc in services.procs.items():
                    rss[name] = max(rss.get(name, 0.0), rss_mb(proc.pid))
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return published, started


def load_event(payload: dict[str, Any]) -> bytes:
    return orjson.dumps(
        {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "source": "/appeal-platform/bench",
            "type": "civicroute.request.submitted.v1",
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "datacontenttype": "application/json",
            "data": payload,
        }
    )


async def _drain(stats_url: str, published: dict[str, float], limit: float) -> dict[str, Any]:
    """Wait until every request reached its lead (or ``limit`` passed); return receiver stats."""
    deadline = time.monotonic() + limit
    async with httpx.AsyncClient(timeout=30) as client:
        last: tuple[int, int] = (-1, -1)
        still = 0
        while True:
            stats = (await client.get(stats_url)).json()
            missing = len(published.keys() - stats["lead_dispatches"].keys())
            # Triaged requests never reach a department: stop once nothing moves any more,
            # neither dispatches nor any other webhook (notify may be working off a backlog
            # of other events ahead of the last dispatches).
            progress = (missing, stats["webhooks"])
            still = still + 1 if progress == last else 0
            last = progress
            if missing == 0 or still >= 10 or time.monotonic() > deadline:
                await asyncio.sleep(2)  # late duplicates, if any, arrive too
                return (await client.get(stats_url)).json()
            await asyncio.sleep(1)


async def _rows(database_url: str, query: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetch(query)
    finally:
        await conn.close()


async def _triaged(database_url: str) -> set[str]:
    """Requests the router put in the triage queue: they wait for a person, not a department."""
    rows = await _rows(
        database_url,
        "SELECT r.source_ref FROM intake.requests r JOIN router.decisions d USING (case_id)"
        " WHERE d.outcome = 'triage'",
    )
    return {r["source_ref"] for r in rows}


async def _still_queued(database_url: str) -> set[str]:
    """Requests whose dispatch webhook to the lead is still pending in notify's queue."""
    rows = await _rows(
        database_url,
        "SELECT DISTINCT r.source_ref FROM intake.requests r"
        " JOIN notify.deliveries d USING (case_id)"
        " WHERE d.status = 'pending' AND d.event_type = 'civicroute.case.dispatched.v1'",
    )
    return {r["source_ref"] for r in rows}


async def _escalation_lateness(database_url: str) -> float | None:
    rows = await _rows(
        database_url,
        "SELECT extract(epoch FROM fired_at - due_at) * 1000 AS ms FROM escalation.escalations",
    )
    values = [float(r["ms"]) for r in rows]
    return round(percentile(values, 99), 1) if values else None


async def _count_dead_letters(bootstrap: str, topics: TopicNames) -> int:
    from aiokafka import AIOKafkaConsumer

    from shared.topics import Topic

    consumer = AIOKafkaConsumer(
        topics(Topic.DEADLETTER), bootstrap_servers=bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    count = 0
    try:
        while batch := await consumer.getmany(timeout_ms=1500):
            count += sum(len(m) for m in batch.values())
    finally:
        await consumer.stop()
    return count


async def _topic_sizes(bootstrap: str, topics: TopicNames, partitions: int) -> dict[str, int]:
    """Messages on each of a flow's topics (created fresh for it), by topic name."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from shared.topics import Topic, partitions_for

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        sizes: dict[str, int] = {}
        for topic in Topic:
            names = [
                TopicPartition(topics(topic), n) for n in range(partitions_for(topic, partitions))
            ]
            sizes[topic.value] = sum((await consumer.end_offsets(names)).values())
        return sizes
    finally:
        await consumer.stop()


def _brief(figures: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in figures.items() if k not in ("events_by_type", "latencies_ms")}


async def main_async(bench: Bench) -> dict[str, Any]:
    args = bench.args
    result: dict[str, Any] = {}
    settle_heap()  # as the services do: the load generator shares their cores
    if bench.fresh_broker and args.broker_warmup > 0:
        say(f"kafka: warming the new broker with {args.broker_warmup:g}s of steady traffic")
        await warm_broker(bench.bootstrap, args.partitions, args.broker_warmup)
    if not args.skip_baseline:
        say("baseline: bare aiokafka produce→consume round trip")
        result["baseline_kafka_rps"] = await kafka_round_trip(bench.bootstrap, args.partitions)
        say(f"baseline: {result['baseline_kafka_rps']} messages/s")
    flows = {}
    for source in [s for s in args.sources.split(",") if s and s != "none"]:
        flows[source] = await bench.flow(source)
    if args.timers > 0:
        say(f"timers: arming {args.timers} timers, {args.burst} due in the same second")
        database_url = await bench.fresh_database(f"bench_timers_{uuid.uuid4().hex[:8]}")
        result["timers"] = await timer_burst(
            bench.bootstrap,
            database_url,
            args.timers,
            args.burst,
            bench.workdir / "timers",
            replicas=args.timer_replicas,
            profile=args.profile,
            statements_admin_url=bench.admin_url if bench.statement_stats else None,
        )
        say(f"timers: {orjson.dumps(result['timers']).decode()}")
    if args.floor:
        result["floor"] = await bench.floor(flows)
        say(f"floor: {orjson.dumps(result['floor']).decode()}")
    return {
        **_headline(flows, result, args),
        "sources": {k: _brief(v) for k, v in flows.items()},
        **({"floor": result["floor"]} if "floor" in result else {}),
    }


def _headline(
    flows: dict[str, Any], result: dict[str, Any], args: argparse.Namespace
) -> dict[str, Any]:
    latencies = [ms for f in flows.values() for ms in f.get("latencies_ms", [])]
    delivered = sum(f["delivered_in_window"] for f in flows.values())
    seconds = sum(f["window_seconds"] for f in flows.values())
    rss: dict[str, float] = {}
    for figures in flows.values():
        for name, value in figures["rss_mb"].items():
            rss[name] = max(rss.get(name, 0.0), value)
    timers = result.get("timers") or {}
    return {
        "offered_rps": args.rate,
        "throughput_rps": round(delivered / seconds, 1) if seconds else None,
        "p50_ms": round(percentile(latencies, 50), 1) if latencies else None,
        "p95_ms": round(percentile(latencies, 95), 1) if latencies else None,
        "p99_ms": round(percentile(latencies, 99), 1) if latencies else None,
        "timer_lateness_p99_ms": timers.get("lateness_p99_ms"),
        "lost": sum(f["lost"] for f in flows.values()),
        "queued_at_drain_end": sum(f["queued"] for f in flows.values()),
        "duplicates": sum(f["duplicates"] for f in flows.values()),
        "baseline_kafka_rps": result.get("baseline_kafka_rps"),
        "rss_mb": rss,
    }


def main() -> None:
    args = parse_args()
    bench = Bench(args)
    try:
        bench.start_infra()
        summary = asyncio.run(main_async(bench))
    finally:
        bench.stop_infra()
    say(f"logs and profiles in {bench.workdir}")
    print(orjson.dumps(summary).decode(), flush=True)


if __name__ == "__main__":
    main()
