"""Pure intake decisions: channel payload → canonical CitizenRequest, the rejection
reasons, the category a hint names. No I/O."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any

import orjson

from shared.channels import AppReport, GridReport, HotlineTicket
from shared.citypack.taxonomy import Category
from shared.events import Channel, CitizenRequest, Location, Reporter, Urgency

ChannelPayload = HotlineTicket | AppReport | GridReport


def is_json_media_type(content_type: str | None) -> bool:
    """``application/json`` or a ``+json`` type, whatever its parameters (``charset``)."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


class Rejection(StrEnum):
    """Why a request was refused: the bounded ``reason`` label of the rejection metric.

    On Kafka the dead-letter ``reason`` text starts with the runtime's own
    wording (left column of :data:`KAFKA_REASONS`) or with one of these codes.
    """

    EMPTY = "empty"  # no bytes at all
    TOO_LARGE = "too_large"  # over 64 KiB
    MALFORMED = "malformed"  # not UTF-8, not JSON, not form-encoded
    MEDIA_TYPE = "media_type"  # HTTP: a Content-Type other than JSON
    NOT_CLOUDEVENT = "not_cloudevent"  # Kafka: the envelope is not CloudEvents 1.0
    INVALID = "invalid"  # a field breaks the channel's rules (field-level detail)
    CONFLICT = "conflict"  # same identity or Idempotency-Key, different content
    UNAUTHORIZED = "unauthorized"  # HTTP: no API key or an unknown one
    FORBIDDEN = "forbidden"  # HTTP: the key's roles do not allow it
    FAILED = "failed"  # Kafka: processing failed three times (a bug; see the logs)


# The ConsumerRuntime's reason prefixes (shared.events.decode / CloudEvent.payload).
KAFKA_REASONS: dict[str, Rejection] = {
    "empty message": Rejection.EMPTY,
    "malformed JSON": Rejection.MALFORMED,
    "not a CloudEvent": Rejection.NOT_CLOUDEVENT,
    "invalid civicroute.request.submitted.v1 data": Rejection.INVALID,
    "processing failed": Rejection.FAILED,
}


def rejection_of(reason: str) -> Rejection:
    """The bounded rejection code of a dead-letter reason (text before the first colon)."""
    head = reason.split(":", 1)[0].strip()
    if head in KAFKA_REASONS:
        return KAFKA_REASONS[head]
    try:
        return Rejection(head)
    except ValueError:
        return Rejection.FAILED


def guess_channel(data: Any) -> str:
    """The channel a (possibly invalid) payload claims, as a bounded metric label."""
    channel = data.get("channel") if isinstance(data, Mapping) else None
    return channel if channel in {c.value for c in Channel} else "unknown"


def format_case_id(number: int, when: datetime) -> str:
    """Case numbers citizens can read out on the phone: CR + yymmdd + 7 digits."""
    return f"CR{when:%y%m%d}{number:07d}"


def payload_hash(payload: ChannelPayload) -> str:
    """A stable fingerprint: the same request resent hashes the same; a changed one does not."""
    canonical = orjson.dumps(payload.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


def resolve_category(hint: str | None, categories: Mapping[str, Category]) -> str | None:
    """The taxonomy id a hint names, by id or by Open311 service_code; None if it names none."""
    if not hint:
        return None
    if hint in categories:
        return hint
    wanted = hint.casefold()
    for category in categories.values():
        if category.service_code.casefold() == wanted or category.id.casefold() == wanted:
            return category.id
    return None


def hint_of(payload: ChannelPayload) -> str | None:
    if isinstance(payload, HotlineTicket):
        return payload.category_hint
    if isinstance(payload, AppReport):
        return payload.category
    return payload.checklist_code


def _extras(payload: ChannelPayload) -> dict[str, Any]:
    return dict(payload.model_extra or {})


def to_citizen_request(
    payload: ChannelPayload, *, case_id: str, received_at: datetime
) -> CitizenRequest:
    if isinstance(payload, HotlineTicket):
        return CitizenRequest(
            case_id=case_id,
            channel=Channel.HOTLINE,
            source_ref=payload.source_ref,
            received_at=received_at,
            submitted_at=payload.submitted_at,
            title=payload.summary,
            description=payload.details or payload.summary,
            category_hint=payload.category_hint,
            urgency_hint=Urgency(payload.urgency) if payload.urgency else None,
            location=Location(address_text=payload.address_text),
            reporter=Reporter(
                name=None if payload.anonymous else payload.caller_name,
                phone=payload.caller_phone,
                anonymous=payload.anonymous,
                confidential=payload.confidential,
            ),
            extras=_extras(payload)
            | ({"operator_id": payload.operator_id} if payload.operator_id else {}),
        )
    if isinstance(payload, AppReport):
        return CitizenRequest(
            case_id=case_id,
            channel=Channel.APP,
            source_ref=payload.source_ref,
            received_at=received_at,
            submitted_at=payload.submitted_at,
            description=payload.text,
            category_hint=payload.category,
            location=Location(
                address_text=payload.address_text, lat=payload.lat, long=payload.long
            ),
            media_urls=list(payload.photo_urls),
            reporter=Reporter(
                name=payload.reporter_name,
                phone=payload.reporter_phone,
                email=payload.reporter_email,
                language=payload.language,
            ),
            extras=_extras(payload),
        )
    return CitizenRequest(
        case_id=case_id,
        channel=Channel.GRID,
        source_ref=payload.source_ref,
        received_at=received_at,
        submitted_at=payload.submitted_at,
        description=payload.text or payload.checklist_code,
        category_hint=payload.checklist_code,
        category_trusted=True,
        location=Location(grid_id=payload.grid_id, lat=payload.lat, long=payload.long),
        media_urls=list(payload.photo_urls),
        grid_worker_id=payload.grid_worker_id,
        extras=_extras(payload),
    )
