"""Shared bits of the city pack models."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

Ident = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$", max_length=80)]


class Strict(BaseModel):
    # A misspelt key in a pack is an error, not a silently ignored setting.
    model_config = ConfigDict(extra="forbid", frozen=True)
