"""notify's pure decisions: retry schedule, verdicts, Retry-After, recipients, redaction."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from services.notify.domain import (
    RETRY_HORIZON,
    RETRY_SCHEDULE,
    Attempt,
    Failure,
    RetryPolicy,
    Verdict,
    backoff,
    classify,
    decide,
    parse_retry_after,
    recipients,
    redact_for_department,
    webhook_id,
)
from shared.events import EventType
from tests.notify_kit import case_action, citizen_request, dispatched

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
NO_JITTER = RetryPolicy(jitter=0.0)


def failed(failure: Failure, code: int | None = None, retry_after: float | None = None) -> Attempt:
    return Attempt(code, failure, "x", 1.0, retry_after)


def test_production_schedule_is_5s_30s_2m_10m_30m_1h_then_hourly_for_24h() -> None:
    assert RETRY_SCHEDULE == (5, 30, 120, 600, 1800, 3600)
    assert RETRY_HORIZON == 24 * 3600
    waits = [backoff(n, NO_JITTER) for n in range(1, 10)]
    assert waits == [5, 30, 120, 600, 1800, 3600, 3600, 3600, 3600]


def test_jitter_spreads_each_wait_within_its_bound() -> None:
    rng = random.Random(7)
    policy = RetryPolicy(jitter=0.1)
    waits = [backoff(2, policy, rng) for _ in range(500)]
    assert min(waits) >= 27
    assert max(waits) <= 33
    assert len({round(w, 3) for w in waits}) > 100  # spread, not one value


@pytest.mark.parametrize(
    ("code", "failure"),
    [
        (200, None),
        (204, None),
        (429, Failure.THROTTLED),
        (500, Failure.SERVER_ERROR),
        (503, Failure.SERVER_ERROR),
        (400, Failure.REJECTED),
        (401, Failure.REJECTED),
        (410, Failure.REJECTED),
        (301, Failure.REJECTED),
    ],
)
def test_status_codes_classify_as_success_retryable_or_permanent(
    code: int, failure: Failure | None
) -> None:
    assert classify(code) == failure


@pytest.mark.parametrize(
    "failure", [Failure.TIMEOUT, Failure.CONNECTION, Failure.SERVER_ERROR, Failure.THROTTLED]
)
def test_retryable_failures_wait_the_schedule_step(failure: Failure) -> None:
    decision = decide(failed(failure), tries=3, window_start=NOW, now=NOW, policy=NO_JITTER)
    assert decision.verdict is Verdict.RETRY
    assert decision.next_attempt_at == NOW + timedelta(seconds=120)


def test_other_4xx_is_dead_at_once_as_rejected() -> None:
    decision = decide(
        failed(Failure.REJECTED, 410), tries=1, window_start=NOW, now=NOW, policy=NO_JITTER
    )
    assert (decision.verdict, decision.dead_reason) == (Verdict.DEAD, "rejected")


def test_retry_after_longer_than_the_step_wins_and_shorter_does_not() -> None:
    long = decide(
        failed(Failure.THROTTLED, 429, retry_after=90),
        tries=1,
        window_start=NOW,
        now=NOW,
        policy=NO_JITTER,
    )
    short = decide(
        failed(Failure.THROTTLED, 429, retry_after=1),
        tries=1,
        window_start=NOW,
        now=NOW,
        policy=NO_JITTER,
    )
    assert long.next_attempt_at == NOW + timedelta(seconds=90)
    assert short.next_attempt_at == NOW + timedelta(seconds=5)


def test_the_last_try_is_at_the_horizon_and_a_failure_there_gives_up() -> None:
    start = NOW - timedelta(hours=23, minutes=30)
    before = decide(
        failed(Failure.TIMEOUT), tries=20, window_start=start, now=NOW, policy=NO_JITTER
    )
    assert before.next_attempt_at == start + timedelta(hours=24)  # not an hour later
    at_horizon = decide(
        failed(Failure.TIMEOUT),
        tries=21,
        window_start=start,
        now=start + timedelta(hours=24),
        policy=NO_JITTER,
    )
    assert (at_horizon.verdict, at_horizon.dead_reason) == (Verdict.DEAD, "horizon")


def test_success_is_delivered_whatever_the_age() -> None:
    ok = Attempt(200, None, None, 3.0)
    decision = decide(ok, tries=99, window_start=NOW - timedelta(days=3), now=NOW, policy=NO_JITTER)
    assert decision.verdict is Verdict.DELIVERED


def test_retry_after_reads_seconds_and_http_dates_and_ignores_garbage() -> None:
    assert parse_retry_after("120", NOW) == 120
    assert parse_retry_after("Thu, 26 Nov 2026 12:01:30 GMT", NOW) == 90
    assert parse_retry_after("Thu, 26 Nov 2026 11:00:00 GMT", NOW) == 0
    assert parse_retry_after("soon", NOW) is None
    assert parse_retry_after("-5", NOW) is None
    assert parse_retry_after(None, NOW) is None


def test_webhook_id_is_stable_per_event_and_department_and_short() -> None:
    long_event_id = "e" * 200
    assert webhook_id(long_event_id, "water_bureau") == webhook_id(long_event_id, "water_bureau")
    assert webhook_id(long_event_id, "water_bureau") != webhook_id(long_event_id, "housing")
    assert len(webhook_id(long_event_id, "water_bureau")) <= 40


def test_recipients_follow_the_case() -> None:
    d = dispatched("CR1", "lead_dept", ("coop_a", "coop_b", "coop_a"))
    assert recipients(d.type, d.payload(), None, []) == ["lead_dept", "coop_a", "coop_b"]
    signed = case_action(EventType.CASE_SIGNED, "CR1", "lead_dept")
    assert recipients(signed.type, signed.payload(), "lead_dept", ["coop_a"]) == ["lead_dept"]
    resolved = case_action(EventType.CASE_RESOLVED, "CR1", "lead_dept", reply="done")
    assert recipients(resolved.type, resolved.payload(), "lead_dept", ["coop_a"]) == [
        "lead_dept",
        "coop_a",
    ]
    # No holder known (e.g. a pack change): the acting department still hears of it.
    assert recipients(signed.type, signed.payload(), None, []) == ["lead_dept"]


def test_triaged_case_goes_to_no_department() -> None:
    from shared.events import CaseTriaged, new_event, utcnow

    payload = CaseTriaged(
        case_id="CR1",
        reason="low confidence",
        confidence=0.2,
        triaged_at=utcnow(),
        request=citizen_request("CR1"),
    )
    event = new_event(EventType.CASE_TRIAGED, source="/t", subject="CR1", data=payload)
    assert recipients(event.type, event.payload(), None, []) == []


def _reporter(body: bytes) -> dict:
    return orjson.loads(body)["data"]["request"]["reporter"]


def test_confidential_caller_is_hidden_except_what_the_pack_reveals() -> None:
    from shared.events import encode

    body = encode(dispatched("CR1", "d", request=citizen_request("CR1", confidential=True)))
    hidden = _reporter(redact_for_department(body))
    assert (hidden["name"], hidden["phone"]) == (None, None)
    partly = _reporter(redact_for_department(body, ["phone"]))
    assert (partly["name"], partly["phone"]) == (None, "13812345678")
    plain = encode(dispatched("CR2", "d", request=citizen_request("CR2")))
    assert redact_for_department(plain) == plain
