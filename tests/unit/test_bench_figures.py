"""The benchmark's accounting: what counts as delivered, triaged, late and lost."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.bench import profiles
from tests.bench.figures import percentile, summarise_flow


def _stats(dispatches: dict[str, list[list[Any]]], **extra: int) -> dict[str, Any]:
    return {
        "lead_dispatches": dispatches,
        "repeated_webhook_ids": extra.get("repeated_webhook_ids", 0),
        "repeated_escalations": extra.get("repeated_escalations", 0),
        "escalations": 0,
    }


def test_a_request_neither_delivered_triaged_nor_queued_is_lost() -> None:
    published = {"a": 10.0, "b": 10.5, "c": 11.0, "d": 11.5}
    stats = _stats({"a": [[10.0, 10.2, "e1"]]})
    figures = summarise_flow(published, stats, (0.0, 100.0), triaged={"b"}, queued={"c"})
    assert (figures["delivered"], figures["triaged"], figures["queued"]) == (1, 1, 1)
    assert figures["lost"] == 1
    assert figures["lost_refs_sample"] == ["d"]


def test_nothing_missing_means_no_lost_sample() -> None:
    figures = summarise_flow({"a": 1.0}, _stats({"a": [[1.0, 1.1, "e1"]]}), (0.0, 10.0))
    assert figures["lost"] == 0
    assert "lost_refs_sample" not in figures


def test_a_second_dispatch_event_and_a_redelivered_webhook_count_as_duplicates() -> None:
    stats = _stats({"a": [[1.0, 1.1, "e1"], [1.0, 1.3, "e2"]]}, repeated_webhook_ids=1)
    assert summarise_flow({"a": 1.0}, stats, (0.0, 10.0))["duplicates"] == 2


def test_throughput_counts_first_arrivals_inside_the_window_only() -> None:
    published = {"early": 1.0, "in1": 5.0, "in2": 6.0, "late": 9.0}
    stats = _stats(
        {
            "early": [[1.0, 2.0, "e1"]],
            "in1": [[5.0, 5.5, "e2"]],
            "in2": [[6.0, 7.0, "e3"]],
            "late": [[9.0, 12.0, "e4"]],
        }
    )
    figures = summarise_flow(published, stats, (4.0, 8.0))
    assert figures["delivered_in_window"] == 2
    assert figures["throughput_rps"] == 0.5
    assert sorted(figures["latencies_ms"]) == [500.0, 1000.0]


def test_percentile_is_an_observed_value_by_nearest_rank() -> None:
    values = [float(n) for n in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([7.0], 99) == 7.0


def test_the_profile_summary_names_the_files_it_cannot_find_and_reads_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    present = tmp_path / "profile-router.txt"
    present.write_text("main (services/router/app.py:1);handle (services/router/app.py:9) 3\n")
    assert profiles.main([str(present), str(tmp_path / "profile-*.txt")]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "not found: " + str(tmp_path / "profile-*.txt") in err
    assert profiles.main([str(present)]) == 0
    assert "100.0%  handle (services/router/app.py:9)" in capsys.readouterr().out


def test_latency_is_split_where_the_router_stamped_its_dispatch() -> None:
    # published at 1.0, routed at 1.1 / 1.2 / 1.4, received at 1.5 / 1.3 / 2.4
    stats = _stats(
        {
            "a": [[1.0, 1.5, "e1", 1.1]],
            "b": [[1.0, 1.3, "e2", 1.2]],
            "c": [[1.0, 2.4, "e3", 1.4]],
            "unstamped": [[1.0, 1.9, "e4", None]],
        }
    )
    published = {"a": 1.0, "b": 1.0, "c": 1.0, "unstamped": 1.0}
    figures = summarise_flow(published, stats, (0.0, 10.0))
    assert figures["p50_ms"] == pytest.approx(500.0)  # the unstamped one still counts end to end
    assert figures["hops_p50_p99_ms"]["published_to_routed"] == pytest.approx([200.0, 400.0])
    assert figures["hops_p50_p99_ms"]["routed_to_lead"] == pytest.approx([400.0, 1000.0])
