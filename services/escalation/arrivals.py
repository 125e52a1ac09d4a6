"""Wake the callers waiting for a case this replica is about to apply.

notify and escalation read the router's dispatch independently, so a department can get
the webhook, and answer it, before escalation has the case: that caller waits for the
dispatch to land here instead of being told the case does not exist. A dispatch applied
by another replica is found by the caller's own polling; this only saves the wait when
it is applied here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from contextlib import contextmanager


class Arrivals:
    def __init__(self) -> None:
        self._watchers: dict[str, list[asyncio.Event]] = {}

    @contextmanager
    def watch(self, case_id: str) -> Iterator[asyncio.Event]:
        """An event set whenever ``case_id`` is applied here while the block runs."""
        event = asyncio.Event()
        self._watchers.setdefault(case_id, []).append(event)
        try:
            yield event
        finally:
            events = self._watchers[case_id]
            events.remove(event)
            if not events:
                del self._watchers[case_id]

    def landed(self, case_ids: Iterable[str]) -> None:
        """``case_ids`` were just committed: wake whoever waits for them."""
        if not self._watchers:
            return
        for case_id in case_ids:
            for event in self._watchers.get(case_id, ()):
                event.set()

    @property
    def waiting(self) -> int:
        return sum(len(events) for events in self._watchers.values())
