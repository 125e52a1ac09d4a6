"""intake as a real process among the others: requests in over HTTP, status out over Open311."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from deploy.local.stack import write_api_keys
from tests.helpers import eventually

pytestmark = [pytest.mark.system]

APP_REPORT = {
    "channel": "app",
    "source_ref": "APP-SYS-1",
    "text": "小区垃圾好几天没人清运，垃圾桶满了",
    "category": "sanitation.litter",
    "lat": 39.92,
    "long": 116.44,
}


async def test_posted_request_is_routed_and_open311_shows_the_agency(
    make_system, tmp_path: Path
) -> None:
    keys = write_api_keys(tmp_path / "api-keys.yaml", {"city-app": "app"})
    system = await make_system(extra_env={"CIVIC_API_KEYS_FILE": str(tmp_path / "api-keys.yaml")})
    intake = system.services.url("intake")
    async with httpx.AsyncClient(base_url=intake, timeout=10) as http:
        refused = await http.post("/v1/requests", json=APP_REPORT)
        created = await http.post(
            "/v1/requests", json=APP_REPORT, headers={"X-Api-Key": keys["city-app"]}
        )
        assert (refused.status_code, created.status_code) == (401, 201)
        case_id = created.json()["case_id"]

        async def routed() -> dict[str, object] | None:
            response = await http.get(f"/open311/v2/requests/{case_id}.json")
            record = response.json()[0]
            return record if record["agency_responsible"] else None

        record = await eventually(routed, timeout=60, message="agency from the router")
        assert record["agency_responsible"] == "社区居委会"
        assert record["service_code"] == "ZH-101"
        assert record["status"] == "open"
        metrics = (await http.get("/metrics")).text
        assert 'civicroute_intake_requests_accepted_total{channel="app",via="http"} 1.0' in metrics
        unauthorized = (
            'civicroute_intake_requests_rejected_total{channel="unknown",'
            'reason="unauthorized",via="http"} 1.0'
        )
        assert unauthorized in metrics
