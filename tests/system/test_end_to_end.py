"""The whole system over real Kafka and PostgreSQL, each service a real subprocess."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from pathlib import Path

import pytest
import yaml

from deploy.local.demo import demo_payloads
from tests.helpers import eventually

pytestmark = [pytest.mark.system]

DISPATCHED = "civicroute.case.dispatched.v1"
SIGNED = "civicroute.case.signed.v1"
ESCALATED = "civicroute.case.escalated.v1"

LITTER_CALL = {
    "channel": "hotline",
    "source_ref": "BJ12345-20261126-0001",
    "operator_id": "op007",
    "caller_phone": "13812345678",
    "caller_name": "张先生",
    "address_text": "朝阳路12号院3号楼",
    "summary": "小区垃圾好几天没人清运",
    "details": "3号楼下的垃圾桶满了好几天没人清运，味道很大。",
}


def set_sla(pack: Path, sign_for: str, ladder: list[dict[str, object]]) -> None:
    policy = {"sign_for": sign_for, "contact": "1h", "resolve": "2h"}
    (pack / "sla.yaml").write_text(
        yaml.safe_dump(
            {
                "policies": dict.fromkeys(("emergency", "utilities", "general", "complex"), policy),
                "ladder": ladder,
            }
        )
    )


async def test_request_reaches_department_as_signed_webhook_and_signing_prevents_escalation(
    make_system, city_pack: Path
) -> None:
    set_sla(city_pack, "3s", [{"level": 1, "after": "0s", "targets": ["duty_contact"]}])
    system = await make_system(auto_sign=True)

    await system.submit(LITTER_CALL)

    dispatched = await eventually(
        lambda: system.receiver.of_type(DISPATCHED), message="dispatch webhook"
    )
    lead = dispatched[0].event["data"]["lead"]
    assert lead == "community_committee"
    case_id = dispatched[0].case_id
    # The seed table's cooperating units hear of it too.
    await eventually(
        lambda: (
            {r.department for r in system.receiver.of_type(DISPATCHED)}
            == {"community_committee", "housing_bureau", "property_company"}
        ),
        message="cooperating departments",
    )
    assert system.receiver.rejected == 0  # every delivery carried a valid signature
    await eventually(lambda: system.receiver.sign_results.get(case_id) == 200, message="sign-for")
    signed = await eventually(lambda: system.receiver.of_type(SIGNED), message="signed webhook")
    assert signed[0].case_id == case_id

    await asyncio.sleep(4)  # past the 3 s sign-for deadline
    assert system.receiver.of_type(ESCALATED) == []
    rows = await system.sql("SELECT state FROM escalation.cases WHERE case_id = $1", case_id)
    assert [r["state"] for r in rows] == ["signed"]
    assert await system.sql("SELECT * FROM escalation.escalations") == []


async def test_unsigned_case_escalates_exactly_once_per_ladder_step(
    make_system, city_pack: Path
) -> None:
    set_sla(
        city_pack,
        "1s",
        [
            {"level": 1, "after": "0s", "targets": ["duty_contact", "supervisor"]},
            {"level": 2, "after": "2s", "targets": ["district_supervision"]},
            {"level": 3, "after": "4s", "targets": ["city_centre"]},
        ],
    )
    system = await make_system(auto_sign=False)

    await system.submit(LITTER_CALL)

    await eventually(
        lambda: len(system.receiver.of_type(ESCALATED)) >= 3, timeout=30, message="three levels"
    )
    await asyncio.sleep(3)  # nothing more may follow: no repeats in this policy
    escalated = system.receiver.of_type(ESCALATED)
    assert sorted(r.event["data"]["level"] for r in escalated) == [1, 2, 3]
    assert {r.department for r in escalated} == {"community_committee"}
    assert escalated[0].event["data"]["targets"] == ["duty_contact", "supervisor"]
    rows = await system.sql("SELECT level FROM escalation.escalations ORDER BY level")
    assert [r["level"] for r in rows] == [1, 2, 3]


@pytest.mark.kafka
@pytest.mark.parametrize("victim", ["intake", "router", "escalation", "notify"])
async def test_sigkilled_service_loses_and_duplicates_no_dispatch(make_system, victim: str) -> None:
    system = await make_system(auto_sign=True)
    payloads = list(itertools.islice(demo_payloads(seed=11), 200))

    async def stream() -> None:
        for payload in payloads:
            await system.submit(payload)
            await asyncio.sleep(0.01)

    streaming = asyncio.create_task(stream())
    await eventually(lambda: len(system.receiver.of_type(DISPATCHED)) >= 20, message="first cases")
    system.services.kill(victim)
    await asyncio.sleep(1)
    system.services.start(victim)
    await streaming

    expected = {p["source_ref"] for p in payloads}

    def leads_reached() -> set[str]:
        return {
            r.event["data"]["request"]["source_ref"]
            for r in system.receiver.of_type(DISPATCHED)
            if r.department == r.event["data"]["lead"]
        }

    await eventually(lambda: leads_reached() == expected, timeout=90, message="all 200 dispatched")
    lead_dispatches = Counter(
        r.event["data"]["request"]["source_ref"]
        for r in system.receiver.of_type(DISPATCHED)
        if r.department == r.event["data"]["lead"]
    )
    assert set(lead_dispatches.values()) == {1}, "a request was dispatched more than once"
    cases = await system.sql("SELECT count(*) AS n FROM intake.requests")
    assert cases[0]["n"] == 200
