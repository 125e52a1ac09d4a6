"""``jurisdictions.geojson``: district → street → grid polygons and a gazetteer of place names.

Every feature is one area with properties ``id``, ``name``, ``level``
(``district`` | ``street`` | ``grid``), ``parent`` (the id of the area one
level up; none for a district) and optional ``aliases`` (other names and
place names in it, for matching address text). Areas of one level must not
overlap, and a street or grid must lie inside its parent.

Lookups (pure, no I/O): by grid id, by point (an STRtree over the polygons),
by address text (the longest known name in it).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import shapely
from shapely.geometry import Point, shape
from shapely.geometry.base import BaseGeometry
from shapely.strtree import STRtree
from shapely.validation import explain_validity

Level = Literal["district", "street", "grid"]
LEVELS: tuple[Level, ...] = ("district", "street", "grid")
# Shared borders are fine; overlaps larger than this (in squared degrees, about
# 1 m² at these latitudes) are mistakes.
OVERLAP_TOLERANCE = 1e-10
# A child may stick out of its parent by this share of its area (digitising slack).
CONTAINMENT_SLACK = 0.01


class JurisdictionError(ValueError):
    """A jurisdictions file that cannot be used; the message names the feature."""


@dataclass(frozen=True)
class Area:
    id: str
    name: str
    level: Level
    parent: str | None
    aliases: tuple[str, ...]
    geometry: BaseGeometry | None = field(compare=False, repr=False)


@dataclass(frozen=True)
class Place:
    """Where a request is, as far as it could be told."""

    district: str | None = None
    street: str | None = None
    grid: str | None = None

    @property
    def found(self) -> bool:
        return self.district is not None


@dataclass
class Jurisdictions:
    areas: dict[str, Area] = field(default_factory=dict)
    _tree: STRtree | None = field(default=None, repr=False)
    _tree_areas: list[Area] = field(default_factory=list, repr=False)
    _names: list[tuple[str, Area]] = field(default_factory=list, repr=False)
    _pattern: re.Pattern[str] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        with_shape = [a for a in self.areas.values() if a.geometry is not None]
        if with_shape:
            self._tree = STRtree([a.geometry for a in with_shape])
            self._tree_areas = with_shape
        names: dict[str, Area] = {}
        for area in self.areas.values():
            for name in (area.name, *area.aliases):
                key = name.casefold()
                # The deeper area keeps a name both use (a street named after its district).
                if key not in names or LEVELS.index(area.level) > LEVELS.index(names[key].level):
                    names[key] = area
        self._names = sorted(names.items(), key=lambda item: -len(item[0]))
        if self._names:
            parts = [_name_pattern(name) for name, _ in self._names]
            self._pattern = re.compile("|".join(parts), re.IGNORECASE)

    def of_level(self, level: Level) -> list[Area]:
        return [a for a in self.areas.values() if a.level == level]

    def place_of(self, area: Area) -> Place:
        """The district, street and grid that ``area`` sits in (itself included)."""
        found: dict[str, str] = {}
        current: Area | None = area
        while current is not None:
            found[current.level] = current.id
            current = self.areas.get(current.parent) if current.parent else None
        return Place(found.get("district"), found.get("street"), found.get("grid"))

    def by_grid(self, grid_id: str) -> Area | None:
        area = self.areas.get(grid_id)
        return area if area is not None and area.level == "grid" else None

    def by_point(self, lat: float, long: float) -> Area | None:
        """The deepest area containing the point (GeoJSON order: x = longitude)."""
        if self._tree is None:
            return None
        point = Point(long, lat)
        hits = [self._tree_areas[i] for i in self._tree.query(point, predicate="intersects")]
        if not hits:
            return None
        return max(hits, key=lambda a: LEVELS.index(a.level))

    def by_text(self, text: str) -> tuple[Area, str] | None:
        """The area whose name appears in ``text``: the deepest, then the longest name."""
        if self._pattern is None or not text:
            return None
        best: tuple[int, int, Area, str] | None = None
        lookup = dict(self._names)
        for hit in self._pattern.finditer(text):
            name = hit.group(0)
            area = lookup[name.casefold()]
            rank = (LEVELS.index(area.level), len(name))
            if best is None or rank > best[:2]:
                best = (*rank, area, name)
        return (best[2], best[3]) if best else None


def _name_pattern(name: str) -> str:
    escaped = re.escape(name)
    # Latin names match whole words ("Queens" not in "Queensboro"); CJK names are substrings.
    if name.isascii():
        return rf"(?<![\w]){escaped}(?![\w])"
    return escaped


def load_jurisdictions(path: Path) -> Jurisdictions:
    """Read and check ``jurisdictions.geojson``; a missing file means no areas."""
    if not path.is_file():
        return Jurisdictions()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise JurisdictionError(
            f"{path} line {error.lineno}: not valid JSON: {error.msg}"
        ) from None
    if not isinstance(data, dict) or data.get("type") != "FeatureCollection":
        raise JurisdictionError(f"{path}: must be a GeoJSON FeatureCollection")
    features = data.get("features")
    if not isinstance(features, list):
        raise JurisdictionError(f"{path}: 'features' must be a list")
    areas: dict[str, Area] = {}
    for index, feature in enumerate(features):
        area = _read_feature(path, index, feature)
        if area.id in areas:
            raise JurisdictionError(
                f"{_where(path, index, area.id)}: id repeats an earlier feature"
            )
        areas[area.id] = area
    _check_parents(path, features, areas)
    _check_overlaps(path, features, areas)
    return Jurisdictions(areas)


def _where(path: Path, index: int, area_id: str | None = None) -> str:
    named = f" (id {area_id!r})" if area_id else ""
    return f"{path} feature #{index}{named}"


def _read_feature(path: Path, index: int, feature: Any) -> Area:
    if not isinstance(feature, dict) or feature.get("type") != "Feature":
        raise JurisdictionError(f"{_where(path, index)}: not a GeoJSON Feature")
    props = feature.get("properties") or {}
    area_id = props.get("id")
    if not isinstance(area_id, str) or not area_id:
        raise JurisdictionError(f"{_where(path, index)}: properties.id (a string) is required")
    where = _where(path, index, area_id)
    level = props.get("level")
    if level not in LEVELS:
        raise JurisdictionError(f"{where}: properties.level must be one of {', '.join(LEVELS)}")
    name = props.get("name")
    if not isinstance(name, str) or not name:
        raise JurisdictionError(f"{where}: properties.name (a string) is required")
    aliases = props.get("aliases") or []
    if not isinstance(aliases, list) or not all(isinstance(a, str) and a for a in aliases):
        raise JurisdictionError(f"{where}: properties.aliases must be a list of names")
    parent = props.get("parent")
    if level == "district" and parent is not None:
        raise JurisdictionError(f"{where}: a district has no parent")
    if level != "district" and not isinstance(parent, str):
        raise JurisdictionError(f"{where}: a {level} needs properties.parent")
    return Area(area_id, name, level, parent, tuple(aliases), _geometry(where, feature))


def _geometry(where: str, feature: dict[str, Any]) -> BaseGeometry | None:
    raw = feature.get("geometry")
    if raw is None:
        return None  # a named area without a drawn shape: found by id or name only
    if not isinstance(raw, dict) or raw.get("type") not in ("Polygon", "MultiPolygon"):
        raise JurisdictionError(f"{where}: geometry must be a Polygon or MultiPolygon")
    try:
        geometry = shape(raw)
    except (ValueError, TypeError, AttributeError, IndexError, KeyError) as error:
        raise JurisdictionError(f"{where}: malformed polygon: {error}") from None
    for ring in _rings(raw):
        if len(ring) < 4 or ring[0] != ring[-1]:
            raise JurisdictionError(
                f"{where}: malformed polygon: every ring needs 4+ positions, first = last"
            )
        for position in ring:
            lon, lat = position[0], position[1]
            if not (-180 <= lon <= 180 and -90 <= lat <= 90):
                raise JurisdictionError(
                    f"{where}: malformed polygon: position {position} is not [longitude, latitude]"
                )
    if geometry.is_empty or not geometry.is_valid:
        raise JurisdictionError(f"{where}: malformed polygon: {explain_validity(geometry)}")
    shapely.prepare(geometry)
    return geometry


def _rings(raw: dict[str, Any]) -> list[list[list[float]]]:
    coords = raw.get("coordinates") or []
    polygons = coords if raw["type"] == "MultiPolygon" else [coords]
    return [ring for polygon in polygons for ring in polygon]


def _check_parents(path: Path, features: list[Any], areas: dict[str, Area]) -> None:
    index_of = {f["properties"]["id"]: i for i, f in enumerate(features)}
    for area in areas.values():
        if area.parent is None:
            continue
        where = _where(path, index_of[area.id], area.id)
        parent = areas.get(area.parent)
        if parent is None:
            raise JurisdictionError(f"{where}: parent {area.parent!r} is not a feature here")
        if LEVELS.index(parent.level) != LEVELS.index(area.level) - 1:
            raise JurisdictionError(
                f"{where}: a {area.level}'s parent must be a {LEVELS[LEVELS.index(area.level) - 1]}"
                f", {area.parent!r} is a {parent.level}"
            )
        if area.geometry is not None and parent.geometry is not None:
            outside = area.geometry.difference(parent.geometry).area
            if outside > CONTAINMENT_SLACK * area.geometry.area:
                raise JurisdictionError(f"{where}: lies outside its parent {area.parent!r}")


def _check_overlaps(path: Path, features: list[Any], areas: dict[str, Area]) -> None:
    index_of = {f["properties"]["id"]: i for i, f in enumerate(features)}
    for level in LEVELS:
        shaped = [a for a in areas.values() if a.level == level and a.geometry is not None]
        if len(shaped) < 2:
            continue
        tree = STRtree([a.geometry for a in shaped])
        for i, area in enumerate(shaped):
            for j in tree.query(area.geometry, predicate="intersects"):
                if j <= i:
                    continue
                other = shaped[int(j)]
                overlap = area.geometry.intersection(other.geometry).area
                if overlap > OVERLAP_TOLERANCE:
                    later = max(area, other, key=lambda a: index_of[a.id])
                    earlier = other if later is area else area
                    raise JurisdictionError(
                        f"{_where(path, index_of[later.id], later.id)}: overlaps {level} "
                        f"{earlier.id!r} (feature #{index_of[earlier.id]})"
                    )
