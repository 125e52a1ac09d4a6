"""intake's consumer on the real broker: channels, rejections, duplicates, case projection."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from services.intake.domain import rejection_of
from shared.events import (
    CaseDeadlinesSet,
    CaseDispatched,
    CaseResolved,
    CaseSigned,
    CitizenRequest,
    EventType,
    Jurisdiction,
    Payload,
    Urgency,
    encode,
    new_event,
)
from shared.kafka import Message
from shared.settings import CommonSettings
from shared.topics import Topic, TopicNames
from tests.helpers import eventually
from tests.integration.intake_support import IntakeEnv, KafkaSide, auth, close_env, make_env
from tests.integration.test_intake_http import APP, GRID, HOTLINE

pytestmark = [pytest.mark.kafka]
Pair = tuple[IntakeEnv, KafkaSide]


async def cases(env: IntakeEnv) -> dict[str, str]:
    rows = await env.sql("SELECT source_ref, case_id FROM requests")
    return {r["source_ref"]: r["case_id"] for r in rows}


async def test_each_channel_becomes_one_accepted_event(kafka_intake: Pair) -> None:
    env, kafka = kafka_intake
    for payload in (HOTLINE, APP, GRID):
        await kafka.submit(payload)

    found = await eventually(lambda: _at_least(cases(env), 3), message="three cases")
    accepted = await eventually(
        lambda: _at_least(kafka.read(Topic.REQUESTS_ACCEPTED), 3), message="accepted events"
    )

    assert {e.subject for e in accepted} == set(found.values())
    by_channel = {e.data["channel"]: e.data for e in accepted}
    assert by_channel["hotline"]["reporter"]["phone"] == "13812345678"
    assert by_channel["hotline"]["reporter"]["confidential"] is True
    assert by_channel["grid"]["category_trusted"] is True
    assert by_channel["app"]["location"] == {
        "address_text": None,
        "lat": 39.951,
        "long": 116.462,
        "grid_id": None,
    }
    for channel in ("hotline", "app", "grid"):
        assert env.metric("requests_accepted_total", channel=channel, via="kafka") == 1
    assert (
        env.registry.get_sample_value(
            "civicroute_intake_acceptance_seconds_count", {"via": "kafka"}
        )
        == 3
    )


async def test_redelivery_and_resubmission_create_and_emit_nothing_new(kafka_intake: Pair) -> None:
    env, kafka = kafka_intake
    event_id = await kafka.submit(APP)
    await kafka.submit(APP, event_id=event_id)  # the broker redelivering the same event
    await kafka.submit(APP)  # the platform publishing the same request again
    await kafka.submit(GRID)  # a marker: once it is in, the three before were handled

    await eventually(lambda: _at_least(cases(env), 2), message="two cases")
    await eventually(
        lambda: env.metric("requests_duplicate_total", channel="app", via="kafka") == 1,
        message="the duplicate counted",
    )
    accepted = await kafka.read(Topic.REQUESTS_ACCEPTED)
    assert sorted(e.data["channel"] for e in accepted) == ["app", "grid"]


def _dead_letters(kafka: KafkaSide) -> Any:
    async def read() -> list[Any]:
        return [e.data for e in await kafka.read(Topic.DEADLETTER, timeout_ms=800)]

    return read


REJECTS: list[tuple[str, bytes | None]] = [
    ("empty", b""),
    ("malformed", b'{"specversion": "1.0", "id": '),
    ("malformed", b'{"specversion":"1.0","id":"x","source":"s","type":"t","data":"\xff"}'),
    ("not_cloudevent", b'{"hello": "world"}'),
]


def _event(data: Any) -> bytes:
    return encode(
        new_event(
            EventType.REQUEST_SUBMITTED,
            source="/test",
            subject=None,
            data=_Raw.model_validate(data),
        )
    )


class _Raw(Payload):
    """Any JSON object as event data (Payload keeps unknown fields)."""


async def test_every_rejection_is_dead_lettered_with_reason_and_bytes_and_consumer_goes_on(
    kafka_intake: Pair,
) -> None:
    env, kafka = kafka_intake
    future = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    messages: list[tuple[str, bytes]] = [(reason, raw or b"") for reason, raw in REJECTS]
    messages += [
        ("invalid", _event(APP | {"lat": 123.0})),
        ("invalid", _event(APP | {"source_ref": "future", "submitted_at": future})),
        ("invalid", _event({"channel": "hotline", "source_ref": "x"})),
        ("too_large", _event(APP | {"source_ref": "big", "padding": "x" * 70_000})),
    ]
    await kafka.submit(HOTLINE)
    await eventually(lambda: _at_least(cases(env), 1), message="the original")
    messages.append(("conflict", _event(HOTLINE | {"summary": "changed"})))
    for _, raw in messages:
        await kafka.publish(Topic.CITIZEN_REQUESTS, raw, key="k")
    await kafka.submit(GRID)  # after all the bad ones: still consumed

    await eventually(lambda: _at_least(cases(env), 2), timeout=60, message="grid after rejects")
    letters = await eventually(
        lambda: _at_least(_dead_letters(kafka)(), len(messages)), message="dead letters"
    )

    assert [base64.b64decode(d["value_b64"]) for d in letters] == [raw for _, raw in messages]
    for (reason, _), letter in zip(messages, letters, strict=True):
        assert letter["topic"] == kafka.topics(Topic.CITIZEN_REQUESTS)
        assert letter["service"] == "intake"
        assert reason in _code(letter["reason"]), letter["reason"]
    for reason in {r for r, _ in messages}:
        counted = sum(
            env.metric("requests_rejected_total", channel=c, via="kafka", reason=reason)
            for c in ("unknown", "app", "hotline", "grid")
        )
        assert counted == sum(1 for r, _ in messages if r == reason), reason
    assert set((await cases(env)).keys()) == {HOTLINE["source_ref"], GRID["source_ref"]}


def _code(reason: str) -> str:
    return rejection_of(reason).value


async def test_concurrent_duplicates_over_kafka_and_http_make_one_case(kafka_intake: Pair) -> None:
    env, kafka = kafka_intake
    payload = HOTLINE | {"source_ref": f"RACE-{uuid.uuid4().hex[:8]}"}

    async def over_http() -> int:
        response = await env.http.post("/v1/requests", json=payload, headers=auth("platform"))
        return response.status_code

    results = await asyncio.gather(
        *(kafka.submit(payload) for _ in range(5)), *(over_http() for _ in range(5))
    )
    await kafka.submit(GRID)  # marker

    await eventually(lambda: _at_least(cases(env), 2), message="two cases")
    await eventually(
        lambda: (
            env.metric("requests_duplicate_total", channel="hotline", via="kafka")
            + env.metric("requests_duplicate_total", channel="hotline", via="http")
            == 9
        ),
        message="nine duplicates recognised",
    )
    assert sorted(code for code in results if isinstance(code, int))[:4] == [200] * 4
    accepted = await kafka.read(Topic.REQUESTS_ACCEPTED)
    assert sorted(e.data["source_ref"] for e in accepted) == sorted(
        [payload["source_ref"], GRID["source_ref"]]
    )


async def test_case_events_drive_status_history_agency_and_expected_time(
    kafka_intake: Pair,
) -> None:
    env, kafka = kafka_intake
    await kafka.submit(APP)
    [case_id] = (await eventually(lambda: _at_least(cases(env), 1), message="case")).values()
    request = CitizenRequest.model_validate(
        (await env.sql("SELECT request FROM requests"))[0]["request"]
    )
    now = datetime.now(UTC).replace(microsecond=0)
    due = now + timedelta(days=7)
    events = [
        new_event(
            EventType.CASE_DISPATCHED,
            source="/router",
            subject=case_id,
            data=CaseDispatched(
                case_id=case_id,
                category="water.pollution_supply",
                urgency=Urgency.GENERAL,
                jurisdiction=Jurisdiction(),
                lead="water_bureau",
                cooperating=["environment_bureau"],
                sla_policy="general",
                confidence=0.9,
                dispatched_at=now,
                request=request,
            ),
        ),
        new_event(
            EventType.CASE_DEADLINES_SET,
            source="/escalation",
            subject=case_id,
            data=CaseDeadlinesSet(
                case_id=case_id, department="water_bureau", sla_policy="general", resolve_due=due
            ),
        ),
        new_event(
            EventType.CASE_SIGNED,
            source="/escalation",
            subject=case_id,
            data=CaseSigned(
                case_id=case_id,
                department="water_bureau",
                at=now + timedelta(minutes=5),
                note="internal: crew B",
            ),
        ),
    ]
    for event in events:
        await kafka.publish(Topic.CASE_EVENTS, encode(event), key=case_id)
    await kafka.publish(Topic.CASE_EVENTS, encode(events[2]), key=case_id)  # redelivered

    async def view() -> dict[str, Any]:
        response = await env.http.get(f"/v1/requests/{case_id}", headers=auth("app"))
        return response.json()

    signed = await eventually(
        lambda: _field(view(), "state", "signed"), message="signed in the view"
    )
    assert signed["agency_responsible"] == "水务局"
    assert signed["category"] == "water.pollution_supply"
    assert datetime.fromisoformat(signed["expected_at"]) == due
    assert [h["kind"] for h in signed["history"]] == ["dispatched", "signed"]
    assert all(h.get("note") is None for h in signed["history"])  # internal notes stay internal

    resolved = new_event(
        EventType.CASE_RESOLVED,
        source="/escalation",
        subject=case_id,
        data=CaseResolved(
            case_id=case_id,
            department="water_bureau",
            at=now + timedelta(hours=2),
            reply="排污口已封堵",
        ),
    )
    await kafka.publish(Topic.CASE_EVENTS, encode(resolved), key=case_id)
    await eventually(lambda: _field(view(), "status", "closed"), message="closed")
    record = (await env.http.get(f"/open311/v2/requests/{case_id}.json")).json()[0]
    assert record["status"] == "closed"
    assert record["status_notes"] == "排污口已封堵"
    assert record["agency_responsible"] == "水务局"
    assert record["service_code"] == "ZH-106"
    assert datetime.fromisoformat(record["expected_datetime"]) == due


async def _at_least(coro: Any, n: int) -> Any:
    value = await coro
    return value if len(value) >= n else None


async def _field(coro: Any, name: str, wanted: str) -> Any:
    value = await coro
    return value if value.get(name) == wanted else None


class _NeverUsed:
    """The dead-letter producer, which building a consumer must not touch."""

    async def send(self, topic: str, value: bytes | None = None, key: bytes | None = None) -> Any:
        raise AssertionError("nothing is published while a consumer is built")

    send_and_wait = send

    async def send_many(self, messages: Sequence[Message]) -> list[asyncio.Future[Any]]:
        raise AssertionError("nothing is published while a consumer is built")


async def test_the_consumer_fetches_as_the_kafka_fetch_settings_say(
    database_url: str, city_pack: Path
) -> None:
    # Operators tune CIVIC_KAFKA_FETCH_* for every consumer; intake builds its own (it counts
    # its dead letters), so it must pass them on rather than keep aiokafka's defaults.
    env = await make_env(database_url, TopicNames("t."), city_pack, CollectorRegistry())
    try:
        settings = CommonSettings(
            kafka_bootstrap="127.0.0.1:9",
            database_url=database_url,
            kafka_fetch_max_wait_ms=7,
            kafka_fetch_min_bytes=4096,
        )
        runtime = env.intake.consumer(settings, producer=_NeverUsed())
        assert (runtime.fetch_max_wait_ms, runtime.fetch_min_bytes) == (7, 4096)
    finally:
        await close_env(env)
