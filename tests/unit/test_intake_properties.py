"""Property: whatever arrives on citizen.requests.v1 is either refused with a known reason
or becomes a clean, storable canonical request. Budget: 1000 examples."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import orjson
from hypothesis import event, given, settings
from hypothesis import strategies as st

from services.intake.domain import Rejection, payload_hash, rejection_of, to_citizen_request
from shared.channels import MAX_DESCRIPTION, MAX_MEDIA, SubmittedRequest
from shared.events import InvalidEvent, decode
from tests.intake_strategies import as_json, bodies, json_values

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\ud800-\udfff]")


def envelope(data: bytes) -> bytes:
    return (
        b'{"specversion":"1.0","id":"e-1","source":"/platform",'
        b'"type":"civicroute.request.submitted.v1","data":' + data + b"}"
    )


messages = st.one_of(
    bodies.map(envelope),
    st.binary(max_size=200),
    json_values.map(as_json),
    st.just(b""),
)


@settings(max_examples=1000, deadline=None)
@given(raw=messages)
def test_any_kafka_message_is_refused_with_a_known_reason_or_accepted_clean(raw: bytes) -> None:
    try:
        payload = decode(raw).payload()
    except InvalidEvent as error:
        refusal = str(error)
    else:
        refusal = None
    if refusal is not None:
        code = rejection_of(refusal)
        assert code is not Rejection.FAILED, refusal
        event(f"refused: {code.value}")
        return
    assert isinstance(payload, SubmittedRequest)
    event(f"accepted: {payload.root.channel}")
    now = datetime.now(UTC)
    request = to_citizen_request(payload.root, case_id="CR2603100000001", received_at=now)

    stored = orjson.dumps(request.model_dump(mode="json"))  # what PostgreSQL's jsonb gets
    assert b"\\u0000" not in stored
    assert payload_hash(payload.root)
    assert 0 < len(request.description) <= MAX_DESCRIPTION
    for text in (request.description, request.title or "", request.location.address_text or ""):
        assert not _CONTROL.search(text)
    assert len(request.media_urls) <= MAX_MEDIA
    assert all(re.match(r"(?i)^https?://", url) for url in request.media_urls)
    if request.location.lat is not None:
        assert -90 <= request.location.lat <= 90
        assert -180 <= (request.location.long or 0) <= 180
    if request.submitted_at is not None:
        assert request.submitted_at <= now + timedelta(minutes=5)
    for phone in (request.reporter.phone,):
        assert phone is None or re.match(r"^(\+[1-9]\d{6,14}|\d{11})$", phone)
