"""What the appeal platform publishes on ``citizen.requests.v1``: one payload per channel.

These are the data of ``civicroute.request.submitted.v1`` events, and the
bodies of ``POST /v1/requests`` on intake. Intake maps each one onto the
canonical :class:`shared.events.CitizenRequest`. Fields the models do not name
are kept (``extra="allow"``) so intake can file them under ``extras`` instead
of dropping them.

Every text is NFC-normalised and stripped of control characters; phone numbers
are normalised to E.164 (``+8613812345678``) or the local 11-digit form
(``13812345678``); ``submitted_at`` may not lie in the future. The JSON Schemas
in ``docs/schemas/`` are generated from these models (``python -m shared.channels``).
"""

from __future__ import annotations

import json
import re
import sys
import unicodedata
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    StringConstraints,
    model_validator,
)

MAX_BODY_BYTES = 64 * 1024
MAX_DESCRIPTION = 4000
MAX_MEDIA = 10
# Clocks of the platform and of citizens' phones drift; a little future is not a lie.
CLOCK_SKEW = timedelta(minutes=5)

# C0/C1 controls except tab and newline, zero-width and bidi overrides that hide text,
# and lone surrogates (no valid UTF-8 exists for them, so nothing downstream could store them).
_CONTROL = re.compile(
    r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff\ud800-\udfff]"
)
_INT64 = (-(2**63), 2**63 - 1)
_PHONE_SEPARATORS = re.compile(r"[\s\-().]")
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
_LOCAL11 = re.compile(r"^[0-9]{11}$")


def clean_text(value: str) -> str:
    """NFC-normalise, drop control characters, trim. Text is stored inertly, never rendered."""
    return _CONTROL.sub("", unicodedata.normalize("NFC", value)).strip()


def clean_json(value: Any) -> Any:
    """``clean_text`` applied to every string (keys too) of a JSON value, e.g. ``extras``;
    integers beyond 64 bits become their decimal text."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(str(k)): clean_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean_json(v) for v in value]
    if (
        isinstance(value, int)
        and not isinstance(value, bool)
        and not _INT64[0] <= value <= _INT64[1]
    ):
        return str(value)  # kept, as text: no JSON store takes integers past 64 bits
    return value


def normalise_phone(value: str) -> str:
    """E.164 (``+8613812345678``) or the local 11-digit form (``13812345678``).

    Spaces, dashes, dots and brackets are separators; ``00`` is the
    international prefix; full-width digits typed by operators count as digits.
    """
    compact = _PHONE_SEPARATORS.sub("", unicodedata.normalize("NFKC", value))
    if compact.startswith("00"):
        compact = "+" + compact[2:]
    if _E164.match(compact) or _LOCAL11.match(compact):
        return compact
    raise ValueError("must be an E.164 number (+8613812345678) or 11 digits (13812345678)")


def _http_url(value: str) -> str:
    # No control character either: a NUL, which PostgreSQL cannot store, least of all.
    if not re.match(r"^https?://[^\s\x00-\x1f\x7f/$.?#][^\s\x00-\x1f\x7f]*$", value, re.I):
        raise ValueError("must be an http(s) URL without spaces or control characters")
    return value


# No appeal platform predates this; older times are typing errors (year 1 cannot be stored).
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)


def _not_future(value: datetime) -> datetime:
    if value > datetime.now(UTC) + CLOCK_SKEW:
        raise ValueError("lies in the future")
    if value < EARLIEST:
        raise ValueError(f"lies before {EARLIEST.date().isoformat()}")
    return value


def _non_empty(value: str) -> str:
    if not value:
        raise ValueError("is empty once spaces and control characters are removed")
    return value


CleanText = Annotated[str, AfterValidator(clean_text)]
ShortText = Annotated[CleanText, StringConstraints(max_length=500)]
LongText = Annotated[CleanText, StringConstraints(max_length=MAX_DESCRIPTION)]
RequiredShort = Annotated[ShortText, AfterValidator(_non_empty), Field(min_length=1)]
RequiredLong = Annotated[LongText, AfterValidator(_non_empty), Field(min_length=1)]
PhoneNumber = Annotated[
    str,
    StringConstraints(max_length=40),
    AfterValidator(normalise_phone),
    Field(examples=["+8613812345678", "13812345678"]),
]
MediaUrl = Annotated[str, StringConstraints(max_length=2048), AfterValidator(_http_url)]
SourceRef = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[\w.:/#-]+$")]
Latitude = Annotated[float, Field(ge=-90, le=90, allow_inf_nan=False)]
Longitude = Annotated[float, Field(ge=-180, le=180, allow_inf_nan=False)]
PastTime = Annotated[AwareDatetime, AfterValidator(_not_future)]
UrgencyName = Literal["emergency", "utilities", "general", "complex"]

_PERSONAL = "Personal data: never logged, shown only to the platform."


class _ChannelPayload(BaseModel):
    model_config = ConfigDict(extra="allow", str_strip_whitespace=True)

    source_ref: SourceRef = Field(
        description="The sender's own ticket number, unique per channel: the same "
        "(channel, source_ref) again is the same request (letters, digits, _ . : / # -)."
    )
    submitted_at: PastTime | None = Field(
        default=None,
        description="When the citizen or operator reported it (ISO 8601 with zone; "
        "not in the future).",
    )

    @model_validator(mode="after")
    def _clean_extras(self) -> _ChannelPayload:
        # Unknown fields are kept for extras; they get the same text hygiene as known ones.
        if self.__pydantic_extra__:
            self.__pydantic_extra__ = clean_json(self.__pydantic_extra__)
        return self

    @model_validator(mode="after")
    def _lat_long_together(self) -> _ChannelPayload:
        located = "lat" in type(self).model_fields
        if located and (self.__dict__.get("lat") is None) != (self.__dict__.get("long") is None):
            raise ValueError("lat and long come together or not at all")
        return self


class HotlineTicket(_ChannelPayload):
    """A ticket typed by a hotline operator while on the phone with the caller."""

    channel: Literal["hotline"] = Field(description="Always `hotline`.")
    operator_id: ShortText | None = Field(default=None, description="Who typed the ticket.")
    caller_phone: PhoneNumber | None = Field(
        default=None, description=f"The caller's number, normalised. {_PERSONAL}"
    )
    caller_name: ShortText | None = Field(
        default=None, description=f"How to address the caller. {_PERSONAL}"
    )
    anonymous: bool = Field(
        default=False, description="Caller asked not to be named: the name is not kept."
    )
    confidential: bool = Field(
        default=False, description="Caller's identity is kept from the departments."
    )
    address_text: ShortText | None = Field(
        default=None, description="Where, as the caller said it (≤ 500 characters)."
    )
    summary: RequiredShort = Field(description="One line: what is wrong (≤ 500).")
    details: LongText = Field(
        default="", description="The full account (≤ 4000 characters after cleaning)."
    )
    category_hint: ShortText | None = Field(
        default=None, description="The operator's category: a taxonomy id or service_code."
    )
    urgency: UrgencyName | None = Field(default=None, description="The operator's urgency.")


class AppReport(_ChannelPayload):
    """A report from the citizen app, the web form or an Open311 client."""

    channel: Literal["app"] = Field(description="Always `app`.")
    text: RequiredLong = Field(
        description="The citizen's words (1–4000 characters after cleaning)."
    )
    photo_urls: list[MediaUrl] = Field(
        default_factory=list, max_length=MAX_MEDIA, description="At most 10 http(s) URLs."
    )
    lat: Latitude | None = Field(default=None, description="WGS-84 latitude, -90..90.")
    long: Longitude | None = Field(default=None, description="WGS-84 longitude, -180..180.")
    address_text: ShortText | None = Field(default=None, description="Where, in words.")
    category: ShortText | None = Field(
        default=None, description="The citizen's choice: a taxonomy id or service_code."
    )
    reporter_name: ShortText | None = Field(default=None, description=_PERSONAL)
    reporter_phone: PhoneNumber | None = Field(default=None, description=f"Normalised. {_PERSONAL}")
    reporter_email: ShortText | None = Field(default=None, description=_PERSONAL)
    language: Literal["zh", "en"] | None = Field(
        default=None, description="Language for notices to the citizen."
    )


class GridReport(_ChannelPayload):
    """A finding of a grid worker (网格员) on patrol; the checklist code is trusted."""

    channel: Literal["grid"] = Field(description="Always `grid`.")
    grid_worker_id: RequiredShort = Field(description="The grid worker's staff id.")
    grid_id: RequiredShort = Field(description="The grid cell patrolled.")
    checklist_code: RequiredShort = Field(
        description="The patrol checklist's category code (a taxonomy id)."
    )
    text: LongText = Field(default="", description="Notes (≤ 4000 characters).")
    photo_urls: list[MediaUrl] = Field(
        default_factory=list, max_length=MAX_MEDIA, description="At most 10 http(s) URLs."
    )
    lat: Latitude | None = Field(default=None, description="WGS-84 latitude, -90..90.")
    long: Longitude | None = Field(default=None, description="WGS-84 longitude, -180..180.")


ChannelPayload = Annotated[HotlineTicket | AppReport | GridReport, Field(discriminator="channel")]


class SubmittedRequest(RootModel[ChannelPayload]):
    """Data of ``civicroute.request.submitted.v1``: exactly one channel payload."""


SCHEMAS: dict[str, type[BaseModel]] = {
    "hotline-ticket": HotlineTicket,
    "app-report": AppReport,
    "grid-report": GridReport,
    "submitted-request": SubmittedRequest,
}


def json_schemas() -> dict[str, str]:
    """File name → JSON Schema text of every channel payload (what ``docs/schemas/`` holds)."""
    return {
        f"{name}.schema.json": json.dumps(
            {"$schema": "https://json-schema.org/draft/2020-12/schema"} | model.model_json_schema(),
            indent=2,
            ensure_ascii=False,
        )
        + "\n"
        for name, model in SCHEMAS.items()
    }


def export_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in json_schemas().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/schemas")
    for path in export_schemas(target):
        print(path)
