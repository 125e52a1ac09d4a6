"""notify's delivery queue against the real PostgreSQL and real local HTTP endpoints that
answer slowly, fail with 500 then recover, throttle with 429 + Retry-After, answer 410 or hang."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from services.notify import store
from services.notify.breaker import State
from shared.events import EventType
from shared.webhooks import new_secret
from tests.helpers import eventually
from tests.notify_kit import (
    Answer,
    HookServer,
    always,
    case_action,
    dispatched,
    fail_first,
    fast_policy,
    hang_first,
    new_case_id,
    notify_harness,
    notify_serving,
    pack_secrets,
    slow,
    write_notify_yaml,
)

SIGNED = EventType.CASE_SIGNED
PROGRESSED = EventType.CASE_PROGRESSED


def events_for_case(case_id: str, lead: str, count: int) -> list:
    """A dispatch, then ``count - 1`` progress notes: the order the lead must see them in."""
    first = dispatched(case_id, lead)
    rest = [case_action(PROGRESSED, case_id, lead, note=f"step {n}") for n in range(1, count)]
    return [first, *rest]


async def test_flapping_endpoint_retries_same_webhook_id_in_case_order_exactly_once_each(
    database_url: str, city_pack: Path
) -> None:
    # Every event fails twice: the breaker opens now and then; its short cooldown keeps it brief.
    write_notify_yaml(city_pack, {"defaults": {"breaker": {"failures": 5, "cooldown": "1s"}}})
    async with notify_serving(database_url, city_pack, scripts={"water_bureau": fail_first(2)}) as (
        notify,
        server,
    ):
        cases = {}
        for _ in range(4):
            case_id = new_case_id()
            cases[case_id] = events_for_case(case_id, "water_bureau", 4)
        for position in range(4):  # interleave the cases, as on the topic
            await notify.publish(*(events[position] for events in cases.values()))

        await eventually(notify.settled, timeout=60, message="all delivered")

        order = server.order_by_case("water_bureau")
        for case_id, events in cases.items():
            assert order[case_id] == [e.id for e in events]
        assert set(server.successes.values()) == {1}  # every webhook-id accepted once
        for hit in server.of("water_bureau"):
            assert server.tries[hit.webhook_id] == 3  # 500, 500, then success — same id each time
        rows = await notify.rows()
        assert {r["status"] for r in rows} == {"delivered"}
        assert {r["attempts"] for r in rows} == {3}
        async with notify.pool.acquire() as conn:
            codes = await conn.fetch(
                "SELECT array_agg(status_code ORDER BY attempt) AS codes"
                " FROM delivery_attempts GROUP BY delivery_id"
            )
        assert {tuple(r["codes"]) for r in codes} == {(500, 500, 204)}
        assert notify.metric("deliveries_total", department="water_bureau", outcome="retry")
        assert notify.metric(
            "deliveries_total", department="water_bureau", outcome="delivered"
        ) == len(rows)


async def test_hanging_and_flapping_endpoints_do_not_delay_a_healthy_one(
    database_url: str, city_pack: Path
) -> None:
    write_notify_yaml(
        city_pack, {"defaults": {"timeout": "6s", "breaker": {"failures": 5, "cooldown": "1s"}}}
    )
    async with notify_serving(
        database_url,
        city_pack,
        scripts={"water_bureau": hang_first(1), "housing_bureau": fail_first(3)},
        delivery=fast_policy((4.0, 1.0, 1.0)),
    ) as (notify, server):
        started = asyncio.get_running_loop().time()
        stuck = [dispatched(new_case_id(), "water_bureau") for _ in range(10)]
        flapping = [dispatched(new_case_id(), "housing_bureau") for _ in range(10)]
        healthy = [dispatched(new_case_id(), "education_bureau") for _ in range(30)]
        await notify.publish(*stuck, *flapping)
        await notify.publish(*healthy)

        def healthy_done() -> tuple[int, int] | None:
            """When all 30 arrived: (hanging attempts still open, most tries of one flapping id)."""
            if len(server.of("education_bureau")) < 30:
                return None
            flapping_ids = {h.webhook_id for h in server.attempts_of("housing_bureau")}
            retried = max((server.tries[i] for i in flapping_ids), default=0)
            return notify.deliverer.busy["water_bureau"], retried

        hanging_open, flapping_most_tries = await eventually(healthy_done, timeout=30)
        # Done while the hanging endpoint still held all 8 of its slots (6 s timeout) and the
        # flapping one had not had a single retry (first due after 4 s): nothing waited on them.
        assert hanging_open == 8
        assert flapping_most_tries <= 1
        took = max(h.at for h in server.of("education_bureau")) - started
        print(
            f"\n[figure] healthy endpoint: 30 deliveries done {took:.2f}s after publish, "
            "beside a hanging and a flapping endpoint"
        )
        await eventually(notify.settled, timeout=60, message="all delivered")
        assert len(server.of("water_bureau")) == 10
        assert len(server.of("housing_bureau")) == 10


async def test_429_retry_after_is_honoured_before_the_next_try(
    database_url: str, city_pack: Path
) -> None:
    async with notify_serving(
        database_url,
        city_pack,
        scripts={"water_bureau": fail_first(1, 429, {"Retry-After": "2"})},
        delivery=fast_policy((0.1,)),
    ) as (notify, server):
        await notify.publish(dispatched(new_case_id(), "water_bureau"))
        await eventually(notify.settled, timeout=30)
        first, second = server.attempts_of("water_bureau")
        assert (first.status, second.status) == (429, 204)
        assert first.webhook_id == second.webhook_id
        assert second.at - first.at >= 1.9  # the schedule alone would retry after 0.1 s
        async with notify.pool.acquire() as conn:
            asked = await conn.fetchval(
                "SELECT retry_after_seconds FROM delivery_attempts WHERE attempt = 1"
            )
        assert asked == 2


async def test_410_is_permanent_dead_at_once_and_the_case_moves_on(
    database_url: str, city_pack: Path
) -> None:
    case_id = new_case_id()
    first = dispatched(case_id, "water_bureau")
    second = case_action(PROGRESSED, case_id, "water_bureau", note="on site")
    scripts = {
        "water_bureau": lambda _t, event: always(410 if event["id"] == first.id else 204)(0, event)
    }
    async with notify_serving(database_url, city_pack, scripts=scripts) as (notify, server):
        await notify.publish(first, second)
        await eventually(notify.settled, timeout=30)
        rows = await notify.rows()
        assert [(r["event_id"], r["status"], r["dead_reason"], r["attempts"]) for r in rows] == [
            (first.id, "dead", "rejected", 1),
            (second.id, "delivered", None, 1),
        ]
        assert server.tries[rows[0]["webhook_id"]] == 1  # never retried
        assert (
            notify.metric("deliveries_dead_total", department="water_bureau", reason="rejected")
            == 1
        )


async def test_horizon_gives_up_then_replay_delivers_with_the_same_webhook_id(
    database_url: str, city_pack: Path
) -> None:
    write_notify_yaml(city_pack, {"defaults": {"breaker": {"failures": 100}}})
    async with notify_serving(
        database_url,
        city_pack,
        scripts={"water_bureau": always(503)},
        delivery=fast_policy((0.2,), horizon=1.5),
    ) as (notify, server):
        await notify.publish(dispatched(new_case_id(), "water_bureau"))
        await eventually(notify.settled, timeout=30)
        (row,) = await notify.rows()
        assert (row["status"], row["dead_reason"]) == ("dead", "horizon")
        assert row["attempts"] >= 3
        dead = notify.metric("deliveries_dead_total", department="water_bureau", reason="horizon")
        assert dead == 1

        server.scripts["water_bureau"] = always(200)
        async with notify.pool.acquire() as conn:
            replayed = await store.replay(conn, row["id"])
        assert replayed is not None
        notify.deliverer.wake.set()
        await eventually(notify.settled, timeout=30)
        (after,) = await notify.rows()
        assert (after["status"], after["replays"]) == ("delivered", 1)
        assert [h.webhook_id for h in server.of("water_bureau")] == [row["webhook_id"]]


async def test_breaker_opens_on_a_hanging_endpoint_and_a_half_open_probe_closes_it(
    database_url: str, city_pack: Path
) -> None:
    write_notify_yaml(
        city_pack,
        {
            "departments": {
                "water_bureau": {
                    "timeout": "1s",
                    "concurrency": 1,
                    "breaker": {"failures": 2, "cooldown": "3s"},
                }
            }
        },
    )
    async with notify_serving(
        database_url,
        city_pack,
        scripts={"water_bureau": hang_first(1)},
        delivery=fast_policy((0.1,)),
    ) as (notify, server):
        events = [dispatched(new_case_id(), "water_bureau") for _ in range(5)]
        await notify.publish(*events)
        await eventually(
            lambda: notify.deliverer.breaker("water_bureau").state is State.OPEN,
            timeout=30,
            message="breaker open",
        )
        opened = notify.metric("breaker_opened_total", department="water_bureau")
        assert opened == 1
        assert notify.metric("breaker_state", department="water_bureau") == 2
        await eventually(notify.settled, timeout=60, message="all delivered after probe")
        first, second, probe = server.attempts_of("water_bureau")[:3]
        # Two timeouts (1 s each) opened it; nothing went during the 3 s cooldown.
        assert probe.at - second.at >= 1.0 + 3.0 - 0.2
        assert first.webhook_id != second.webhook_id  # two cases, one attempt each
        assert len(server.of("water_bureau")) == 5
        assert notify.deliverer.breaker("water_bureau").state is State.CLOSED


async def test_concurrency_limit_per_endpoint_is_held(database_url: str, city_pack: Path) -> None:
    write_notify_yaml(city_pack, {"departments": {"water_bureau": {"concurrency": 3}}})
    async with notify_serving(database_url, city_pack, scripts={"water_bureau": slow(0.3)}) as (
        notify,
        server,
    ):
        await notify.publish(*(dispatched(new_case_id(), "water_bureau") for _ in range(12)))
        await eventually(notify.settled, timeout=30)
        assert server.max_in_flight["water_bureau"] == 3
        assert len(server.of("water_bureau")) == 12


async def test_a_stuck_event_holds_back_its_own_case_only(
    database_url: str, city_pack: Path
) -> None:
    stuck_case, other_case = new_case_id(), new_case_id()
    stuck = events_for_case(stuck_case, "water_bureau", 3)
    other = events_for_case(other_case, "water_bureau", 3)
    release = asyncio.Event()

    def script(_tries: int, event: dict) -> Answer:
        held = event["id"] == stuck[0].id and not release.is_set()
        return Answer(500 if held else 204)

    scripts = {"water_bureau": script}
    async with notify_serving(database_url, city_pack, scripts=scripts) as (notify, server):
        await notify.publish(*stuck, *other)
        await eventually(lambda: server.order_by_case("water_bureau").get(other_case), 10)
        await eventually(lambda: len(server.order_by_case("water_bureau")[other_case]) == 3)
        assert stuck_case not in server.order_by_case("water_bureau")
        release.set()
        await eventually(notify.settled, timeout=30)
        assert server.order_by_case("water_bureau")[stuck_case] == [e.id for e in stuck]


async def test_rotation_signs_with_every_current_secret(database_url: str, city_pack: Path) -> None:
    secrets = pack_secrets(city_pack)
    secrets["water_bureau"] = [new_secret(), new_secret()]  # new first, old still accepted
    async with notify_serving(database_url, city_pack, secrets) as (notify, server):
        await notify.publish(dispatched(new_case_id(), "water_bureau", ("housing_bureau",)))
        await eventually(notify.settled, timeout=30)
        (water,) = server.of("water_bureau")
        (housing,) = server.of("housing_bureau")
        assert water.valid_signatures == 2  # a receiver on either secret accepts it
        assert housing.valid_signatures == 1


async def test_a_department_the_pack_no_longer_names_is_not_left_pending_forever(
    database_url: str, city_pack: Path
) -> None:
    async with notify_serving(
        database_url, city_pack, delivery=fast_policy((0.2,), horizon=1.0), run=False
    ) as (notify, _):
        async with notify.pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO deliveries (webhook_id, case_id, department, event_id, event_type,"
                " body) VALUES ('msg_old', 'CR1', 'retired_bureau', 'e1', 'x', '{}')"
            )
        notify.task = asyncio.create_task(notify.deliverer.run(notify.stop))
        await eventually(notify.settled, timeout=30)
        (row,) = await notify.rows()
        assert (row["status"], row["dead_reason"]) == ("dead", "horizon")
        assert row["last_error"] == "no secret configured"


class ClosesIdleConnections:
    """An endpoint that answers the first request on each connection and closes the
    connection when a second arrives on it, unanswered: how a server that has timed out
    an idle keep-alive connection looks to a client that sends on it at that moment."""

    def __init__(self) -> None:
        self.answered: list[str] = []
        self.dropped: list[str] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served = 0
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                lines = head.decode("latin-1").split("\r\n")
                fields = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
                headers = {name.lower(): value for name, value in fields.items()}
                await reader.readexactly(int(headers.get("content-length", "0")))
                if served:
                    self.dropped.append(headers["webhook-id"])
                    return
                served += 1
                self.answered.append(headers["webhook-id"])
                writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()


async def test_a_kept_alive_connection_the_endpoint_closed_is_resent_at_once_on_a_new_one(
    database_url: str, city_pack: Path
) -> None:
    endpoint = ClosesIdleConnections()
    await endpoint.start()
    stand_in = HookServer(pack_secrets(city_pack), port=endpoint.port)  # its URLs, not started
    try:
        async with notify_harness(database_url, city_pack, stand_in) as notify:
            first, second = new_case_id(), new_case_id()
            await notify.publish(dispatched(first, "water_bureau"))
            await eventually(notify.settled, timeout=20, message="the first delivered")
            await notify.publish(dispatched(second, "water_bureau"))  # on the kept-alive one
            await eventually(notify.settled, timeout=20, message="the second delivered")

            rows = await notify.rows()
            assert [r["status"] for r in rows] == ["delivered", "delivered"]
            assert [r["attempts"] for r in rows] == [1, 1]  # no failed attempt recorded
            assert endpoint.answered == [r["webhook_id"] for r in rows]
            assert endpoint.dropped == [rows[1]["webhook_id"]]
            assert notify.metric("stale_connections_total", department="water_bureau") == 1
            assert notify.deliverer.breaker("water_bureau").state is State.CLOSED
    finally:
        await endpoint.stop()


async def test_an_event_queued_while_a_lease_runs_is_sent_without_waiting_for_the_poll(
    database_url: str, city_pack: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The consumer wakes the delivery loop after its commit; when that lands while a lease
    is under way (after the lease's snapshot), the wake-up must not be lost until the next
    poll, here 30 s."""
    case_id = new_case_id()
    patient = replace(fast_policy(), poll_seconds=30.0)
    async with notify_serving(database_url, city_pack, delivery=patient) as (notify, server):
        real_lease = store.lease_due
        queued = asyncio.Event()

        async def lease_then_queue(conn, **how):  # type: ignore[no-untyped-def]
            rows = await real_lease(conn, **how)
            if not rows and not queued.is_set():
                queued.set()
                await notify.publish(dispatched(case_id, "water_bureau"))  # commits, wakes
            return rows

        monkeypatch.setattr(store, "lease_due", lease_then_queue)
        notify.deliverer.wake.set()  # a lease now, whatever the loop was doing
        await eventually(queued.is_set, timeout=10, message="queued during a lease")
        await eventually(
            lambda: server.of("water_bureau"), timeout=10, message="sent before the next poll"
        )
        assert server.of("water_bureau")[0].case_id == case_id
