"""mySociety's Open311 ``servicerequestupdates`` statuses mapped onto callback actions. Pure.

A department whose system already speaks Open311 posts updates with a status; each
status is one action of the callback API. ``REOPEN`` is refused: only the citizen's
rating reopens a case.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

STATUS_ACTIONS: dict[str, str] = {
    "OPEN": "sign",
    "INVESTIGATING": "progress",
    "ACTION_SCHEDULED": "progress",
    "IN_PROGRESS": "progress",
    "FIXED": "resolve",
    "CLOSED": "resolve",
    "NO_FURTHER_ACTION": "resolve",
    "DUPLICATE": "resolve",
    "NOT_COUNCILS_RESPONSIBILITY": "return",
    "INTERNAL_REFERRAL": "return",
    "FOR_TRIAGE": "return",
}
REFUSED_STATUSES = {"REOPEN": "only the citizen's rating (/feedback) reopens a case"}


class BadUpdate(ValueError):
    pass


@dataclass(frozen=True)
class Update:
    case_id: str
    action: str
    body: dict[str, Any]


def to_action(form: Mapping[str, str]) -> Update:
    """The callback action and JSON body an Open311 update stands for; BadUpdate if none."""
    case_id = (form.get("service_request_id") or "").strip()
    department = (form.get("department") or "").strip()
    status = (form.get("status") or "").strip().upper()
    description = (form.get("description") or "").strip()
    if not case_id:
        raise BadUpdate("service_request_id is required")
    if not department:
        raise BadUpdate("department is required (the id the department signs as)")
    if status in REFUSED_STATUSES:
        raise BadUpdate(f"status {status}: {REFUSED_STATUSES[status]}")
    action = STATUS_ACTIONS.get(status)
    if action is None:
        known = ", ".join(sorted([*STATUS_ACTIONS, *REFUSED_STATUSES]))
        raise BadUpdate(f"unknown status {status or '(empty)'!r}; one of {known}")
    body: dict[str, Any] = {"department": department}
    if form.get("actor"):
        body["actor"] = form["actor"]
    text = description or status.replace("_", " ").lower()
    if action == "sign":
        body["note"] = description or None
    elif action == "progress":
        body["note"] = text
    elif action == "resolve":
        body["reply"] = text
    else:
        body["reason"] = text
    return Update(case_id, action, body)
