"""Waking the actions that wait for a case escalation has not applied yet."""

from __future__ import annotations

from services.escalation.arrivals import Arrivals


async def test_a_landed_case_wakes_its_watchers_and_no_others() -> None:
    arrivals = Arrivals()
    with (
        arrivals.watch("C-1") as first,
        arrivals.watch("C-1") as second,
        arrivals.watch("C-2") as other,
    ):
        arrivals.landed(["C-1", "C-3"])
        assert first.is_set()
        assert second.is_set()
        assert not other.is_set()


async def test_only_waiting_watchers_are_polled_for_and_none_are_left_behind() -> None:
    arrivals = Arrivals()
    with arrivals.watch("C-1"), arrivals.watch("C-2"):
        assert arrivals.waited_for() == []  # watched while its first try runs: not polled
        with arrivals.waiting("C-2"), arrivals.waiting("C-2"):
            assert arrivals.waited_for() == ["C-2"]
        assert arrivals.waited_for() == []
        assert arrivals.watching == 2
    assert arrivals.watching == 0
    arrivals.landed(["C-1"])  # nobody watches: nothing to do, nothing kept
    assert arrivals.watching == 0
