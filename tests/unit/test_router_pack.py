"""City pack checks for the router's files: a bad pack stops the start with one clear message."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from shared.citypack import PackError, load_pack
from shared.settings import DEFAULT_CITIES_DIR, REPO_ROOT


@pytest.fixture
def pack_dir(tmp_path: Path) -> Path:
    target = tmp_path / "demo-zh"
    shutil.copytree(DEFAULT_CITIES_DIR / "demo-zh", target)
    return target


def edit_routes(pack: Path, change) -> None:  # type: ignore[no-untyped-def]
    data = yaml.safe_load((pack / "routes.yaml").read_text(encoding="utf-8"))
    change(data)
    (pack / "routes.yaml").write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))


def line_of(path: Path, needle: str) -> int:
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in {path}")


def test_both_shipped_packs_load_with_their_jurisdictions() -> None:
    demo = load_pack(DEFAULT_CITIES_DIR / "demo-zh")
    nyc = load_pack(DEFAULT_CITIES_DIR / "nyc")
    assert {a.id for a in demo.jurisdictions.of_level("district")} == {"chaoyang"}
    assert len(demo.jurisdictions.of_level("grid")) >= 10
    assert {a.name for a in nyc.jurisdictions.of_level("district")} == {
        "MANHATTAN",
        "BROOKLYN",
        "QUEENS",
        "BRONX",
        "STATEN ISLAND",
    }
    assert set(nyc.departments) >= {"HPD", "NYPD", "DOT", "DSNY", "DEP", "NYC311-PRD"}


def test_unknown_department_in_a_child_route_names_file_and_line(pack_dir: Path) -> None:
    text = (pack_dir / "routes.yaml").read_text(encoding="utf-8")
    text = text.replace(
        "      - id: construction-muck-trucks\n        match: {keywords: [渣土车, 遗撒, 撒漏]}\n"
        "        lead: urban_law_enforcement",
        "      - id: construction-muck-trucks\n        match: {keywords: [渣土车, 遗撒, 撒漏]}\n"
        "        lead: muck_office",
    )
    (pack_dir / "routes.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(PackError) as error:
        load_pack(pack_dir)
    line = line_of(pack_dir / "routes.yaml", "lead: muck_office")
    assert str(error.value) == (
        f"{pack_dir / 'routes.yaml'} line {line}: unknown department 'muck_office' "
        "(not in departments.yaml)"
    )


def test_a_route_after_a_catch_all_is_unreachable(pack_dir: Path) -> None:
    edit_routes(
        pack_dir,
        lambda d: d["routes"].insert(2, {"id": "everything", "lead": "district_government"}),
    )
    with pytest.raises(
        PackError,
        match=r"routes.yaml line \d+: route 'litter' is unreachable: "
        r"route 'everything' before it matches everything it matches",
    ):
        load_pack(pack_dir)


def test_a_repeated_category_route_is_unreachable(pack_dir: Path) -> None:
    edit_routes(
        pack_dir,
        lambda d: d["routes"].append(
            {
                "id": "litter-again",
                "match": {"category": "sanitation.litter"},
                "lead": "housing_bureau",
            }
        ),
    )
    with pytest.raises(PackError, match="route 'litter-again' is unreachable: route 'litter'"):
        load_pack(pack_dir)


def test_a_child_that_contradicts_its_parent_category_is_unreachable(pack_dir: Path) -> None:
    def change(data: dict) -> None:  # type: ignore[type-arg]
        water = next(r for r in data["routes"] if r["id"] == "water")
        water["routes"] = [{"id": "water-heating", "match": {"category": "utilities.heating"}}]

    edit_routes(pack_dir, change)
    with pytest.raises(PackError, match="route 'water-heating' is unreachable: no category"):
        load_pack(pack_dir)


def test_a_continue_route_does_not_shadow_the_ones_after_it(pack_dir: Path) -> None:
    # sanitation.litter routes after the catch-all are reachable when it continues.
    edit_routes(
        pack_dir,
        lambda d: d["routes"].insert(
            0, {"id": "tell-committee", "cooperating": ["community_committee"], "continue": True}
        ),
    )
    assert load_pack(pack_dir).routes.routes[0].id == "tell-committee"


@pytest.mark.parametrize(
    ("route", "message"),
    [
        ({"id": "x", "matchers": ["category ~= a"], "lead": "water_bureau"}, "bad matcher"),
        ({"id": "x", "matchers": ["district =~ ("], "lead": "water_bureau"}, "bad regular"),
        ({"id": "x", "match": {"time": ["25:00-06:00"]}, "lead": "water_bureau"}, "bad time"),
        ({"id": "x", "match": {"district": "haidian"}, "lead": "water_bureau"}, "unknown district"),
        ({"id": "x", "category": "no.such", "lead": "water_bureau"}, "unknown category"),
        ({"id": "x", "match": {"channel": "fax"}, "lead": "water_bureau"}, "channel"),
        ({"id": "x", "match": {"keywords": ["污水"]}}, "needs a lead"),
    ],
)
def test_bad_route_fields_stop_the_load(pack_dir: Path, route: dict, message: str) -> None:  # type: ignore[type-arg]
    edit_routes(pack_dir, lambda d: d["routes"].insert(0, route))
    with pytest.raises(PackError, match=message) as error:
        load_pack(pack_dir)
    assert str(error.value).startswith(f"{pack_dir / 'routes.yaml'} line ")


def edit_geojson(pack: Path, change) -> None:  # type: ignore[no-untyped-def]
    path = pack / "jurisdictions.geojson"
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data["features"])
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def test_overlapping_grids_are_refused_naming_both(pack_dir: Path) -> None:
    def change(features: list) -> None:  # type: ignore[type-arg]
        grid = next(f for f in features if f["properties"]["id"] == "G-CY-0013")
        twin = next(f for f in features if f["properties"]["id"] == "G-CY-0012")
        grid["geometry"] = twin["geometry"]

    edit_geojson(pack_dir, change)
    with pytest.raises(PackError) as error:
        load_pack(pack_dir)
    message = str(error.value)
    assert "jurisdictions.geojson feature #" in message
    assert "(id 'G-CY-0013'): overlaps grid 'G-CY-0012'" in message


def test_an_unclosed_ring_is_a_malformed_polygon(pack_dir: Path) -> None:
    def change(features: list) -> None:  # type: ignore[type-arg]
        ring = features[3]["geometry"]["coordinates"][0]
        ring[-1] = [ring[-1][0] + 0.001, ring[-1][1]]

    edit_geojson(pack_dir, change)
    with pytest.raises(PackError, match=r"feature #3 \(id '\w+'\): malformed polygon: every ring"):
        load_pack(pack_dir)


def test_a_self_crossing_polygon_is_refused(pack_dir: Path) -> None:
    def change(features: list) -> None:  # type: ignore[type-arg]
        features[2]["geometry"]["coordinates"] = [
            [
                [116.43, 39.915],
                [116.458, 39.925],
                [116.458, 39.915],
                [116.43, 39.925],
                [116.43, 39.915],
            ]
        ]

    edit_geojson(pack_dir, change)
    with pytest.raises(PackError, match=r"feature #2 .*malformed polygon: Self-intersection"):
        load_pack(pack_dir)


def test_a_grid_outside_its_street_is_refused(pack_dir: Path) -> None:
    def change(features: list) -> None:  # type: ignore[type-arg]
        grid = next(f for f in features if f["properties"]["id"] == "G-CY-0012")
        grid["properties"]["parent"] = "wangjing"

    edit_geojson(pack_dir, change)
    with pytest.raises(PackError, match="'G-CY-0012'\\): lies outside its parent 'wangjing'"):
        load_pack(pack_dir)


def test_broken_json_names_the_line(pack_dir: Path) -> None:
    (pack_dir / "jurisdictions.geojson").write_text(
        '{"type": "FeatureCollection",\n "features": [\n'
    )
    with pytest.raises(PackError, match=r"jurisdictions.geojson line 3: not valid JSON"):
        load_pack(pack_dir)


def test_the_router_refuses_to_start_on_a_bad_pack_with_one_line(pack_dir: Path) -> None:
    edit_routes(
        pack_dir,
        lambda d: d["routes"].insert(
            0, {"id": "x", "match": {"district": "haidian"}, "lead": "water_bureau"}
        ),
    )
    env = {
        **os.environ,
        "CIVIC_KAFKA_BOOTSTRAP": "127.0.0.1:9",
        "CIVIC_DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none",
        "CIVIC_CITY": pack_dir.name,
        "CIVIC_CITIES_DIR": str(pack_dir.parent),
    }
    done = subprocess.run(
        [sys.executable, "-m", "services.router"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    line = line_of(pack_dir / "routes.yaml", "district: haidian")
    assert done.stderr.strip() == (
        f"bad city pack: {pack_dir / 'routes.yaml'} line {line}: unknown district 'haidian' "
        "(not in jurisdictions.geojson)"
    )
