"""intake's pure mapping: each channel to the canonical request, hygiene rules, reasons."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from services.intake.domain import (
    Rejection,
    guess_channel,
    payload_hash,
    rejection_of,
    resolve_category,
    to_citizen_request,
)
from shared.channels import (
    AppReport,
    GridReport,
    HotlineTicket,
    SubmittedRequest,
    json_schemas,
    normalise_phone,
)
from shared.citypack import load_pack
from shared.settings import DEFAULT_CITIES_DIR

NOW = datetime(2026, 3, 10, 8, 30, tzinfo=UTC)
CATEGORIES = load_pack(DEFAULT_CITIES_DIR / "demo-zh").categories


def hotline(**changes: Any) -> HotlineTicket:
    base = {
        "channel": "hotline",
        "source_ref": "H-1",
        "operator_id": "op1",
        "caller_phone": "+86 138 1234 5678",
        "caller_name": "王阿姨",
        "address_text": "团结湖北里5号楼",
        "summary": "停水一整天",
        "details": "从早上开始停水，没有通知。",
        "category_hint": "ZH-202",
        "urgency": "utilities",
        "queue": "east",
    }
    return HotlineTicket.model_validate(base | changes)


def test_hotline_ticket_maps_caller_flags_text_and_extras() -> None:
    request = to_citizen_request(hotline(confidential=True), case_id="CR1", received_at=NOW)

    assert request.channel == "hotline"
    assert request.title == "停水一整天"
    assert request.description == "从早上开始停水，没有通知。"
    assert request.urgency_hint == "utilities"
    assert request.category_hint == "ZH-202"
    assert request.location.address_text == "团结湖北里5号楼"
    assert request.reporter.phone == "+8613812345678"
    assert request.reporter.name == "王阿姨"
    assert request.reporter.confidential is True
    assert request.extras == {"queue": "east", "operator_id": "op1"}


def test_anonymous_caller_keeps_no_name_and_summary_stands_in_for_details() -> None:
    request = to_citizen_request(
        hotline(anonymous=True, details=""), case_id="CR1", received_at=NOW
    )
    assert request.reporter.name is None
    assert request.reporter.anonymous is True
    assert request.description == "停水一整天"


def test_app_report_maps_location_photos_and_reporter() -> None:
    report = AppReport.model_validate(
        {
            "channel": "app",
            "source_ref": "A-1",
            "text": "路灯不亮",
            "lat": 39.9,
            "long": 116.4,
            "photo_urls": ["https://x.example/1.jpg", "http://x.example/2.png"],
            "category": "ZH-401",
            "reporter_email": "a@example.org",
            "language": "en",
            "app_version": "3.2",
        }
    )
    request = to_citizen_request(report, case_id="CR2", received_at=NOW)

    assert (request.location.lat, request.location.long) == (39.9, 116.4)
    assert request.media_urls == ["https://x.example/1.jpg", "http://x.example/2.png"]
    assert request.reporter.email == "a@example.org"
    assert request.reporter.language == "en"
    assert request.extras == {"app_version": "3.2"}
    assert request.category_trusted is False


def test_grid_report_is_trusted_and_keeps_grid_and_worker() -> None:
    report = GridReport.model_validate(
        {
            "channel": "grid",
            "source_ref": "G-1",
            "grid_worker_id": "W7",
            "grid_id": "G-CY-0031",
            "checklist_code": "cityscape.ads_stalls",
            "photo_urls": ["https://x.example/p.jpg"],
        }
    )
    request = to_citizen_request(report, case_id="CR3", received_at=NOW)

    assert request.category_trusted is True
    assert request.category_hint == "cityscape.ads_stalls"
    assert request.description == "cityscape.ads_stalls"  # no notes: the code says what
    assert request.location.grid_id == "G-CY-0031"
    assert request.grid_worker_id == "W7"


@pytest.mark.parametrize(
    "url",
    [
        "http://a.example/\x00",  # PostgreSQL's jsonb cannot hold a NUL
        "https://a.example/p\x07.jpg",
        "https://\x00a.example/p.jpg",
        "https://a.example/p q.jpg",
        "ftp://a.example/p.jpg",
    ],
)
def test_a_photo_url_with_a_control_character_or_space_or_other_scheme_is_refused(
    url: str,
) -> None:
    grid = {"channel": "grid", "source_ref": "G-1", "grid_worker_id": "W7"}
    with pytest.raises(ValidationError, match=r"http\(s\) URL without spaces or control"):
        GridReport.model_validate({**grid, "grid_id": "G-1", "photo_urls": [url]})


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("13812345678", "13812345678"),
        ("138-1234-5678", "13812345678"),
        ("+86 138 1234 5678", "+8613812345678"),
        ("0086 13812345678", "+8613812345678"),
        ("１３８１２３４５６７８", "13812345678"),  # full-width digits from an IME
        ("+1 (212) 555-0100", "+12125550100"),
        ("010-8765 4321", "01087654321"),
    ],
)
def test_phone_numbers_are_normalised(raw: str, normalised: str) -> None:
    assert normalise_phone(raw) == normalised


@pytest.mark.parametrize("raw", ["12345", "+0123456789", "phone me", "+86 138 1234 5678 9999"])
def test_unusable_phone_numbers_are_refused(raw: str) -> None:
    with pytest.raises(ValueError, match=r"E\.164"):
        normalise_phone(raw)


def test_submitted_at_may_not_be_in_the_future_beyond_clock_skew() -> None:
    soon = datetime.now(UTC) + timedelta(minutes=2)
    later = datetime.now(UTC) + timedelta(hours=1)
    assert hotline(submitted_at=soon.isoformat()).submitted_at == soon
    with pytest.raises(ValidationError, match="future"):
        hotline(submitted_at=later.isoformat())


def test_lat_without_long_is_refused() -> None:
    with pytest.raises(ValidationError, match="lat and long"):
        AppReport.model_validate({"channel": "app", "source_ref": "a", "text": "t", "lat": 1})


def test_same_payload_hashes_the_same_and_a_change_does_not() -> None:
    assert payload_hash(hotline()) == payload_hash(hotline())
    assert payload_hash(hotline()) != payload_hash(hotline(details="other"))
    assert payload_hash(hotline()) != payload_hash(hotline(queue="west"))


@pytest.mark.parametrize(
    ("hint", "category"),
    [
        ("utilities.heating", "utilities.heating"),
        ("ZH-201", "utilities.heating"),
        ("zh-201", "utilities.heating"),
        ("供暖", None),
        (None, None),
    ],
)
def test_category_hint_names_a_category_by_id_or_service_code(
    hint: str | None, category: str | None
) -> None:
    assert resolve_category(hint, CATEGORIES) == category


@pytest.mark.parametrize(
    ("reason", "code"),
    [
        ("empty message", Rejection.EMPTY),
        ("malformed JSON: EOF while parsing", Rejection.MALFORMED),
        ("not a CloudEvent: id: Field required", Rejection.NOT_CLOUDEVENT),
        ("invalid civicroute.request.submitted.v1 data: app.lat: ...", Rejection.INVALID),
        ("too_large: 70000 bytes", Rejection.TOO_LARGE),
        ("conflict: app:A-1 was accepted as CR1", Rejection.CONFLICT),
        ("processing failed: KeyError: 'x'", Rejection.FAILED),
        ("something nobody wrote", Rejection.FAILED),
    ],
)
def test_dead_letter_reasons_map_to_a_bounded_code(reason: str, code: Rejection) -> None:
    assert rejection_of(reason) is code


@pytest.mark.parametrize(
    ("data", "label"),
    [({"channel": "grid"}, "grid"), ({"channel": "x" * 999}, "unknown"), ([1], "unknown")],
)
def test_claimed_channel_label_stays_bounded(data: Any, label: str) -> None:
    assert guess_channel(data) == label


def test_submitted_request_picks_the_model_by_channel() -> None:
    parsed = SubmittedRequest.model_validate(hotline().model_dump(mode="json"))
    assert isinstance(parsed.root, HotlineTicket)


def test_exported_schemas_in_docs_match_the_models() -> None:
    """docs/schemas/ is generated (python -m shared.channels docs/schemas); it may not drift."""
    directory = Path(__file__).resolve().parents[2] / "docs" / "schemas"
    for name, text in json_schemas().items():
        assert (directory / name).read_text(encoding="utf-8") == text, name
