"""Standard Webhooks signatures (https://www.standardwebhooks.com/), pure and I/O-free.

notify signs what it sends to departments; escalation verifies what departments
send back. During a secret rotation a sender signs with every current secret
and a receiver accepts any of them.
"""

from __future__ import annotations

import base64
import secrets as random_secrets
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook

TOLERANCE_SECONDS = 5 * 60


class SignatureError(ValueError):
    """The webhook's signature, timestamp or headers do not check out."""


def new_secret() -> str:
    return "whsec_" + base64.b64encode(random_secrets.token_bytes(32)).decode()


def sign(
    secrets: Sequence[str], msg_id: str, body: bytes, timestamp: datetime | None = None
) -> dict[str, str]:
    """The three Standard Webhooks headers for ``body``, one signature per secret."""
    if not secrets:
        raise ValueError("at least one secret is needed to sign")
    when = timestamp or datetime.now(UTC)
    text = body.decode()
    signatures = " ".join(Webhook(secret).sign(msg_id, when, text) for secret in secrets)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": signatures,
    }


def verify(secrets: Sequence[str], body: bytes, headers: Mapping[str, str]) -> str:
    """Check ``body`` against any of ``secrets``; return the webhook-id or raise SignatureError.

    Refuses a missing header, a timestamp more than five minutes off, a
    malformed signature list, or a body that is not UTF-8.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    msg_id = lowered.get("webhook-id", "")
    if not msg_id or len(msg_id) > 256:
        raise SignatureError("missing or oversized webhook-id header")
    last = "no secret configured"
    for secret in secrets:
        try:
            Webhook(secret).verify(body, lowered, json_parse=False)
        except Exception as error:  # the library raises several types for bad input
            last = str(error) or type(error).__name__
            continue
        return msg_id
    raise SignatureError(last)
