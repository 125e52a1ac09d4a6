"""``taxonomy.yaml``: the categories of request, their Open311 codes and default urgency."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from shared.citypack.common import Ident, Strict
from shared.events import Urgency


class AttributeValue(Strict):
    key: str = Field(min_length=1)
    name: str


class ServiceAttribute(Strict):
    """An extra question for one category (an Open311 service-definition attribute)."""

    code: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", max_length=80)
    description: str
    datatype: Literal["string", "number", "datetime", "text", "singlevaluelist", "multivaluelist"]
    required: bool = False
    variable: bool = True  # False: shown to the citizen as information, no answer taken
    order: int | None = None
    datatype_description: str | None = None
    values: list[AttributeValue] = Field(default_factory=list)

    @model_validator(mode="after")
    def _values_for_lists(self) -> ServiceAttribute:
        listed = self.datatype.endswith("valuelist")
        if listed != bool(self.values):
            raise ValueError("values are given for (and only for) singlevaluelist/multivaluelist")
        return self


class Category(Strict):
    id: Ident
    name: str
    name_en: str | None = None
    service_code: str
    urgency: Urgency = Urgency.GENERAL
    keywords: list[str] = Field(default_factory=list)
    group: str | None = None
    # A pothole needs a place to be acted on; a wage claim does not (routes.yaml `place`).
    needs_place: bool = False
    attributes: list[ServiceAttribute] = Field(default_factory=list)


class TaxonomyFile(Strict):
    categories: list[Category] = Field(min_length=1)
