"""Garbage-collector settings for long-running processes.

CPython collects its young generation after every 700 net container allocations.
Under load a service makes that many within a batch, so collections ran thousands
of times a minute (escalation: 3,279 in one 30 s run at 200 requests/s, warm-up and
drain included), promoted the batch in hand to the older generations, and
their collections walked every object made at startup (modules, schemas, the city
pack) in pauses of up to about 90 ms: 10–17 % of notify's and escalation's CPU at
200 requests/s (docs/performance.md). What exists once a process has started
lives as long as the process, so it is frozen out of collection; the young
generation is collected less often, so a batch's objects are freed by reference
counting before a collection sees them. Cyclic garbage is still reclaimed, in
larger steps — except among frozen objects: something made at startup and dropped
later inside a reference cycle (a Kafka producer replaced after a broker restart)
stays, a few such objects in a process's life.
"""

from __future__ import annotations

import gc

YOUNG_GENERATION_THRESHOLD = 20_000


def settle_heap() -> None:
    """Freeze what exists now and collect the young generation less often."""
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, middle, oldest)
