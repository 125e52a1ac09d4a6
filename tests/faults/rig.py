"""The whole system under a steady stream, for fault injection, and the checks that follow.

A rig is the four services (subprocesses) on a private broker and database,
department receivers that verify signatures and sign for what they lead
(except for the "silent" requests, whose leads never answer, so that escalation
timers fire), and a platform that publishes demo requests at a steady rate.
One department's endpoint sits behind a :class:`FlakyProxy` that a test can
take down or slow. After the fault, :meth:`Rig.verify` compares what the
receivers saw with what the topics and databases say should have happened.
"""

from __future__ import annotations

import asyncio
import base64
import re
import shutil
import statistics
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import yaml
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from deploy.local.demo import demo_payloads, submitted_event
from deploy.local.department import DepartmentReceiver
from deploy.local.kafka import KafkaBroker
from deploy.local.postgres import PostgresServer
from deploy.local.procs import tail
from deploy.local.stack import SERVICES, ServiceSet, write_secrets
from services.notify.config import NotifyConfig, load_notify_config
from services.notify.domain import recipients
from shared.channels import MAX_BODY_BYTES
from shared.citypack import load_pack
from shared.events import (
    CaseDispatched,
    CaseEscalated,
    CloudEvent,
    EventType,
    InvalidEvent,
    MessageDeadLettered,
    decode,
    encode,
)
from shared.kafka import RenewingProducer, make_producer
from shared.metrics import Metrics
from shared.settings import DEFAULT_CITIES_DIR
from shared.topics import Topic, TopicNames, ensure_topics, partitions_for
from tests.faults.proxy import FlakyProxy
from tests.helpers import fetch

DISPATCHED = EventType.CASE_DISPATCHED.value
ESCALATED = EventType.CASE_ESCALATED.value
PARTITIONS = 3
SERVICE_SCHEMAS = SERVICES  # each service's schema is named after it
# Short clocks so that timers fire within a test: the silent cases climb all three levels
# 5 s, 7 s and 8 s after dispatch; level 1 repeats once a second until level 2 takes over.
SIGN_FOR_SECONDS = 5
SLA = {
    "policies": {
        urgency: {"sign_for": f"{SIGN_FOR_SECONDS}s", "contact": "1h", "resolve": "2h"}
        for urgency in ("emergency", "utilities", "general", "complex")
    },
    "ladder": [
        {"level": 1, "after": "0s", "repeat": "1s", "targets": ["duty_contact", "supervisor"]},
        {"level": 2, "after": "2s", "targets": ["district_supervision"]},
        {"level": 3, "after": "3s", "targets": ["city_centre"]},
    ],
}
LADDER_LEVELS = {1, 2, 3}
# Retries and breaker shortened from the production defaults (5 s, 30 s, … and 30 s) so a
# 30 s outage recovers within the test; the mechanisms are the same.
RETRY_SCHEDULE = "[1, 2, 4]"
SILENT_EVERY = 5  # every fifth request's lead never answers
POISON_EVERY = 20  # a poison message after every twentieth request
BREAKER = {"failures": 5, "cooldown": "5s"}
LEASE_SLACK_SECONDS = "3"
_WEBHOOK_URL = re.compile(r"webhook_url: \S+/(\w+)\s*$", re.MULTILINE)


@dataclass
class FaultInfra:
    """A broker and a database of the fault tests' own, which they may restart or crash."""

    broker: KafkaBroker
    postgres: PostgresServer

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap

    def database_url(self, name: str) -> str:
        return self.postgres.url(name)

    def ensure_up(self) -> None:
        """Start whatever a failed test left stopped, so the next test finds both up."""
        for server in (self.postgres, self.broker):
            if server.process is None or not server.process.alive():
                server.start()


class Receiver(DepartmentReceiver):
    """The department receivers: they sign for every case they lead, except silent ones."""

    def __init__(self, *args: Any, silent: set[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.silent = silent  # source_refs whose lead never answers

    def source_ref_of(self, case_id: str) -> str | None:
        for item in reversed(self.received):
            if item.type == DISPATCHED and item.case_id == case_id:
                return str(item.event["data"]["request"]["source_ref"])
        return None

    async def _sign(self, department: str, case_id: str) -> None:
        if self.source_ref_of(case_id) in self.silent:
            return
        await super()._sign(department, case_id)

    def signing(self) -> int:
        """Sign-for callbacks still under way."""
        return len(self._tasks)

    def lead_arrivals(self) -> dict[str, list[float]]:
        """source_ref → arrival times of dispatches at the lead (one each, if all is well)."""
        found: dict[str, list[float]] = defaultdict(list)
        for item in self.received:
            data = item.event.get("data", {})
            if item.type == DISPATCHED and item.department == data.get("lead"):
                found[data["request"]["source_ref"]].append(item.arrived)
        return found


@dataclass(frozen=True)
class Published:
    source_ref: str
    at: float  # event-loop time the broker acknowledged it
    silent: bool


@dataclass(frozen=True)
class Poison:
    partition: int
    offset: int
    value: bytes | None
    what: str


@dataclass
class Findings:
    """What went wrong (must be empty) and what was measured (printed)."""

    violations: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    def check(self, ok: bool, message: str) -> None:
        if not ok:
            self.violations.append(message)


def prepare_pack(target: Path, endpoint_of: Callable[[str], str], timeouts: dict[str, str]) -> Path:
    """A copy of the demo-zh pack with short clocks and this rig's endpoints."""
    pack = target / "demo-zh"
    shutil.copytree(DEFAULT_CITIES_DIR / "demo-zh", pack)
    (pack / "sla.yaml").write_text(yaml.safe_dump(SLA))
    departments = pack / "departments.yaml"
    departments.write_text(
        _WEBHOOK_URL.sub(
            lambda m: f"webhook_url: {endpoint_of(m.group(1))}/hooks/{m.group(1)}",
            departments.read_text(),
        )
    )
    notify_file = pack / "notify.yaml"
    notify = yaml.safe_load(notify_file.read_text())
    notify["defaults"]["breaker"] = BREAKER
    for department, timeout in timeouts.items():
        notify["departments"].setdefault(department, {})["timeout"] = timeout
    notify_file.write_text(yaml.safe_dump(notify, allow_unicode=True))
    return pack


async def read_records(bootstrap: str, topic: str, partitions: int) -> list[ConsumerRecord]:
    """Every record on ``topic`` up to its end offsets now, in offset order per partition."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    try:
        wanted = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(wanted)
        ends = await consumer.end_offsets(wanted)
        await consumer.seek_to_beginning(*wanted)
        records: list[ConsumerRecord] = []
        deadline = time.monotonic() + 60
        while [tp for tp in wanted if await consumer.position(tp) < ends[tp]]:
            if time.monotonic() > deadline:
                raise AssertionError(f"could not read {topic} to its end within 60 s")
            batch = await consumer.getmany(timeout_ms=1000)
            for tp, messages in batch.items():
                records.extend(m for m in messages if m.offset < ends[tp])
        return records
    finally:
        await consumer.stop()


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0.0


class Rig:
    """One whole system for one test, on the module's private broker and database."""

    def __init__(self, infra: FaultInfra, workdir: Path, *, flaky: str, timeouts: dict[str, str]):
        self.infra = infra
        self.workdir = workdir
        self.flaky_department = flaky
        self.topics = TopicNames(f"f{uuid.uuid4().hex[:10]}.")
        self.database = f"f_{uuid.uuid4().hex[:12]}"
        self.database_url = infra.database_url(self.database)
        self.silent: set[str] = set()
        self.published: dict[str, Published] = {}
        self.poison: list[Poison] = []
        self.marks: dict[str, float] = {}
        self.services = ServiceSet(workdir / "logs", {})
        self._receiver: Receiver | None = None
        self._proxy: FlakyProxy | None = None
        self.producer: RenewingProducer | None = None
        self.pack = workdir / "cities" / "demo-zh"
        self.notify_config: NotifyConfig | None = None
        self._timeouts = timeouts
        self._payloads = demo_payloads(seed=int(uuid.uuid4().int % 10_000))
        self._stream: asyncio.Task[None] | None = None
        self._stop_stream = asyncio.Event()

    @property
    def receiver(self) -> Receiver:
        if self._receiver is None:
            raise RuntimeError("rig not started")
        return self._receiver

    @property
    def proxy(self) -> FlakyProxy:
        """The flaky department's endpoint."""
        if self._proxy is None:
            raise RuntimeError("rig not started")
        return self._proxy

    # --- bring-up and tear-down --------------------------------------------------------

    async def start(self) -> None:
        admin = await asyncpg.connect(self.infra.database_url("postgres"))
        try:
            await admin.execute(f'CREATE DATABASE "{self.database}"')
        finally:
            await admin.close()
        await ensure_topics(self.infra.bootstrap, self.topics, partitions=PARTITIONS)
        secrets_file = self.workdir / "secrets.yaml"
        departments = list(load_pack(DEFAULT_CITIES_DIR / "demo-zh").departments)
        secrets = write_secrets(secrets_file, departments)
        self._receiver = Receiver(
            secrets=secrets, escalation_url=self.services.url("escalation"), silent=self.silent
        )
        await self._receiver.start()
        self._proxy = FlakyProxy(target_port=self._receiver.port)
        await self._proxy.up()
        direct, flaky = self._receiver.url, self._proxy.url
        self.pack = prepare_pack(
            self.workdir / "cities",
            lambda d: flaky if d == self.flaky_department else direct,
            self._timeouts,
        )
        self.notify_config = load_notify_config(load_pack(self.pack))
        self.services.env = {
            "CIVIC_KAFKA_BOOTSTRAP": self.infra.bootstrap,
            "CIVIC_DATABASE_URL": self.database_url,
            "CIVIC_CITY": self.pack.name,
            "CIVIC_CITIES_DIR": str(self.pack.parent),
            "CIVIC_TOPIC_NAMESPACE": self.topics.namespace,
            "CIVIC_KAFKA_PARTITIONS": str(PARTITIONS),
            "CIVIC_SECRETS_FILE": str(secrets_file),
            "CIVIC_DB_POOL_SIZE": "4",
            "CIVIC_RETRY_SCHEDULE_SECONDS": RETRY_SCHEDULE,
            "CIVIC_DELIVERY_LEASE_SLACK_SECONDS": LEASE_SLACK_SECONDS,
        }
        await asyncio.to_thread(self.services.start, timeout=120)
        bootstrap = self.infra.bootstrap
        self.producer = RenewingProducer(
            lambda: make_producer(bootstrap, idempotent=True, client_id="fault-platform"),
            "fault-platform",
            Metrics("fault_platform", CollectorRegistry()),
        )
        await self.producer.start()

    async def close(self, failed: bool) -> None:
        self._stop_stream.set()
        if self._stream is not None:
            self._stream.cancel()
        if self.producer is not None:
            await self.producer.stop()
        await asyncio.to_thread(self.services.stop)
        if self._proxy is not None:
            await self._proxy.down()
        if self._receiver is not None:
            await self._receiver.stop()
        if failed:
            for service in SERVICES:
                print(f"\n----- {service} log (tail) -----")
                print(tail(self.services.log_file(service), 40))

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def mark(self, name: str) -> float:
        self.marks[name] = self.now()
        return self.marks[name]

    # --- the platform's steady stream --------------------------------------------------

    def start_stream(
        self,
        rate: float,
        limit_seconds: float = 240,
        silent_every: int = SILENT_EVERY,
        poison_every: int = POISON_EVERY,
    ) -> None:
        """Publish ``rate`` requests a second until :meth:`stop_stream` (or the limit); every
        ``silent_every``-th one's lead stays silent, and after every ``poison_every``-th a
        poison message follows. A publish the broker cannot take now is retried, as a
        platform would, so the stream stalls through a broker outage and then catches up."""
        self._stop_stream.clear()
        self._stream = asyncio.create_task(
            self._publish(rate, limit_seconds, silent_every, poison_every)
        )

    async def stop_stream(self, timeout: float = 240) -> None:
        assert self._stream is not None
        self._stop_stream.set()
        await asyncio.wait_for(self._stream, timeout)

    async def _publish(
        self, rate: float, limit_seconds: float, silent_every: int, poison_every: int
    ) -> None:
        began = self.now()
        hotline = next(p for p in demo_payloads(seed=5) if p["channel"] == "hotline")
        for n in range(int(rate * limit_seconds)):
            if self._stop_stream.is_set():
                return
            await asyncio.sleep(max(0.0, began + n / rate - self.now()))
            payload = next(self._payloads)
            silent = n % silent_every == silent_every - 1
            if silent:
                self.silent.add(payload["source_ref"])
            key, event = submitted_event(payload)
            await self.send(key.encode(), encode(event))
            self.published[payload["source_ref"]] = Published(
                payload["source_ref"], self.now(), silent
            )
            if poison_every and n % poison_every == poison_every - 1:
                kinds = poison_messages(hotline)
                what, value = kinds[(n // poison_every) % len(kinds)]
                await self.send_poison(what, value)

    async def send(self, key: bytes | None, value: bytes | None) -> tuple[int, int]:
        """Publish one raw message on citizen.requests.v1, retrying through broker outages."""
        assert self.producer is not None
        topic = self.topics(Topic.CITIZEN_REQUESTS)
        deadline = self.now() + 180
        while True:
            try:
                meta = await self.producer.send_and_wait(topic, value, key=key)
                return meta.partition, meta.offset
            except KafkaError:
                # A producer the broker refused is renewed on the next send; intake takes
                # a resent request as the same request.
                if self.now() > deadline:
                    raise
                await asyncio.sleep(0.5)

    def note_published(self, source_ref: str) -> None:
        """A request the test published itself (not through the stream)."""
        self.published.setdefault(source_ref, Published(source_ref, self.now(), silent=False))

    async def send_poison(self, what: str, value: bytes | None, key: bytes | None = None) -> None:
        partition, offset = await self.send(key or f"poison:{what}".encode(), value)
        self.poison.append(Poison(partition, offset, value, what))

    # --- waiting -----------------------------------------------------------------------

    async def until(
        self, check: Callable[[], bool | Awaitable[bool]], timeout: float, what: str
    ) -> float:
        """Poll ``check`` until true; returns the seconds it took. Fails after ``timeout``,
        or at once when a service process has exited (no fault may stop a service)."""
        began = self.now()
        while True:
            self.services_alive()
            value = check()
            if asyncio.iscoroutine(value):
                value = await value
            if value:
                return self.now() - began
            if self.now() - began > timeout:
                raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
            await asyncio.sleep(0.2)

    def services_alive(self) -> None:
        for service, proc in self.services.procs.items():
            if not proc.alive():
                raise AssertionError(
                    f"{service} exited with {proc.popen.returncode}:\n"
                    + tail(self.services.log_file(service), 20)
                )

    def dispatched_count(self) -> int:
        return len(self.receiver.lead_arrivals())

    def caught_up(self, before: float) -> bool:
        """Every request published before ``before`` has reached its lead."""
        reached = self.receiver.lead_arrivals()
        return all(p.source_ref in reached for p in self.published.values() if p.at <= before)

    async def metric(self, service: str, name: str, **labels: str) -> float:
        """The sum of a service's metric samples named ``name`` with these labels."""
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.get(f"{self.services.url(service)}/metrics")
        return sum(
            sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples
            if sample.name == name and labels.items() <= sample.labels.items()
        )

    async def sql(self, query: str, *args: Any) -> list[asyncpg.Record]:
        return await fetch(self.database_url, query, *args)

    async def _backlog(self) -> int:
        """Outbox rows not yet relayed, deliveries not yet settled and timers due within
        the next half minute (a ladder still climbing), across services."""
        outboxes = " + ".join(f"(SELECT count(*) FROM {s}.outbox)" for s in SERVICE_SCHEMAS)
        rows = await self.sql(
            f"SELECT {outboxes}"
            " + (SELECT count(*) FROM notify.deliveries WHERE status = 'pending')"
            " + (SELECT count(*) FROM escalation.timers"
            "    WHERE due_at < now() + interval '30 seconds') AS n"
        )
        return int(rows[0]["n"])

    async def settle(self, timeout: float = 180) -> float:
        """Wait until the stream's work is done: every request at its lead, every silent
        case at the top of the ladder, nothing left in an outbox or the delivery queue."""
        receiver = self.receiver

        def escalated_to_top() -> set[str]:
            return {r.case_id for r in receiver.of_type(ESCALATED) if r.event["data"]["level"] == 3}

        async def quiet() -> bool:
            reached = receiver.lead_arrivals()
            if not all(ref in reached for ref in self.published):
                return False
            silent_cases = {
                r.case_id
                for r in receiver.of_type(DISPATCHED)
                if r.event["data"]["request"]["source_ref"] in self.silent
            }
            if not silent_cases <= escalated_to_top() or receiver.signing():
                return False
            return await self._backlog() == 0

        took = await self.until(quiet, timeout, "the system to settle")
        # Anything still moving (a late duplicate) would show now.
        await asyncio.sleep(3)
        await self.until(quiet, 30, "the system to stay settled")
        return took

    # --- the checks --------------------------------------------------------------------

    async def verify(self) -> Findings:
        """Everything the issue promises, as the receivers saw it."""
        findings = Findings()
        events = await self._case_events()
        await self._check_requests(findings, events)
        self._check_deliveries(findings, events)
        await self._check_escalations(findings)
        await self._check_dead_letters(findings)
        await self._check_notify_ledger(findings)
        findings.check(
            self.receiver.rejected == 0, f"{self.receiver.rejected} deliveries had bad signatures"
        )
        self._latency_figures(findings)
        signs = Counter(self.receiver.sign_results.values())
        findings.check(
            set(signs) <= {200},
            f"sign-for callbacks did not all end accepted: {dict(signs)} (status: count)",
        )
        findings.figures["sign_for_answers"] = {str(k): v for k, v in sorted(signs.items())}
        return findings

    async def _case_events(self) -> list[tuple[ConsumerRecord, CloudEvent]]:
        """case.events.v1 in order, each event id once (the first time it was written)."""
        seen: set[str] = set()
        out = []
        records = await read_records(
            self.infra.bootstrap, self.topics(Topic.CASE_EVENTS), PARTITIONS
        )
        for record in sorted(records, key=lambda r: (r.partition, r.offset)):
            event = decode(record.value)
            if event.id not in seen:
                seen.add(event.id)
                out.append((record, event))
        return out

    async def _check_requests(
        self, findings: Findings, events: list[tuple[ConsumerRecord, CloudEvent]]
    ) -> None:
        rows = await self.sql("SELECT source_ref FROM intake.requests")
        stored = Counter(row["source_ref"] for row in rows)
        expected = set(self.published)
        findings.check(
            set(stored) == expected,
            f"intake holds {len(stored)} requests, {len(expected)} were published; missing "
            f"{sorted(expected - set(stored))[:5]}, "
            f"unexpected {sorted(set(stored) - expected)[:5]}",
        )
        dispatches: Counter[str] = Counter()
        for _, event in events:
            if event.type == DISPATCHED:
                dispatches[event.data["request"]["source_ref"]] += 1
        twice = [ref for ref, n in dispatches.items() if n > 1]
        findings.check(not twice, f"router dispatched {len(twice)} requests twice: {twice[:5]}")
        at_leads = self.receiver.lead_arrivals()
        lost = sorted(expected - set(at_leads))
        findings.check(not lost, f"{len(lost)} requests never reached their lead: {lost[:5]}")
        repeated = [ref for ref, times in at_leads.items() if len(times) > 1]
        findings.check(
            not repeated, f"{len(repeated)} requests reached their lead twice: {repeated[:5]}"
        )
        findings.figures["requests"] = len(expected)
        findings.figures["silent_requests"] = len(self.silent & expected)

    def _check_deliveries(
        self, findings: Findings, events: list[tuple[ConsumerRecord, CloudEvent]]
    ) -> None:
        """Every event reached exactly its recipients, once each, in per-case order."""
        config = self.notify_config
        assert config is not None
        holders: dict[str, tuple[str | None, list[str]]] = {}
        expected: set[tuple[str, str]] = set()
        position: dict[str, tuple[int, int]] = {}
        for record, event in events:
            position[event.id] = (record.partition, record.offset)
            try:
                payload = event.payload()
            except InvalidEvent as error:
                findings.violations.append(f"invalid event on case.events.v1: {error}")
                continue
            case_id = event.subject or ""
            if isinstance(payload, CaseDispatched):
                holders[case_id] = (payload.lead, payload.cooperating)
            lead, cooperating = holders.get(case_id, (None, []))
            for department in recipients(event.type, payload, lead, cooperating):
                if config.subscribed(department, event.type):
                    expected.add((event.id, department))
        got = Counter((r.event["id"], r.department) for r in self.receiver.received)
        twice = [pair for pair, n in got.items() if n > 1]
        findings.check(not twice, f"{len(twice)} events reached a department under two webhook-ids")
        lost = expected - set(got)
        extra = set(got) - expected
        findings.check(not lost, f"{len(lost)} deliveries lost, e.g. {sorted(lost)[:3]}")
        findings.check(not extra, f"{len(extra)} unexpected deliveries, e.g. {sorted(extra)[:3]}")
        order: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)
        for item in self.receiver.received:
            if item.event["id"] in position:
                order[(item.department, item.case_id)].append(position[item.event["id"]])
        out_of_order = [key for key, seq in order.items() if seq != sorted(seq)]
        findings.check(
            not out_of_order,
            f"{len(out_of_order)} (department, case) saw events out of order: {out_of_order[:3]}",
        )
        findings.figures["webhooks_delivered"] = len(got)
        findings.figures["webhook_redeliveries"] = sum(
            n - 1 for n in self.receiver.deliveries.values() if n > 1
        )

    async def _check_escalations(self, findings: Findings) -> None:
        seen: Counter[tuple[str, str, int, int]] = Counter()
        for item in self.receiver.of_type(ESCALATED):
            data = CaseEscalated.model_validate(item.event["data"])
            seen[(data.case_id, data.clock.value, data.level, data.repeat)] += 1
        twice = [key for key, n in seen.items() if n > 1]
        findings.check(not twice, f"{len(twice)} escalations fired twice: {twice[:3]}")
        rows = await self.sql("SELECT case_id, clock, level, repeat FROM escalation.escalations")
        stored = {(r["case_id"], r["clock"], r["level"], r["repeat"]) for r in rows}
        findings.check(
            stored == set(seen),
            f"escalations in the database and at the receivers differ: only stored "
            f"{sorted(stored - set(seen))[:3]}, only received {sorted(set(seen) - stored)[:3]}",
        )
        silent_cases = {
            r.case_id
            for r in self.receiver.of_type(DISPATCHED)
            if r.event["data"]["request"]["source_ref"] in self.silent
        }
        levels: dict[str, set[int]] = defaultdict(set)
        for case_id, clock, level, repeat in seen:
            if clock == "sign_for" and repeat == 0:
                levels[case_id].add(level)
        short = [case for case in silent_cases if levels[case] != LADDER_LEVELS]
        findings.check(
            not short, f"{len(short)} unanswered cases did not climb levels 1-3 exactly once"
        )
        findings.figures["escalations"] = len(seen)

    async def _check_dead_letters(self, findings: Findings) -> None:
        """deadletter.v1 holds each poison message once (repeats on the wire share their
        event id and count once, as for any event) and nothing else, with its bytes."""
        topic = self.topics(Topic.CITIZEN_REQUESTS)
        records = await read_records(
            self.infra.bootstrap,
            self.topics(Topic.DEADLETTER),
            partitions_for(Topic.DEADLETTER, PARTITIONS),
        )
        letters: dict[str, MessageDeadLettered] = {}
        for record in records:
            event = decode(record.value)
            letter = event.payload()
            assert isinstance(letter, MessageDeadLettered)
            letters.setdefault(event.id, letter)
        per_message = Counter((d.topic, d.partition, d.offset) for d in letters.values())
        wanted = {(topic, p.partition, p.offset): p for p in self.poison}
        findings.check(
            set(per_message) == set(wanted),
            f"dead letters {sorted(set(per_message) - set(wanted))} are not poison, and poison "
            f"{sorted(set(wanted) - set(per_message))} was not dead-lettered",
        )
        twice = [where for where, n in per_message.items() if n > 1]
        findings.check(not twice, f"{len(twice)} messages dead-lettered as two events: {twice}")
        bodies = {
            (d.topic, d.partition, d.offset): base64.b64decode(d.value_b64)
            for d in letters.values()
        }
        wrong = [
            p.what
            for where, p in wanted.items()
            if where in bodies and bodies[where] != (p.value or b"")
        ]
        findings.check(not wrong, f"dead letters do not hold the original bytes of {wrong}")
        findings.figures["poison_messages"] = len(self.poison)
        findings.figures["dead_letters"] = len(letters)
        findings.figures["dead_letters_repeated_on_the_wire"] = len(records) - len(letters)

    async def _check_notify_ledger(self, findings: Findings) -> None:
        rows = await self.sql("SELECT status, count(*) AS n FROM notify.deliveries GROUP BY status")
        by_status = {row["status"]: row["n"] for row in rows}
        findings.check(
            set(by_status) <= {"delivered"}, f"notify's ledger is not all delivered: {by_status}"
        )

    def _latency_figures(self, findings: Findings) -> None:
        reached = self.receiver.lead_arrivals()
        latencies = [
            reached[p.source_ref][0] - p.at
            for p in self.published.values()
            if p.source_ref in reached
        ]
        if latencies:
            findings.figures["dispatch_latency_s"] = {
                "p50": round(statistics.median(latencies), 3),
                "p99": round(_percentile(latencies, 0.99), 3),
                "max": round(max(latencies), 3),
            }

    def catch_up_after(self, repaired: float) -> float:
        """Seconds from ``repaired`` until the last request published before it reached its
        lead (0 if nothing was held up)."""
        reached = self.receiver.lead_arrivals()
        held = [
            reached[p.source_ref][0]
            for p in self.published.values()
            if p.at <= repaired and p.source_ref in reached
        ]
        return round(max([0.0, *(t - repaired for t in held)]), 3)


def poison_messages(hotline: dict[str, Any]) -> list[tuple[str, bytes | None]]:
    """Messages no consumer can take, each unique: (what, raw bytes). ``hotline`` is a
    valid hotline ticket that the invalid payloads are made from."""
    valid = hotline
    marker = uuid.uuid4().hex
    _, good = submitted_event(valid)
    envelope = good.model_dump(mode="json")
    bad_data = {**envelope, "id": f"bad-data-{marker}", "data": {**valid, "channel": "fax"}}
    missing = {**envelope, "id": f"missing-{marker}"}
    missing["data"] = {k: v for k, v in valid.items() if k != "summary"}
    oversize = {**envelope, "id": f"oversize-{marker}"}
    oversize["data"] = {**valid, "source_ref": f"big-{marker}", "note": "x" * MAX_BODY_BYTES}
    return [
        ("malformed JSON", f'{{"specversion": "1.0", "id": "{marker}", "data": {{'.encode()),
        ("invalid UTF-8", b'{"specversion": "1.0", "id": "' + marker.encode() + b'\xff\xfe"}'),
        ("not a CloudEvent", f'{{"hello": "world", "marker": "{marker}"}}'.encode()),
        ("a JSON array", f'["{marker}"]'.encode()),
        ("empty value", b""),
        ("null value (tombstone)", None),
        ("invalid payload: unknown channel", orjson.dumps(bad_data)),
        ("invalid payload: no summary", orjson.dumps(missing)),
        ("invalid payload: over the size limit", orjson.dumps(oversize)),
    ]
