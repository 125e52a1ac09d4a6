"""``sla.yaml``: response deadlines per urgency and the escalation ladder."""

from __future__ import annotations

from pydantic import Field

from shared.citypack.common import Strict
from shared.durations import Duration


class SlaPolicy(Strict):
    sign_for: Duration
    contact: Duration
    resolve: Duration


class LadderStep(Strict):
    level: int = Field(ge=1, le=3)
    after: Duration
    repeat: Duration | None = None
    targets: list[str] = Field(default_factory=list)


class SlaFile(Strict):
    policies: dict[str, SlaPolicy] = Field(min_length=1)
    ladder: list[LadderStep] = Field(min_length=1)
