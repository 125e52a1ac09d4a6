"""Labelled requests from CSV files, as the service would receive them. No network, no DB.

Two formats:
- ``labelled``: columns ``text,expected_lead`` and optionally ``category``
  (needed to train), ``channel``, ``address``, ``lat``, ``long``, ``grid_id``,
  ``received_at`` (ISO 8601; default: a fixed weekday morning) and ``weight``
  (how many identical requests the row stands for).
- ``nyc311``: NYC Open Data 311 columns; the text is Complaint Type, Descriptor
  and Location Type; the place is Latitude/Longitude and Borough; the time is
  Created Date (New York time); the expected lead is Agency.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

from shared.citypack import CityPack
from shared.events import Channel, CitizenRequest, Location

Format = Literal["labelled", "nyc311"]
FORMATS: tuple[Format, ...] = ("labelled", "nyc311")
# Rows without a time are taken as received on a weekday morning, so time-of-day
# routes give the same answer on every run.
DEFAULT_RECEIVED = "2025-03-04T10:00:00"
NYC_CHANNELS = {"PHONE": Channel.HOTLINE}  # ONLINE, MOBILE, UNKNOWN: the app and web
NYC_TIME = "%m/%d/%Y %I:%M:%S %p"
NYC_COLUMNS = (
    "Created Date",
    "Agency",
    "Complaint Type",
    "Descriptor",
    "Location Type",
    "Borough",
    "Latitude",
    "Longitude",
    "Open Data Channel Type",
)


class DataError(ValueError):
    """A data file that cannot be read; the message names the file and line."""


@dataclass(frozen=True)
class Row:
    """One labelled request."""

    line: int
    text: str
    expected_lead: str
    category: str | None = None
    channel: Channel = Channel.APP
    address: str | None = None
    lat: float | None = None
    long: float | None = None
    grid_id: str | None = None
    received_at: datetime | None = None
    weight: float = 1.0
    title: str | None = None

    def request(self, pack: CityPack, case_id: str | None = None) -> CitizenRequest:
        received = self.received_at or datetime.fromisoformat(DEFAULT_RECEIVED).replace(
            tzinfo=ZoneInfo(pack.routes.timezone)
        )
        return CitizenRequest(
            case_id=case_id or f"EVAL-{self.line}",
            channel=self.channel,
            source_ref=f"eval-{self.line}",
            received_at=received,
            title=self.title,
            description=self.text,
            location=Location(
                address_text=self.address, lat=self.lat, long=self.long, grid_id=self.grid_id
            ),
        )

    @property
    def classifier_text(self) -> str:
        return " ".join(p for p in (self.title, self.text) if p)


def detect_format(path: Path) -> Format:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        header = next(csv.reader(handle), [])
    if "Complaint Type" in header:
        return "nyc311"
    if "text" in header:
        return "labelled"
    raise DataError(f"{path} line 1: neither a labelled file (text,...) nor NYC 311 columns")


def read_rows(path: Path, fmt: Format, pack: CityPack) -> list[Row]:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    reader = _read_labelled if fmt == "labelled" else _read_nyc311
    return list(reader(path, pack))


def _records(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path} line 1: missing column(s) {', '.join(missing)}")
        for record in reader:
            yield reader.line_num, {k: (v or "").strip() for k, v in record.items() if k}


def _float(path: Path, line: int, name: str, value: str) -> float | None:
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        raise DataError(f"{path} line {line}: {name} {value!r} is not a number") from None


def _read_labelled(path: Path, pack: CityPack) -> Iterator[Row]:
    for line, record in _records(path, ("text", "expected_lead")):
        text, lead = record["text"], record["expected_lead"]
        if not text or not lead:
            raise DataError(f"{path} line {line}: text and expected_lead are required")
        category = record.get("category") or None
        if category is not None and category not in pack.categories:
            raise DataError(f"{path} line {line}: unknown category {category!r}")
        channel = record.get("channel") or "app"
        if channel not in Channel.__members__.values():
            raise DataError(f"{path} line {line}: unknown channel {channel!r}")
        received = record.get("received_at") or ""
        try:
            at = datetime.fromisoformat(received) if received else None
        except ValueError:
            raise DataError(
                f"{path} line {line}: received_at {received!r} is not ISO 8601"
            ) from None
        if at is not None and at.tzinfo is None:
            at = at.replace(tzinfo=ZoneInfo(pack.routes.timezone))
        yield Row(
            line=line,
            text=text,
            expected_lead=lead,
            category=category,
            channel=Channel(channel),
            address=record.get("address") or None,
            lat=_float(path, line, "lat", record.get("lat", "")),
            long=_float(path, line, "long", record.get("long", "")),
            grid_id=record.get("grid_id") or None,
            received_at=at,
            weight=_float(path, line, "weight", record.get("weight", "")) or 1.0,
        )


def nyc_text(complaint: str, descriptor: str, location_type: str) -> str:
    return " / ".join(p for p in (complaint, descriptor, location_type) if p and p != "N/A")


def _read_nyc311(path: Path, pack: CityPack) -> Iterator[Row]:
    by_name = {c.name: c.id for c in pack.categories.values()}
    zone = ZoneInfo("America/New_York")
    required = ("Agency", "Complaint Type", "Descriptor", "Location Type", "Borough")
    for line, record in _records(path, required):
        created = record.get("Created Date", "")
        try:
            at = datetime.strptime(created, NYC_TIME).replace(tzinfo=zone) if created else None
        except ValueError:
            raise DataError(f"{path} line {line}: Created Date {created!r} unreadable") from None
        borough = record["Borough"]
        yield Row(
            line=line,
            text=nyc_text(record["Complaint Type"], record["Descriptor"], record["Location Type"]),
            expected_lead=record["Agency"],
            category=by_name.get(record["Complaint Type"]),
            channel=NYC_CHANNELS.get(record.get("Open Data Channel Type", ""), Channel.APP),
            address=borough if borough and borough != "Unspecified" else None,
            lat=_float(path, line, "Latitude", record.get("Latitude", "")),
            long=_float(path, line, "Longitude", record.get("Longitude", "")),
            received_at=at,
        )


def training_files(pack: CityPack) -> list[Path]:
    """The pack's example files the model learns from: every CSV but the held-out ones."""
    directory = pack.examples_dir
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob("*.csv") if not p.name.startswith("holdout"))


def training_rows(pack: CityPack, extra: list[Path] | None = None) -> list[Row]:
    rows: list[Row] = []
    for path in [*training_files(pack), *(extra or [])]:
        rows.extend(read_rows(path, detect_format(path), pack))
    return rows


def fold_of(row: Row, folds: int) -> int:
    """A stable fold for k-fold cross-validation, from the row's content and line."""
    digest = hashlib.sha256(f"{row.line}|{row.text}|{row.expected_lead}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % folds


_SLUG = re.compile(r"[^a-z0-9]+")


def slug(text: str) -> str:
    return _SLUG.sub("-", text.lower()).strip("-") or "x"
