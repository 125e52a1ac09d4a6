"""Routing decisions as pure functions of a request and the city pack. No I/O."""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.citypack import CityPack
from shared.citypack.taxonomy import Category
from shared.events import CitizenRequest, Jurisdiction, Urgency


@dataclass(frozen=True)
class Classification:
    category: str
    confidence: float
    trace: list[str]


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
    trace: list[str] = field(default_factory=list)


def request_text(request: CitizenRequest) -> str:
    return " ".join(
        p for p in (request.title, request.description, request.location.address_text) if p
    )


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


def classify_by_keywords(text: str, pack: CityPack) -> Classification:
    """The category whose keywords appear most often; ties go to the earlier category."""
    best: tuple[int, str, list[str]] | None = None
    for category in pack.categories.values():
        hits = [k for k in category.keywords if k and k.lower() in text.lower()]
        if hits and (best is None or len(hits) > best[0]):
            best = (len(hits), category.id, hits)
    if best is None:
        return Classification("other", 0.0, ["keywords: no category keyword in the text"])
    count, category_id, hits = best
    confidence = min(1.0, 0.5 + 0.2 * count)
    return Classification(category_id, confidence, [f"keywords: {category_id} matched {hits}"])


def classify(request: CitizenRequest, pack: CityPack) -> Classification:
    trusted = category_from_hint(request.category_hint, pack) if request.category_trusted else None
    if trusted is not None:
        return Classification(
            trusted.id, 1.0, [f"grid checklist code {request.category_hint!r} trusted"]
        )
    return classify_by_keywords(request_text(request), pack)


def route(
    request: CitizenRequest, pack: CityPack, classification: Classification, excluded: set[str]
) -> Decision:
    """First route matching the category wins; without one, the fallback department takes it."""
    category = pack.categories.get(classification.category)
    urgency = request.urgency_hint or (category.urgency if category else Urgency.GENERAL)
    policy_name, _ = pack.policy_for(urgency)
    trace = list(classification.trace)
    for candidate in pack.routes.routes:
        if candidate.match.category not in (None, classification.category):
            continue
        if candidate.lead in excluded:
            trace.append(f"route {candidate.id}: lead {candidate.lead} excluded (returned it)")
            continue
        trace.append(f"route {candidate.id} matched category {classification.category}")
        return Decision(
            category=classification.category,
            urgency=urgency,
            lead=candidate.lead,
            cooperating=[d for d in candidate.cooperating if d not in excluded],
            route_id=candidate.id,
            sla_policy=policy_name,
            confidence=classification.confidence,
            jurisdiction=Jurisdiction(method="fallback"),
            trace=trace,
        )
    fallback = pack.routes.fallback
    trace.append(f"no route for {classification.category}: fallback to {fallback.lead} (兜底)")
    return Decision(
        category=classification.category,
        urgency=urgency,
        lead=fallback.lead,
        cooperating=[d for d in fallback.cooperating if d not in excluded],
        route_id=None,
        sla_policy=policy_name,
        confidence=classification.confidence,
        jurisdiction=Jurisdiction(method="fallback"),
        trace=trace,
    )
