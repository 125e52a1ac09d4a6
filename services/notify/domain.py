"""notify's decisions, pure: who receives an event, what they may see, when to retry."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any

import orjson

from shared.events import CaseAction, CaseDeadlinesSet, CaseDispatched, CaseEscalated, EventType

# Production schedule: 5 s, 30 s, 2 min, 10 min, 30 min, 1 h, then hourly; horizon 24 h.
RETRY_SCHEDULE = (5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0)
RETRY_HORIZON = 24 * 3600.0
RETRY_JITTER = 0.1
REPORTER_FIELDS = ("name", "phone", "email")
# Events that concern everyone working the case, not just the lead.
_WHOLE_CASE = frozenset(
    {
        EventType.CASE_RESOLVED,
        EventType.CASE_CLOSED,
        EventType.CASE_REOPENED,
        EventType.CASE_RATED,
    }
)


def recipients(
    event_type: str, payload: Any, lead: str | None, cooperating: list[str]
) -> list[str]:
    """Departments that receive this case event (before subscriptions), without repeats.

    ``lead``/``cooperating`` are who holds the case as of its latest dispatch.
    A triaged case is with a human, not a department: nobody receives it.
    """
    if isinstance(payload, CaseDispatched):
        found = [payload.lead, *payload.cooperating]
    elif event_type == EventType.CASE_TRIAGED:
        found = []
    elif isinstance(payload, CaseEscalated | CaseDeadlinesSet):
        found = [payload.department]
    elif lead is not None:
        found = [lead, *cooperating] if event_type in _WHOLE_CASE else [lead]
    elif isinstance(payload, CaseAction):
        found = [payload.department]
    else:
        found = []
    return list(dict.fromkeys(found))


def redact_for_department(body: bytes, reveal: Collection[str] = ()) -> bytes:
    """A confidential or anonymous caller's identity stays hidden, except ``reveal`` fields."""
    document = orjson.loads(body)
    data = document.get("data")
    request = data.get("request") if isinstance(data, dict) else None
    reporter = request.get("reporter") if isinstance(request, dict) else None
    if not isinstance(reporter, dict):
        return body
    if not (reporter.get("confidential") or reporter.get("anonymous")):
        return body
    for field in REPORTER_FIELDS:
        if field not in reveal and reporter.get(field):
            reporter[field] = None
    return orjson.dumps(document)


def _short_hash(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:32]


def webhook_id(event_id: str, department: str) -> str:
    """Stable per (event, department): the same on every retry, so receivers can de-duplicate."""
    return f"msg_{_short_hash(event_id, department)}"


def notice_id(event_id: str, kind: str) -> str:
    return f"ntc_{_short_hash(event_id, kind)}"


# --- retries ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    schedule: tuple[float, ...] = RETRY_SCHEDULE
    horizon: float = RETRY_HORIZON
    jitter: float = RETRY_JITTER


class Verdict(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    DEAD = "dead"


class Failure(StrEnum):
    """Why an attempt did not deliver; the metric label of a failed attempt."""

    TIMEOUT = "timeout"
    CONNECTION = "connection"
    SERVER_ERROR = "server_error"
    THROTTLED = "throttled"
    REJECTED = "rejected"  # a 4xx other than 429, or anything else no retry will fix
    NO_ENDPOINT = "no_endpoint"


@dataclass(frozen=True)
class Attempt:
    """What one HTTP attempt came to."""

    status_code: int | None
    failure: Failure | None  # None: delivered
    error: str | None
    latency_ms: float
    retry_after: float | None = None  # seconds the endpoint asked us to wait

    @property
    def delivered(self) -> bool:
        return self.failure is None

    @property
    def endpoint_unhealthy(self) -> bool:
        """Counts towards the circuit breaker: the endpoint itself is in trouble."""
        return self.failure in (
            Failure.TIMEOUT,
            Failure.CONNECTION,
            Failure.SERVER_ERROR,
            Failure.THROTTLED,
        )


def classify(status_code: int) -> Failure | None:
    if 200 <= status_code < 300:
        return None
    if status_code == 429:
        return Failure.THROTTLED
    if status_code >= 500:
        return Failure.SERVER_ERROR
    return Failure.REJECTED


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    next_attempt_at: datetime | None = None
    dead_reason: str | None = None  # "rejected" (permanent) or "horizon"


def backoff(tries: int, policy: RetryPolicy, rng: random.Random | None = None) -> float:
    """Seconds to wait after the ``tries``-th failed try: the schedule's step, ± jitter."""
    if tries < 1 or not policy.schedule:
        return 0.0
    base = policy.schedule[min(tries, len(policy.schedule)) - 1]
    return max(0.0, base * (1 + (rng or random).uniform(-policy.jitter, policy.jitter)))


def decide(
    attempt: Attempt,
    *,
    tries: int,
    window_start: datetime,
    now: datetime,
    policy: RetryPolicy,
    rng: random.Random | None = None,
) -> Decision:
    """What becomes of a delivery after its ``tries``-th try of this window.

    Retryable failures wait the schedule's step (or longer when ``Retry-After``
    asks), but never past the horizon: the last try happens at the horizon, and
    a failure at or after it gives up.
    """
    if attempt.delivered:
        return Decision(Verdict.DELIVERED)
    if attempt.failure is Failure.REJECTED:
        return Decision(Verdict.DEAD, dead_reason="rejected")
    horizon_at = window_start + timedelta(seconds=policy.horizon)
    if now >= horizon_at:
        return Decision(Verdict.DEAD, dead_reason="horizon")
    wait = max(backoff(tries, policy, rng), attempt.retry_after or 0.0)
    return Decision(Verdict.RETRY, next_attempt_at=min(now + timedelta(seconds=wait), horizon_at))


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """``Retry-After`` as seconds from ``now``: delta-seconds or an HTTP date; None if absent
    or unreadable (then the schedule decides)."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - now).total_seconds())
