# ruff: noqa: F811 - pytest fixtures are imported by name, then requested as arguments
"""The department callback API on a real PostgreSQL: every action, signatures, roles,
idempotency, refusals that change nothing, returns and re-dispatch, Open311 updates."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from urllib.parse import urlencode

import asyncpg
import pytest

from shared.events import utcnow
from shared.webhooks import sign
from tests.integration.escalation_support import Harness, HarnessFactory, make_harness  # noqa: F401

LEAD = "community_committee"
OTHER = "housing_bureau"
WATER = "water_bureau"


# Actions on unknown cases wait a little for their dispatch (the tests of that wait set
# their own): long enough to exercise it, short enough for the 404s the tests expect.
SHORT_WAIT = 0.3


@pytest.fixture
async def h(make_harness) -> Harness:
    return await make_harness(unknown_case_wait_seconds=SHORT_WAIT)


async def test_a_case_goes_through_its_whole_life_and_each_step_is_announced(h: Harness) -> None:
    await h.dispatch("C-1")
    case = (await h.as_role("ops", "GET", "/v1/cases/C-1")).json()
    assert case["state"] == "dispatched"
    assert all(case["clocks"][c]["running"] for c in ("sign_for", "contact", "resolve"))
    timers = await h.fetch("SELECT DISTINCT clock FROM timers WHERE case_id = 'C-1'")
    assert {r["clock"] for r in timers} == {"sign_for", "contact", "resolve"}

    steps = [
        ("sign", {"department": LEAD, "actor": "duty-li"}, "signed"),
        ("contact", {"department": LEAD, "actor": "duty-li", "note": "called"}, "in_progress"),
        ("progress", {"department": LEAD, "note": "truck on its way"}, "in_progress"),
    ]
    for action, body, state in steps:
        response = await h.call("C-1", action, body)
        assert response.status_code == 200, response.text
        assert response.json()["state"] == state
    due = (await h.as_role("ops", "GET", "/v1/cases/C-1")).json()["clocks"]["resolve"]["due"]
    new_due = (utcnow() + timedelta(days=20)).isoformat()
    asked = await h.call(
        "C-1", "extend", {"department": LEAD, "reason": "parts", "new_due": new_due}
    )
    assert asked.status_code == 200
    assert asked.json()["pending_extension"]["reason"] == "parts"
    approved = await h.as_role("supervisor", "POST", "/v1/cases/C-1/extend/approve", json={})
    assert approved.status_code == 200
    assert approved.json()["state"] == "extended"
    assert approved.json()["clocks"]["resolve"]["due"] != due
    resolved = await h.call("C-1", "resolve", {"department": LEAD, "reply": "cleared"})
    assert resolved.json()["state"] == "resolved"
    assert resolved.json()["overdue"] is False
    rated = await h.as_role(
        "platform", "POST", "/v1/cases/C-1/feedback", json={"rating": "satisfied"}
    )
    assert rated.status_code == 200
    assert rated.json()["state"] == "closed"

    announced = [
        "deadlines_set", "signed", "contacted", "progressed", "extension_requested",
        "extended", "deadlines_set", "resolved", "rated", "closed",
    ]  # fmt: skip
    assert await h.outbox_types("C-1") == announced
    assert await h.fetch("SELECT * FROM timers WHERE case_id = 'C-1'") == []
    view = (await h.as_role("ops", "GET", "/v1/cases/C-1")).json()
    # The timeline: the router's dispatch, then every event escalation announced.
    assert [e["type"].split(".")[2] for e in view["timeline"]] == ["dispatched", *announced]
    assert view["timeline"][2]["actor"] == "duty-li"
    assert h.metric("time_to_sign_seconds_count", {"department": LEAD}) == 1
    assert h.metric("time_to_resolve_seconds_count", {"department": LEAD}) == 1


async def test_extension_moves_the_resolve_timers_to_the_new_deadline(h: Harness) -> None:
    await h.dispatch("C-2")
    await h.call("C-2", "sign", {"department": LEAD})
    new_due = (utcnow() + timedelta(days=30)).replace(microsecond=0)
    await h.call(
        "C-2", "extend", {"department": LEAD, "reason": "x", "new_due": new_due.isoformat()}
    )
    await h.as_role("supervisor", "POST", "/v1/cases/C-2/extend/approve", json={"note": "ok"})
    rows = await h.fetch(
        "SELECT DISTINCT deadline FROM timers WHERE case_id='C-2' AND clock='resolve'"
    )
    assert [r["deadline"] for r in rows] == [new_due]
    deadlines = [e for e in await h.outbox("C-2") if e.type.endswith("deadlines_set.v1")]
    assert deadlines[-1].data["resolve_due"].startswith(new_due.isoformat()[:19])
    assert deadlines[-1].data["reason"] == "extended"


async def test_supervisor_endpoints_need_the_supervisor_role(h: Harness) -> None:
    await h.dispatch("C-3")
    await h.call("C-3", "sign", {"department": LEAD})
    later = (utcnow() + timedelta(days=30)).isoformat()
    await h.call("C-3", "extend", {"department": LEAD, "reason": "x", "new_due": later})
    before = await h.snapshot("C-3")
    assert (await h.client.post("/v1/cases/C-3/extend/approve", json={})).status_code == 401
    ops = await h.as_role("ops", "POST", "/v1/cases/C-3/extend/approve", json={})
    assert ops.status_code == 403
    assert await h.snapshot("C-3") == before
    refused = await h.as_role(
        "supervisor", "POST", "/v1/cases/C-3/extend/refuse", json={"reason": "not justified"}
    )
    assert refused.status_code == 200
    assert refused.json()["pending_extension"] is None
    assert (await h.outbox_types("C-3"))[-1] == "extension_refused"


async def test_bad_signatures_get_401_and_change_nothing(h: Harness) -> None:
    await h.dispatch("C-4")
    before = await h.snapshot("C-4")
    body = {"department": LEAD, "actor": "duty-li"}
    wrong_secret = await h.call("C-4", "sign", body, secret_of=WATER)
    stale = await h.call("C-4", "sign", body, timestamp=utcnow() - timedelta(minutes=6))
    raw, headers = h.signed(body)
    tampered = await h.client.post(
        "/v1/cases/C-4/sign", content=raw.replace(b"duty-li", b"duty-xx"), headers=headers
    )
    unsigned = await h.client.post("/v1/cases/C-4/sign", json=body)
    for response in (wrong_secret, stale, tampered, unsigned):
        assert response.status_code == 401, response.text
        assert "signature refused" in response.json()["detail"]
    assert await h.snapshot("C-4") == before


async def test_a_replayed_webhook_id_on_another_request_gets_401(h: Harness) -> None:
    await h.dispatch("C-5")
    first = await h.call("C-5", "sign", {"department": LEAD}, webhook_id="msg_fixed")
    assert first.status_code == 200
    before = await h.snapshot("C-5")
    replay = await h.call(
        "C-5", "progress", {"department": LEAD, "note": "x"}, webhook_id="msg_fixed"
    )
    assert replay.status_code == 401
    assert "replay" in replay.json()["detail"]
    assert await h.snapshot("C-5") == before


async def test_the_same_callback_twice_gives_the_same_answer_once(h: Harness) -> None:
    await h.dispatch("C-6")
    raw, headers = h.signed({"department": LEAD, "actor": "duty-li", "note": "mine"})
    first = await h.client.post("/v1/cases/C-6/sign", content=raw, headers=headers)
    second = await h.client.post("/v1/cases/C-6/sign", content=raw, headers=headers)
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    assert (await h.outbox_types("C-6")).count("signed") == 1
    # The same signature again under a new webhook-id is also answered without a new event.
    third = await h.call("C-6", "sign", {"department": LEAD, "actor": "duty-li"})
    assert third.status_code == 200
    assert (await h.outbox_types("C-6")).count("signed") == 1
    assert h.metric("transitions_total", {"action": "sign", "outcome": "repeat"}) == 2


async def test_a_department_not_holding_the_case_gets_403_and_changes_nothing(h: Harness) -> None:
    await h.dispatch("C-7")
    before = await h.snapshot("C-7")
    for action, body in (
        ("sign", {"department": WATER}),
        ("resolve", {"department": WATER, "reply": "done"}),
        ("return", {"department": WATER, "reason": "not ours"}),
    ):
        response = await h.call("C-7", action, body)
        assert response.status_code == 403, response.text
        assert "does not hold" in response.json()["detail"]
    assert await h.snapshot("C-7") == before


async def test_illegal_transitions_get_409_and_change_nothing(h: Harness) -> None:
    await h.dispatch("C-8")
    before = await h.snapshot("C-8")
    unsigned = await h.call("C-8", "resolve", {"department": LEAD, "reply": "done"})
    assert unsigned.status_code == 409
    assert "sign for it first" in unsigned.json()["detail"]
    early_contact = await h.call("C-8", "contact", {"department": LEAD})
    assert early_contact.status_code == 409
    rating = await h.as_role(
        "platform", "POST", "/v1/cases/C-8/feedback", json={"rating": "satisfied"}
    )
    assert rating.status_code == 409
    assert await h.snapshot("C-8") == before
    await h.call("C-8", "sign", {"department": LEAD, "actor": "a"})
    other_signer = await h.call("C-8", "sign", {"department": LEAD, "actor": "b"})
    assert other_signer.status_code == 409
    assert "already signed" in other_signer.json()["detail"]
    await h.call("C-8", "resolve", {"department": LEAD, "reply": "done"})
    await h.as_role(
        "platform", "POST", "/v1/cases/C-8/feedback", json={"rating": "basically_satisfied"}
    )
    closed = await h.snapshot("C-8")
    for action, body in (
        ("progress", {"department": LEAD, "note": "more"}),
        ("resolve", {"department": LEAD, "reply": "again"}),
        ("extend", {"department": LEAD, "reason": "x", "new_due": utcnow().isoformat()}),
    ):
        response = await h.call("C-8", action, body)
        assert response.status_code == 409
        assert "closed" in response.json()["detail"]
    assert await h.snapshot("C-8") == closed


async def test_bad_bodies_and_unknown_cases(h: Harness) -> None:
    await h.dispatch("C-9")
    await h.call("C-9", "sign", {"department": LEAD})
    before = await h.snapshot("C-9")
    missing_reply = await h.call("C-9", "resolve", {"department": LEAD})
    assert missing_reply.status_code == 422
    assert "reply" in missing_reply.json()["detail"]
    naive_date = await h.call(
        "C-9", "extend", {"department": LEAD, "reason": "x", "new_due": "2030-01-01T00:00:00"}
    )
    assert naive_date.status_code == 422
    not_json = await h.client.post("/v1/cases/C-9/sign", content=b"{nope", headers={})
    assert not_json.status_code == 400
    assert await h.snapshot("C-9") == before
    unknown = await h.call("NO-SUCH", "sign", {"department": LEAD})
    assert unknown.status_code == 404
    assert (await h.as_role("ops", "GET", "/v1/cases/NO-SUCH")).status_code == 404
    assert (await h.client.get("/v1/cases/C-9")).status_code == 401
    assert (await h.as_role("app", "GET", "/v1/cases/C-9")).status_code == 403


async def test_return_then_redispatch_then_return_again_then_triage(h: Harness) -> None:
    await h.dispatch("C-10")
    await h.call("C-10", "sign", {"department": LEAD})
    returned = await h.call("C-10", "return", {"department": LEAD, "reason": "a water main"})
    assert returned.status_code == 200
    assert returned.json()["state"] == "returned"
    event = (await h.outbox("C-10"))[-1]
    assert event.type == "civicroute.case.returned.v1"
    assert event.data["return_count"] == 1
    assert event.data["excluded"] == [LEAD]
    assert await h.fetch("SELECT * FROM timers WHERE case_id = 'C-10'") == []

    # The router re-routes it, without the department that returned it.
    await h.dispatch("C-10", lead=WATER, attempt=2, excluded=[LEAD])
    view = (await h.as_role("ops", "GET", "/v1/cases/C-10")).json()
    assert (view["state"], view["lead"], view["attempt"]) == ("dispatched", WATER, 2)
    assert view["clocks"]["sign_for"]["running"]
    assert view["clocks"]["sign_for"]["met_at"] is None
    assert (await h.call("C-10", "progress", {"department": LEAD, "note": "x"})).status_code == 403
    deadlines = [e for e in await h.outbox("C-10") if e.type.endswith("deadlines_set.v1")]
    assert deadlines[-1].data["department"] == WATER
    assert deadlines[-1].data["reason"] == "redispatched"

    second = await h.call("C-10", "return", {"department": WATER, "reason": "sewer, not supply"})
    assert (await h.outbox("C-10"))[-1].data["excluded"] == [LEAD, WATER]
    assert second.json()["return_count"] == 2
    await h.triage("C-10")
    view = (await h.as_role("ops", "GET", "/v1/cases/C-10")).json()
    assert view["state"] == "triage"
    assert not any(view["clocks"][c]["running"] for c in view["clocks"])
    assert await h.fetch("SELECT * FROM timers WHERE case_id = 'C-10'") == []
    # A human routes it: a fresh assignment with fresh clocks.
    await h.dispatch("C-10", lead="district_government", attempt=3, excluded=[LEAD, WATER])
    rows = await h.fetch(
        "SELECT attempt, department, returned FROM assignments"
        " WHERE case_id = 'C-10' ORDER BY attempt"
    )
    assert [tuple(r) for r in rows] == [
        (1, LEAD, True),
        (2, WATER, True),
        (3, "district_government", False),
    ]


async def test_redelivered_and_stale_router_events_change_nothing(h: Harness) -> None:
    event = await h.dispatch("C-11")
    await h.call("C-11", "sign", {"department": LEAD})
    before = await h.snapshot("C-11")
    await h.redeliver(event)  # same CloudEvents id
    await h.dispatch("C-11")  # same attempt under a new id
    assert await h.snapshot("C-11") == before


async def test_no_department_may_rate_a_case_not_even_its_own(h: Harness) -> None:
    await h.dispatch("C-12")
    await h.call("C-12", "sign", {"department": LEAD})
    await h.call("C-12", "resolve", {"department": LEAD, "reply": "cleared"})
    before = await h.snapshot("C-12")
    app_client = await h.as_role(
        "app", "POST", "/v1/cases/C-12/feedback", json={"rating": "unsatisfied"}
    )
    assert app_client.status_code == 403
    for department in (WATER, LEAD):  # another department, then the lead itself
        signed = await h.call("C-12", "feedback", {"department": department, "rating": "satisfied"})
        assert signed.status_code == 403
        assert "cannot rate" in signed.json()["detail"]
    assert await h.snapshot("C-12") == before
    assert (await h.outbox_types("C-12"))[-1] != "rated"


async def test_citizen_side_unsatisfied_rating_reopens_the_case(h: Harness) -> None:
    await h.dispatch("C-12")
    await h.call("C-12", "sign", {"department": LEAD})
    await h.call("C-12", "resolve", {"department": LEAD, "reply": "cleared"})
    reopened = await h.as_role(
        "platform",
        "POST",
        "/v1/cases/C-12/feedback",
        json={"rating": "unsatisfied", "note": "still dirty", "actor": "op-017"},
    )
    assert reopened.status_code == 200
    assert reopened.json()["state"] == "reopened"
    assert reopened.json()["clocks"]["resolve"]["running"]
    assert (await h.outbox_types("C-12"))[-3:] == ["rated", "reopened", "deadlines_set"]
    timers = await h.fetch("SELECT DISTINCT clock FROM timers WHERE case_id = 'C-12'")
    assert [r["clock"] for r in timers] == ["resolve"]


async def test_timeline_rows_cannot_be_changed_or_removed(h: Harness) -> None:
    await h.dispatch("C-13")
    async with h.pool.acquire() as conn:
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await conn.execute("UPDATE timeline SET type = 'x'")
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await conn.execute("DELETE FROM timeline")


async def test_open311_updates_drive_the_same_actions(h: Harness) -> None:
    await h.dispatch("C-14", lead=WATER, category="water.pollution_supply")

    async def update(fields: dict[str, str], fmt: str = "json", secret_of: str = WATER):
        raw = urlencode(fields).encode()
        headers = sign(h.secrets[secret_of], f"msg_{uuid.uuid4().hex}", raw)
        headers["content-type"] = "application/x-www-form-urlencoded; charset=utf-8"
        return await h.client.post(
            f"/open311/v2/servicerequestupdates.{fmt}", content=raw, headers=headers
        )

    base = {"service_request_id": "C-14", "department": WATER}
    opened = await update({**base, "status": "OPEN"})
    assert opened.status_code == 200
    assert opened.json()[0]["update_id"]
    fixed = await update({**base, "status": "FIXED", "description": "valve replaced"}, fmt="xml")
    assert fixed.status_code == 200
    assert "<update_id>" in fixed.text
    assert (await h.outbox_types("C-14"))[-2:] == ["signed", "resolved"]
    resolved = next(e for e in await h.outbox("C-14") if e.type.endswith("resolved.v1"))
    assert resolved.data["reply"] == "valve replaced"
    reopen = await update({**base, "status": "REOPEN"})
    assert reopen.status_code == 400
    assert "rating" in reopen.json()[0]["description"]
    forged = await update({**base, "status": "IN_PROGRESS"}, secret_of=LEAD)
    assert forged.status_code == 401
    assert forged.json()[0]["code"] == 401
    not_held = await update({**base, "department": LEAD, "status": "IN_PROGRESS"}, secret_of=LEAD)
    assert not_held.status_code == 403


async def test_open_case_gauges_count_each_open_state_and_leave_closed_cases_out(
    h: Harness,
) -> None:
    await h.dispatch("C-15")
    await h.dispatch("C-16")
    await h.call("C-16", "sign", {"department": LEAD})
    await h.dispatch("C-17")
    await h.call("C-17", "sign", {"department": LEAD})
    await h.call("C-17", "resolve", {"department": LEAD, "reply": "done"})
    rated = await h.as_role(
        "platform", "POST", "/v1/cases/C-17/feedback", json={"rating": "satisfied"}
    )
    assert rated.json()["state"] == "closed"
    await h.escalation.refresh_gauges()
    assert h.metric("open_cases", {"state": "dispatched"}) == 1
    assert h.metric("open_cases", {"state": "signed"}) == 1
    assert h.metric("open_cases", {"state": "resolved"}) == 0
    assert h.metric("open_cases", {"state": "closed"}) is None


async def test_replicas_export_the_gauges_one_of_them_computed_in_the_interval(
    make_harness: HarnessFactory,
) -> None:
    first, second = await make_harness(), await make_harness()
    await first.dispatch("C-G1")
    await first.escalation.refresh_gauges()
    kept = await first.fetch("SELECT name, computed_at, value FROM gauge_snapshots ORDER BY name")
    await first.dispatch("C-G2")
    await second.escalation.refresh_gauges()
    # Within the interval the second replica exports the first one's count, not its own.
    assert second.metric("open_cases", {"state": "dispatched"}) == 1
    assert (
        await first.fetch("SELECT name, computed_at, value FROM gauge_snapshots ORDER BY name")
        == kept
    )


async def test_gauges_older_than_their_interval_are_recomputed(
    make_harness: HarnessFactory,
) -> None:
    h = await make_harness(metrics_refresh_seconds=0.05)
    await h.dispatch("C-G1")
    await h.escalation.refresh_gauges()
    assert h.metric("open_cases", {"state": "dispatched"}) == 1
    await h.dispatch("C-G2")
    await asyncio.sleep(0.1)
    await h.escalation.refresh_gauges()
    assert h.metric("open_cases", {"state": "dispatched"}) == 2


async def test_callbacks_arriving_together_are_each_answered_as_if_alone(h: Harness) -> None:
    """Concurrent callbacks share transactions; each still gets its own answer, a refusal
    changes nothing and a webhook-id seen twice in one batch is applied once."""
    cases = [f"C-B{i}" for i in range(12)]
    for case_id in cases:
        await h.dispatch(case_id)
    refused_before = await h.snapshot("C-B11")
    twice, twice_headers = h.signed({"department": LEAD, "actor": "duty-li"}, webhook_id="tw")
    altered, altered_headers = h.signed({"department": LEAD, "actor": "duty-wang"}, webhook_id="tw")
    posts = [
        *(h.call(case_id, "sign", {"department": LEAD}) for case_id in cases[:10]),
        h.client.post("/v1/cases/C-B10/sign", content=twice, headers=twice_headers),
        h.client.post("/v1/cases/C-B10/sign", content=twice, headers=twice_headers),
        h.client.post("/v1/cases/C-B10/sign", content=altered, headers=altered_headers),
        h.call("C-B11", "resolve", {"department": LEAD, "reply": "done"}),  # not signed: 409
        h.call("C-B99", "sign", {"department": LEAD}),  # no such case: 404
        h.call("C-B3", "progress", {"department": LEAD, "note": "crew sent"}),
    ]
    responses = await asyncio.gather(*posts)
    statuses = [r.status_code for r in responses]
    assert statuses[:10] == [200] * 10
    assert statuses[10:12] == [200, 200]
    assert responses[10].json() == responses[11].json()
    assert statuses[12] == 401
    assert "replay" in responses[12].json()["detail"]
    assert statuses[13:15] == [409, 404]
    # The progress note may be decided before or after C-B3's sign-for, like two calls
    # racing; either way it is answered for what it found.
    assert statuses[15] in (200, 409)
    for case_id in cases[:11]:
        assert (await h.outbox_types(case_id)).count("signed") == 1, case_id
    # Its case, assignment, timeline and timers as they were (the outbox grew for others).
    assert (await h.snapshot("C-B11"))[:4] == refused_before[:4]
    assert "resolved" not in await h.outbox_types("C-B11")
    written_in = await h.fetch(
        "SELECT count(DISTINCT xmin::text) AS transactions, count(*) AS callbacks"
        " FROM callbacks WHERE case_id LIKE 'C-B%'"
    )
    assert written_in[0]["callbacks"] == 11 + (statuses[15] == 200)
    assert written_in[0]["transactions"] < written_in[0]["callbacks"]


async def test_a_refused_callback_may_come_again_under_its_webhook_id(h: Harness) -> None:
    """A department whose callback waited longer than the dispatch took gets 404; its
    retry of the very same request succeeds once the case is there."""
    raw, headers = h.signed({"department": LEAD, "actor": "duty-li"}, webhook_id="early")
    too_early = await h.client.post("/v1/cases/C-E1/sign", content=raw, headers=headers)
    assert too_early.status_code == 404
    await h.dispatch("C-E1")
    retried = await h.client.post("/v1/cases/C-E1/sign", content=raw, headers=headers)
    assert retried.status_code == 200, retried.text
    assert retried.json()["state"] == "signed"


async def test_a_callback_that_overtakes_its_dispatch_waits_for_it_and_is_answered(
    make_harness: HarnessFactory,
) -> None:
    """notify can deliver the dispatch before escalation has applied it: the department's
    prompt sign-for is held until the case lands, not refused as unknown."""
    h = await make_harness()  # the default wait
    sign = asyncio.create_task(h.call("C-W1", "sign", {"department": LEAD, "actor": "duty-li"}))
    await asyncio.sleep(0.5)
    assert not sign.done(), "answered before the case existed"
    await h.dispatch("C-W1")
    response = await asyncio.wait_for(sign, 5)
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "signed"
    assert (await h.outbox_types("C-W1")).count("signed") == 1
    assert h.metric("unknown_case_waits_total", {"outcome": "found"}) == 1
    assert h.escalation.arrivals.watching == 0


async def test_a_callback_waits_for_a_dispatch_another_replica_applies(
    make_harness: HarnessFactory,
) -> None:
    """The replica answering the callback need not be the one consuming the dispatch: it
    looks for the case again until it is there."""
    answering, consuming = await make_harness(), await make_harness()
    stop = asyncio.Event()
    poll = asyncio.create_task(answering.escalation.arrival_loop(stop))
    try:
        sign = asyncio.create_task(answering.call("C-W2", "sign", {"department": LEAD}))
        await asyncio.sleep(0.3)
        assert answering.escalation.arrivals.waited_for() == ["C-W2"]
        await consuming.dispatch("C-W2")
        response = await asyncio.wait_for(sign, 5)
    finally:
        stop.set()
        await poll
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "signed"
    assert answering.escalation.arrivals.waited_for() == []


async def test_an_action_on_a_case_that_never_comes_gets_404_after_the_wait_and_changes_nothing(
    make_harness: HarnessFactory,
) -> None:
    h = await make_harness(unknown_case_wait_seconds=1.0)
    outbox_before = await h.fetch("SELECT count(*) AS n FROM outbox")
    started = asyncio.get_running_loop().time()
    raw, headers = h.signed({"department": LEAD}, webhook_id="never")
    response = await h.client.post("/v1/cases/C-NEVER/sign", content=raw, headers=headers)
    waited = asyncio.get_running_loop().time() - started
    assert response.status_code == 404
    assert "C-NEVER" in response.json()["detail"]
    assert waited >= 1.0, "refused before the wait was over"
    assert await h.fetch("SELECT 1 FROM cases WHERE case_id = 'C-NEVER'") == []
    assert await h.fetch("SELECT 1 FROM callbacks WHERE webhook_id = 'never'") == []
    assert await h.fetch("SELECT count(*) AS n FROM outbox") == outbox_before
    assert h.metric("unknown_case_waits_total", {"outcome": "not_found"}) == 1
    assert h.escalation.arrivals.watching == 0


async def test_with_no_wait_configured_an_unknown_case_is_refused_at_once(
    make_harness: HarnessFactory,
) -> None:
    h = await make_harness(unknown_case_wait_seconds=0)
    response = await h.call("C-NONE", "sign", {"department": LEAD})
    assert response.status_code == 404
    assert h.metric("unknown_case_waits_total", {"outcome": "not_found"}) is None


async def test_a_bad_callback_sent_beside_a_good_one_is_refused_alone(h: Harness) -> None:
    await h.dispatch("C-30", lead=LEAD)
    await h.dispatch("C-31", lead=WATER)
    before = (await h.snapshot("C-30"))[:4], await h.outbox_types("C-30")
    bad, good = await asyncio.gather(
        h.call("C-30", "sign", {"department": LEAD, "note": "on it\u0000"}),
        h.call("C-31", "sign", {"department": WATER, "note": "crew on the way"}),
    )
    assert bad.status_code == 400
    assert "NUL" in bad.json()["detail"]
    assert good.status_code == 200, good.text
    # the refused one changed nothing of its case (the good one's events fill the outbox)
    assert ((await h.snapshot("C-30"))[:4], await h.outbox_types("C-30")) == before
    assert "signed" in await h.outbox_types("C-31")
