"""intake's set-based writes on real PostgreSQL: a batch's outcomes and changes, in order."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from services.intake.lifecycle import Change
from services.intake.store import Submission, accept_many, apply_changes
from shared.channels import SubmittedRequest
from tests.integration.intake_support import IntakeEnv
from tests.integration.test_intake_http import APP, GRID, HOTLINE

RECEIVED = datetime(2026, 3, 10, 8, 30, tzinfo=UTC)


def submission(payload: dict[str, Any], category: str | None = None) -> Submission:
    return Submission(SubmittedRequest.model_validate(payload).root, RECEIVED, category)


async def test_a_batch_says_in_order_which_requests_are_new_repeated_or_in_conflict(
    intake_env: IntakeEnv,
) -> None:
    async with intake_env.pool.acquire() as conn, conn.transaction():
        (earlier,) = await accept_many(conn, [submission(GRID)])

    batch = [
        submission(HOTLINE, "sanitation.litter"),
        submission(GRID),  # accepted before this batch
        submission(HOTLINE),  # the same request again, within the batch
        submission(APP),
        submission(APP | {"text": "另一件事"}),  # same identity, other content
    ]
    async with intake_env.pool.acquire() as conn, conn.transaction():
        outcomes = await accept_many(conn, batch)

    hotline, grid, hotline_again, app, app_changed = outcomes
    assert (hotline.created, hotline.conflict) == (True, False)
    assert (grid.case_id, grid.created, grid.conflict) == (earlier.case_id, False, False)
    assert (hotline_again.case_id, hotline_again.created) == (hotline.case_id, False)
    assert hotline_again.conflict is False
    assert hotline_again.request is None
    assert (app.created, app.conflict) == (True, False)
    assert (app_changed.case_id, app_changed.created, app_changed.conflict) == (
        app.case_id,
        False,
        True,
    )
    assert hotline.request is not None
    assert hotline.request.case_id == hotline.case_id
    assert hotline.case_id.startswith("CR260310")
    rows = await intake_env.sql(
        "SELECT r.source_ref, r.case_id, s.state, s.category FROM requests r"
        " JOIN case_status s USING (case_id)"
    )
    assert {r["source_ref"]: (r["case_id"], r["state"], r["category"]) for r in rows} == {
        GRID["source_ref"]: (earlier.case_id, "received", None),
        HOTLINE["source_ref"]: (hotline.case_id, "received", "sanitation.litter"),
        APP["source_ref"]: (app.case_id, "received", None),
    }


async def test_concurrent_batches_with_a_shared_request_store_it_once_and_agree_on_its_case(
    intake_env: IntakeEnv,
) -> None:
    first_holds = asyncio.Event()
    release = asyncio.Event()

    async def first() -> list[Any]:
        async with intake_env.pool.acquire() as conn, conn.transaction():
            outcomes = await accept_many(conn, [submission(HOTLINE), submission(GRID)])
            first_holds.set()
            await release.wait()  # the second batch meets this one's uncommitted rows
            return outcomes

    async def second() -> list[Any]:
        await first_holds.wait()
        async with intake_env.pool.acquire() as conn, conn.transaction():
            return await accept_many(conn, [submission(APP), submission(HOTLINE)])

    first_task = asyncio.create_task(first())
    second_task = asyncio.create_task(second())
    await first_holds.wait()
    await asyncio.sleep(0.3)  # let the second insert block on the first's row
    assert not second_task.done()
    release.set()
    (hotline, grid), (app, hotline_seen) = await asyncio.gather(first_task, second_task)

    assert hotline.created
    assert grid.created
    assert app.created
    assert (hotline_seen.case_id, hotline_seen.created, hotline_seen.conflict) == (
        hotline.case_id,
        False,
        False,
    )
    assert await intake_env.count("requests") == 3
    assert await intake_env.count("case_status") == 3


def _lifecycle(case_id: str, start: datetime) -> list[Change]:
    """A case's events as intake projects them, one of each kind of status change."""
    hour = timedelta(hours=1)
    return [
        Change(
            case_id,
            "deadlines_set",
            None,
            department="d0",
            resolve_due=start + 9 * hour,
            in_history=False,
        ),
        Change(case_id, "dispatched", start + hour, "dispatched", "d1", "water.leak"),
        Change(case_id, "signed", start + 2 * hour, "signed", "d2"),
        Change(case_id, "rated", start + 3 * hour, None, "d2", note="satisfied"),
        Change(case_id, "progressed", start + 4 * hour, "in_progress", "d1", note="digging"),
        Change(case_id, "returned", start + 5 * hour, "returned"),
        Change(case_id, "dispatched", start + 6 * hour, "dispatched", "d3", "roads.pothole"),
        # Late on the wire: the shown time never goes back.
        Change(case_id, "resolved", start + 5 * hour, "resolved", "d3", note="filled"),
        # A step that moves no state leaves the state, department and shown note.
        Change(case_id, "rated", start + 7 * hour, None, "d4", note="satisfied"),
    ]


async def _projection(env: IntakeEnv, case_id: str) -> tuple[Any, ...]:
    [status] = await env.sql(
        "SELECT state, category, department, resolve_due, status_notes, updated_at"
        " FROM case_status WHERE case_id = $1",
        case_id,
    )
    history = await env.sql(
        "SELECT at, kind, state, department, note FROM case_history"
        " WHERE case_id = $1 ORDER BY at, kind",
        case_id,
    )
    return tuple(status), [tuple(h) for h in history]


async def test_a_batch_of_case_events_shows_what_applying_them_one_by_one_shows(
    intake_env: IntakeEnv,
) -> None:
    """Several events for one case in a batch fold in order, as if applied one by one."""
    # Ahead of the clock, so the event without a time (stamped now()) is the oldest.
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    async with intake_env.pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO case_status (case_id, state, category, updated_at)"
            " SELECT unnest($1::text[]), 'received', 'water.hint', $2",
            ["batched", "one-by-one"],
            start,
        )
    batched = _lifecycle("batched", start)
    quiet = [Change("quiet", "signed", start, "signed", "d9")]
    unknown = [Change("unheard", "rated", start, None, note="satisfied")]
    # Interleaved as a consumer batch would bring them, each case's own in order.
    batch = [*batched[:3], *quiet, *unknown, *batched[3:]]
    async with intake_env.pool.acquire() as conn, conn.transaction():
        await apply_changes(conn, [(f"b{n}", change) for n, change in enumerate(batch)])
    for n, change in enumerate([*_lifecycle("one-by-one", start)]):
        async with intake_env.pool.acquire() as conn, conn.transaction():
            await apply_changes(conn, [(f"s{n}", change)])

    status, history = await _projection(intake_env, "batched")
    assert (status, history) == await _projection(intake_env, "one-by-one")
    hour = timedelta(hours=1)
    assert status == (
        "resolved",
        "roads.pothole",
        "d3",  # a re-dispatch names the department; other steps do not change it
        start + 9 * hour,
        "filled",
        start + 7 * hour,
    )
    assert [h[1] for h in history] == [
        "dispatched",
        "signed",
        "rated",
        "progressed",
        "resolved",  # at the same time as the return: ordered by kind
        "returned",
        "dispatched",
        "rated",
    ]
    assert (await _projection(intake_env, "quiet"))[0][:3] == ("signed", None, "d9")
    # First heard of through an event that moves no state: shown as received.
    unheard, _ = await _projection(intake_env, "unheard")
    assert unheard[0] == "received"
