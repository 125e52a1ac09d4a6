"""Group commit: items that arrive together share one write; each caller gets its own
result, a failed write fails every caller of that batch and no other."""

from __future__ import annotations

import asyncio

import pytest

from shared.batching import GroupCommit


class Recorder:
    """A write that records its batches and answers each item with a result or a fault."""

    def __init__(self, fail_batch: int | None = None, seconds: float = 0.01) -> None:
        self.batches: list[list[int]] = []
        self.fail_batch = fail_batch
        self.seconds = seconds

    async def write(self, items: list[int]) -> list[int | Exception]:
        self.batches.append(items)
        await asyncio.sleep(self.seconds)  # a transaction's round trips
        if len(self.batches) == self.fail_batch:
            raise ConnectionError("database went away")
        return [ValueError(f"odd {i}") if i % 2 else i * 10 for i in items]


async def _outcome(commit: GroupCommit[int, int], item: int) -> int | str:
    try:
        return await commit.submit(item)
    except Exception as error:
        return f"{type(error).__name__}: {error}"


async def test_items_submitted_together_are_written_in_one_call() -> None:
    recorder = Recorder()
    commit = GroupCommit(recorder.write)
    results = await asyncio.gather(*(commit.submit(i) for i in (0, 2, 4, 6)))
    assert results == [0, 20, 40, 60]
    assert recorder.batches == [[0, 2, 4, 6]]


async def test_each_caller_gets_its_own_result_or_its_own_error() -> None:
    commit = GroupCommit(Recorder().write)
    results = await asyncio.gather(*(_outcome(commit, i) for i in range(4)))
    assert results == [0, "ValueError: odd 1", 20, "ValueError: odd 3"]


async def test_items_arriving_during_a_write_go_in_the_next_batch() -> None:
    recorder = Recorder()
    commit = GroupCommit(recorder.write)
    first = asyncio.gather(*(commit.submit(i) for i in (0, 2)))
    await asyncio.sleep(0.008)  # the first batch is being written
    second = asyncio.gather(*(commit.submit(i) for i in (4, 6)))
    assert (await first, await second) == ([0, 20], [40, 60])
    assert recorder.batches == [[0, 2], [4, 6]]


async def test_a_failed_write_fails_its_batch_only() -> None:
    recorder = Recorder(fail_batch=1)
    commit = GroupCommit(recorder.write)
    first = asyncio.gather(*(_outcome(commit, i) for i in (0, 2)))
    await asyncio.sleep(0.008)
    second = asyncio.gather(*(_outcome(commit, i) for i in (4, 6)))
    assert await first == ["ConnectionError: database went away"] * 2
    assert await second == [40, 60]


async def test_batches_are_capped_at_max_batch() -> None:
    recorder = Recorder()
    commit = GroupCommit(recorder.write, max_batch=3)
    results = await asyncio.gather(*(commit.submit(i * 2) for i in range(7)))
    assert results == [i * 20 for i in range(7)]
    assert [len(batch) for batch in recorder.batches] == [3, 3, 1]


async def test_a_cancelled_caller_does_not_disturb_the_others() -> None:
    recorder = Recorder()
    commit = GroupCommit(recorder.write)
    gone = asyncio.ensure_future(commit.submit(0))
    kept = asyncio.ensure_future(commit.submit(2))
    await asyncio.sleep(0)
    gone.cancel()
    assert await kept == 20
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert recorder.batches == [[0, 2]]


async def test_a_write_answering_the_wrong_number_of_items_fails_the_batch() -> None:
    async def short(items: list[int]) -> list[int]:
        return items[:-1]

    commit = GroupCommit(short)
    results = await asyncio.gather(*(_outcome(commit, i) for i in (1, 2)))
    assert results == ["RuntimeError: 1 results for 2 items"] * 2


async def test_with_concurrency_a_batch_is_written_while_another_is_in_flight() -> None:
    recorder = Recorder(seconds=0.3)
    commit = GroupCommit(recorder.write, concurrency=2)
    first = asyncio.gather(*(commit.submit(i) for i in (0, 2)))
    await asyncio.sleep(0.1)  # the first batch is being written (300 ms)
    second = asyncio.gather(*(commit.submit(i) for i in (4, 6)))
    await asyncio.sleep(0.1)  # the second batch is being written too
    assert recorder.batches == [[0, 2], [4, 6]]
    assert (await first, await second) == ([0, 20], [40, 60])


async def test_without_concurrency_the_next_batch_waits_for_the_write() -> None:
    recorder = Recorder(seconds=0.3)
    commit = GroupCommit(recorder.write)
    first = asyncio.gather(*(commit.submit(i) for i in (0, 2)))
    await asyncio.sleep(0.1)
    second = asyncio.gather(*(commit.submit(i) for i in (4, 6)))
    await asyncio.sleep(0.1)
    assert recorder.batches == [[0, 2]]
    assert (await first, await second) == ([0, 20], [40, 60])
    assert recorder.batches == [[0, 2], [4, 6]]
