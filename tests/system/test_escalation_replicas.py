"""Escalation as real processes over real Kafka and PostgreSQL: two replicas share the
timers (one killed mid-way), and timers missed while every replica was down fire once."""

from __future__ import annotations

import asyncio
import itertools
import statistics
from collections import Counter
from pathlib import Path

import pytest

from deploy.local.demo import demo_payloads
from deploy.local.stack import ServiceSet
from tests.helpers import eventually
from tests.integration.escalation_support import set_sla

pytestmark = [pytest.mark.system]

ESCALATED = "civicroute.case.escalated.v1"
POLICY = {"sign_for": "2s", "contact": "1d", "resolve": "7d"}
LADDER = [
    {"level": 1, "after": "0s", "repeat": "1s", "targets": ["duty_contact", "supervisor"]},
    {"level": 2, "after": "2s", "targets": ["district_supervision"]},
]


def escalations(system) -> Counter[tuple[str, str, int, int]]:  # type: ignore[no-untyped-def]
    """Distinct escalation events (by CloudEvents id) the lead departments received."""
    seen: dict[str, tuple[str, str, int, int]] = {}
    for item in system.receiver.of_type(ESCALATED):
        data = item.event["data"]
        seen[item.event["id"]] = (item.case_id, data["clock"], data["level"], data["repeat"])
    return Counter(seen.values())


async def test_two_escalation_replicas_fire_each_timer_once_even_when_one_is_killed(
    make_system, city_pack: Path, tmp_path: Path
) -> None:
    set_sla(city_pack, POLICY, LADDER)
    system = await make_system(auto_sign=False)
    second = ServiceSet(tmp_path / "replica-2", system.services.env)
    second.start("escalation")
    try:
        payloads = list(itertools.islice(demo_payloads(seed=5), 40))
        for payload in payloads:
            await system.submit(payload)
        await eventually(lambda: len(escalations(system)) >= 20, timeout=90, message="first")
        system.services.kill("escalation")  # one replica dies; the other carries on
        # Per case: L1, L1's one repeat (1 s < L2's 2 s), L2.
        await eventually(
            lambda: len(escalations(system)) >= 120, timeout=120, message="120 escalations"
        )
        await asyncio.sleep(3)
        counts = escalations(system)
        assert len(counts) == 120
        assert set(counts.values()) == {1}, "an escalation was sent twice"
        rows = await system.sql("SELECT fired_at - due_at AS late FROM escalation.escalations")
        late = sorted(r["late"].total_seconds() for r in rows)
        print(
            f"\n[system lateness, 2 replicas, one killed] n={len(late)} "
            f"p50={statistics.median(late) * 1000:.0f}ms max={late[-1] * 1000:.0f}ms"
        )
    finally:
        second.stop()


async def test_timers_missed_while_every_replica_was_down_fire_once_after_restart(
    make_system, city_pack: Path
) -> None:
    set_sla(city_pack, POLICY, LADDER)
    system = await make_system(auto_sign=False)
    for payload in itertools.islice(demo_payloads(seed=9), 10):
        await system.submit(payload)
    await eventually(
        lambda: system.sql("SELECT 1 FROM escalation.cases HAVING count(*) = 10"),
        timeout=60,
        message="10 cases taken",
    )
    system.services.stop("escalation")
    await asyncio.sleep(6)  # deadline, L1's repeats and L2 all pass while nobody runs
    system.services.start("escalation")
    await eventually(lambda: len(escalations(system)) >= 20, timeout=60, message="catch-up")
    await asyncio.sleep(3)
    counts = escalations(system)
    assert set(counts.values()) == {1}
    assert sorted({(level, repeat) for _, _, level, repeat in counts}) == [(1, 0), (2, 0)]
    assert len(counts) == 20
