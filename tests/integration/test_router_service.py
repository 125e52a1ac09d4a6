"""The router as a real process on real Kafka and PostgreSQL: dispatch, triage, returns."""

from __future__ import annotations

import asyncio
import csv
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import pytest
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from pydantic import BaseModel

from deploy.local.stack import ServiceSet
from services.router import export_examples, train
from shared.apikeys import hash_key
from shared.events import (
    CaseReturned,
    Channel,
    CitizenRequest,
    CloudEvent,
    EventType,
    Location,
    Reporter,
    decode,
    encode,
    new_event,
    utcnow,
)
from shared.kafka import make_producer
from shared.topics import Topic, TopicNames
from tests.conftest import Infra
from tests.helpers import eventually, fetch

BEIJING = ZoneInfo("Asia/Shanghai")
OPERATOR_KEY = "ck_operator-test-key"
APP_KEY = "ck_app-test-key"
PHONE = "13912345678"


@dataclass
class RouterProcess:
    services: ServiceSet
    producer: AIOKafkaProducer
    topics: TopicNames
    infra: Infra
    database_url: str

    @property
    def url(self) -> str:
        return self.services.url("router")

    async def publish(self, topic: Topic, kind: EventType, case_id: str, data: BaseModel) -> str:
        event = new_event(kind, source="/tests", subject=case_id, data=data)
        await self.send(topic, case_id, event)
        return event.id

    async def send(self, topic: Topic, key: str, event: CloudEvent) -> None:
        await self.producer.send_and_wait(self.topics(topic), encode(event), key=key.encode())

    async def events(self, topic: Topic = Topic.CASE_EVENTS) -> list[CloudEvent]:
        consumer = AIOKafkaConsumer(
            self.topics(topic), bootstrap_servers=self.infra.bootstrap, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            found: list[CloudEvent] = []
            while batch := await consumer.getmany(timeout_ms=1500):
                for messages in batch.values():
                    found.extend(decode(m.value) for m in messages)
            return found
        finally:
            await consumer.stop()

    async def of(self, kind: EventType, case_id: str) -> list[dict[str, Any]]:
        return [e.data for e in await self.events() if e.type == kind and e.subject == case_id]

    async def sql(self, query: str, *args: Any) -> list[asyncpg.Record]:
        return await fetch(self.database_url, query, *args)


@pytest.fixture
async def router(
    infra: Infra, database_url: str, topics: TopicNames, tmp_path: Path
) -> AsyncIterator[RouterProcess]:
    keys = tmp_path / "api-keys.yaml"
    keys.write_text(
        yaml.safe_dump(
            {
                "clients": [
                    {"name": "op-anna", "roles": ["operator"], "sha256": hash_key(OPERATOR_KEY)},
                    {"name": "citizen-app", "roles": ["app"], "sha256": hash_key(APP_KEY)},
                ]
            }
        )
    )
    services = ServiceSet(
        tmp_path / "logs",
        {
            "CIVIC_KAFKA_BOOTSTRAP": infra.bootstrap,
            "CIVIC_DATABASE_URL": database_url,
            "CIVIC_CITY": "demo-zh",
            "CIVIC_TOPIC_NAMESPACE": topics.namespace,
            "CIVIC_KAFKA_PARTITIONS": "3",
            "CIVIC_KAFKA_IDEMPOTENCE": str(infra.idempotent).lower(),
            "CIVIC_API_KEYS_FILE": str(keys),
            "CIVIC_DB_POOL_SIZE": "3",
        },
    )
    await asyncio.to_thread(services.start, "router", timeout=180)
    producer = make_producer(infra.bootstrap, idempotent=infra.idempotent, client_id="test")
    await producer.start()
    try:
        yield RouterProcess(services, producer, topics, infra, database_url)
    finally:
        await producer.stop()
        await asyncio.to_thread(services.stop)


def accepted(text: str, *, address: str | None, at: str = "2025-03-04T10:00:00") -> CitizenRequest:
    return CitizenRequest(
        case_id=f"CR{uuid.uuid4().int % 10**13:013d}",
        channel=Channel.HOTLINE,
        source_ref=f"BJ-{uuid.uuid4().hex[:8]}",
        received_at=datetime.fromisoformat(at).replace(tzinfo=BEIJING),
        description=text,
        location=Location(address_text=address),
        reporter=Reporter(name="王阿姨", phone=PHONE),
    )


async def test_place_rule_routes_unplaced_by_subject_and_sets_other_districts_aside(
    router: RouterProcess,
) -> None:
    wages = accepted("公司拖欠我们工资三个月了，老板电话也不接", address=None)
    elsewhere = accepted("小区门口的垃圾一直没人清运", address="海淀区学院路20号院")
    for request in (wages, elsewhere):
        await router.publish(
            Topic.REQUESTS_ACCEPTED, EventType.REQUEST_ACCEPTED, request.case_id, request
        )
    dispatched = await eventually(
        lambda: router.of(EventType.CASE_DISPATCHED, wages.case_id), timeout=60
    )
    triaged = await eventually(
        lambda: router.of(EventType.CASE_TRIAGED, elsewhere.case_id), timeout=60
    )
    assert dispatched[0]["lead"] == "human_resources_social_security"
    assert dispatched[0]["jurisdiction"]["method"] == "home"
    assert triaged[0]["kind"] == "out_of_jurisdiction"
    assert "海淀区" in triaged[0]["reason"]
    assert await router.of(EventType.CASE_DISPATCHED, elsewhere.case_id) == []
    async with httpx.AsyncClient(base_url=router.url) as http:
        queue = (
            await http.get("/v1/triage", headers={"Authorization": f"Bearer {OPERATOR_KEY}"})
        ).json()
    assert [(c["case_id"], c["kind"]) for c in queue["items"]] == [
        (elsewhere.case_id, "out_of_jurisdiction")
    ]


async def test_accepted_requests_are_dispatched_or_triaged_once_with_their_trace(
    router: RouterProcess,
) -> None:
    litter = accepted("3号楼下的垃圾桶满了好几天没人清运，味道很大", address="团结湖北里5号楼")
    unclear = accepted("这个问题反映好多次了", address="望京西园")
    event_id = await router.publish(
        Topic.REQUESTS_ACCEPTED, EventType.REQUEST_ACCEPTED, litter.case_id, litter
    )
    await router.publish(
        Topic.REQUESTS_ACCEPTED, EventType.REQUEST_ACCEPTED, unclear.case_id, unclear
    )
    # The same event delivered again changes nothing and emits nothing.
    again = new_event(
        EventType.REQUEST_ACCEPTED, source="/tests", subject=litter.case_id, data=litter,
        event_id=event_id,
    )  # fmt: skip
    await router.send(Topic.REQUESTS_ACCEPTED, litter.case_id, again)

    dispatched = await eventually(
        lambda: router.of(EventType.CASE_DISPATCHED, litter.case_id), timeout=60
    )
    triaged = await eventually(
        lambda: router.of(EventType.CASE_TRIAGED, unclear.case_id), timeout=60
    )
    await asyncio.sleep(2)
    assert len(await router.of(EventType.CASE_DISPATCHED, litter.case_id)) == 1
    data = dispatched[0]
    assert (data["category"], data["lead"], data["urgency"], data["sla_policy"]) == (
        "sanitation.litter",
        "community_committee",
        "general",
        "general",
    )
    assert data["cooperating"] == ["housing_bureau", "property_company"]
    assert data["jurisdiction"] == {
        "district": "chaoyang",
        "street": "tuanjiehu",
        "grid_id": None,
        "method": "address",
    }
    assert (data["attempt"], data["excluded"], data["route_id"]) == (1, [], "litter")
    assert any(line.startswith("category sanitation.litter: model") for line in data["trace"])
    assert triaged[0]["reason"].startswith("confidence ")
    assert len(triaged[0]["candidates"]) == 3
    assert await router.of(EventType.CASE_DISPATCHED, unclear.case_id) == []

    rows = {
        r["case_id"]: r
        for r in await router.sql(
            "SELECT case_id, outcome, method, lead, trace, model_version FROM router.decisions"
        )
    }
    assert {case: r["outcome"] for case, r in rows.items()} == {
        litter.case_id: "dispatched",
        unclear.case_id: "triage",
    }
    assert json.loads(rows[litter.case_id]["trace"]) == data["trace"]  # kept for audit
    assert rows[litter.case_id]["model_version"] is not None

    async with httpx.AsyncClient(base_url=router.url) as http:
        audit = await http.get(
            f"/v1/cases/{litter.case_id}/decisions", headers={"X-Api-Key": OPERATOR_KEY}
        )
        metrics = (await http.get("/metrics")).text
    assert audit.status_code == 200
    assert audit.json()["decisions"][0]["lead"] == "community_committee"
    assert (
        'civicroute_router_dispatches_total{category="sanitation.litter",'
        'department="community_committee"} 1.0'
    ) in metrics
    assert 'civicroute_router_decisions_total{channel="hotline",outcome="triage"} 1.0' in metrics
    assert 'civicroute_router_triaged_total{reason="low_confidence"} 1.0' in metrics
    assert "civicroute_router_triage_waiting 1.0" in metrics
    assert "civicroute_router_routing_seconds_count 2.0" in metrics
    assert 'civicroute_router_confidence_bucket{le="1.0",method="model"} 1.0' in metrics
    assert PHONE not in router.services.log_file("router").read_text()


async def test_an_operator_routes_a_triaged_case_and_it_becomes_a_training_example(
    router: RouterProcess, tmp_path: Path
) -> None:
    unclear = accepted("这个问题反映好多次了，楼里一直没人管", address="望京西园")
    await router.publish(
        Topic.REQUESTS_ACCEPTED, EventType.REQUEST_ACCEPTED, unclear.case_id, unclear
    )
    await eventually(lambda: router.of(EventType.CASE_TRIAGED, unclear.case_id), timeout=60)
    operator = {"Authorization": f"Bearer {OPERATOR_KEY}"}
    path = f"/v1/triage/{unclear.case_id}/route"
    body = {
        "category": "housing.property_management",
        "lead": "housing_bureau",
        "cooperating": ["property_company"],
        "reason": "来电人补充：物业长期不维修楼道设施",
    }
    async with httpx.AsyncClient(base_url=router.url) as http:
        assert (await http.get("/v1/triage")).status_code == 401
        assert (await http.get("/v1/triage", headers={"X-Api-Key": APP_KEY})).status_code == 403
        listed = await http.get("/v1/triage", headers=operator)
        assert listed.status_code == 200
        page = listed.json()
        assert page["total"] == 1
        item = page["items"][0]
        assert (item["case_id"], item["kind"]) == (unclear.case_id, "low_confidence")
        assert item["request"]["description"] == unclear.description
        assert PHONE not in listed.text  # the operator sees the request, not the reporter

        unknown = await http.post(path, headers=operator, json={**body, "lead": "fire_brigade"})
        assert unknown.status_code == 422
        assert unknown.json()["detail"] == "unknown department 'fire_brigade'"
        short = await http.post(path, headers=operator, json={**body, "reason": "x"})
        assert short.status_code == 422
        missing = await http.post("/v1/triage/CR0000000000000/route", headers=operator, json=body)
        assert missing.status_code == 404
        assert (await http.post(path, headers={"X-Api-Key": APP_KEY}, json=body)).status_code == 403
        assert await router.sql("SELECT * FROM router.labelled_examples") == []

        routed = await http.post(path, headers=operator, json=body)
        assert routed.status_code == 200
        assert routed.json() == {
            "case_id": unclear.case_id,
            "category": "housing.property_management",
            "urgency": "general",
            "lead": "housing_bureau",
            "cooperating": ["property_company"],
            "sla_policy": "general",
            "attempt": 1,
        }
        assert (await http.post(path, headers=operator, json=body)).status_code == 409
        assert (await http.get("/v1/triage", headers=operator)).json()["total"] == 0
        assert "civicroute_router_triage_waiting 0.0" in (await http.get("/metrics")).text

    dispatched = await eventually(
        lambda: router.of(EventType.CASE_DISPATCHED, unclear.case_id), timeout=30
    )
    assert dispatched[0]["lead"] == "housing_bureau"
    assert dispatched[0]["confidence"] == 1.0
    assert dispatched[0]["trace"][-1] == f"manual: routed by op-anna: {body['reason']}"

    exported = tmp_path / "manual.csv"
    command = ["--out", str(exported), "--database-url", router.database_url]
    assert await asyncio.to_thread(export_examples.main, command) == 0
    with exported.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["category"], r["expected_lead"], r["address"]) for r in rows] == [
        ("housing.property_management", "housing_bureau", "望京西园")
    ]
    models = tmp_path / "models"
    base = ["--city", "demo-zh", "--models-dir", str(models)]
    assert await asyncio.to_thread(train.main, base) == 0
    assert await asyncio.to_thread(train.main, [*base, "--extra", str(exported)]) == 0
    trained = sorted((models / "demo-zh").glob("*/meta.json"))
    counts = sorted(json.loads(p.read_text())["examples"] for p in trained)
    assert len(counts) == 2  # a new version, next to the old one
    assert counts[1] == counts[0] + 1


async def test_a_returned_case_is_rerouted_without_that_department_then_triaged(
    router: RouterProcess,
) -> None:
    night_works = accepted(
        "工地半夜还在施工，扬尘和噪音都很大", address="望京西园", at="2025-03-04T23:30:00"
    )
    await router.publish(
        Topic.REQUESTS_ACCEPTED, EventType.REQUEST_ACCEPTED, night_works.case_id, night_works
    )
    first = await eventually(
        lambda: router.of(EventType.CASE_DISPATCHED, night_works.case_id), timeout=60
    )
    assert (first[0]["lead"], first[0]["route_id"]) == (
        "urban_law_enforcement",
        "construction-night",
    )

    def returned(department: str, count: int, excluded: list[str]) -> CaseReturned:
        return CaseReturned(
            case_id=night_works.case_id,
            department=department,
            at=utcnow(),
            reason="不属于本单位职责",
            return_count=count,
            excluded=excluded,
        )

    await router.publish(
        Topic.CASE_EVENTS,
        EventType.CASE_RETURNED,
        night_works.case_id,
        returned("urban_law_enforcement", 1, ["urban_law_enforcement"]),
    )
    second = await eventually(lambda: _attempt(router, night_works.case_id, 2), timeout=60)
    assert (second["lead"], second["route_id"]) == ("environment_bureau", "construction")
    assert second["excluded"] == ["urban_law_enforcement"]
    assert "urban_law_enforcement" not in second["cooperating"]

    await router.publish(
        Topic.CASE_EVENTS,
        EventType.CASE_RETURNED,
        night_works.case_id,
        returned("environment_bureau", 2, ["environment_bureau", "urban_law_enforcement"]),
    )
    triaged = await eventually(
        lambda: router.of(EventType.CASE_TRIAGED, night_works.case_id), timeout=60
    )
    assert triaged[0]["reason"] == "returned 2 times (limit 2): a person decides"
    queue = await router.sql("SELECT kind, attempt FROM router.triage")
    assert [(r["kind"], r["attempt"]) for r in queue] == [("returns", 3)]

    # A return for a case this router never saw cannot be re-routed: dead-lettered with why.
    await router.publish(
        Topic.CASE_EVENTS,
        EventType.CASE_RETURNED,
        "CR0000000000404",
        CaseReturned(
            case_id="CR0000000000404",
            department="water_bureau",
            at=utcnow(),
            reason="不归我们",
            return_count=1,
        ),
    )
    dead = await eventually(
        lambda: _dead_letters(router), timeout=60, message="dead-lettered return"
    )
    assert dead[0]["reason"] == "unknown case: CR0000000000404 was never routed here"


async def _attempt(router: RouterProcess, case_id: str, attempt: int) -> dict[str, Any] | None:
    for data in await router.of(EventType.CASE_DISPATCHED, case_id):
        if data["attempt"] == attempt:
            return data
    return None


async def _dead_letters(router: RouterProcess) -> list[dict[str, Any]]:
    return [e.data for e in await router.events(Topic.DEADLETTER)]
