"""``departments.yaml``: who can be given a case, and where to reach them."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from shared.citypack.common import Strict


class Department(Strict):
    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=80)]
    name: str
    name_en: str | None = None
    webhook_url: str | None = None
    duty_contact: str | None = None
    supervisor: str | None = None


class DepartmentsFile(Strict):
    departments: list[Department] = Field(min_length=1)
