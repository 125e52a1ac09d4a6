"""Routing decisions as pure functions of a request, the city pack and a trained model. No I/O.

The steps, each leaving a line in the trace kept for audit:
1. where: grid id, else point in polygon, else a place name in the address or text; with the
   pack's place rule, another district's name sets the request aside (out_of_jurisdiction) and
   no place at all means the home jurisdiction (routed by subject);
2. what: a grid worker's checklist category is trusted, else the classifier;
3. who: the routing tree of ``routes.yaml`` (its rules may override the classifier);
4. whether: below the pack's confidence threshold, or with no route, a human triages it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import time
from functools import cache
from typing import Literal
from zoneinfo import ZoneInfo

from services.router.classifier import Classifier, Prediction
from shared.citypack import CityPack
from shared.citypack.jurisdictions import Place
from shared.citypack.routes import LABELS, Route
from shared.citypack.taxonomy import Category
from shared.events import CitizenRequest, Jurisdiction, Urgency

Method = Literal["trusted", "model", "rule", "manual"]
TriageKind = Literal[
    "low_confidence", "no_route", "no_place", "out_of_jurisdiction", "returns", "all_excluded"
]


@dataclass(frozen=True)
class Model:
    """A trained classifier with what training learnt about the routes it feeds."""

    classifier: Classifier
    version: str
    # Per route id: the share of labelled examples through that route whose lead was right.
    reliability: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Classification:
    category: str | None
    confidence: float
    method: Method
    ranked: list[tuple[str, float]]
    trace: list[str]


@dataclass(frozen=True)
class Hit:
    """A matching route with what it inherited."""

    route: Route
    lead: str | None
    cooperating: list[str]
    category: str | None  # set when a rule on the way overrides the classifier
    urgency: Urgency | None
    rule: str | None  # id of the overriding rule route


@dataclass(frozen=True)
class Decision:
    category: str
    urgency: Urgency
    lead: str
    cooperating: list[str]
    route_id: str | None
    sla_policy: str
    confidence: float
    jurisdiction: Jurisdiction
    method: Method
    trace: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Triage:
    reason: str
    kind: TriageKind
    category: str | None
    confidence: float
    candidates: list[str]
    jurisdiction: Jurisdiction
    trace: list[str] = field(default_factory=list)


Outcome = Decision | Triage


def request_text(request: CitizenRequest) -> str:
    """What the classifier reads: the title and the description (the place is located apart)."""
    return " ".join(p for p in (request.title, request.description) if p)


# --- where --------------------------------------------------------------------------------


def locate(request: CitizenRequest, pack: CityPack) -> tuple[Jurisdiction, str]:
    areas = pack.jurisdictions
    where = request.location
    notes: list[str] = []
    if where.grid_id:
        area = areas.by_grid(where.grid_id)
        if area is not None:
            place = areas.place_of(area)
            return _jurisdiction(place, "grid"), f"jurisdiction: grid {area.id} ({area.name})"
        notes.append(f"grid {where.grid_id!r} unknown")
    if where.lat is not None and where.long is not None:
        area = areas.by_point(where.lat, where.long)
        if area is not None:
            place = areas.place_of(area)
            return _jurisdiction(place, "point", where.grid_id), (
                f"jurisdiction: point {where.lat:.5f},{where.long:.5f} in {area.level} "
                f"{area.id} ({area.name})"
            )
        notes.append("point outside every polygon")
    for source, text in (("address", where.address_text), ("text", request_text(request))):
        if not text:
            continue
        found = areas.by_text(text)
        if found is not None:
            area, name = found
            place = areas.place_of(area)
            return _jurisdiction(place, "address", where.grid_id), (
                f"jurisdiction: {source} names {name!r}: {area.level} {area.id} ({area.name})"
            )
    notes.append("no known place name in the address or text")
    return Jurisdiction(method="fallback", grid_id=where.grid_id), (
        "jurisdiction unknown: " + "; ".join(notes)
    )


def named_elsewhere(request: CitizenRequest, pack: CityPack) -> tuple[str, str] | None:
    """The other district of the city (and the name used for it) that the address, else the
    text, names — unless the same words also name the home district."""
    rule = pack.routes.place
    if rule is None or not rule.elsewhere:
        return None
    home = _home_names(pack)
    for text in (request.location.address_text, request_text(request)):
        if not text or any(name in text for name in home):
            continue
        for district, aliases in rule.elsewhere.items():
            for name in (district, *aliases):
                if name in text:
                    return district, name
    return None


def _home_names(pack: CityPack) -> tuple[str, ...]:
    rule = pack.routes.place
    for area in pack.jurisdictions.of_level("district"):
        if rule is not None and area.id == rule.home:
            return (area.name, *area.aliases)
    return ()


def place_rule(
    request: CitizenRequest, pack: CityPack, jurisdiction: Jurisdiction
) -> tuple[Jurisdiction, str | None, tuple[str, str] | None]:
    """Apply the pack's place rule to where ``locate`` got: (jurisdiction, trace line, the other
    district named). A grid or a point inside the map is never overruled by a name in the text."""
    rule = pack.routes.place
    if rule is None or jurisdiction.method in ("grid", "point"):
        return jurisdiction, None, None
    outside = named_elsewhere(request, pack)
    if outside is not None:
        district, name = outside
        line = f"place: names {name!r}: {district}, outside this jurisdiction"
        return jurisdiction, line, outside
    if jurisdiction.method != "fallback":
        return jurisdiction, None, None
    home = _home_names(pack)
    return (
        Jurisdiction(district=rule.home, grid_id=jurisdiction.grid_id, method="home"),
        f"place: none found; routed by subject inside the home jurisdiction "
        f"{home[0] if home else rule.home}",
        None,
    )


def _jurisdiction(
    place: Place, method: Literal["grid", "point", "address"], grid_id: str | None = None
) -> Jurisdiction:
    return Jurisdiction(
        district=place.district, street=place.street, grid_id=place.grid or grid_id, method=method
    )


# --- what ---------------------------------------------------------------------------------


def category_from_hint(hint: str | None, pack: CityPack) -> Category | None:
    """A hint may name a category by id or by its service code."""
    if not hint:
        return None
    if hint in pack.categories:
        return pack.categories[hint]
    for category in pack.categories.values():
        if category.service_code == hint:
            return category
    return None


def classify(request: CitizenRequest, pack: CityPack, model: Model) -> Classification:
    if request.category_trusted:
        trusted = category_from_hint(request.category_hint, pack)
        if trusted is not None:
            return Classification(
                trusted.id,
                1.0,
                "trusted",
                [(trusted.id, 1.0)],
                [f"category {trusted.id}: grid checklist code {request.category_hint!r} trusted"],
            )
    prediction: Prediction = model.classifier.predict(request_text(request))
    if not prediction.ranked:
        return Classification(None, 0.0, "model", [], [f"model {model.version}: no category"])
    category, probability = prediction.best
    runner_up = (
        f"; next {prediction.ranked[1][0]} p={prediction.ranked[1][1]:.2f}"
        if len(prediction.ranked) > 1
        else ""
    )
    features = ", ".join(prediction.features) or "none"
    return Classification(
        category,
        probability,
        "model",
        prediction.ranked,
        [
            f"category {category}: model {model.classifier.name}@{model.version} "
            f"p={probability:.2f}{runner_up}; top features {features}"
        ],
    )


# --- who ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Context:
    labels: dict[str, str | None]
    text: str
    at: time


@cache
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def context_for(
    request: CitizenRequest, category: str | None, jurisdiction: Jurisdiction, pack: CityPack
) -> Context:
    local = request.received_at.astimezone(_zone(pack.routes.timezone))
    return Context(
        labels={
            "category": category,
            "channel": request.channel.value,
            "district": jurisdiction.district,
            "street": jurisdiction.street,
            "grid": jurisdiction.grid_id,
        },
        text=" ".join(
            p for p in (request_text(request), request.location.address_text) if p
        ).casefold(),
        at=local.time(),
    )


def _matches(route: Route, ctx: Context) -> bool:
    m = route.match
    for label in LABELS:
        wanted = m.values(label)
        if wanted and ctx.labels[label] not in wanted:
            return False
    if m.keywords and not any(k.casefold() in ctx.text for k in m.keywords):
        return False
    if m.time and not any(r.contains(ctx.at) for r in m.time_ranges):
        return False
    return all(matcher.holds(ctx.labels[matcher.label]) for matcher in route.parsed_matchers)


def _hit(route: Route, parent: Hit | None, ctx: Context) -> tuple[Hit, Context]:
    category = route.category or (parent.category if parent else None)
    hit = Hit(
        route=route,
        lead=route.lead or (parent.lead if parent else None),
        cooperating=list(
            route.cooperating
            if route.cooperating is not None
            else (parent.cooperating if parent else [])
        ),
        category=category,
        urgency=route.urgency or (parent.urgency if parent else None),
        rule=route.id if route.category else (parent.rule if parent else None),
    )
    if route.category:  # below a rule, routes see the rule's category
        ctx = Context({**ctx.labels, "category": route.category}, ctx.text, ctx.at)
    return hit, ctx


def route_hits(routes: list[Route], ctx: Context, parent: Hit | None = None) -> list[Hit]:
    """Alertmanager semantics: the first matching route (its deepest matching child) wins;
    ``continue`` lets later siblings add theirs."""
    hits: list[Hit] = []
    for route in routes:
        if not _matches(route, ctx):
            continue
        hit, below = _hit(route, parent, ctx)
        hits.extend(route_hits(route.routes, below, hit) or [hit])
        if not route.continue_:
            break
    return hits


def every_hit(routes: list[Route], ctx: Context, parent: Hit | None = None) -> list[Hit]:
    """Every matching route, children before their parent: the alternatives, in order."""
    hits: list[Hit] = []
    for route in routes:
        if not _matches(route, ctx):
            continue
        hit, below = _hit(route, parent, ctx)
        hits.extend(every_hit(route.routes, below, hit))
        hits.append(hit)
    return hits


def route_of(
    request: CitizenRequest, pack: CityPack, category: str, jurisdiction: Jurisdiction
) -> Hit | None:
    """The route a request of ``category`` takes (used to measure routes at training)."""
    hits = [
        h
        for h in route_hits(pack.routes.routes, context_for(request, category, jurisdiction, pack))
        if h.lead
    ]
    return hits[0] if hits else None


# --- the decision -------------------------------------------------------------------------


def decide(
    request: CitizenRequest,
    pack: CityPack,
    model: Model,
    *,
    excluded: frozenset[str] = frozenset(),
) -> Outcome:
    jurisdiction, where = locate(request, pack)
    jurisdiction, placed, outside = place_rule(request, pack, jurisdiction)
    classification = classify(request, pack, model)
    trace = [where, *([placed] if placed else []), *classification.trace]
    if excluded:
        trace.append(f"excluded (returned it before): {', '.join(sorted(excluded))}")
    ctx = context_for(request, classification.category, jurisdiction, pack)
    hits = route_hits(pack.routes.routes, ctx)
    leads = [h for h in hits if h.lead]

    def triage(kind: TriageKind, reason: str, confidence: float) -> Triage:
        return Triage(
            reason=reason,
            kind=kind,
            category=classification.category,
            confidence=confidence,
            candidates=_candidates(classification, request, pack, jurisdiction),
            jurisdiction=jurisdiction,
            trace=[*trace, f"triage: {reason}"],
        )

    if outside is not None:
        district, name = outside
        return triage(
            "out_of_jurisdiction",
            f"names {district}{f' (as {name!r})' if name != district else ''}: not this "
            "jurisdiction's; a person transfers it (转办)",
            classification.confidence,
        )
    if not leads:
        what = classification.category or "no category"
        return triage("no_route", f"no route for {what}", classification.confidence)
    primary = leads[0]
    if primary.rule is not None:
        method: Method = "rule"
        confidence = 1.0
        category = primary.category or classification.category or ""
        trace.append(f"rule {primary.rule} overrides the classifier: category {category}")
    else:
        method = classification.method
        category = classification.category or ""
        confidence = classification.confidence
        if method == "model":
            reliability = model.reliability.get(primary.route.id, 1.0)
            if reliability < 1.0:
                trace.append(
                    f"route {primary.route.id} was right for {reliability:.0%} of its examples"
                )
            confidence *= reliability
            threshold = pack.routes.classifier.min_confidence
            if confidence < threshold:
                return triage(
                    "low_confidence",
                    f"confidence {confidence:.2f} below the threshold {threshold:.2f}",
                    confidence,
                )
    needs_place = category in pack.categories and pack.categories[category].needs_place
    place_rule_ = pack.routes.place
    unplaced = jurisdiction.method == "home" and needs_place and place_rule_ is not None
    if unplaced and place_rule_ is not None and place_rule_.no_place == "triage":
        return triage(
            "no_place",
            f"{category} needs a place and none was found: a person asks for it",
            confidence,
        )
    chosen: Hit | None = primary
    if primary.lead in excluded:
        chosen = next(
            (h for h in every_hit(pack.routes.routes, ctx) if h.lead and h.lead not in excluded),
            None,
        )
        trace.append(
            f"route {primary.route.id}: lead {primary.lead} returned it; "
            + (f"next matching route {chosen.route.id}" if chosen else "no other route matches")
        )
    lead, cooperating, route_id = (
        (chosen.lead, list(chosen.cooperating), chosen.route.id) if chosen else (None, [], None)
    )
    fallback = pack.routes.fallback
    if jurisdiction.method == "fallback" and fallback.when_no_jurisdiction:
        lead, cooperating, route_id = fallback.lead, list(fallback.cooperating), None
        trace.append(f"place unknown: {fallback.lead} takes it (兜底)")
    elif unplaced:
        lead, cooperating, route_id = fallback.lead, list(fallback.cooperating), None
        trace.append(f"{category} needs a place, none found: {fallback.lead} takes it (兜底)")
    elif lead is None:
        lead, cooperating, route_id = fallback.lead, list(fallback.cooperating), None
        trace.append(f"every matching route's lead returned it: {fallback.lead} takes it (兜底)")
    if lead in excluded:
        return triage("all_excluded", "every candidate department returned it", confidence)
    assert lead is not None
    for extra in hits:  # routes reached through `continue` add their units
        if extra is not chosen and extra is not primary:
            cooperating.extend(u for u in [extra.lead, *extra.cooperating] if u)
    cooperating = [u for u in dict.fromkeys(cooperating) if u != lead and u not in excluded]
    if route_id is not None:
        trace.append(
            f"route {route_id}: lead {lead}"
            + (f", cooperating {', '.join(cooperating)}" if cooperating else "")
        )
    category_model = pack.categories.get(category)
    urgency = (
        (chosen.urgency if chosen else None)
        or request.urgency_hint
        or (category_model.urgency if category_model else Urgency.GENERAL)
    )
    policy_name, _ = pack.policy_for(urgency)
    return Decision(
        category=category,
        urgency=urgency,
        lead=lead,
        cooperating=cooperating,
        route_id=route_id,
        sla_policy=policy_name,
        confidence=round(min(1.0, max(0.0, confidence)), 4),
        jurisdiction=jurisdiction,
        method=method,
        trace=trace,
    )


def _candidates(
    classification: Classification,
    request: CitizenRequest,
    pack: CityPack,
    jurisdiction: Jurisdiction,
) -> list[str]:
    """For the triage operator: the likeliest categories and where each would go."""
    found = []
    for category, probability in classification.ranked[:3]:
        hit = route_of(request, pack, category, jurisdiction)
        lead = hit.lead if hit else "no route"
        found.append(f"{category} ({probability:.2f}) → {lead}")
    return found


def triage_for_returns(
    pack: CityPack, returns: int, jurisdiction: Jurisdiction, trace: list[str]
) -> Triage:
    """Returned too often: no more guessing, a person decides."""
    reason = f"returned {returns} times (limit {pack.routes.max_returns}): a person decides"
    return Triage(
        reason=reason,
        kind="returns",
        category=None,
        confidence=0.0,
        candidates=[],
        jurisdiction=jurisdiction,
        trace=[*trace, f"triage: {reason}"],
    )
