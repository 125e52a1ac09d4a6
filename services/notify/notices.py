"""Citizen notices, pure: which notices an event brings, their text, and when they may go.

A notice is one SMS (or e-mail when the citizen left no phone number) posted to
the gateway. Its body carries the citizen's contact: it lives in the delivery
queue and is sent, never logged.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson

from services.notify.config import Language, NoticeKind, Notices, QuietHours
from shared.events import (
    CaseDispatched,
    CaseResolved,
    CitizenRequest,
    EventType,
    Reporter,
    Urgency,
)

MAX_REPLY_CHARS = 300


@dataclass(frozen=True)
class Contact:
    """Where a citizen hears from us. Personal data: never logged."""

    phone: str | None
    email: str | None
    language: Language | None

    @property
    def reachable(self) -> bool:
        return bool(self.phone or self.email)


def contact_of(reporter: Reporter) -> Contact:
    return Contact(reporter.phone or None, reporter.email or None, reporter.language)


def request_of(payload: Any) -> CitizenRequest | None:
    """The canonical request an event carries, if any."""
    if isinstance(payload, CitizenRequest):
        return payload
    request = getattr(payload, "request", None)
    return request if isinstance(request, CitizenRequest) else None


def kinds_for(event_type: str, enabled: list[NoticeKind]) -> list[NoticeKind]:
    """The notices an event brings, in the order they are sent."""
    found: list[NoticeKind]
    if event_type == EventType.REQUEST_ACCEPTED:
        found = ["accepted"]
    elif event_type == EventType.CASE_DISPATCHED:
        found = ["dispatched"]
    elif event_type == EventType.CASE_RESOLVED:
        found = ["resolved", "feedback"]
    else:
        found = []
    return [kind for kind in found if kind in enabled]


def is_emergency(payload: Any, known: Urgency | None) -> bool:
    if isinstance(payload, CaseDispatched):
        return payload.urgency is Urgency.EMERGENCY
    if isinstance(payload, CitizenRequest):
        return payload.urgency_hint is Urgency.EMERGENCY
    return known is Urgency.EMERGENCY


def render(
    notices: Notices,
    kind: NoticeKind,
    language: Language,
    *,
    case_id: str,
    department: str = "",
    reply: str = "",
) -> str:
    templates = notices.templates.get(language) or notices.templates[notices.default_language]
    template: str = getattr(templates, kind)
    if len(reply) > MAX_REPLY_CHARS:
        reply = reply[: MAX_REPLY_CHARS - 1] + "…"
    return template.format(case_id=case_id, department=department, reply=reply)


def department_name(names: tuple[str, str | None], language: Language) -> str:
    """A department's name in the citizen's language (Chinese name, English name)."""
    zh, en = names
    return (en or zh) if language == "en" else zh


def released_at(moment: datetime, quiet: QuietHours | None, zone: Any, emergency: bool) -> datetime:
    """When a notice due at ``moment`` may go: at once, or when the quiet hours end."""
    if quiet is None or emergency:
        return moment
    local = moment.astimezone(zone)
    if not quiet.contains(local.time()):
        return moment
    end = datetime.combine(local.date(), quiet.end, tzinfo=zone)
    if end <= local:
        end = datetime.combine(local.date() + timedelta(days=1), quiet.end, tzinfo=zone)
    return end


def body(
    *,
    notice: str,
    case_id: str,
    kind: NoticeKind,
    contact: Contact,
    language: Language,
    text: str,
    emergency: bool,
) -> bytes:
    """What the gateway receives: SMS when there is a phone number, else e-mail."""
    channel, to = ("sms", contact.phone) if contact.phone else ("email", contact.email)
    return orjson.dumps(
        {
            "id": notice,
            "case_id": case_id,
            "kind": kind,
            "channel": channel,
            "to": to,
            "language": language,
            "text": text,
            "emergency": emergency,
        }
    )


def reply_of(payload: Any) -> str:
    return payload.reply if isinstance(payload, CaseResolved) else ""
