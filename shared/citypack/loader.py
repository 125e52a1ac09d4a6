"""Read and check a city pack. A bad pack stops the start with one message naming
the file and the line of the problem."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ValidationError

from shared.citypack.departments import Department, DepartmentsFile
from shared.citypack.jurisdictions import JurisdictionError, Jurisdictions, load_jurisdictions
from shared.citypack.public import PublicText
from shared.citypack.routes import PLACE_LABELS, PlaceRule, Route, RoutesFile
from shared.citypack.sla import SlaFile, SlaPolicy
from shared.citypack.taxonomy import Category, TaxonomyFile
from shared.events import Urgency
from shared.workdays import make_calendar

ModelT = TypeVar("ModelT", bound=BaseModel)


class PackError(ValueError):
    """A city pack that cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class YamlDoc:
    """A parsed YAML file that remembers the line of every value, for error messages."""

    path: Path
    data: Any
    lines: dict[tuple[Any, ...], int] = field(default_factory=dict)

    def line_of(self, loc: tuple[Any, ...]) -> int | None:
        for end in range(len(loc), -1, -1):
            line = self.lines.get(tuple(loc[:end]))
            if line is not None:
                return line
        return None

    def error(self, loc: tuple[Any, ...], message: str) -> PackError:
        line = self.line_of(loc)
        where = f"{self.path} line {line}" if line is not None else str(self.path)
        return PackError(f"{where}: {message}")


def read_yaml(path: Path) -> YamlDoc:
    if not path.is_file():
        raise PackError(f"{path}: file missing")
    text = path.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path} line {mark.line + 1}" if mark is not None else str(path)
        raise PackError(f"{where}: not valid YAML: {getattr(error, 'problem', error)}") from error
    lines: dict[tuple[Any, ...], int] = {}
    if node is not None:
        _index_lines(node, (), lines)
    return YamlDoc(path, data, lines)


def _index_lines(node: yaml.Node, loc: tuple[Any, ...], lines: dict[tuple[Any, ...], int]) -> None:
    lines[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            _index_lines(value_node, (*loc, key_node.value), lines)
            lines[(*loc, key_node.value)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _index_lines(item, (*loc, index), lines)


def parse(doc: YamlDoc, model: type[ModelT]) -> ModelT:
    try:
        return model.model_validate(doc.data)
    except ValidationError as error:
        first = error.errors(include_url=False, include_input=False)[0]
        loc = tuple(first["loc"])
        path = ".".join(str(p) for p in loc)
        raise doc.error(loc, f"{path}: {first['msg']}") from error


@dataclass(frozen=True)
class CityPack:
    name: str
    directory: Path
    departments: dict[str, Department]
    categories: dict[str, Category]
    routes: RoutesFile
    sla: SlaFile
    jurisdictions: Jurisdictions = field(default_factory=Jurisdictions)
    public: PublicText = field(default_factory=PublicText)

    @property
    def examples_dir(self) -> Path:
        """Labelled examples: ``*.csv`` files; those named ``holdout*`` are never trained on."""
        return self.directory / "examples"

    def category(self, category_id: str) -> Category:
        return self.categories[category_id]

    def policy_for(self, urgency: Urgency, category: str | None = None) -> tuple[str, SlaPolicy]:
        """The SLA policy (name, clocks): the urgency's, with the category's overrides."""
        return self.sla.policy(category, urgency.value)


def load_pack(directory: Path) -> CityPack:
    """Load and cross-check every file of the pack in ``directory``."""
    if not directory.is_dir():
        raise PackError(f"{directory}: no such city pack directory")
    departments = _load_departments(directory)
    categories = _load_taxonomy(directory)
    try:
        jurisdictions = load_jurisdictions(directory / "jurisdictions.geojson")
    except JurisdictionError as error:
        raise PackError(str(error)) from None
    return CityPack(
        name=directory.name,
        directory=directory,
        departments=departments,
        categories=categories,
        routes=_load_routes(directory, departments, categories, jurisdictions),
        sla=_load_sla(directory, categories),
        jurisdictions=jurisdictions,
        public=_load_public(directory),
    )


def _load_public(directory: Path) -> PublicText:
    path = directory / "public.yaml"
    if not path.is_file():
        return PublicText()
    return parse(read_yaml(path), PublicText)


def _load_departments(directory: Path) -> dict[str, Department]:
    doc = read_yaml(directory / "departments.yaml")
    departments: dict[str, Department] = {}
    for index, department in enumerate(parse(doc, DepartmentsFile).departments):
        if department.id in departments:
            raise doc.error(
                ("departments", index, "id"), f"department {department.id!r} listed twice"
            )
        departments[department.id] = department
    return departments


def _load_taxonomy(directory: Path) -> dict[str, Category]:
    doc = read_yaml(directory / "taxonomy.yaml")
    categories: dict[str, Category] = {}
    codes: set[str] = set()
    for index, category in enumerate(parse(doc, TaxonomyFile).categories):
        if category.id in categories or category.service_code in codes:
            raise doc.error(
                ("categories", index), f"category {category.id!r} or its service_code repeats"
            )
        categories[category.id] = category
        codes.add(category.service_code)
    return categories


def _load_routes(
    directory: Path,
    departments: dict[str, Department],
    categories: dict[str, Category],
    jurisdictions: Jurisdictions,
) -> RoutesFile:
    doc = read_yaml(directory / "routes.yaml")
    routes = parse(doc, RoutesFile)
    _check_departments(
        doc, ("fallback",), routes.fallback.lead, routes.fallback.cooperating, departments
    )
    if routes.place is not None:
        _check_place(doc, routes.place, jurisdictions)
    checker = _RouteChecker(doc, departments, categories, jurisdictions)
    checker.check_level(routes.routes, (), set(categories), None, None)
    return routes


def _check_place(doc: YamlDoc, place: PlaceRule, jurisdictions: Jurisdictions) -> None:
    """The home must be a district of the pack's map; no other district may share its names."""
    districts = {a.id: a for a in jurisdictions.of_level("district")}
    home = districts.get(place.home)
    if home is None:
        known = ", ".join(sorted(districts)) or "none"
        raise doc.error(
            ("place", "home"),
            f"home {place.home!r} is not a district of jurisdictions.geojson (districts: {known})",
        )
    own = {home.name, *home.aliases}
    for name, aliases in place.elsewhere.items():
        clash = own & {name, *aliases}
        if clash:
            raise doc.error(
                ("place", "elsewhere", name),
                f"{', '.join(sorted(clash))} names the home district {home.name}",
            )


class _RouteChecker:
    """Names, departments and reachability of every route, with the line of any problem."""

    def __init__(
        self,
        doc: YamlDoc,
        departments: dict[str, Department],
        categories: dict[str, Category],
        jurisdictions: Jurisdictions,
    ) -> None:
        self.doc = doc
        self.departments = departments
        self.categories = categories
        self.places = {
            level: {a.id for a in jurisdictions.of_level(level)}
            for level in ("district", "street", "grid")
        }
        self.seen: set[str] = set()

    def check_level(
        self,
        routes: list[Route],
        prefix: tuple[Any, ...],
        reachable: set[str],
        lead: str | None,
        cooperating: list[str] | None,
    ) -> None:
        earlier: list[tuple[Route, set[str]]] = []
        for index, route in enumerate(routes):
            loc = (*prefix, "routes", index)
            if route.id in self.seen:
                raise self.doc.error((*loc, "id"), f"route id {route.id!r} repeats")
            self.seen.add(route.id)
            own = self._categories(route, loc, reachable)
            if not own:
                raise self.doc.error(
                    loc, f"route {route.id!r} is unreachable: no category can match it here"
                )
            for other, other_categories in earlier:
                if not other.continue_ and _shadows(other, other_categories, route, own):
                    raise self.doc.error(
                        loc,
                        f"route {route.id!r} is unreachable: route {other.id!r} before it "
                        "matches everything it matches",
                    )
            earlier.append((route, own))
            route_lead = route.lead or lead
            route_cooperating = route.cooperating if route.cooperating is not None else cooperating
            if route_lead is None and not route.continue_:
                raise self.doc.error(
                    loc, f"route {route.id!r} needs a lead (its own or a parent's) or continue"
                )
            if route_lead is not None:
                _check_departments(
                    self.doc, loc, route_lead, route_cooperating or [], self.departments
                )
            self._check_places(route, loc)
            below = {route.category} if route.category is not None else own
            self.check_level(route.routes, loc, below, route_lead, route_cooperating)

    def _categories(self, route: Route, loc: tuple[Any, ...], reachable: set[str]) -> set[str]:
        if route.category is not None and route.category not in self.categories:
            raise self.doc.error((*loc, "category"), f"unknown category {route.category!r}")
        wanted = route.match.values("category")
        for name in wanted:
            if name not in self.categories:
                raise self.doc.error((*loc, "match", "category"), f"unknown category {name!r}")
        allowed = reachable & set(wanted) if wanted else set(reachable)
        for matcher in route.parsed_matchers:
            if matcher.label == "category":
                allowed = {c for c in allowed if matcher.holds(c)}
        return allowed

    def _check_places(self, route: Route, loc: tuple[Any, ...]) -> None:
        for level in PLACE_LABELS:
            for name in route.match.values(level):
                if name not in self.places[level]:
                    raise self.doc.error(
                        (*loc, "match", level),
                        f"unknown {level} {name!r} (not in jurisdictions.geojson)",
                    )


def _conditions(route: Route) -> set[tuple[str, str]]:
    """A route's conditions other than category, as comparable items."""
    items: set[tuple[str, str]] = set()
    for label in ("channel", *PLACE_LABELS):
        values = route.match.values(label)
        if values:
            items.add((label, "|".join(sorted(values))))
    if route.match.keywords:
        items.add(("keywords", "|".join(sorted(route.match.keywords))))
    if route.match.time:
        items.add(("time", "|".join(sorted(route.match.time))))
    items.update(("matcher", str(m)) for m in route.parsed_matchers if m.label != "category")
    return items


def _shadows(
    first: Route, first_categories: set[str], later: Route, later_categories: set[str]
) -> bool:
    """True when ``first`` matches every request ``later`` would: later can never be chosen."""
    return later_categories <= first_categories and _conditions(first) <= _conditions(later)


def _load_sla(directory: Path, categories: dict[str, Category]) -> SlaFile:
    doc = read_yaml(directory / "sla.yaml")
    sla = parse(doc, SlaFile)
    if "general" not in sla.policies:
        raise doc.error(("policies",), "a 'general' policy is required (the default)")
    unknown_urgencies = set(sla.policies) - {u.value for u in Urgency}
    if unknown_urgencies:
        name = sorted(unknown_urgencies)[0]
        raise doc.error(
            ("policies", name),
            f"policy {name!r} is not an urgency ({', '.join(u.value for u in Urgency)})",
        )
    for category in sla.categories:
        if category not in categories:
            raise doc.error(
                ("categories", category), f"unknown category {category!r} (not in taxonomy.yaml)"
            )
    for urgency in sla.policies:
        for category in (None, *sla.categories):
            name, policy = sla.policy(category, urgency)
            late = policy.clock_past_resolve()
            if late is not None:
                loc = ("policies", urgency) if category is None else ("categories", category)
                raise doc.error(
                    loc,
                    f"policy {name}: the {late} clock "
                    f"({getattr(policy, late).describe()}) may end after the resolve clock "
                    f"({policy.resolve.describe()})",
                )
    levels = [step.level for step in sla.ladder]
    if levels != sorted(levels) or len(set(levels)) != len(levels):
        raise doc.error(("ladder",), "ladder levels must be distinct and in rising order")
    afters = [step.after for step in sla.ladder]
    if afters != sorted(afters):
        raise doc.error(("ladder",), "a higher ladder level cannot come before a lower one")
    try:
        ZoneInfo(sla.timezone)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise doc.error(("timezone",), f"unknown timezone {sla.timezone!r}") from error
    try:
        make_calendar(sla.calendar)
    except ValueError as error:
        raise doc.error(("calendar",), f"calendar: {error}") from error
    return sla


def _check_departments(
    doc: YamlDoc,
    loc: tuple[Any, ...],
    lead: str,
    cooperating: list[str],
    departments: dict[str, Department],
) -> None:
    if lead not in departments:
        raise doc.error((*loc, "lead"), f"unknown department {lead!r} (not in departments.yaml)")
    for index, other in enumerate(cooperating):
        if other not in departments:
            raise doc.error(
                (*loc, "cooperating", index),
                f"unknown department {other!r} (not in departments.yaml)",
            )
        if other == lead:
            raise doc.error((*loc, "cooperating", index), f"{other!r} is already the lead")


def load_pack_or_exit(directory: Path) -> CityPack:
    """For service start: a bad pack prints one line naming file and line, then exit(2)."""
    try:
        return load_pack(directory)
    except PackError as error:
        print(f"bad city pack: {error}", file=sys.stderr)
        raise SystemExit(2) from None
