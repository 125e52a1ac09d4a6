"""The evaluation CLI on data the models never trained on, and the nyc pack's reproducibility.

Accuracy-type thresholds are quality, asserted here; timing is printed, never asserted.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from services.router import build_nyc_pack, evaluate
from services.router.datasets import read_rows
from shared.citypack import load_pack
from shared.events import Channel
from shared.settings import DEFAULT_CITIES_DIR, REPO_ROOT

NYC_EXAMPLES = DEFAULT_CITIES_DIR / "nyc" / "examples" / "nyc311.csv"
DEMO_HOLDOUT = DEFAULT_CITIES_DIR / "demo-zh" / "examples" / "holdout.csv"


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str]]:
    code = evaluate.main(list(argv))
    out = capsys.readouterr().out.strip().splitlines()
    return code, out


def test_demo_zh_held_out_split_meets_the_targets(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out = run_cli(
        capsys,
        "--city", "demo-zh", "--format", "labelled", "--data", str(DEMO_HOLDOUT),
        "--models-dir", str(tmp_path),
    )  # fmt: skip
    assert code == 0
    result = json.loads(out[-1])
    print("demo-zh held out:", result)
    assert set(result) == {"n", "accuracy", "coverage", "precision_auto", "p50_ms", "p99_ms"}
    assert result["n"] == len(DEMO_HOLDOUT.read_text(encoding="utf-8").splitlines()) - 1
    assert result["coverage"] >= 0.90
    assert result["precision_auto"] >= 0.95
    assert result["accuracy"] == pytest.approx(result["coverage"] * result["precision_auto"], 1e-3)


def test_nyc_cross_validation_meets_the_targets(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run_cli(
        capsys, "--city", "nyc", "--format", "nyc311", "--data", str(NYC_EXAMPLES), "--cv", "5"
    )
    assert code == 0
    result = json.loads(out[-1])
    print("nyc 5-fold:", result)
    assert result["n"] >= 2900
    assert result["coverage"] >= 0.95
    assert result["precision_auto"] >= 0.99
    assert out[0] == "# nyc: nyc311.csv (nyc311), 5-fold cross-validation"


def test_nyc311_rows_read_as_the_service_would_see_them() -> None:
    pack = load_pack(DEFAULT_CITIES_DIR / "nyc")
    first = read_rows(NYC_EXAMPLES, "nyc311", pack)[0]
    assert first.text == "Illegal Parking / Blocked Hydrant / Street/Sidewalk"
    assert (first.expected_lead, first.category) == ("NYPD", "illegal-parking")
    assert (first.channel, first.address) == (Channel.APP, "BRONX")
    assert first.received_at is not None
    assert first.received_at.isoformat() == "2023-02-28T23:44:59-05:00"
    request = first.request(pack)
    assert (request.location.lat, request.location.long) == (first.lat, first.long)


def test_a_file_without_the_needed_columns_is_refused_clearly(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("text,lead\n停水了,water_bureau\n", encoding="utf-8")
    code = evaluate.main(["--city", "demo-zh", "--format", "labelled", "--data", str(bad)])
    assert code == 2
    assert capsys.readouterr().err.strip() == (
        f"cannot evaluate: {bad} line 1: missing column(s) expected_lead"
    )


def test_a_bad_value_names_its_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "text,expected_lead,lat,long\n停水了,water_bureau,39.9,116.4\n停电了,district_government,北,116.4\n",
        encoding="utf-8",
    )
    code = evaluate.main(["--city", "demo-zh", "--format", "labelled", "--data", str(bad)])
    assert code == 2
    assert "line 3: lat '北' is not a number" in capsys.readouterr().err


def _nyc_source() -> Path | None:
    configured = os.environ.get("CIVIC_NYC311_CSV")
    candidate = (
        Path(configured) if configured else REPO_ROOT.parent / "shared/data/nyc311/train.csv"
    )
    return candidate if candidate.is_file() else None


@pytest.mark.skipif(
    _nyc_source() is None,
    reason="the NYC 311 source file is not here (set CIVIC_NYC311_CSV to its path)",
)
def test_the_committed_nyc_pack_is_what_the_build_script_derives(tmp_path: Path) -> None:
    source = _nyc_source()
    assert source is not None
    assert build_nyc_pack.main(["--data", str(source), "--out", str(tmp_path)]) == 0
    committed = DEFAULT_CITIES_DIR / "nyc"
    for name in (
        "departments.yaml",
        "taxonomy.yaml",
        "routes.yaml",
        "jurisdictions.geojson",
        "examples/nyc311.csv",
    ):
        assert (tmp_path / name).read_bytes() == (committed / name).read_bytes(), name


def test_predictions_file_has_a_row_per_request_with_its_decision_and_trace(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = tmp_path / "few.csv"
    data.write_text(
        "text,expected_lead,address\n"
        "公司拖欠工资三个月了,human_resources_social_security,\n"
        "小区门口垃圾没人清运,community_committee,海淀区学院路\n",
        encoding="utf-8",
    )
    out = tmp_path / "predictions.csv"
    code = evaluate.main(
        [
            "--city", "demo-zh", "--format", "labelled", "--data", str(data),
            "--models-dir", str(tmp_path / "models"), "--predictions", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    assert f"predictions: 2 rows in {out}" in capsys.readouterr().out
    with out.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["line"] for r in rows] == ["2", "3"]
    wages, elsewhere = rows
    assert (wages["decided"], wages["right"], wages["outcome"]) == (
        "human_resources_social_security",
        "yes",
        "dispatched",
    )
    assert "place: none found" in wages["trace"]
    assert (elsewhere["decided"], elsewhere["right"]) == ("triage:out_of_jurisdiction", "no")
    assert float(elsewhere["confidence"]) >= 0
