"""intake's set-based acceptance on real PostgreSQL: a batch's outcomes, in order."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from services.intake.store import Submission, accept_many
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
