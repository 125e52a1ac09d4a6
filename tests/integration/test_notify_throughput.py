"""A benchmark that prints figures (no time limit asserted): how fast the queue drains to
healthy local endpoints, and with one dead department beside them."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.helpers import eventually
from tests.notify_kit import always, dispatched, new_case_id, notify_serving, write_notify_yaml

DEPARTMENTS = (
    "community_committee",
    "housing_bureau",
    "market_supervision",
    "food_drug",
    "urban_law_enforcement",
    "environment_bureau",
    "water_bureau",
    "transport_bureau",
)


async def test_queue_drains_to_healthy_endpoints_beside_a_dead_one(
    database_url: str, city_pack: Path
) -> None:
    write_notify_yaml(city_pack, {"defaults": {"concurrency": 16}})
    cases = 1000
    async with notify_serving(
        database_url, city_pack, scripts={"public_security": always(503)}
    ) as (notify, server):
        loop = asyncio.get_running_loop()
        events = [
            dispatched(new_case_id(), DEPARTMENTS[n % len(DEPARTMENTS)]) for n in range(cases)
        ]
        dead = [dispatched(new_case_id(), "public_security") for _ in range(200)]
        started = loop.time()
        for chunk in range(0, cases, 250):
            await notify.publish(*events[chunk : chunk + 250], *dead[chunk // 5 : chunk // 5 + 50])
        queued = loop.time()
        await eventually(lambda: len(server.received) == cases, timeout=240, message="drained")
        done = loop.time()
        pending_dead = len(await notify.rows("WHERE department = 'public_security'"))
    assert {h.department for h in server.received} == set(DEPARTMENTS)
    assert pending_dead == 200
    print(
        f"\n[figure] {cases} webhooks to {len(DEPARTMENTS)} healthy local endpoints "
        f"(+200 to a dead one): queued in {queued - started:.2f}s, all delivered "
        f"{done - started:.2f}s after the first publish = {cases / (done - started):.0f}/s"
    )
