"""The CloudEvents envelope and the typed payloads."""

from __future__ import annotations

import pytest

from shared.events import (
    CaseEscalated,
    CloudEvent,
    EventType,
    InvalidEvent,
    decode,
    encode,
    new_event,
    utcnow,
)


def escalated() -> CaseEscalated:
    now = utcnow()
    return CaseEscalated(
        case_id="CR2611260000001",
        department="water_bureau",
        clock="sign_for",
        level=1,
        due_at=now,
        fired_at=now,
        targets=["duty_contact"],
    )


def test_event_round_trips_through_bytes_with_its_typed_payload() -> None:
    event = new_event(
        EventType.CASE_ESCALATED,
        source="/civicroute/escalation",
        subject="CR2611260000001",
        data=escalated(),
    )
    decoded = decode(encode(event))
    assert decoded.specversion == "1.0"
    assert decoded.id == event.id
    assert decoded.subject == "CR2611260000001"
    payload = decoded.payload()
    assert isinstance(payload, CaseEscalated)
    assert payload.level == 1
    assert payload.targets == ["duty_contact"]


def test_unknown_event_type_has_no_payload_and_is_not_an_error() -> None:
    event = CloudEvent(
        specversion="1.0",
        id="1",
        source="/x",
        type="civicroute.future.thing.v9",
        data={"anything": True},
    )
    assert event.payload() is None


def test_unknown_fields_are_tolerated_and_kept() -> None:
    raw = encode(new_event(EventType.CASE_ESCALATED, source="/s", subject="c", data=escalated()))
    raw = raw.replace(b'"specversion"', b'"tenant":"beijing","specversion"', 1)
    event = decode(raw)
    assert event.model_extra == {"tenant": "beijing"}
    assert isinstance(event.payload(), CaseEscalated)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty message"),
        (None, "empty message"),
        (b"{not json", "malformed JSON"),
        (b"\xff\xfe\x00garbage", "malformed JSON"),
        (b'{"id": "1"}', "not a CloudEvent"),
        (b'{"specversion": "0.3", "id": "1", "source": "/s", "type": "t"}', "not a CloudEvent"),
        (b"[1, 2, 3]", "not a CloudEvent"),
    ],
)
def test_undecodable_messages_are_refused_with_a_reason(raw: bytes | None, reason: str) -> None:
    with pytest.raises(InvalidEvent) as refused:
        decode(raw)
    assert str(refused.value).startswith(reason)


def test_known_type_with_invalid_data_is_refused_naming_the_field() -> None:
    event = CloudEvent(
        specversion="1.0",
        id="1",
        source="/s",
        type=EventType.CASE_ESCALATED.value,
        data={"case_id": "c", "department": "d", "clock": "sign_for", "level": 7},
    )
    with pytest.raises(InvalidEvent, match="level"):
        event.payload()
