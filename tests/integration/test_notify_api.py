"""The ops API over the real ledger: list, replay, endpoint test, and who may call them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import yaml
from fastapi import FastAPI

from services.notify.api import Ops, make_router
from shared.apikeys import ApiKeys, hash_key
from shared.citypack import load_pack
from shared.events import EventType
from tests.helpers import eventually
from tests.notify_kit import (
    Harness,
    HookServer,
    always,
    case_action,
    dispatched,
    new_case_id,
    notify_serving,
)

OPS_KEY = "ck_ops_test_key"
APP_KEY = "ck_app_test_key"


@pytest.fixture
async def ops_api(
    database_url: str, city_pack: Path, tmp_path: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, Harness, HookServer]]:
    keys_file = tmp_path / "keys.yaml"
    keys_file.write_text(
        yaml.safe_dump(
            {
                "clients": [
                    {"name": "ops-desk", "roles": ["ops"], "sha256": hash_key(OPS_KEY)},
                    {"name": "citizen-app", "roles": ["app"], "sha256": hash_key(APP_KEY)},
                ]
            }
        )
    )
    scripts = {"water_bureau": always(410)}
    async with notify_serving(database_url, city_pack, scripts=scripts) as (notify, server):
        app = FastAPI()
        departments = set(load_pack(city_pack).departments)
        app.include_router(
            make_router(Ops(notify.pool, ApiKeys.load(keys_file), notify.deliverer, departments))
        )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://notify") as client:
            yield client, notify, server


def ops(key: str = OPS_KEY) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def test_every_ops_call_needs_an_ops_key(ops_api) -> None:
    client, _, _ = ops_api
    calls = [
        ("GET", "/v1/deliveries"),
        ("POST", "/v1/deliveries/1/replay"),
        ("POST", "/v1/endpoints/water_bureau/test"),
    ]
    for method, path in calls:
        assert (await client.request(method, path)).status_code == 401
        assert (await client.request(method, path, headers=ops(APP_KEY))).status_code == 403
        assert (await client.request(method, path, headers=ops("ck_wrong"))).status_code == 401


async def test_ledger_lists_attempts_and_replay_resends_a_dead_delivery(ops_api) -> None:
    client, notify, server = ops_api
    case_id = new_case_id()
    await notify.publish(
        dispatched(case_id, "water_bureau", ("housing_bureau",)),
        case_action(EventType.CASE_SIGNED, case_id, "water_bureau"),
    )
    await eventually(notify.settled, timeout=30)

    answer = await client.get(
        "/v1/deliveries", params={"case_id": case_id, "status": "dead"}, headers=ops()
    )
    assert answer.status_code == 200
    dead = answer.json()["deliveries"]
    assert [(d["department"], d["event_type"], d["dead_reason"]) for d in dead] == [
        ("water_bureau", EventType.CASE_DISPATCHED, "rejected"),
        ("water_bureau", EventType.CASE_SIGNED, "rejected"),
    ]
    (attempt,) = dead[0]["attempt_log"]
    assert attempt["status_code"] == 410
    assert attempt["latency_ms"] > 0
    assert attempt["error"].startswith("HTTP 410")
    housing = await client.get(
        "/v1/deliveries", params={"department": "housing_bureau"}, headers=ops()
    )
    assert [d["status"] for d in housing.json()["deliveries"]] == ["delivered"]

    bad = await client.get("/v1/deliveries", params={"status": "lost"}, headers=ops())
    assert bad.status_code == 422

    server.scripts["water_bureau"] = always(200)
    replayed = await client.post(f"/v1/deliveries/{dead[0]['id']}/replay", headers=ops())
    assert replayed.status_code == 202
    assert (replayed.json()["status"], replayed.json()["replays"]) == ("pending", 1)
    await eventually(notify.settled, timeout=30)
    (hit,) = server.of("water_bureau")
    assert hit.webhook_id == dead[0]["webhook_id"]
    after = (await client.get(f"/v1/deliveries/{dead[0]['id']}", headers=ops())).json()
    assert after["status"] == "delivered"
    assert [a["status_code"] for a in after["attempt_log"]] == [410, 200]


async def test_replay_refuses_unknown_and_pending_deliveries(ops_api) -> None:
    client, notify, _ = ops_api
    assert (await client.post("/v1/deliveries/999999/replay", headers=ops())).status_code == 404
    async with notify.pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO deliveries (webhook_id, case_id, department, event_id, event_type, body,"
            " next_attempt_at) VALUES ('msg_x', 'CR1', 'water_bureau', 'e1', 't', '{}',"
            " now() + interval '1 hour')"
        )
        pending_id = await conn.fetchval("SELECT id FROM deliveries WHERE webhook_id = 'msg_x'")
    answer = await client.post(f"/v1/deliveries/{pending_id}/replay", headers=ops())
    assert answer.status_code == 409


async def test_endpoint_test_sends_a_signed_ping_and_reports_the_answer(ops_api) -> None:
    client, _, server = ops_api
    good = await client.post("/v1/endpoints/housing_bureau/test", headers=ops())
    assert good.status_code == 200
    assert (good.json()["delivered"], good.json()["status_code"]) == (True, 204)
    (ping,) = server.of("housing_bureau")
    assert ping.valid_signatures == 1
    assert ping.event["type"] == "civicroute.endpoint.test.v1"
    assert ping.webhook_id == good.json()["webhook_id"]

    gone = await client.post("/v1/endpoints/water_bureau/test", headers=ops())
    assert (gone.json()["delivered"], gone.json()["status_code"]) == (False, 410)
    unknown = await client.post("/v1/endpoints/nobody/test", headers=ops())
    assert unknown.status_code == 404
