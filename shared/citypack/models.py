"""The shape of a city pack's files. Pure data; :mod:`shared.citypack.loader` reads them."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from shared.durations import Duration
from shared.events import Urgency

Ident = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$", max_length=80)]


class _Strict(BaseModel):
    # A misspelt key in a pack is an error, not a silently ignored setting.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Department(_Strict):
    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=80)]
    name: str
    name_en: str | None = None
    webhook_url: str | None = None
    duty_contact: str | None = None
    supervisor: str | None = None


class DepartmentsFile(_Strict):
    departments: list[Department] = Field(min_length=1)


class Category(_Strict):
    id: Ident
    name: str
    name_en: str | None = None
    service_code: str
    urgency: Urgency = Urgency.GENERAL
    keywords: list[str] = Field(default_factory=list)
    group: str | None = None


class TaxonomyFile(_Strict):
    categories: list[Category] = Field(min_length=1)


class RouteMatch(_Strict):
    category: str | None = None


class Route(_Strict):
    id: Ident
    match: RouteMatch = Field(default_factory=RouteMatch)
    lead: str
    cooperating: list[str] = Field(default_factory=list)


class Fallback(_Strict):
    lead: str
    cooperating: list[str] = Field(default_factory=list)


class RoutesFile(_Strict):
    fallback: Fallback
    routes: list[Route] = Field(default_factory=list)


class SlaPolicy(_Strict):
    sign_for: Duration
    contact: Duration
    resolve: Duration


class LadderStep(_Strict):
    level: int = Field(ge=1, le=3)
    after: Duration
    repeat: Duration | None = None
    targets: list[str] = Field(default_factory=list)


class SlaFile(_Strict):
    policies: dict[str, SlaPolicy] = Field(min_length=1)
    ladder: list[LadderStep] = Field(min_length=1)
