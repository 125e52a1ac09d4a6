"""``python -m services.router.build_nyc_pack --data train.csv``: derive the ``nyc`` pack.

From a file of real NYC 311 requests (NYC Open Data columns) it writes, into
``deploy/cities/nyc/`` (or ``--out``):

- ``departments.yaml``: the agencies in the file;
- ``taxonomy.yaml``: one category per Complaint Type (its commonest descriptors
  as keywords; urgency from the kind of complaint);
- ``routes.yaml``: each category to the agency that handled most of its
  requests, the others cooperating; a child route for a descriptor whose
  requests all went to another agency (e.g. graffiti with a police report);
- ``jurisdictions.geojson``: coarse borough polygons drawn from the requests'
  own points: the Voronoi cells of each borough's points, merged and simplified
  as one coverage (so boroughs never overlap);
- ``examples/nyc311.csv``: the requests, only the columns routing reads.

``sla.yaml`` is not written: it belongs to escalation. Runs in a few seconds.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import orjson
import shapely
import yaml
from shapely.geometry import MultiPoint, Point, mapping

from services.router.datasets import NYC_COLUMNS, slug
from shared.settings import DEFAULT_CITIES_DIR

BOROUGHS = {
    "MANHATTAN": ("manhattan", ["Manhattan", "New York County"]),
    "BROOKLYN": ("brooklyn", ["Brooklyn", "Kings County"]),
    "QUEENS": ("queens", ["Queens", "Queens County"]),
    "BRONX": ("bronx", ["Bronx", "The Bronx", "Bronx County"]),
    "STATEN ISLAND": ("staten-island", ["Staten Island", "Richmond County"]),
}
# Urgency by words in the complaint type; everything else is general.
URGENCY_WORDS = (
    ("emergency", ("gas", "fire", "elevator", "lead", "asbestos", "dead animal", "bridge")),
    ("utilities", ("heat", "water", "sewer", "electric", "street light", "traffic signal")),
    ("complex", ("housing", "building", "construction", "consumer")),
)
SIMPLIFY_DEGREES = 0.003  # about 300 m: coarse, enough to tell boroughs apart
MIN_DESCRIPTOR_ROWS = 2


def read(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        rows = [{k: (v or "").strip() for k, v in r.items() if k} for r in csv.DictReader(handle)]
    missing = [c for c in NYC_COLUMNS if rows and c not in rows[0]]
    if not rows or missing:
        raise SystemExit(f"{path}: not an NYC 311 file (missing {', '.join(missing) or 'rows'})")
    return rows


def urgency_of(complaint: str) -> str:
    lowered = complaint.lower()
    for urgency, words in URGENCY_WORDS:
        if any(w in lowered for w in words):
            return urgency
    return "general"


def departments(rows: list[dict[str, str]]) -> dict[str, Any]:
    names: dict[str, str] = {}
    for row in rows:
        names.setdefault(row["Agency"], row.get("Agency Name") or row["Agency"])
    return {
        "departments": [
            {
                "id": agency,
                "name": names[agency],
                "name_en": names[agency],
                "webhook_url": f"https://hooks.nyc.example/{slug(agency)}",
            }
            for agency in sorted(names)
        ]
    }


def category_ids(rows: list[dict[str, str]]) -> dict[str, str]:
    ids: dict[str, str] = {}
    for complaint, _ in Counter(r["Complaint Type"] for r in rows).most_common():
        base = slug(complaint)
        candidate, n = base, 2
        while candidate in ids.values():
            candidate, n = f"{base}-{n}", n + 1
        ids[complaint] = candidate
    return ids


def taxonomy(rows: list[dict[str, str]], ids: dict[str, str]) -> dict[str, Any]:
    descriptors: dict[str, Counter[str]] = defaultdict(Counter)
    for row in rows:
        if row["Descriptor"] and row["Descriptor"] != "N/A":
            descriptors[row["Complaint Type"]][row["Descriptor"]] += 1
    categories = []
    for complaint, cid in ids.items():
        group = complaint.split(" - ")[0].strip() if " - " in complaint else None
        entry: dict[str, Any] = {
            "id": cid,
            "name": complaint,
            "name_en": complaint,
            "service_code": f"NYC-{cid.upper()}",
            "urgency": urgency_of(complaint),
            "keywords": [d for d, _ in descriptors[complaint].most_common(5)],
        }
        if group:
            entry["group"] = group
        categories.append(entry)
    return {"categories": categories}


def routes(rows: list[dict[str, str]], ids: dict[str, str]) -> dict[str, Any]:
    agencies: dict[str, Counter[str]] = defaultdict(Counter)
    by_descriptor: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for row in rows:
        agencies[row["Complaint Type"]][row["Agency"]] += 1
        by_descriptor[(row["Complaint Type"], row["Descriptor"])][row["Agency"]] += 1
    table = []
    for complaint, cid in ids.items():
        ranked = [a for a, _ in sorted(agencies[complaint].items(), key=lambda p: (-p[1], p[0]))]
        lead = ranked[0]
        route: dict[str, Any] = {"id": cid, "match": {"category": cid}, "lead": lead}
        if ranked[1:]:
            route["cooperating"] = ranked[1:]
        children = []
        for (other, descriptor), counts in sorted(by_descriptor.items()):
            if other != complaint or descriptor in ("", "N/A") or len(counts) != 1:
                continue
            ((agency, n),) = counts.items()
            if agency != lead and n >= MIN_DESCRIPTOR_ROWS:
                children.append(
                    {
                        "id": f"{cid}-{slug(descriptor)}"[:80],
                        "match": {"keywords": [descriptor]},
                        "lead": agency,
                        "cooperating": [a for a in ranked if a != agency],
                    }
                )
        if children:
            route["routes"] = children
        table.append(route)
    return {
        "timezone": "America/New_York",
        "classifier": {"model": "tfidf-linear", "words": "latin", "min_confidence": 0.85},
        "max_returns": 2,
        # NYC agencies serve the whole city: an unknown place changes nobody's duty.
        "fallback": {"lead": "NYC311-PRD", "when_no_jurisdiction": False},
        "routes": table,
    }


def boroughs(rows: list[dict[str, str]]) -> dict[str, Any]:
    points: dict[tuple[float, float], Counter[str]] = defaultdict(Counter)
    for row in rows:
        if row["Borough"] in BOROUGHS and row["Latitude"] and row["Longitude"]:
            key = (round(float(row["Longitude"]), 5), round(float(row["Latitude"]), 5))
            points[key][row["Borough"]] += 1
    located = [(xy, counts.most_common(1)[0][0]) for xy, counts in points.items()]
    cloud = MultiPoint([xy for xy, _ in located])
    region = cloud.convex_hull.buffer(0.01)
    cells = shapely.voronoi_polygons(cloud, extend_to=region, ordered=True)
    parts: dict[str, list[Any]] = defaultdict(list)
    for cell, (_, borough) in zip(cells.geoms, located, strict=True):
        parts[borough].append(cell.intersection(region))
    names = sorted(parts)
    merged = [shapely.union_all(parts[name]) for name in names]
    simplified = shapely.coverage_simplify(merged, SIMPLIFY_DEGREES)
    features = []
    for name, shape in zip(names, simplified, strict=True):
        shape = shapely.make_valid(shapely.set_precision(shape, 1e-5))
        polygons = [g for g in getattr(shape, "geoms", [shape]) if g.geom_type == "Polygon"]
        area_id, aliases = BOROUGHS[name]
        features.append(
            {
                "type": "Feature",
                "properties": {
                    "id": area_id,
                    "level": "district",
                    "name": name,
                    "aliases": aliases,
                },
                "geometry": mapping(shapely.MultiPolygon(polygons)),
            }
        )
    return {
        "type": "FeatureCollection",
        "name": "NYC boroughs, coarse: Voronoi cells of real 311 request points per borough",
        "features": features,
    }


def agreement(geojson: dict[str, Any], rows: list[dict[str, str]]) -> float:
    """Share of located requests whose point falls in the polygon of their own borough."""
    shapes = {
        f["properties"]["name"]: shapely.geometry.shape(f["geometry"]) for f in geojson["features"]
    }
    checked = hits = 0
    for row in rows:
        if row["Borough"] in shapes and row["Latitude"] and row["Longitude"]:
            checked += 1
            point = Point(float(row["Longitude"]), float(row["Latitude"]))
            hits += shapes[row["Borough"]].covers(point)
    return hits / checked if checked else 0.0


def examples(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    compact = []
    for row in rows:
        item = {column: row.get(column, "") for column in NYC_COLUMNS}
        for column in ("Latitude", "Longitude"):
            if item[column]:
                item[column] = f"{float(item[column]):.5f}"
        compact.append(item)
    return compact


def write_yaml(path: Path, header: str, data: dict[str, Any]) -> None:
    text = yaml.safe_dump(data, allow_unicode=True, sort_keys=False, width=100)
    path.write_text(header + text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="NYC 311 CSV (Open Data columns)")
    parser.add_argument("--out", type=Path, default=DEFAULT_CITIES_DIR / "nyc")
    args = parser.parse_args(argv)
    rows = read(args.data)
    out: Path = args.out
    (out / "examples").mkdir(parents=True, exist_ok=True)
    note = (
        f"# Generated by services.router.build_nyc_pack from {args.data.name}"
        f" ({len(rows)} requests).\n"
    )
    ids = category_ids(rows)
    write_yaml(out / "departments.yaml", note, departments(rows))
    write_yaml(out / "taxonomy.yaml", note, taxonomy(rows, ids))
    write_yaml(out / "routes.yaml", note, routes(rows, ids))
    geojson = boroughs(rows)
    (out / "jurisdictions.geojson").write_bytes(orjson.dumps(geojson) + b"\n")
    with (out / "examples" / "nyc311.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(NYC_COLUMNS))
        writer.writeheader()
        writer.writerows(examples(rows))
    print(
        f"nyc pack written to {out}: {len(ids)} categories, "
        f"{len({r['Agency'] for r in rows})} agencies; borough polygons hold "
        f"{agreement(geojson, rows):.1%} of the requests' points in their own borough"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
