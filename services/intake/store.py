"""intake's SQL. Every function runs inside the caller's transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from services.intake.domain import ChannelPayload, format_case_id, payload_hash, to_citizen_request
from shared.events import CitizenRequest


@dataclass(frozen=True)
class Acceptance:
    case_id: str
    created: bool
    conflict: bool = False
    request: CitizenRequest | None = None


async def accept(
    conn: asyncpg.Connection, payload: ChannelPayload, received_at: datetime
) -> Acceptance:
    """Store the request once per (channel, source_ref); say whether it is new.

    A second delivery of the same payload is a duplicate (created=False); a
    different payload under the same identity is a conflict.
    """
    fingerprint = payload_hash(payload)
    existing = await _find(conn, payload.channel, payload.source_ref)
    if existing is not None:
        return Acceptance(existing["case_id"], False, existing["payload_hash"] != fingerprint)
    number = await conn.fetchval("SELECT nextval('case_number')")
    case_id = format_case_id(number, received_at)
    request = to_citizen_request(payload, case_id=case_id, received_at=received_at)
    inserted = await conn.fetchval(
        """
        INSERT INTO requests (case_id, channel, source_ref, payload_hash, request, received_at)
        VALUES ($1, $2, $3, $4, $5, $6)
        ON CONFLICT (channel, source_ref) DO NOTHING
        RETURNING case_id""",
        case_id,
        payload.channel,
        payload.source_ref,
        fingerprint,
        request.model_dump(mode="json"),
        received_at,
    )
    if inserted is None:  # a concurrent delivery of the same request won the race
        winner = await _find(conn, payload.channel, payload.source_ref)
        assert winner is not None
        return Acceptance(winner["case_id"], False, winner["payload_hash"] != fingerprint)
    return Acceptance(case_id, True, False, request)


async def _find(conn: asyncpg.Connection, channel: str, source_ref: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT case_id, payload_hash FROM requests WHERE channel = $1 AND source_ref = $2",
        channel,
        source_ref,
    )


async def get_request(conn: asyncpg.Connection, case_id: str) -> CitizenRequest | None:
    row = await conn.fetchrow("SELECT request FROM requests WHERE case_id = $1", case_id)
    return CitizenRequest.model_validate(row["request"]) if row else None
