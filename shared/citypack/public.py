"""``public.yaml``: the words a citizen reads, in the pack's language.

Optional; a pack without it speaks English. ``status_notes`` gives, per case state,
the line Open311 shows when the department left no words of its own; ``{agency}``
stands for the department's name (``agency_unknown`` when none holds the case yet).
"""

from __future__ import annotations

import string

from pydantic import Field, field_validator

from shared.citypack.common import Strict

STATES = (
    "received",
    "triage",
    "dispatched",
    "signed",
    "in_progress",
    "extended",
    "returned",
    "resolved",
    "reopened",
    "closed",
)

ENGLISH = {
    "received": "Received; being routed to the responsible department.",
    "triage": "Received; a dispatcher is choosing the responsible department.",
    "dispatched": "Assigned to {agency}.",
    "signed": "{agency} has taken the case.",
    "in_progress": "{agency} is working on it.",
    "extended": "The deadline was extended.",
    "returned": "Being re-assigned to the responsible department.",
    "resolved": "Resolved.",
    "reopened": "Reopened.",
    "closed": "Closed.",
}


class PublicText(Strict):
    language: str = Field(default="en", pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
    agency_unknown: str = "the responsible department"
    status_notes: dict[str, str] = Field(default_factory=lambda: dict(ENGLISH))

    @field_validator("status_notes")
    @classmethod
    def _every_state_known_and_only_agency(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(STATES))
        if unknown:
            raise ValueError(f"unknown state(s) {unknown}: states are {', '.join(STATES)}")
        missing = sorted(set(STATES) - set(value))
        if missing:
            raise ValueError(f"no status note for {', '.join(missing)}")
        for state, text in value.items():
            fields = {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}
            if fields - {"agency"}:
                raise ValueError(f"{state}: only {{agency}} may be filled in, not {fields}")
        return value

    def status_note(self, state: str, agency: str | None) -> str | None:
        template = self.status_notes.get(state)
        if template is None:
            return None
        return template.format(agency=agency or self.agency_unknown)
