"""notify's decisions, pure: who receives an event, what they may see, when to retry."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import orjson

from shared.events import CaseDispatched, CaseEscalated, EventType

# Standard-Webhooks-style schedule: 5 s, 30 s, 2 min, 10 min, 30 min, 1 h, then hourly.
RETRY_SCHEDULE = (5, 30, 120, 600, 1800, 3600)


def recipients(
    event_type: str, payload: Any, lead: str | None, cooperating: list[str]
) -> list[str]:
    """Departments that receive this case event."""
    if event_type == EventType.CASE_DISPATCHED and isinstance(payload, CaseDispatched):
        return [payload.lead, *payload.cooperating]
    if event_type == EventType.CASE_ESCALATED and isinstance(payload, CaseEscalated):
        return [payload.department]
    if lead is None:
        return []
    if event_type in (EventType.CASE_RESOLVED, EventType.CASE_CLOSED, EventType.CASE_REOPENED):
        return [lead, *cooperating]
    return [lead]


def redact_for_department(body: bytes) -> bytes:
    """Departments never see a confidential or anonymous caller's identity."""
    document = orjson.loads(body)
    data = document.get("data")
    request = data.get("request") if isinstance(data, dict) else None
    reporter = request.get("reporter") if isinstance(request, dict) else None
    if not isinstance(reporter, dict):
        return body
    if reporter.get("confidential") or reporter.get("anonymous"):
        for field in ("name", "phone", "email"):
            if reporter.get(field):
                reporter[field] = None
        return orjson.dumps(document)
    return body


def retry_delay(attempt: int, jitter: random.Random | None = None) -> timedelta:
    """Delay before attempt ``attempt + 1`` after ``attempt`` failures, with ±10 % jitter."""
    base = RETRY_SCHEDULE[min(attempt, len(RETRY_SCHEDULE)) - 1] if attempt >= 1 else 0
    spread = (jitter or random).uniform(-0.1, 0.1) * base
    return timedelta(seconds=base + spread)


def webhook_id(event_id: str, department: str) -> str:
    """Stable per (event, department): the same on every retry, so receivers can de-duplicate."""
    return f"msg_{event_id}_{department}"
