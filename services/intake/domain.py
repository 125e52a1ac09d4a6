"""Pure mapping from a channel payload to the canonical CitizenRequest. No I/O."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

import orjson

from shared.channels import AppReport, GridReport, HotlineTicket
from shared.events import Channel, CitizenRequest, Location, Reporter, Urgency

ChannelPayload = HotlineTicket | AppReport | GridReport


def format_case_id(number: int, when: datetime) -> str:
    """Case numbers citizens can read out on the phone: CR + yymmdd + 7 digits."""
    return f"CR{when:%y%m%d}{number:07d}"


def payload_hash(payload: ChannelPayload) -> str:
    """A stable fingerprint: the same request resent hashes the same; a changed one does not."""
    canonical = orjson.dumps(payload.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


def _extras(payload: ChannelPayload) -> dict[str, Any]:
    return dict(payload.model_extra or {})


def to_citizen_request(
    payload: ChannelPayload, *, case_id: str, received_at: datetime
) -> CitizenRequest:
    if isinstance(payload, HotlineTicket):
        description = payload.details or payload.summary
        return CitizenRequest(
            case_id=case_id,
            channel=Channel.HOTLINE,
            source_ref=payload.source_ref,
            received_at=received_at,
            submitted_at=payload.submitted_at,
            title=payload.summary,
            description=description,
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
