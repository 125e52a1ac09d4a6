"""The report's rates from counts: definitions, null without data, rounding, CSV."""

from __future__ import annotations

import csv
import io

from services.escalation.report import as_csv, as_json, build, line, rate


def test_rates_follow_their_definitions() -> None:
    item = line(
        "water_bureau",
        {
            "dispatched": 12,
            "returned": 2,
            "signed_on_time": 9,
            "contacted_on_time": 7,
            "resolved": 8,
            "resolved_on_time": 6,
            "satisfied": 4,
            "basically_satisfied": 2,
            "unsatisfied": 2,
            "overdue_open": 1,
        },
    )
    assert item.held == 10
    assert item.rated == 8
    assert item.response_rate == 0.7  # 7 contacted on time of 10 held
    assert item.resolution_rate == 0.8  # 8 resolved of 10 held
    assert item.satisfaction_rate == 0.75  # (4 + 2) of 8 rated


def test_rates_without_data_are_null_not_zero() -> None:
    item = line("idle", {"dispatched": 1, "returned": 1})
    assert item.held == 0
    assert (item.response_rate, item.resolution_rate, item.satisfaction_rate) == (None, None, None)


def test_rate_rounds_half_up_to_four_places() -> None:
    assert rate(1, 3) == 0.3333
    assert rate(2, 3) == 0.6667
    assert rate(1, 8) == 0.125
    assert rate(1, 20000) == 0.0001  # 0.00005 rounds up
    assert rate(0, 5) == 0.0


def test_csv_has_a_header_and_empty_cells_for_null_rates() -> None:
    lines = build(
        [
            {"department": "a", "dispatched": 2, "contacted_on_time": 1},
            {"department": "b", "dispatched": 0},
        ]
    )
    rows = list(csv.DictReader(io.StringIO(as_csv(lines))))
    assert [r["department"] for r in rows] == ["a", "b"]
    assert rows[0]["response_rate"] == "0.5"
    assert rows[1]["response_rate"] == ""
    assert as_json(lines)[1]["satisfaction_rate"] is None
