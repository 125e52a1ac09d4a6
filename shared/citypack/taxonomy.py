"""``taxonomy.yaml``: the categories of request, their Open311 codes and default urgency."""

from __future__ import annotations

from pydantic import Field

from shared.citypack.common import Ident, Strict
from shared.events import Urgency


class Category(Strict):
    id: Ident
    name: str
    name_en: str | None = None
    service_code: str
    urgency: Urgency = Urgency.GENERAL
    keywords: list[str] = Field(default_factory=list)
    group: str | None = None


class TaxonomyFile(Strict):
    categories: list[Category] = Field(min_length=1)
