"""From consumed events to queued deliveries: webhooks for departments, notices for citizens.

Runs inside the consumer's transaction (the caller claims the event ids first),
so an event's deliveries are queued exactly when its offset may be committed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import asyncpg
import structlog

from services.notify import domain, notices, store
from services.notify.config import GATEWAY, NotifyConfig
from services.notify.notices import Contact
from shared.citypack import CityPack
from shared.events import (
    CaseAction,
    CaseDispatched,
    CloudEvent,
    EventType,
    InvalidEvent,
    Urgency,
)
from shared.kafka import Inbound
from shared.metrics import Metrics

log = structlog.get_logger(__name__)


def accepted_first(batch: Sequence[Inbound]) -> list[Inbound]:
    """Accepted requests come on another topic than case events; take them first so a
    citizen hears "accepted" before "dispatched" when both arrive in one batch."""
    return sorted(batch, key=lambda item: item.event.type != EventType.REQUEST_ACCEPTED)


def _case_id(item: Inbound) -> str:
    case_id = item.event.subject or getattr(item.payload, "case_id", None)
    if not case_id:
        raise InvalidEvent(f"{item.event.type} without a case_id (subject)")
    return str(case_id)


@dataclass
class BatchFacts:
    """The batch's cases as the events so far leave them, and what to write back."""

    holders: dict[str, store.Holders]
    contacts: dict[str, Contact]
    holder_writes: dict[str, store.Holders] = field(default_factory=dict)
    contact_writes: dict[str, Contact] = field(default_factory=dict)

    def hand_over(self, case_id: str, holders: store.Holders) -> None:
        self.holders[case_id] = self.holder_writes[case_id] = holders

    def remember_contact(self, case_id: str, contact: Contact) -> None:
        """A later event without a field keeps the earlier one."""
        known = self.contacts.get(case_id)
        if known is not None:
            contact = Contact(
                contact.phone if contact.phone is not None else known.phone,
                contact.email if contact.email is not None else known.email,
                contact.language if contact.language is not None else known.language,
            )
        self.contacts[case_id] = self.contact_writes[case_id] = contact


class Ingest:
    def __init__(
        self, pack: CityPack, config: NotifyConfig, metrics: Metrics, *, notices_on: bool
    ) -> None:
        self.pack = pack
        self.config = config
        self.notices_on = notices_on and config.file.notices.enabled
        self.queued = metrics.counter(
            "webhooks_queued_total", "Webhook deliveries queued", ["department"]
        )
        self.unsubscribed = metrics.counter(
            "webhooks_unsubscribed_total",
            "Webhooks not queued because the department does not subscribe to the type",
            ["department"],
        )
        self.notices = metrics.counter(
            "notices_total",
            "Citizen notices by kind and outcome: queued, held (quiet hours), no_contact",
            ["kind", "outcome"],
        )

    async def apply(self, conn: asyncpg.Connection, batch: Sequence[Inbound], now: datetime) -> int:
        """Claim the batch's event ids and queue the deliveries of those new; returns how many.

        The claim and the read of the batch's cases are one round trip and the writes one
        more: a few statements per batch, not two or three round trips per event."""
        fresh, holders, contacts = await store.claim_and_read_facts(
            conn, [item.event.id for item in batch], [_case_id(item) for item in batch]
        )
        ordered = accepted_first([item for item in batch if item.event.id in fresh])
        case_ids = [_case_id(item) for item in ordered]
        facts = BatchFacts(holders=holders, contacts=contacts if self.notices_on else {})
        new: list[store.NewDelivery] = []
        for item, case_id in zip(ordered, case_ids, strict=True):
            new.extend(self._one(facts, item, case_id, now))
        await store.save_ingest(
            conn, holders=facts.holder_writes, contacts=facts.contact_writes, deliveries=new
        )
        return len(new)

    def _one(
        self, batch: BatchFacts, item: Inbound, case_id: str, now: datetime
    ) -> list[store.NewDelivery]:
        event, payload = item.event, item.payload
        request = notices.request_of(payload)
        if request is not None and self.notices_on:
            batch.remember_contact(case_id, notices.contact_of(request.reporter))
        if event.type == EventType.REQUEST_ACCEPTED:
            return self._notices(batch, event, payload, case_id, None, now)
        if isinstance(payload, CaseDispatched):
            batch.hand_over(
                case_id,
                store.Holders(payload.lead, list(payload.cooperating), payload.urgency),
            )
        holders = batch.holders.get(case_id, store.NO_HOLDERS)
        targets = domain.recipients(event.type, payload, holders.lead, holders.cooperating)
        if not targets and event.type != EventType.CASE_TRIAGED:
            raise InvalidEvent(f"no department holds case {case_id} for {event.type}")
        body = domain.redact_for_department(
            item.record.value or b"", self.config.file.privacy.confidential_reveal
        )
        out = []
        for department in targets:
            if not self.config.subscribed(department, event.type):
                self.unsubscribed.labels(department).inc()
                continue
            self.queued.labels(department).inc()
            out.append(
                store.NewDelivery(
                    webhook_id=domain.webhook_id(event.id, department),
                    case_id=case_id,
                    department=department,
                    event_id=event.id,
                    event_type=event.type,
                    body=body,
                )
            )
        return out + self._notices(batch, event, payload, case_id, holders.urgency, now)

    def _notices(
        self,
        batch: BatchFacts,
        event: CloudEvent,
        payload: object,
        case_id: str,
        urgency: Urgency | None,
        now: datetime,
    ) -> list[store.NewDelivery]:
        settings = self.config.file.notices
        kinds = notices.kinds_for(event.type, settings.kinds) if self.notices_on else []
        if not kinds:
            return []
        contact = batch.contacts.get(case_id)
        if contact is None or not contact.reachable:
            for kind in kinds:
                self.notices.labels(kind, "no_contact").inc()
            return []
        language = contact.language or settings.default_language
        department = self._department_of(payload)
        names = self.pack.departments.get(department) if department else None
        department_name = (
            notices.department_name((names.name, names.name_en), language)
            if names is not None
            else department or ""
        )
        emergency = notices.is_emergency(payload, urgency)
        out = []
        for kind in kinds:
            due = now + (settings.feedback_delay if kind == "feedback" else timedelta(0))
            release = notices.released_at(due, settings.quiet_hours, self.config.zone, emergency)
            self.notices.labels(kind, "held" if release > due else "queued").inc()
            notice = domain.notice_id(event.id, kind)
            text = notices.render(
                settings,
                kind,
                language,
                case_id=case_id,
                department=department_name,
                reply=notices.reply_of(payload),
            )
            out.append(
                store.NewDelivery(
                    webhook_id=notice,
                    case_id=case_id,
                    department=GATEWAY,
                    event_id=event.id,
                    event_type=event.type,
                    body=notices.body(
                        notice=notice,
                        case_id=case_id,
                        kind=kind,
                        contact=contact,
                        language=language,
                        text=text,
                        emergency=emergency,
                    ),
                    kind="notice",
                    not_before=release,
                )
            )
        return out

    @staticmethod
    def _department_of(payload: object) -> str | None:
        if isinstance(payload, CaseDispatched):
            return payload.lead
        if isinstance(payload, CaseAction):
            return payload.department
        return None
