# ruff: noqa: F811 - pytest fixtures are imported by name, then requested as arguments
"""The department report over a scripted month (November 2025, Shanghai time), with the
expected counts and rates worked out by hand below, not by the code under test."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from shared.events import Urgency
from tests.integration.escalation_support import Harness, make_harness  # noqa: F401

SH = ZoneInfo("Asia/Shanghai")
CC = "community_committee"
WATER = "water_bureau"


class ScriptClock:
    def __init__(self) -> None:
        self.at = datetime(2025, 11, 1, tzinfo=SH)

    def __call__(self) -> datetime:
        return self.at


def nov(day: int, hour: int = 10, minute: int = 0) -> datetime:
    return datetime(2025, 11, day, hour, minute, tzinfo=SH)


async def step(
    h: Harness, clock: ScriptClock, when: datetime, case_id: str, action: str, **body: str
) -> None:
    clock.at = when
    if action == "feedback":
        response = await h.as_role("platform", "POST", f"/v1/cases/{case_id}/feedback", json=body)
    else:
        department = body.pop("department", CC)
        response = await h.call(case_id, action, {"department": department, **body})
    assert response.status_code == 200, (case_id, action, response.text)


async def script_november(h: Harness, clock: ScriptClock) -> None:
    """Policies (demo-zh): general = sign 2 h, contact 24 h, resolve 7 working days;
    utilities = sign 30 min, contact 4 h, resolve 24 h."""
    h_ = timedelta(hours=1)
    d_ = timedelta(days=1)
    # c1: everything on time, satisfied.
    t = nov(3)
    await h.dispatch("c1", at=t)
    await step(h, clock, t + 0.5 * h_, "c1", "sign")
    await step(h, clock, t + 3 * h_, "c1", "contact")
    await step(h, clock, t + 2 * d_, "c1", "resolve", reply="cleared")
    await step(h, clock, t + 3 * d_, "c1", "feedback", rating="satisfied")
    # c2: on time, basically satisfied.
    t = nov(4)
    await h.dispatch("c2", at=t)
    await step(h, clock, t + 0.5 * h_, "c2", "sign")
    await step(h, clock, t + 3 * h_, "c2", "contact")
    await step(h, clock, t + 2 * d_, "c2", "resolve", reply="cleared")
    await step(h, clock, t + 3 * d_, "c2", "feedback", rating="basically_satisfied")
    # c3: signed late (3 h > 2 h); contacted at 20 h (on time); resolved, rated unsatisfied,
    # reopened, resolved again within the fresh 7 working days, then satisfied.
    t = nov(5)
    await h.dispatch("c3", at=t)
    await step(h, clock, t + 3 * h_, "c3", "sign")
    await step(h, clock, t + 20 * h_, "c3", "contact")
    await step(h, clock, t + 3 * d_, "c3", "resolve", reply="cleared")
    await step(h, clock, t + 3 * d_ + h_, "c3", "feedback", rating="unsatisfied")
    await step(h, clock, t + 4 * d_, "c3", "resolve", reply="cleared properly")
    await step(h, clock, t + 5 * d_, "c3", "feedback", rating="satisfied")
    # c4: contacted late (30 h); resolve due Mon Nov 17 10:00 (7 working days from Thu
    # Nov 6), resolved Tue Nov 18: late; basically satisfied.
    t = nov(6)
    await h.dispatch("c4", at=t)
    await step(h, clock, t + h_, "c4", "sign")
    await step(h, clock, t + 30 * h_, "c4", "contact")
    await step(h, clock, nov(18), "c4", "resolve", reply="finally cleared")
    await step(h, clock, nov(19), "c4", "feedback", rating="basically_satisfied")
    # c5: signed, then nothing: contact and resolve overdue, still open.
    t = nov(7)
    await h.dispatch("c5", at=t)
    await step(h, clock, t + h_, "c5", "sign")
    # c6: never signed: overdue open.
    await h.dispatch("c6", at=nov(10))
    # c7: signed then returned; the router gives it to the water bureau (attempt 2), which
    # signs on time (15 min of 2 h), contacts, resolves; satisfied.
    t = nov(11)
    await h.dispatch("c7", at=t)
    await step(h, clock, t + timedelta(minutes=10), "c7", "sign")
    await step(h, clock, t + timedelta(minutes=20), "c7", "return", reason="a water main")
    t2 = nov(11, 14)
    await h.dispatch("c7", lead=WATER, attempt=2, at=t2, excluded=[CC])
    await step(h, clock, t2 + timedelta(minutes=15), "c7", "sign", department=WATER)
    await step(h, clock, t2 + h_, "c7", "contact", department=WATER)
    await step(h, clock, t2 + d_, "c7", "resolve", department=WATER, reply="main repaired")
    await step(h, clock, t2 + 2 * d_, "c7", "feedback", rating="satisfied")
    # c8: on time, resolved, not rated yet.
    t = nov(12)
    await h.dispatch("c8", at=t)
    await step(h, clock, t + h_, "c8", "sign")
    await step(h, clock, t + h_, "c8", "contact")
    await step(h, clock, t + d_, "c8", "resolve", reply="cleared")
    # c9: dispatched Sat Nov 1 00:30 Shanghai (= Oct 31 UTC): inside the local month.
    t = nov(1, 0, 30)
    await h.dispatch("c9", at=t)
    await step(h, clock, t + h_, "c9", "sign")
    await step(h, clock, t + 2 * h_, "c9", "contact")
    await step(h, clock, t + d_, "c9", "resolve", reply="cleared")
    await step(h, clock, t + 2 * d_, "c9", "feedback", rating="satisfied")
    # c11: on time, then unsatisfied: reopened and never resolved again: overdue open.
    t = nov(13)
    await h.dispatch("c11", at=t)
    await step(h, clock, t + timedelta(minutes=20), "c11", "sign")
    await step(h, clock, t + h_, "c11", "contact")
    await step(h, clock, t + d_, "c11", "resolve", reply="cleared")
    await step(h, clock, t + 2 * d_, "c11", "feedback", rating="unsatisfied")
    # w2 (utilities, water bureau): signed late (45 min > 30), contacted on time (2 h < 4),
    # resolved late (30 h > 24), basically satisfied.
    t = nov(20)
    await h.dispatch(
        "w2", lead=WATER, category="utilities.water_outage", urgency=Urgency.UTILITIES, at=t
    )
    await step(h, clock, t + timedelta(minutes=45), "w2", "sign", department=WATER)
    await step(h, clock, t + 2 * h_, "w2", "contact", department=WATER)
    await step(h, clock, t + 30 * h_, "w2", "resolve", department=WATER, reply="restored")
    await step(h, clock, t + 2 * d_, "w2", "feedback", rating="basically_satisfied")
    # c10: dispatched Dec 1 00:00 Shanghai: outside November.
    await h.dispatch("c10", at=datetime(2025, 12, 1, tzinfo=SH))


# Worked out by hand from the script above.
EXPECTED = {
    CC: {
        "dispatched": 10,  # c1–c9 and c11 (c7's first assignment included)
        "returned": 1,  # c7
        "held": 9,
        "signed_on_time": 7,  # all held but c3 (late) and c6 (never)
        "contacted_on_time": 6,  # c1 c2 c3 c8 c9 c11; not c4 (late), c5 c6 (never)
        "resolved": 6,  # c1 c2 c3 c4 c8 c9 (c11 reopened, c5 c6 open)
        "resolved_on_time": 5,  # all resolved but c4
        "satisfied": 3,  # c1 c3 c9 (c3's latest rating)
        "basically_satisfied": 2,  # c2 c4
        "unsatisfied": 1,  # c11
        "rated": 6,
        "response_rate": 0.6667,  # 6 / 9
        "resolution_rate": 0.6667,  # 6 / 9
        "satisfaction_rate": 0.8333,  # 5 / 6
        "overdue_open": 3,  # c5, c6, c11
    },
    WATER: {
        "dispatched": 2,  # c7 (attempt 2), w2
        "returned": 0,
        "held": 2,
        "signed_on_time": 1,  # c7; w2 late
        "contacted_on_time": 2,
        "resolved": 2,
        "resolved_on_time": 1,  # c7; w2 late
        "satisfied": 1,
        "basically_satisfied": 1,
        "unsatisfied": 0,
        "rated": 2,
        "response_rate": 1.0,
        "resolution_rate": 1.0,
        "satisfaction_rate": 1.0,
        "overdue_open": 0,
    },
}


async def test_report_over_a_scripted_month_matches_the_hand_computed_rates(make_harness) -> None:
    clock = ScriptClock()
    h = await make_harness(clock=clock)
    await script_november(h, clock)
    # The rate gauges over the trailing 30 days, seen on Dec 1: the same month.
    clock.at = datetime(2025, 12, 1, tzinfo=SH)
    await h.escalation.refresh_gauges()
    for name in ("response_rate", "resolution_rate", "satisfaction_rate"):
        for department, expected in EXPECTED.items():
            assert h.metric(name, {"department": department}) == expected[name]

    clock.at = datetime(2026, 1, 15, tzinfo=SH)  # report day: everything above is past due

    url = "/v1/reports/departments?from=2025-11-01&to=2025-12-01"
    response = await h.as_role("ops", "GET", url)
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["from"] == "2025-10-31T16:00:00+00:00"
    lines = {line["department"]: line for line in report["departments"]}
    assert set(lines) == {CC, WATER}
    for department, expected in EXPECTED.items():
        got = {key: lines[department][key] for key in expected}
        assert got == expected, department

    as_csv = await h.as_role("supervisor", "GET", url + "&format=csv")
    assert as_csv.headers["content-type"].startswith("text/csv")
    rows = {row["department"]: row for row in csv.DictReader(io.StringIO(as_csv.text))}
    assert rows[CC]["satisfaction_rate"] == "0.8333"
    assert rows[WATER]["dispatched"] == "2"
    by_accept = await h.as_role("ops", "GET", url, headers={"accept": "text/csv"})
    assert by_accept.text == as_csv.text

    december = await h.as_role(
        "ops", "GET", "/v1/reports/departments?from=2025-12-01&to=2026-01-01"
    )
    assert [line["dispatched"] for line in december.json()["departments"]] == [1]

    overdue = (await h.as_role("ops", "GET", "/v1/reports/overdue")).json()
    assert sorted(c["case_id"] for c in overdue["cases"]) == ["c10", "c11", "c5", "c6"]
    by_case = {c["case_id"]: c for c in overdue["cases"]}
    assert set(by_case["c5"]["overdue"]) == {"contact", "resolve"}
    assert set(by_case["c6"]["overdue"]) == {"sign_for", "contact", "resolve"}
    assert set(by_case["c11"]["overdue"]) == {"resolve"}


async def test_report_refuses_bad_periods_and_callers(make_harness) -> None:
    h = await make_harness()
    url = "/v1/reports/departments?from=2025-12-01&to=2025-11-01"
    assert (await h.as_role("ops", "GET", url)).status_code == 422
    bad = await h.as_role("ops", "GET", "/v1/reports/departments?from=yesterday&to=2025-11-01")
    assert bad.status_code == 422
    assert "ISO" in bad.json()["detail"]
    assert (await h.as_role("platform", "GET", "/v1/reports/overdue")).status_code == 403
    assert (await h.client.get("/v1/reports/overdue")).status_code == 401
