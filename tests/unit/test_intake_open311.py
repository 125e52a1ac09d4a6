"""Open311's pure side and the lifecycle mapping: forms, queries, statuses, XML."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.intake.lifecycle import Change, change_for, in_rounds, open311_status, status_notes
from services.intake.open311 import (
    MAX_WINDOW,
    Open311Error,
    parse_request_query,
    submission,
    to_xml,
)
from shared.citypack import PackError, load_pack
from shared.events import (
    CaseDeadlinesSet,
    CaseEscalated,
    CaseResolved,
    CaseReturned,
    Clock,
    EventType,
)
from shared.settings import DEFAULT_CITIES_DIR

CATEGORIES = load_pack(DEFAULT_CITIES_DIR / "demo-zh").categories
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def test_default_window_is_the_last_90_days_first_page_of_1000() -> None:
    query = parse_request_query({}, NOW)
    assert (query.start, query.end) == (NOW - MAX_WINDOW, NOW)
    assert (query.page, query.page_size, query.closed, query.extensions) == (1, 1000, None, False)


def test_one_date_opens_a_90_day_window_from_it() -> None:
    start = parse_request_query({"start_date": "2026-01-01T00:00:00Z"}, NOW)
    end = parse_request_query({"end_date": "2026-01-01T00:00:00+08:00"}, NOW)
    assert start.end - start.start == timedelta(days=90)
    assert end.end == datetime(2025, 12, 31, 16, 0, tzinfo=UTC)
    assert end.end - end.start == timedelta(days=90)


def test_ids_and_codes_are_comma_lists_and_status_both_means_any() -> None:
    query = parse_request_query(
        {"service_request_id": "A, B,,A", "service_code": "ZH-101,ZH-102", "status": "open,closed"},
        NOW,
    )
    assert query.case_ids == ("A", "B")
    assert query.service_codes == ("ZH-101", "ZH-102")
    assert query.closed is None
    assert parse_request_query({"status": "closed"}, NOW).closed is True


def test_form_maps_onto_the_app_channel_and_keeps_open311_fields_in_extras() -> None:
    report = submission(
        [
            ("service_code", "ZH-201"),
            ("address_string", "芍药居北里201号楼"),
            ("attribute[scope]", "home"),
            ("description", ""),
            ("channel", "grid"),  # an unknown field cannot switch the channel
            ("api_key", "secret"),
        ],
        CATEGORIES,
        source_ref="o311-abc",
        client="city-app",
    )
    assert report.channel == "app"
    assert report.category == "utilities.heating"
    assert report.text == "供暖"  # no description: the service name stands in
    assert report.model_extra == {
        "open311": {
            "service_code": "ZH-201",
            "attributes": {"scope": "home"},
            "client": "city-app",
            "fields": {"channel": "grid"},
        }
    }
    assert "secret" not in report.model_dump_json()


def test_multivalue_attribute_answers_stay_a_list() -> None:
    category = CATEGORIES["utilities.heating"].model_copy(
        update={
            "attributes": [
                CATEGORIES["utilities.heating"]
                .attributes[1]
                .model_copy(update={"datatype": "multivaluelist", "code": "rooms"})
            ]
        }
    )
    report = submission(
        [
            ("service_code", "ZH-201"),
            ("lat", "1"),
            ("long", "2"),
            ("attribute[rooms][]", "home"),
            ("attribute[rooms][]", "building"),
        ],
        {"utilities.heating": category},
        source_ref="o311-x",
        client="c",
    )
    assert report.model_extra["open311"]["attributes"] == {"rooms": ["home", "building"]}


def test_every_problem_of_a_form_is_reported_at_once() -> None:
    with pytest.raises(Open311Error) as caught:
        submission(
            [("service_code", "ZH-201"), ("lat", "x"), ("attribute[bogus]", "1")],
            CATEGORIES,
            source_ref="o311-x",
            client="c",
        )
    assert caught.value.status == 400
    assert len(caught.value.body()) == 3  # lat, unknown attribute, missing scope


def test_lifecycle_maps_to_open311_open_and_closed() -> None:
    assert [open311_status(s) for s in ("received", "signed", "reopened")] == ["open"] * 3
    assert [open311_status(s) for s in ("resolved", "closed")] == ["closed"] * 2


@pytest.mark.parametrize(
    ("city", "dispatched", "signed", "unheld"),
    [
        ("demo-zh", "已派至水务局办理。", "水务局已签收。", "已派至责任部门办理。"),
        (
            "nyc",
            "Assigned to 水务局.",
            "水务局 has taken the case.",
            "Assigned to the responsible agency.",
        ),
    ],
)
def test_status_notes_speak_the_packs_language(
    city: str, dispatched: str, signed: str, unheld: str
) -> None:
    public = load_pack(DEFAULT_CITIES_DIR / city).public
    assert status_notes("dispatched", "水务局", None, public) == dispatched
    assert status_notes("signed", "水务局", None, public) == signed
    assert status_notes("dispatched", None, None, public) == unheld
    # The department's own words are shown as they are.
    assert status_notes("resolved", "水务局", "已修复", public) == "已修复"


def test_a_public_text_file_missing_a_state_or_filling_in_another_field_is_refused(
    city_pack: Path,
) -> None:
    path = city_pack / "public.yaml"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("  closed: 已结案。\n", ""), encoding="utf-8")
    with pytest.raises(PackError, match="no status note for closed"):
        load_pack(city_pack)
    path.write_text(text.replace("已派至{agency}办理", "已派至{phone}办理"), encoding="utf-8")
    with pytest.raises(PackError, match=r"only \{agency\} may be filled in"):
        load_pack(city_pack)


def test_only_public_parts_of_case_events_are_projected() -> None:
    at = NOW
    resolved = change_for(
        EventType.CASE_RESOLVED,
        CaseResolved(case_id="C", department="water_bureau", at=at, reply="已修复", note="x"),
    )
    returned = change_for(
        EventType.CASE_RETURNED,
        CaseReturned(
            case_id="C", department="water_bureau", at=at, reason="not ours", return_count=1
        ),
    )
    deadlines = change_for(
        EventType.CASE_DEADLINES_SET,
        CaseDeadlinesSet(
            case_id="C", department="d", sla_policy="general", resolve_due=at + timedelta(days=7)
        ),
    )
    escalated = change_for(
        EventType.CASE_ESCALATED,
        CaseEscalated(
            case_id="C", department="d", clock=Clock.SIGN_FOR, level=1, due_at=at, fired_at=at
        ),
    )
    assert resolved is not None
    assert (resolved.state, resolved.note) == ("resolved", "已修复")
    assert returned is not None
    assert (returned.note, returned.department) == (None, None)
    assert deadlines is not None
    assert deadlines.resolve_due == at + timedelta(days=7)
    assert deadlines.in_history is False
    assert escalated is None


def test_xml_lists_booleans_nulls_and_bad_characters() -> None:
    xml = to_xml(
        "services",
        [{"service_code": "A", "metadata": True, "group": None, "keywords": "a\x01b"}],
        "service",
    ).decode()
    assert "<services><service><service_code>A</service_code>" in xml
    assert "<metadata>true</metadata><group /><keywords>ab</keywords>" in xml


def _change(case_id: str, kind: str) -> Change:
    return Change(case_id, kind, None)


def test_rounds_name_each_case_once_and_keep_each_cases_order() -> None:
    pairs = [
        ("e1", _change("A", "dispatched")),
        ("e2", _change("B", "dispatched")),
        ("e3", _change("A", "deadlines_set")),
        ("e4", _change("A", "signed")),
        ("e5", _change("C", "dispatched")),
        ("e6", _change("B", "signed")),
    ]

    rounds = in_rounds(pairs)

    assert [[event_id for event_id, _ in round_] for round_ in rounds] == [
        ["e1", "e2", "e5"],
        ["e3", "e6"],
        ["e4"],
    ]


def test_no_changes_make_no_rounds() -> None:
    assert in_rounds([]) == []
