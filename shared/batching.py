"""Group commit: many concurrent callers, one transaction for what arrived together.

A service that answers each HTTP call or settles each delivery with its own transaction
pays a dozen round trips and a commit per item; under load those, not the work, bound it.
Callers here hand in one item each and wait for their own result; whatever arrived while
the previous write was lingering or running is written by the next single call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

# One result per item, in order: a value, or the exception that item's caller gets.
BatchWrite = Callable[[list[Item]], Awaitable[Sequence[Result | Exception]]]


class GroupCommit(Generic[Item, Result]):
    """Writes submitted items in batches, up to ``concurrency`` batches at a time (one
    transaction waiting on round trips need not hold back the next).

    ``write`` gets the batch and returns one result or exception per item; an exception
    raised by ``write`` itself (the transaction failed) is every caller's answer, as it
    would have been with one transaction each.
    """

    def __init__(
        self,
        write: BatchWrite[Item, Result],
        *,
        linger_seconds: float = 0.005,
        max_batch: int = 500,
        concurrency: int = 1,
    ) -> None:
        self.write = write
        self.linger = linger_seconds
        self.max_batch = max_batch
        self.waiting: list[tuple[Item, asyncio.Future[Result]]] = []
        self.concurrency = concurrency
        self.flushers: set[asyncio.Task[None]] = set()
        self.collecting = 0  # flushers lingering for a batch: a new item joins theirs

    async def submit(self, item: Item) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self.waiting.append((item, future))
        if not self.collecting and len(self.flushers) < self.concurrency:
            flusher = asyncio.create_task(self._flush())
            self.flushers.add(flusher)
            flusher.add_done_callback(self.flushers.discard)
        return await future

    async def _flush(self) -> None:
        while self.waiting:
            self.collecting += 1
            try:
                await asyncio.sleep(self.linger)
            finally:
                self.collecting -= 1
            batch = self.waiting[: self.max_batch]
            del self.waiting[: self.max_batch]
            if not batch:  # another flusher took them
                break
            try:
                results = await self.write([item for item, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"{len(results)} results for {len(batch)} items")
            except Exception as error:  # the transaction failed: each caller raises it
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():  # the caller was cancelled
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)
