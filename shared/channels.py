"""What the appeal platform publishes on ``citizen.requests.v1``: one payload per channel.

These are the data of ``civicroute.request.submitted.v1`` events. Intake maps
each one onto the canonical :class:`shared.events.CitizenRequest`. Fields the
models do not name are kept (``extra="allow"``) so intake can file them under
``extras`` instead of dropping them.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    StringConstraints,
)

MAX_DESCRIPTION = 4000
MAX_MEDIA = 10

# C0/C1 controls except tab and newline, plus zero-width and bidi overrides that hide text.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")


def clean_text(value: str) -> str:
    """NFC-normalise, drop control characters, trim. Text is stored inertly, never rendered."""
    return _CONTROL.sub("", unicodedata.normalize("NFC", value)).strip()


def _http_url(value: str) -> str:
    if not re.match(r"^https?://[^\s/$.?#][^\s]*$", value, re.IGNORECASE):
        raise ValueError("must be an http(s) URL")
    return value


CleanText = Annotated[str, AfterValidator(clean_text)]
ShortText = Annotated[CleanText, StringConstraints(max_length=500)]
LongText = Annotated[CleanText, StringConstraints(max_length=MAX_DESCRIPTION)]
MediaUrl = Annotated[str, StringConstraints(max_length=2048), AfterValidator(_http_url)]
SourceRef = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[\w.:/#-]+$")]
Latitude = Annotated[float, Field(ge=-90, le=90, allow_inf_nan=False)]
Longitude = Annotated[float, Field(ge=-180, le=180, allow_inf_nan=False)]
UrgencyName = Literal["emergency", "utilities", "general", "complex"]


class _ChannelPayload(BaseModel):
    model_config = ConfigDict(extra="allow", str_strip_whitespace=True)

    source_ref: SourceRef = Field(
        description="The platform's own ticket number; unique per channel"
    )
    submitted_at: AwareDatetime | None = Field(
        default=None, description="When the citizen or operator reported it (ISO 8601, with zone)"
    )


class HotlineTicket(_ChannelPayload):
    """A ticket typed by a hotline operator while on the phone with the caller."""

    channel: Literal["hotline"]
    operator_id: ShortText | None = None
    caller_phone: ShortText | None = Field(default=None, description="Personal data")
    caller_name: ShortText | None = Field(default=None, description="Personal data")
    anonymous: bool = Field(default=False, description="Caller asked not to be named")
    confidential: bool = Field(default=False, description="Caller's identity kept from departments")
    address_text: ShortText | None = None
    summary: ShortText = Field(min_length=1)
    details: LongText = ""
    category_hint: ShortText | None = Field(default=None, description="The operator's category")
    urgency: UrgencyName | None = None


class AppReport(_ChannelPayload):
    """A report from the citizen app, web form or an Open311 client."""

    channel: Literal["app"]
    text: LongText = Field(min_length=1)
    photo_urls: list[MediaUrl] = Field(default_factory=list, max_length=MAX_MEDIA)
    lat: Latitude | None = None
    long: Longitude | None = None
    address_text: ShortText | None = None
    category: ShortText | None = None
    reporter_name: ShortText | None = Field(default=None, description="Personal data")
    reporter_phone: ShortText | None = Field(default=None, description="Personal data")
    reporter_email: ShortText | None = Field(default=None, description="Personal data")
    language: Literal["zh", "en"] | None = None


class GridReport(_ChannelPayload):
    """A finding of a grid worker (网格员) on patrol; the checklist code is trusted."""

    channel: Literal["grid"]
    grid_worker_id: ShortText = Field(min_length=1)
    grid_id: ShortText = Field(min_length=1)
    checklist_code: ShortText = Field(min_length=1)
    text: LongText = ""
    photo_urls: list[MediaUrl] = Field(default_factory=list, max_length=MAX_MEDIA)
    lat: Latitude | None = None
    long: Longitude | None = None


ChannelPayload = Annotated[HotlineTicket | AppReport | GridReport, Field(discriminator="channel")]


class SubmittedRequest(RootModel[ChannelPayload]):
    """Data of ``civicroute.request.submitted.v1``: exactly one channel payload."""
