"""router wiring: consume accepted requests and returns, decide, store, dispatch via the outbox."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg
import structlog
from pydantic import Field

from services.router import api, domain, store
from services.router.model_store import ModelError, Trained, default_models_dir, load_or_train
from shared.apikeys import ApiKeys, ApiKeysError
from shared.citypack import CityPack, load_pack_or_exit
from shared.events import (
    CaseDispatched,
    CaseReturned,
    CaseTriaged,
    CitizenRequest,
    CloudEvent,
    EventType,
    InvalidEvent,
    Urgency,
    new_event,
    utcnow,
)
from shared.kafka import Inbound
from shared.logs import configure_logging
from shared.service import Service, run_service
from shared.settings import CommonSettings, load_settings
from shared.topics import Topic

log = structlog.get_logger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"
ROUTING_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)

Message = tuple[str, str | None, CloudEvent]


class RouterSettings(CommonSettings):
    http_port: int = 8002
    models_dir: Path | None = Field(
        default=None, description="Where trained classifiers are kept (default .cache/models)"
    )


class Router:
    def __init__(self, service: Service, pack: CityPack, trained: Trained, keys: ApiKeys) -> None:
        self.service = service
        self.pack = pack
        self.trained = trained
        self.keys = keys
        m = service.metrics
        self.dispatched = m.counter(
            "dispatches_total", "Cases dispatched, by lead department", ["department", "category"]
        )
        self.decisions = m.counter(
            "decisions_total",
            "Routing decisions (triage rate = triage / all)",
            ["outcome", "channel"],
        )
        self.triaged = m.counter("triaged_total", "Cases sent to human triage", ["reason"])
        self.confidence = m.histogram(
            "confidence", "Confidence of routing decisions", ["method"], buckets=CONFIDENCE_BUCKETS
        )
        self.latency = m.histogram(
            "routing_seconds", "Time to decide one case", buckets=ROUTING_BUCKETS
        )
        self.returns = m.counter("returns_total", "Cases returned by a department", ["department"])
        self.manual = m.counter(
            "manual_dispatches_total", "Cases dispatched by an operator from triage", ["department"]
        )
        self.waiting = m.gauge("triage_waiting", "Cases waiting in the triage queue")
        m.gauge("model_info", "The classifier in use", ["city", "version"]).labels(
            pack.name, trained.model.version
        ).set(1)

    @property
    def model(self) -> domain.Model:
        return self.trained.model

    # --- consuming ---------------------------------------------------------------------

    async def handle_batch(self, batch: Sequence[Inbound]) -> None:
        """Route a batch in one transaction: the claim and the new cases in one statement, the
        decisions written together at the end (returns and triage, rare, one by one)."""
        done: list[tuple[str, str, domain.Outcome]] = []
        async with self.service.pool.acquire() as conn, conn.transaction():
            fresh, unseen = await store.claim_and_save_cases(
                conn,
                [item.event.id for item in batch],
                [
                    (item.event.id, item.payload)
                    for item in batch
                    if isinstance(item.payload, CitizenRequest)
                ],
            )
            items = [item for item in batch if item.event.id in fresh]
            decisions: list[tuple[Any, ...]] = []
            messages: list[Message] = []
            for item in items:
                if isinstance(item.payload, CitizenRequest):
                    if item.payload.case_id not in unseen:
                        continue  # the same case accepted twice under two event ids
                    unseen.discard(item.payload.case_id)
                    result = await self._decide(
                        conn, decisions, item.payload, attempt=1, excluded=frozenset()
                    )
                elif isinstance(item.payload, CaseReturned):
                    result = await self._route_returned(conn, decisions, item.payload)
                else:
                    continue
                outcome, message, channel = result
                messages.append(message)
                done.append((item.payload.case_id, channel, outcome))
            waiting = await store.save_dispatches(conn, self.service.name, decisions, messages)
        self.waiting.set(waiting)
        for case_id, channel, outcome in done:
            self._count(case_id, channel, outcome)

    async def _route_returned(
        self, conn: asyncpg.Connection, decisions: list[tuple[Any, ...]], returned: CaseReturned
    ) -> tuple[domain.Outcome, Message, str]:
        case = await store.lock_case(conn, returned.case_id)
        if case is None:
            raise InvalidEvent(f"unknown case: {returned.case_id} was never routed here")
        excluded = case.excluded | set(returned.excluded) | {returned.department}
        attempt = max(case.attempt, returned.return_count) + 1
        self.returns.labels(returned.department).inc()
        await store.update_case(conn, returned.case_id, attempt, excluded)
        if returned.return_count >= self.pack.routes.max_returns:
            jurisdiction, where = domain.locate(case.request, self.pack)
            triage = domain.triage_for_returns(
                self.pack, returned.return_count, jurisdiction, [where]
            )
            await store.save_triage(conn, returned.case_id, attempt, triage, excluded=excluded)
            return triage, self._triage_message(case.request, triage), case.request.channel.value
        return await self._decide(conn, decisions, case.request, attempt=attempt, excluded=excluded)

    async def _decide(
        self,
        conn: asyncpg.Connection,
        decisions: list[tuple[Any, ...]],
        request: CitizenRequest,
        *,
        attempt: int,
        excluded: frozenset[str],
    ) -> tuple[domain.Outcome, Message, str]:
        """Decide; a dispatch joins ``decisions`` (written by the caller), a triage is
        written now."""
        started = time.perf_counter()
        outcome = domain.decide(request, self.pack, self.model, excluded=excluded)
        self.latency.observe(time.perf_counter() - started)
        version = self.model.version
        if isinstance(outcome, domain.Decision):
            decisions.append(
                store.decision_row(
                    request.case_id, attempt, outcome, excluded=excluded, model_version=version
                )
            )
            message = self._dispatch_message(request, outcome, attempt, excluded)
        else:
            await store.save_triage(
                conn, request.case_id, attempt, outcome, excluded=excluded, model_version=version
            )
            message = self._triage_message(request, outcome)
        return outcome, message, request.channel.value

    def _count(self, case_id: str, channel: str, outcome: domain.Outcome) -> None:
        if isinstance(outcome, domain.Decision):
            self.decisions.labels("dispatched", channel).inc()
            self.dispatched.labels(outcome.lead, outcome.category).inc()
            self.confidence.labels(outcome.method).observe(outcome.confidence)
            log.info(
                "case dispatched",
                case_id=case_id,
                lead=outcome.lead,
                category=outcome.category,
                method=outcome.method,
                confidence=outcome.confidence,
                route=outcome.route_id,
            )
        else:
            self.decisions.labels("triage", channel).inc()
            self.triaged.labels(outcome.kind).inc()
            self.confidence.labels("triage").observe(outcome.confidence)
            log.info("case sent to triage", case_id=case_id, reason=outcome.reason)

    # --- events ------------------------------------------------------------------------

    def _dispatch_message(
        self,
        request: CitizenRequest,
        decision: domain.Decision,
        attempt: int,
        excluded: frozenset[str],
    ) -> Message:
        payload = CaseDispatched(
            case_id=request.case_id,
            category=decision.category,
            urgency=decision.urgency,
            jurisdiction=decision.jurisdiction,
            lead=decision.lead,
            cooperating=decision.cooperating,
            sla_policy=decision.sla_policy,
            confidence=decision.confidence,
            trace=decision.trace,
            route_id=decision.route_id,
            attempt=attempt,
            excluded=sorted(excluded),
            dispatched_at=utcnow(),
            request=request,
        )
        return self._message(EventType.CASE_DISPATCHED, request.case_id, payload)

    def _triage_message(self, request: CitizenRequest, triage: domain.Triage) -> Message:
        payload = CaseTriaged(
            case_id=request.case_id,
            reason=triage.reason,
            kind=triage.kind,
            confidence=triage.confidence,
            candidates=triage.candidates,
            trace=triage.trace,
            triaged_at=utcnow(),
            request=request,
        )
        return self._message(EventType.CASE_TRIAGED, request.case_id, payload)

    def _message(
        self, kind: EventType, case_id: str, payload: CaseDispatched | CaseTriaged
    ) -> Message:
        event = new_event(kind, source=self.service.source, subject=case_id, data=payload)
        return self.service.topic(Topic.CASE_EVENTS), case_id, event

    # --- a person decides --------------------------------------------------------------

    async def route_by_hand(
        self,
        case_id: str,
        *,
        category: str,
        lead: str,
        cooperating: list[str],
        urgency: Urgency | None,
        reason: str,
        operator: str,
    ) -> tuple[domain.Decision, int]:
        """Dispatch a case waiting in triage as an operator decided; record it as an example."""
        problems = self.pack_problems(category, lead, cooperating)
        if problems:
            raise api.Refused(422, "; ".join(problems))
        async with self.service.pool.acquire() as conn, conn.transaction():
            waiting = await store.lock_waiting(conn, case_id)
            if waiting is None:
                if await store.case_known(conn, case_id):
                    raise api.Refused(409, f"case {case_id} is not waiting in triage")
                raise api.Refused(404, f"no case {case_id}")
            case = await store.lock_case(conn, case_id)
            assert case is not None
            if lead in case.excluded:
                raise api.Refused(
                    422, f"{lead} already returned case {case_id}; choose another department"
                )
            chosen = urgency or self.pack.categories[category].urgency
            policy, _ = self.pack.policy_for(chosen)
            decision = domain.Decision(
                category=category,
                urgency=chosen,
                lead=lead,
                cooperating=[u for u in dict.fromkeys(cooperating) if u != lead],
                route_id=None,
                sla_policy=policy,
                confidence=1.0,
                jurisdiction=waiting.jurisdiction,
                method="manual",
                trace=[f"triage: {waiting.reason}", f"manual: routed by {operator}: {reason}"],
            )
            await store.resolve_triage(conn, case_id, operator)
            await store.save_example(conn, waiting.request, category, lead, operator, reason)
            message = self._dispatch_message(
                waiting.request, decision, waiting.attempt, case.excluded
            )
            remaining = await store.save_dispatches(
                conn,
                self.service.name,
                [
                    store.decision_row(
                        case_id,
                        waiting.attempt,
                        decision,
                        excluded=case.excluded,
                        decided_by=operator,
                        reason=reason,
                    )
                ],
                [message],
            )
        self.waiting.set(remaining)
        self.manual.labels(lead).inc()
        self.dispatched.labels(lead, category).inc()
        self.confidence.labels("manual").observe(1.0)
        log.info("case routed by hand", case_id=case_id, lead=lead, operator=operator)
        return decision, waiting.attempt

    def pack_problems(self, category: str, lead: str, cooperating: list[str]) -> list[str]:
        problems = []
        if category not in self.pack.categories:
            problems.append(f"unknown category {category!r}")
        for unit in [lead, *cooperating]:
            if unit not in self.pack.departments:
                problems.append(f"unknown department {unit!r}")
        return problems


def load_model(pack: CityPack, models_dir: Path) -> Trained:
    try:
        return load_or_train(pack, models_dir)
    except (ModelError, ValueError) as error:
        print(f"cannot load or train the classifier: {error}", file=sys.stderr)
        raise SystemExit(2) from None


async def run(settings: RouterSettings, pack: CityPack, keys: ApiKeys) -> int:
    models_dir = settings.models_dir or default_models_dir()
    # Training (when the artefact is missing) takes seconds; do it off the event loop.
    trained = await asyncio.to_thread(load_model, pack, models_dir)
    log.info(
        "classifier ready",
        city=pack.name,
        version=trained.model.version,
        examples=trained.meta.get("examples"),
    )
    service = Service("router", settings, http_port=settings.http_port, migrations=MIGRATIONS)
    await service.start()
    router = Router(service, pack, trained, keys)
    service.app.include_router(api.make_router(router))
    service.add_consumer(
        [Topic.REQUESTS_ACCEPTED, Topic.CASE_EVENTS],
        router.handle_batch,
        accept={EventType.REQUEST_ACCEPTED, EventType.CASE_RETURNED},
    )
    return await service.run()


def main() -> None:
    settings = load_settings(RouterSettings)
    configure_logging("router", settings.log_level)
    pack = load_pack_or_exit(settings.city_dir)
    try:
        keys = ApiKeys.load(settings.api_keys_file)
    except ApiKeysError as error:
        print(f"bad settings: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    run_service(lambda: run(settings, pack, keys))
