"""A broker and a database of the fault tests' own: they are restarted and crashed here,
so they cannot be the session's shared ones."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from deploy.local.kafka import KafkaBroker
from deploy.local.postgres import PostgresServer
from tests.faults.rig import FaultInfra, Rig

RigFactory = Callable[..., Awaitable[Rig]]


@pytest.fixture(scope="module")
def fault_infra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultInfra]:
    workdir = tmp_path_factory.mktemp("fault-infra")
    # Durable: a crashed server must keep every transaction it acknowledged, as in
    # production (without fsync and synchronous commit a crash drops the last ones).
    postgres = PostgresServer(workdir / "postgres", durable=True)
    broker = KafkaBroker(workdir / "kafka")
    started: list[KafkaBroker | PostgresServer] = []
    try:
        postgres.start()
        started.append(postgres)
        broker.start()
        started.append(broker)
        print(
            f"\n[faults] kafka ready in {broker.started_in:.1f}s, postgres in "
            f"{postgres.started_in:.1f}s"
        )
        yield FaultInfra(broker, postgres)
    finally:
        for thing in reversed(started):
            thing.stop()


@pytest.fixture
async def make_rig(
    fault_infra: FaultInfra, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[RigFactory]:
    """``await make_rig(flaky=department, timeouts={department: "2s"})``: a started system."""
    made: list[Rig] = []

    async def factory(
        flaky: str = "community_committee", timeouts: dict[str, str] | None = None
    ) -> Rig:
        rig = Rig(fault_infra, tmp_path, flaky=flaky, timeouts=timeouts or {})
        made.append(rig)
        await rig.start()
        return rig

    yield factory
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for rig in made:
        await rig.close(failed)
    await asyncio.to_thread(fault_infra.ensure_up)
