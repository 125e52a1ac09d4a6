"""Standard Webhooks signatures: what a receiver accepts and what it refuses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.webhooks import SignatureError, new_secret, sign, verify

BODY = b'{"specversion":"1.0","id":"e1","type":"civicroute.case.signed.v1"}'


def test_signed_body_verifies_and_yields_the_webhook_id() -> None:
    secret = new_secret()
    headers = sign([secret], "msg_e1_water", BODY)
    assert headers["webhook-signature"].startswith("v1,")
    assert verify([secret], BODY, headers) == "msg_e1_water"


def test_during_rotation_either_secret_verifies() -> None:
    old, new = new_secret(), new_secret()
    headers = sign([new, old], "m", BODY)
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert verify([old], BODY, headers) == "m"
    assert verify([new], BODY, headers) == "m"


@pytest.mark.parametrize(
    "tamper",
    [
        lambda h, b: (h, b.replace(b"e1", b"e2")),
        lambda h, b: ({**h, "webhook-id": "other"}, b),
        lambda h, b: ({**h, "webhook-signature": "v1,AAAA"}, b),
        lambda h, b: ({**h, "webhook-signature": "garbage"}, b),
        lambda h, b: ({k: v for k, v in h.items() if k != "webhook-timestamp"}, b),
        lambda h, b: (h, b"\xff\xfe"),
    ],
)
def test_tampered_or_malformed_webhooks_are_refused(tamper) -> None:  # type: ignore[no-untyped-def]
    secret = new_secret()
    headers, body = tamper(sign([secret], "m", BODY), BODY)
    with pytest.raises(SignatureError):
        verify([secret], body, headers)


def test_wrong_secret_is_refused() -> None:
    with pytest.raises(SignatureError):
        verify([new_secret()], BODY, sign([new_secret()], "m", BODY))


@pytest.mark.parametrize("skew", [timedelta(minutes=6), -timedelta(minutes=6)])
def test_timestamp_more_than_five_minutes_off_is_refused(skew: timedelta) -> None:
    secret = new_secret()
    headers = sign([secret], "m", BODY, timestamp=datetime.now(UTC) - skew)
    with pytest.raises(SignatureError, match="too"):
        verify([secret], BODY, headers)


def test_no_secret_configured_refuses_everything() -> None:
    with pytest.raises(SignatureError):
        verify([], BODY, sign([new_secret()], "m", BODY))
