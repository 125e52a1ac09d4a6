"""escalation wiring: consume dispatches, keep the durable timers, serve the callback API."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import structlog
from pydantic import BaseModel, Field

from services.escalation import api, ladder, lifecycle, report, store
from services.escalation.api import Answer, Decide
from services.escalation.arrivals import Arrivals
from services.escalation.clocks import SlaClocks
from services.escalation.lifecycle import Case, Outcome, Refused
from services.escalation.polling import seconds_until_next_claim
from shared.aio import sleep_or_stop
from shared.apikeys import ApiKeys, ApiKeysError
from shared.batching import GroupCommit
from shared.citypack import CityPack, load_pack_or_exit
from shared.db import TRANSIENT_DB_ERRORS
from shared.events import (
    CaseDispatched,
    CaseEscalated,
    CaseTriaged,
    Clock,
    CloudEvent,
    EventType,
    new_event,
    utcnow,
)
from shared.kafka import Inbound
from shared.logs import configure_logging
from shared.metrics import Metrics
from shared.secretstore import load_secrets_or_exit
from shared.service import Service, run_service
from shared.settings import CommonSettings, load_settings
from shared.topics import Topic, TopicNames

log = structlog.get_logger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"

# Minutes to weeks: sign-for is minutes, resolution can take a fortnight and more.
CASE_DURATION_BUCKETS = (
    60,
    300,
    900,
    1800,
    3600,
    7200,
    14400,
    28800,
    86400,
    172800,
    345600,
    604800,
    1296000,
    2592000,
)


# The states the open-case gauges count (closed cases only accumulate).
OPEN_STATES = sorted(state.value for state in lifecycle.OPEN)

# How often a replica looks for the cases its waiting actions want, applied by another
# replica (one applied here wakes them at once).
UNKNOWN_CASE_POLL_SECONDS = 0.5


class EscalationSettings(CommonSettings):
    http_port: int = 8003
    timer_batch: int = Field(default=500, ge=1, le=10_000)
    timer_poll_seconds: float = Field(default=0.25, gt=0, le=10)
    timer_workers: int = Field(
        default=2,
        ge=1,
        le=16,
        description="Timer loops per replica: while one waits on PostgreSQL another prepares",
    )
    action_transactions: int = Field(
        default=4,
        ge=1,
        le=32,
        description="Callback batches committed at once: one waiting on PostgreSQL need not"
        " hold back the next",
    )
    metrics_refresh_seconds: float = Field(
        default=15,
        gt=0,
        description="How often the open-case gauges are recomputed (by one replica for all)",
    )
    rates_refresh_seconds: float = Field(
        default=300,
        gt=0,
        description="How often the rate gauges are recomputed (by one replica for all): they"
        " cover a trailing month, which minutes change little",
    )
    rates_window_days: int = Field(
        default=30, ge=1, le=366, description="Trailing window of the per-department rate gauges"
    )
    unknown_case_wait_seconds: float = Field(
        default=10,
        ge=0,
        le=60,
        description="How long an action on a case not known here waits for the router's"
        " dispatch to land before its 404: the department's webhook can overtake it",
    )


_REPLAY = "webhook-id already used for another request (replay)"


@dataclass(frozen=True)
class ActionRequest:
    case_id: str
    action: str
    decide: Decide
    # (webhook-id, department, request digest) of a signed department callback
    callback: tuple[str, str, str] | None


class Escalation:
    """The service's behaviour on a database pool; Kafka and HTTP are wired around it."""

    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        pack: CityPack,
        secrets: dict[str, list[str]],
        api_keys: ApiKeys,
        metrics: Metrics,
        topics: TopicNames,
        settings: EscalationSettings,
        source: str = "/civicroute/escalation",
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.pool = pool
        # The time callbacks and reports are judged at (tests script a month with it).
        self.now = clock
        self.pack = pack
        self.secrets = secrets
        self.api_keys = api_keys
        self.topics = topics
        self.settings = settings
        self.source = source
        self.schema = "escalation"
        self.clocks = SlaClocks.for_sla(pack.sla)
        self.actions: GroupCommit[ActionRequest, Answer] = GroupCommit(
            self._act_batch, concurrency=settings.action_transactions
        )
        self.arrivals = Arrivals()
        m = metrics
        self.escalations = m.counter(
            "escalations_total", "Escalations fired", ["level", "department", "clock"]
        )
        self.breaches = m.counter(
            "deadline_breaches_total", "Clocks that passed unmet", ["department", "clock"]
        )
        self.lateness = m.histogram(
            "timer_lateness_seconds", "How long after its due time a timer fired"
        )
        self.time_to_sign = m.histogram(
            "time_to_sign_seconds",
            "From dispatch to sign-for",
            ["department"],
            buckets=CASE_DURATION_BUCKETS,
        )
        self.time_to_resolve = m.histogram(
            "time_to_resolve_seconds",
            "From dispatch to resolution",
            ["department"],
            buckets=CASE_DURATION_BUCKETS,
        )
        self.transitions = m.counter(
            "transitions_total", "Lifecycle actions by outcome", ["action", "outcome"]
        )
        self.unknown_case_waits = m.counter(
            "unknown_case_waits_total",
            "Actions that came before their case's dispatch and waited for it, by outcome",
            ["outcome"],
        )
        self.open_cases = m.gauge("open_cases", "Open cases by lifecycle state", ["state"])
        self.rate_gauges = {
            name: m.gauge(
                f"{name}_rate", f"{name.capitalize()} rate over the trailing window", ["department"]
            )
            for name in ("response", "resolution", "satisfaction")
        }

    # --- events out --------------------------------------------------------------------------

    def event(self, event_type: EventType, case_id: str, payload: BaseModel) -> CloudEvent:
        return new_event(event_type, source=self.source, subject=case_id, data=payload)

    def record(
        self,
        changes: store.Changes,
        before: Case | None,
        outcome: Outcome,
        inbound: tuple[datetime, str, dict[str, Any]] | None = None,
    ) -> None:
        """Add what a decision changed to ``changes``: the case, its timers, its history,
        its events."""
        case = outcome.case
        if case != before:
            changes.save(case)
        for clock, deadline in outcome.clocks.items():
            armed = None
            if deadline is not None:
                armed = (deadline, ladder.arm(self.pack.sla.ladder, deadline))
            changes.set_clock(case.case_id, clock, armed)
        if inbound is not None:
            at, kind, detail = inbound
            changes.timeline.append((case.case_id, at, kind, case.lead, None, detail))
        for event_type, payload in outcome.events:
            event = self.event(event_type, case.case_id, payload)
            changes.events.append((self.topics(Topic.CASE_EVENTS), case.case_id, event))
            entry = _timeline_entry(event_type, payload, event.time or utcnow())
            changes.timeline.append((case.case_id, *entry))

    def observe(self, outcome: Outcome) -> None:
        """Metrics for a committed outcome."""
        case = outcome.case
        for event_type, _ in outcome.events:
            if event_type is EventType.CASE_SIGNED and case.signed_at and case.dispatched_at:
                seconds = (case.signed_at - case.dispatched_at).total_seconds()
                self.time_to_sign.labels(case.lead).observe(max(0.0, seconds))
            if event_type is EventType.CASE_RESOLVED and case.resolved_at and case.dispatched_at:
                seconds = (case.resolved_at - case.dispatched_at).total_seconds()
                self.time_to_resolve.labels(case.lead).observe(max(0.0, seconds))

    # --- dispatches and triage from the router -----------------------------------------------

    async def handle_batch(self, batch: Sequence[Inbound]) -> None:
        """Apply the router's events in order, reading and writing the batch's cases with a
        few statements: one round trip per event would bound the whole service."""
        applied: list[Outcome] = []
        async with self.pool.acquire() as conn, conn.transaction():
            fresh, locked = await store.claim_and_lock_cases(
                conn,
                [item.event.id for item in batch],
                [_case_id(item.payload) for item in batch],
            )
            items = [item for item in batch if item.event.id in fresh]
            cases: dict[str, Case | None] = dict(locked)
            changes = store.Changes()
            for item in items:
                case_id = _case_id(item.payload)
                current = cases.get(case_id)
                outcome = self._apply_router_event(changes, current, item.payload)
                if outcome is not None:
                    cases[case_id] = outcome.case
                    applied.append(outcome)
            await store.write_changes(conn, self.schema, changes)
        self.arrivals.landed(outcome.case.case_id for outcome in applied)
        for outcome in applied:
            self.observe(outcome)
            self._warn_if_beyond_calendar(outcome.case)

    def _apply_router_event(
        self, changes: store.Changes, current: Case | None, payload: BaseModel
    ) -> Outcome | None:
        case_id = _case_id(payload)
        try:
            if isinstance(payload, CaseDispatched):
                outcome = lifecycle.dispatch(current, payload, self.clocks)
                inbound = (
                    payload.dispatched_at,
                    EventType.CASE_DISPATCHED.value,
                    {
                        "attempt": payload.attempt,
                        "route_id": payload.route_id,
                        "excluded": payload.excluded,
                        "cooperating": payload.cooperating,
                    },
                )
            elif isinstance(payload, CaseTriaged):
                outcome = lifecycle.triage(current, payload)
                inbound = (
                    payload.triaged_at,
                    EventType.CASE_TRIAGED.value,
                    {"reason": payload.reason},
                )
            else:
                return None
        except Refused as refused:
            self.transitions.labels("router", "refused").inc()
            log.warning("router event not applied", case_id=case_id, reason=refused.message)
            return None
        if outcome.case == current:
            self.transitions.labels("router", "repeat").inc()
            return None  # an older or repeated dispatch
        self.record(changes, current, outcome, inbound)
        self.transitions.labels("router", "accepted").inc()
        log.info(
            "case taken",
            case_id=case_id,
            state=outcome.case.state.value,
            lead=outcome.case.lead,
            attempt=outcome.case.attempt,
        )
        return outcome

    def _warn_if_beyond_calendar(self, case: Case) -> None:
        calendar = self.clocks.math.calendar
        due = case.resolve_due
        if due is not None and not calendar.covers(due.date()):
            log.warning(
                "working-day calendar has no data this far ahead; Monday-Friday used",
                case_id=case.case_id,
                calendar=calendar.name,
                resolve_due=due.isoformat(),
            )

    # --- department and supervisor actions ---------------------------------------------------

    async def act(
        self,
        case_id: str,
        action: str,
        decide: Decide,
        callback: tuple[str, str, str] | None = None,
    ) -> Answer:
        """Apply one action to a case; ``callback`` is (webhook-id, department, request
        digest) for a signed callback: the same callback again gets the stored answer, a
        reused webhook-id anything else gets 401. Actions arriving together are committed
        in one transaction (see ``_act_batch``); each caller gets its own answer.

        An action on a case not known here waits, up to ``unknown_case_wait_seconds``, for
        the router's dispatch to land before it is refused with 404.

        Raises Refused (nothing changed) for an action the case does not allow now.
        """
        request = ActionRequest(case_id, action, decide, callback)
        # Watched from before the first try: a dispatch landing while it runs still wakes it.
        with self.arrivals.watch(case_id) as landed:
            try:
                return await self.actions.submit(request)
            except Refused as refused:
                if refused.status != 404 or self.settings.unknown_case_wait_seconds <= 0:
                    raise
                return await self._act_once_dispatched(request, landed, refused)

    async def _act_once_dispatched(
        self, request: ActionRequest, landed: asyncio.Event, refusal: Refused
    ) -> Answer:
        """notify and this service read the dispatch independently, so the department's
        webhook can reach it, and its answer come back, before the case is applied here.
        A 404 then is a falsehood a department's sender may take as final (ours does), and
        the case would escalate unsigned: the action waits for the case instead. It is
        tried again only once the case has landed, so waiting callers add no load."""
        with self.arrivals.waiting(request.case_id):
            try:
                await asyncio.wait_for(landed.wait(), self.settings.unknown_case_wait_seconds)
            except TimeoutError:
                self.unknown_case_waits.labels("not_found").inc()
                raise refusal from None
        # Only a committed case wakes it, so this try reads the case.
        self.unknown_case_waits.labels("found").inc()
        return await self.actions.submit(request)

    async def arrival_loop(self, stop: asyncio.Event) -> None:
        """Wake the actions waiting for cases another replica has applied: one query for
        all of them per poll, however many wait."""
        while not stop.is_set():
            if waited_for := self.arrivals.waited_for():
                try:
                    async with self.pool.acquire() as conn:
                        self.arrivals.landed(await store.existing_cases(conn, waited_for))
                except TRANSIENT_DB_ERRORS as error:
                    log.warning("arrival poll: database unavailable", error=repr(error))
            await sleep_or_stop(stop, UNKNOWN_CASE_POLL_SECONDS)

    async def _act_batch(self, requests: list[ActionRequest]) -> list[Answer | Exception]:
        """Decide every request on its case, in arrival order, and write what changed in
        one transaction: a claim of the webhook-ids, one locked read of the cases, and one
        statement for the writes and the stored answers."""
        results: list[Answer | Exception] = []
        applied: list[tuple[ActionRequest, Outcome]] = []
        async with self.pool.acquire() as conn, conn.transaction():
            claims = {
                r.callback[0]: store.CallbackClaim(
                    r.callback[0], r.callback[1], r.case_id, r.action, r.callback[2]
                )
                for r in reversed(requests)
                if r.callback is not None
            }
            earlier = await store.claim_callbacks(conn, list(claims.values()))
            cases: dict[str, Case | None] = dict(
                await store.load_cases(conn, [r.case_id for r in requests])
            )
            changes = store.Changes()
            answered: dict[str, tuple[str, Answer | Exception]] = {}  # webhook-id → result
            for request in requests:
                callback = request.callback
                if callback is not None and callback[0] in earlier:
                    results.append(self._repeat(request, earlier[callback[0]]))
                    continue
                if callback is not None and callback[0] in answered:
                    # The same webhook-id twice in one batch: the first one's result.
                    digest, result = answered[callback[0]]
                    results.append(result if digest == callback[2] else Refused(401, _REPLAY))
                    continue
                result = self._decide(request, cases, changes, applied)
                results.append(result)
                if callback is not None:
                    answered[callback[0]] = (callback[2], result)
            changes.refused.extend(
                webhook_id for webhook_id, (_, r) in answered.items() if isinstance(r, Exception)
            )
            changes.answers.extend(
                (webhook_id, r.status, r.body)
                for webhook_id, (_, r) in answered.items()
                if isinstance(r, Answer)
            )
            await store.write_changes(conn, self.schema, changes)
        for request, outcome in applied:
            self.transitions.labels(
                request.action, "accepted" if outcome.changed else "repeat"
            ).inc()
            self.observe(outcome)
            if outcome.changed:
                log.info(
                    "case action",
                    case_id=request.case_id,
                    action=request.action,
                    state=outcome.case.state.value,
                    department=outcome.case.lead,
                )
        return results

    def _repeat(self, request: ActionRequest, earlier: asyncpg.Record) -> Answer | Exception:
        """The answer to a webhook-id registered before this batch."""
        assert request.callback is not None
        if earlier["request_sha256"] == request.callback[2] and earlier["status"] is not None:
            self.transitions.labels(request.action, "repeat").inc()
            return Answer(earlier["status"], earlier["answer"])
        return Refused(401, _REPLAY)

    def _decide(
        self,
        request: ActionRequest,
        cases: dict[str, Case | None],
        changes: store.Changes,
        applied: list[tuple[ActionRequest, Outcome]],
    ) -> Answer | Exception:
        """One request on its case as the batch has left it; changes are added to
        ``changes``, a refusal or a fault is that request's alone."""
        case = cases.get(request.case_id)
        if case is None:
            return Refused(404, f"no case {request.case_id}")
        try:
            outcome = request.decide(case, self.now())
        except Refused as refused:
            self.transitions.labels(request.action, f"refused_{refused.status}").inc()
            return refused
        except Exception as error:  # a fault in one decision fails only its caller
            log.exception("action failed", case_id=request.case_id, action=request.action)
            return error
        self.record(changes, case, outcome)
        cases[request.case_id] = outcome.case
        applied.append((request, outcome))
        return Answer(200, api.case_view(outcome.case, self.now()))

    # --- durable timers ----------------------------------------------------------------------

    async def timer_loop(self, stop: asyncio.Event) -> None:
        batch, poll = self.settings.timer_batch, self.settings.timer_poll_seconds
        while not stop.is_set():
            try:
                claimed = await self.fire_due_timers()
                if claimed >= batch:
                    continue
                async with self.pool.acquire() as conn:
                    upcoming = await store.next_due(conn)
                wait = seconds_until_next_claim(upcoming, utcnow(), poll)
            except TRANSIENT_DB_ERRORS as error:
                log.warning("timer loop: database unavailable", error=repr(error))
                wait = poll
            await sleep_or_stop(stop, wait)

    async def fire_due_timers(self) -> int:
        """Claim a batch of due timers and act on them; returns how many were claimed.

        The batch is written with a handful of set-based statements, not a few per timer: a
        burst of thousands of timers due in one second must not wait on round trips.
        """
        lateness: list[float] = []
        async with self.pool.acquire() as conn, conn.transaction():
            timers = await store.claim_due_timers(conn, self.settings.timer_batch)
            if not timers:
                return 0
            now = utcnow()
            due: list[tuple[Case, Clock, ladder.TimerSpec, datetime]] = []
            for timer in timers:
                case = store.case_from_row(timer)
                clock = Clock(timer["clock"])
                deadline: datetime = timer["deadline"]
                if not case.running(clock) or case.due(clock) != deadline or case.lead is None:
                    continue  # the clock stopped or moved: this timer is stale
                spec = ladder.TimerSpec(timer["timer_level"], timer["repeat"], timer["due_at"])
                lateness.append(max(0.0, (now - spec.due_at).total_seconds()))
                due.append((case, clock, spec, deadline))
            breached, fired = await self._fire(conn, due, now)
        for seconds in lateness:
            self.lateness.observe(seconds)
        for department, clock_name in breached:
            self.breaches.labels(department, clock_name).inc()
        for case_id, lead, level, clock_name in fired:
            self.escalations.labels(str(level), lead, clock_name).inc()
            log.info(
                "case escalated", case_id=case_id, department=lead, level=level, clock=clock_name
            )
        if fired or breached:
            # One warning per batch, not per case: a burst of thousands must not flood the log.
            log.warning(
                "timers fired",
                escalated=len(fired),
                breached=len(breached),
                lateness_max_s=round(max(lateness), 3),
            )
        return len(timers)

    async def _fire(
        self,
        conn: asyncpg.Connection,
        due: list[tuple[Case, Clock, ladder.TimerSpec, datetime]],
        now: datetime,
    ) -> tuple[list[tuple[str, str]], list[tuple[str, str, int, str]]]:
        """Record the breaches and escalations of timers not fired before; announce the
        escalations and arm the timer after each firing. Two statements for the whole
        batch. Returns the breaches (department, clock) and the escalations (case,
        department, level, clock) recorded.

        The escalations row is also the firing's entry in the case's history: no timeline
        row is written for it.
        """
        sla_ladder = self.pack.sla.ladder
        # One per (case, clock, deadline): timers armed by an older version (a breach mark
        # beside a first level at the deadline) may both be in the batch.
        breaches = list(
            dict.fromkeys(
                (case.case_id, clock.value, deadline, case.lead or "", now)
                for case, clock, spec, deadline in due
                if ladder.marks_breach(sla_ladder, spec, deadline)
            )
        )
        live = [timer for timer in due if timer[2].level != ladder.BREACH]
        targets = {spec.level: ladder.targets_of(sla_ladder, spec.level) for _, _, spec, _ in live}
        recorded_breaches, recorded = await store.record_firings(
            conn,
            breaches,
            [
                (
                    case.case_id,
                    clock.value,
                    deadline,
                    spec.level,
                    spec.repeat,
                    spec.due_at,
                    now,
                    case.lead or "",
                    targets[spec.level],
                )
                for case, clock, spec, deadline in live
            ],
        )
        breached = [
            (department, clock)
            for case_id, clock, deadline, department, _ in breaches
            if (case_id, clock, deadline) in recorded_breaches
        ]
        fired: list[tuple[str, str, int, str]] = []
        messages = []
        levels: dict[str, int] = {}
        rearm: list[tuple[str, Clock, datetime, ladder.TimerSpec]] = []
        for case, clock, spec, deadline in due:
            # A breach mark of its own heads the chain: the first level follows it.
            if spec.level == ladder.BREACH and (case.case_id, clock.value, deadline) in (
                recorded_breaches
            ):
                following = ladder.next_timer(sla_ladder, deadline, spec, now)
                if following is not None:
                    rearm.append((case.case_id, clock, deadline, following))
        for case, clock, spec, deadline in live:
            key = (case.case_id, clock.value, deadline, spec.level, spec.repeat)
            if key not in recorded or case.lead is None:
                continue
            payload = CaseEscalated(
                case_id=case.case_id,
                department=case.lead,
                clock=clock,
                level=spec.level,
                repeat=spec.repeat,
                due_at=deadline,
                fired_at=now,
                targets=targets[spec.level],
            )
            event = self.event(EventType.CASE_ESCALATED, case.case_id, payload)
            messages.append((self.topics(Topic.CASE_EVENTS), case.case_id, event))
            levels[case.case_id] = max(levels.get(case.case_id, 0), spec.level)
            following = ladder.next_timer(sla_ladder, deadline, spec, now)
            if following is not None:
                rearm.append((case.case_id, clock, deadline, following))
            fired.append((case.case_id, case.lead, spec.level, clock.value))
        await store.announce_firings(conn, self.schema, levels, rearm, messages)
        return breached, fired

    # --- gauges --------------------------------------------------------------------------------

    async def refresh_gauges(self) -> None:
        """Export the open-case and rate gauges, recomputing those that have aged past their
        interval. Replicas share the results through the database, so the counts and the
        month's aggregate run once per interval however many replicas there are."""
        settings = self.settings
        async with self.pool.acquire() as conn, conn.transaction():
            if await store.claim_snapshot(conn, "open_cases", settings.metrics_refresh_seconds):
                fresh = await store.state_counts(conn, OPEN_STATES)
                await store.save_snapshot(conn, "open_cases", fresh)
            if await store.claim_snapshot(conn, "rates", settings.rates_refresh_seconds):
                now = self.now()
                since = now - timedelta(days=settings.rates_window_days)
                lines = report.build(await store.department_facts(conn, since, now, now))
                await store.save_snapshot(conn, "rates", report.as_json(lines))
            kept = await store.snapshots(conn)
        counts = kept.get("open_cases") or {}
        for state in OPEN_STATES:
            self.open_cases.labels(state).set(counts.get(state, 0))
        # Departments gone from the window disappear rather than keep their last rates.
        for gauge in self.rate_gauges.values():
            gauge.clear()
        for line in kept.get("rates") or []:
            for name, gauge in self.rate_gauges.items():
                value = line[f"{name}_rate"]
                if value is not None:
                    gauge.labels(line["department"]).set(value)

    async def gauge_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.refresh_gauges()
            except TRANSIENT_DB_ERRORS as error:
                log.warning("gauge refresh: database unavailable", error=repr(error))
            await sleep_or_stop(stop, self.settings.metrics_refresh_seconds)


def _case_id(payload: BaseModel) -> str:
    return str(getattr(payload, "case_id", ""))


def _timeline_entry(
    event_type: EventType, payload: BaseModel, at: datetime
) -> tuple[datetime, str, str | None, str | None, dict[str, Any]]:
    data = payload.model_dump(mode="json", exclude_none=True)
    for key in ("case_id", "department", "actor", "at"):
        data.pop(key, None)
    return (
        getattr(payload, "at", None) or at,
        event_type.value,
        getattr(payload, "department", None),
        getattr(payload, "actor", None),
        data,
    )


async def run(
    settings: EscalationSettings, pack: CityPack, secrets: dict[str, list[str]], keys: ApiKeys
) -> int:
    service = Service("escalation", settings, http_port=settings.http_port, migrations=MIGRATIONS)
    await service.start()
    escalation = Escalation(
        pool=service.pool,
        pack=pack,
        secrets=secrets,
        api_keys=keys,
        metrics=service.metrics,
        topics=service.topics,
        settings=settings,
        source=service.source,
    )
    service.add_consumer(
        [Topic.CASE_EVENTS],
        escalation.handle_batch,
        accept={EventType.CASE_DISPATCHED, EventType.CASE_TRIAGED},
    )
    for worker in range(settings.timer_workers):
        # SKIP LOCKED keeps their batches disjoint, case by case, as between replicas.
        service.add_loop(f"timers-{worker}", escalation.timer_loop)
    service.add_loop("gauges", escalation.gauge_loop)
    service.add_loop("arrivals", escalation.arrival_loop)
    service.app.include_router(api.make_router(escalation))
    return await service.run()


def main() -> None:
    settings = load_settings(EscalationSettings)
    configure_logging("escalation", settings.log_level)
    pack = load_pack_or_exit(settings.city_dir)
    secrets = load_secrets_or_exit(settings.secrets_file, list(pack.departments))
    try:
        keys = ApiKeys.load(settings.api_keys_file)
    except ApiKeysError as error:
        print(f"bad API keys: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    run_service(lambda: run(settings, pack, secrets, keys))
