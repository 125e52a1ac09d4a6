"""City packs load, and a bad pack is refused naming the file and the line."""

from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from shared.citypack import PackError, load_pack
from shared.durations import parse_duration
from shared.settings import DEFAULT_CITIES_DIR


@pytest.fixture
def pack(tmp_path: Path) -> Path:
    target = tmp_path / "demo-zh"
    shutil.copytree(DEFAULT_CITIES_DIR / "demo-zh", target)
    return target


def test_demo_pack_has_the_fifteen_departments_of_the_brief() -> None:
    loaded = load_pack(DEFAULT_CITIES_DIR / "demo-zh")
    assert set(loaded.departments) >= {
        "community_committee",
        "housing_bureau",
        "property_company",
        "market_supervision",
        "food_drug",
        "urban_law_enforcement",
        "environment_bureau",
        "housing_construction",
        "water_bureau",
        "transport_bureau",
        "human_resources_social_security",
        "education_bureau",
        "health_commission",
        "public_security",
        "district_government",
    }


def replace_in(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def test_unknown_department_in_a_route_names_file_and_line(pack: Path) -> None:
    routes = pack / "routes.yaml"
    replace_in(routes, "lead: water_bureau", "lead: water_buerau")
    with pytest.raises(PackError) as refused:
        load_pack(pack)
    assert f"routes.yaml line {line_of(routes, 'water_buerau')}" in str(refused.value)
    assert "unknown department 'water_buerau'" in str(refused.value)


def test_misspelt_key_is_refused_not_ignored(pack: Path) -> None:
    replace_in(pack / "departments.yaml", "name_en: Water affairs bureau", "name_english: x")
    with pytest.raises(PackError, match=r"departments.yaml line \d+: .*name_english"):
        load_pack(pack)


def test_invalid_yaml_names_the_line(pack: Path) -> None:
    (pack / "sla.yaml").write_text("policies:\n  general: {sign_for: 2h\n")
    with pytest.raises(PackError, match=r"sla.yaml line \d+: not valid YAML"):
        load_pack(pack)


def test_missing_file_is_named(pack: Path) -> None:
    (pack / "taxonomy.yaml").unlink()
    with pytest.raises(PackError, match=r"taxonomy\.yaml: file missing"):
        load_pack(pack)


def test_service_refuses_to_start_on_a_bad_pack_with_one_line(pack: Path) -> None:
    replace_in(pack / "routes.yaml", "lead: water_bureau", "lead: nobody")
    env = {
        "CIVIC_KAFKA_BOOTSTRAP": "127.0.0.1:1",
        "CIVIC_DATABASE_URL": "postgresql://x@127.0.0.1:1/x",
        "CIVIC_CITIES_DIR": str(pack.parent),
        "PATH": "/usr/bin:/bin",
    }
    result = subprocess.run(
        [sys.executable, "-m", "services.router"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "routes.yaml line" in result.stderr
    assert "nobody" in result.stderr


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("15m", 900), ("2h", 7200), ("7d", 604800), ("1h30m", 5400), ("0s", 0)],
)
def test_durations_parse(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "2", "h", "2x", "1h 30", "-1h", "2hours"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="bad duration"):
        parse_duration(text)
