"""``routes.yaml``: the ordered routing table from category to lead and cooperating units."""

from __future__ import annotations

from pydantic import Field

from shared.citypack.common import Ident, Strict


class RouteMatch(Strict):
    category: str | None = None


class Route(Strict):
    id: Ident
    match: RouteMatch = Field(default_factory=RouteMatch)
    lead: str
    cooperating: list[str] = Field(default_factory=list)


class Fallback(Strict):
    lead: str
    cooperating: list[str] = Field(default_factory=list)


class RoutesFile(Strict):
    fallback: Fallback
    routes: list[Route] = Field(default_factory=list)
