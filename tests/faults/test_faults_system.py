"""Fault injection under a steady stream: nothing lost, nothing twice, timers once.

Each test runs the four services on the module's private Apache Kafka broker
and PostgreSQL, publishes demo requests (all three channels; every fifth one's
lead never answers, so its escalation ladder fires), injects one fault while
the stream runs, lets the system settle and then checks, as the department
receivers saw it: every request dispatched and delivered exactly once, every
event at exactly its recipients once and in case order, every escalation once
(and the same set in the database), and ``deadletter.v1`` holding exactly the
poison messages. Figures (recovery times, latencies) are printed.
"""

from __future__ import annotations

import asyncio
import json
import random

import pytest

from deploy.local.demo import demo_payloads, submitted_event
from deploy.local.stack import SERVICES
from shared.events import encode
from tests.faults.conftest import RigFactory
from tests.faults.rig import Rig, poison_messages

pytestmark = [pytest.mark.faults, pytest.mark.kafka, pytest.mark.timeout(420)]

RATE = 12.0  # requests a second: steady, and light enough for a shared 2-core machine
WARM_UP = 15  # requests at their leads before the fault


async def finish(rig: Rig, name: str, figures: dict[str, object], after: float = 4.0) -> None:
    """Keep streaming a little after the repair, stop, settle, check everything."""
    await asyncio.sleep(after)
    await rig.stop_stream()
    figures["settled_in_s"] = round(await rig.settle(), 1)
    findings = await rig.verify()
    print(f"\n[fault] {name}: {json.dumps({**figures, **findings.figures})}")
    assert findings.violations == [], "\n".join(findings.violations)


async def warm_up(rig: Rig, rate: float = RATE) -> None:
    rig.start_stream(rate)
    await rig.until(lambda: rig.dispatched_count() >= WARM_UP, 120, "the first dispatches")


async def test_each_service_sigkilled_in_turn_loses_and_repeats_nothing(
    make_rig: RigFactory,
) -> None:
    rig = await make_rig()
    # Four outages in a row, each with the consumer group's session timeout to wait out:
    # a lighter stream keeps the backlog, and the test's length, bounded on a busy machine.
    await warm_up(rig, rate=RATE * 2 / 3)
    figures: dict[str, object] = {}
    for service in SERVICES:
        rig.services.kill(service)
        await asyncio.sleep(1)
        began = rig.now()
        await asyncio.to_thread(rig.services.start, service, timeout=120)
        repaired = rig.mark(f"{service} ready")
        await rig.until(lambda at=repaired: rig.caught_up(at), 180, f"the backlog after {service}")
        figures[service] = {
            "restart_s": round(repaired - began, 2),
            "caught_up_s": rig.catch_up_after(repaired),
        }
    await finish(rig, "sigkill each service", figures)


@pytest.mark.parametrize(
    ("server", "crash", "outage"),
    [
        pytest.param("broker", False, 5, id="kafka-restart"),
        pytest.param("broker", True, 15, id="kafka-crash"),
        pytest.param("postgres", True, 10, id="postgres-crash"),
    ],
)
async def test_infrastructure_restart_loses_and_repeats_nothing(
    make_rig: RigFactory, server: str, crash: bool, outage: float
) -> None:
    """The broker stopped cleanly or SIGKILLed, PostgreSQL SIGKILLed; started again on the
    same ports and data after ``outage`` seconds."""
    rig = await make_rig()
    await warm_up(rig)
    target = rig.infra.broker if server == "broker" else rig.infra.postgres
    down = rig.now()
    await asyncio.to_thread(target.kill if crash else target.stop)
    await asyncio.sleep(outage)
    await asyncio.to_thread(target.start)
    repaired = rig.mark(f"{server} up")
    await rig.until(lambda: rig.caught_up(repaired), 180, f"the backlog after the {server}")
    figures = {
        "down_s": round(repaired - down, 2),
        "start_s": round(target.started_in, 2),
        "caught_up_s": rig.catch_up_after(repaired),
    }
    await finish(rig, f"{server} {'crash' if crash else 'restart'}", figures)
    if server == "broker":
        # aiokafka reports each refused reconnect; the logs keep one line per kind a while.
        for service in SERVICES:
            lines = rig.services.log_file(service).read_text().splitlines()
            errors = [line for line in lines if '"level":"error"' in line]
            assert len(errors) < 100, f"{service} wrote {len(errors)} error lines"


async def test_department_endpoint_down_30s_gets_everything_once_when_back(
    make_rig: RigFactory,
) -> None:
    rig = await make_rig(flaky="community_committee")
    await warm_up(rig)
    others_before = len(rig.receiver.received)
    went_down = rig.mark("endpoint down")
    await rig.proxy.down()
    await asyncio.sleep(30)
    delivered_meanwhile = [
        r for r in rig.receiver.received[others_before:] if r.department != rig.flaky_department
    ]
    await rig.proxy.up()
    repaired = rig.mark("endpoint up")
    await rig.until(lambda: rig.caught_up(repaired), 180, "the endpoint's backlog")
    # notify felt the outage (its breaker opened) and held back nobody else meanwhile.
    opened = await rig.metric(
        "notify", "civicroute_notify_breaker_opened_total", department=rig.flaky_department
    )
    assert opened >= 1
    assert delivered_meanwhile, "no other department received anything during the outage"
    figures = {
        "down_s": round(repaired - went_down, 1),
        "breaker_opened": opened,
        "others_delivered_while_down": len(delivered_meanwhile),
        "caught_up_s": rig.catch_up_after(repaired),
    }
    await finish(rig, "department endpoint down 30 s", figures)


async def test_poison_messages_interleaved_go_to_dead_letters_and_nothing_else(
    make_rig: RigFactory,
) -> None:
    rig = await make_rig()
    await warm_up(rig)
    sample = next(p for p in demo_payloads(seed=5) if p["channel"] == "hotline")
    for what, value in poison_messages(sample):
        await asyncio.sleep(0.4)
        await rig.send_poison(what, value)
    # Not poison: an event type intake does not know (ignored), and one good request
    # published twice by the platform (the same event, then the same request anew).
    unknown = dict(json.loads(encode(submitted_event(sample)[1])))
    unknown["type"] = "civicroute.request.withdrawn.v1"
    await rig.send(b"hotline:unknown", json.dumps(unknown).encode())
    repeated = next(demo_payloads(seed=6))
    key, event = submitted_event(repeated)
    for raw in (encode(event), encode(event), encode(submitted_event(repeated)[1])):
        await rig.send(key.encode(), raw)
    rig.note_published(repeated["source_ref"])
    await finish(rig, "poison messages", {})


async def test_network_slow_endpoint_near_its_timeout_gets_everything_once(
    make_rig: RigFactory,
) -> None:
    timeout = 2.0
    rig = await make_rig(flaky="community_committee", timeouts={"community_committee": "2s"})
    rng = random.Random(7)
    rig.proxy.response_delay = lambda: rng.uniform(0.6 * timeout, 1.25 * timeout)
    await warm_up(rig)
    await asyncio.sleep(20)
    rig.proxy.response_delay = None
    repaired = rig.mark("endpoint fast again")
    await rig.until(lambda: rig.caught_up(repaired), 180, "the slow endpoint's backlog")
    timeouts = await rig.metric(
        "notify",
        "civicroute_notify_delivery_attempts_total",
        department=rig.flaky_department,
        result="timeout",
    )
    assert timeouts >= 1, "no attempt timed out: the endpoint was not slow enough to matter"
    figures = {"timed_out_attempts": timeouts, "caught_up_s": rig.catch_up_after(repaired)}
    await finish(rig, "network-slow endpoint", figures)
