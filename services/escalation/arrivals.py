"""Wake the callers waiting for a case this service has not applied yet.

notify and escalation read the router's dispatch independently, so a department can get
the webhook, and answer it, before escalation has the case: that caller waits for the
dispatch to land instead of being told the case does not exist. A dispatch applied here
wakes its callers at once (``landed``); one applied by another replica, when this
replica's poll of the cases ``waited_for`` finds it.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager


class Arrivals:
    def __init__(self) -> None:
        self._watchers: dict[str, list[asyncio.Event]] = {}
        self._waiting: Counter[str] = Counter()

    @contextmanager
    def watch(self, case_id: str) -> Iterator[asyncio.Event]:
        """An event set whenever ``case_id`` lands while the block runs."""
        event = asyncio.Event()
        self._watchers.setdefault(case_id, []).append(event)
        try:
            yield event
        finally:
            events = self._watchers[case_id]
            events.remove(event)
            if not events:
                del self._watchers[case_id]

    @contextmanager
    def waiting(self, case_id: str) -> Iterator[None]:
        """Marks a watcher of ``case_id`` as waiting for it: the poll looks for it."""
        self._waiting[case_id] += 1
        try:
            yield
        finally:
            self._waiting[case_id] -= 1
            if not self._waiting[case_id]:
                del self._waiting[case_id]

    def waited_for(self) -> list[str]:
        return list(self._waiting)

    def landed(self, case_ids: Iterable[str]) -> None:
        """``case_ids`` were just committed: wake whoever watches them."""
        if not self._watchers:
            return
        for case_id in case_ids:
            for event in self._watchers.get(case_id, ()):
                event.set()

    @property
    def watching(self) -> int:
        return sum(len(events) for events in self._watchers.values())
