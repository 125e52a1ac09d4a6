"""The benchmark's accounting: what counts as delivered, triaged, late and lost."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.bench import floor, profiles
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


def test_the_work_per_request_is_each_topic_and_http_count_over_what_was_published() -> None:
    sizes = {"citizen.requests.v1": 400, "requests.accepted.v1": 380, "case.events.v1": 1700}
    work = floor.per_request(400, sizes, webhooks=1000, callbacks=760)
    assert work.messages == {
        "citizen.requests.v1": 1.0,
        "requests.accepted.v1": 0.95,
        "case.events.v1": 4.25,
    }
    assert (work.webhooks, work.callbacks) == (2.5, 1.9)
    with pytest.raises(ValueError, match="nothing was published"):
        floor.per_request(0, sizes, webhooks=0, callbacks=0)


def _measured(units: float, cpu_seconds: float) -> dict[str, Any]:
    return {"units": units, "seconds": 10.0, "cpu_seconds": cpu_seconds}


def test_the_floor_projects_each_kinds_cpu_per_unit_to_the_target_rate() -> None:
    work = floor.PerRequest(
        messages={"citizen.requests.v1": 1, "requests.accepted.v1": 1, "case.events.v1": 4},
        webhooks=2.5,
        callbacks=2,
    )
    # 100 µs a message, 200 µs a webhook; the callbacks kept only half their pace
    # (5,000 of 10,000 in the window) at 400 µs each
    measured = {
        "kafka": _measured(60_000, 6.0),
        "webhooks": _measured(25_000, 5.0),
        "callbacks": _measured(5_000, 2.0),
    }
    figures = floor.floor_figures(work, 1000, measured, cores=2)
    kinds = figures["kinds"]
    assert [kinds[k]["cores_at_rate"] for k in ("kafka", "webhooks", "callbacks")] == [
        0.6,
        0.5,
        0.8,
    ]
    assert kinds["callbacks"]["done_per_s"] == 500
    assert kinds["callbacks"]["target_per_s"] == 2000
    assert [kinds[k]["kept_pace"] for k in ("kafka", "webhooks", "callbacks")] == [
        True,
        True,
        False,
    ]
    assert figures["floor_cores_at_rate"] == 1.9
    assert figures["floor_cpu_ms_per_request"] == 1.9
    assert figures["max_rps_on_cores"] == 1052.6  # 2 cores / 1.9 ms
    # every message is read by each service subscribed to its topic: 1 + 2 + 4 × 4
    assert figures["per_request"]["kafka_messages_read"] == 19


def test_a_kind_that_did_nothing_in_its_window_is_an_error_not_a_free_floor() -> None:
    work = floor.DEFAULT_PER_REQUEST
    measured = {"kafka": _measured(0, 0.5)}
    with pytest.raises(ValueError, match="kafka: no work"):
        floor.floor_figures(work, 1000, measured, cores=2)


def test_kafka_work_is_done_only_as_far_as_every_reader_of_each_topic_has_read() -> None:
    produced = {"citizen.requests.v1": 100, "case.events.v1": 400}  # 100 + 4 × 400 reads
    assert floor.messages_done(produced, read=1700) == 500
    assert floor.messages_done(produced, read=850) == 250  # readers halfway behind
    assert floor.messages_done({}, read=0) == 0
