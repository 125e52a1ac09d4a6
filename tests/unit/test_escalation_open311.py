"""mySociety servicerequestupdates statuses mapped onto callback actions."""

from __future__ import annotations

import pytest

from services.escalation.open311 import STATUS_ACTIONS, BadUpdate, to_action

BASE = {"service_request_id": "C-1", "department": "water_bureau"}


@pytest.mark.parametrize(
    ("status", "action", "field"),
    [
        ("OPEN", "sign", "note"),
        ("INVESTIGATING", "progress", "note"),
        ("ACTION_SCHEDULED", "progress", "note"),
        ("IN_PROGRESS", "progress", "note"),
        ("FIXED", "resolve", "reply"),
        ("CLOSED", "resolve", "reply"),
        ("NO_FURTHER_ACTION", "resolve", "reply"),
        ("DUPLICATE", "resolve", "reply"),
        ("NOT_COUNCILS_RESPONSIBILITY", "return", "reason"),
        ("INTERNAL_REFERRAL", "return", "reason"),
        ("FOR_TRIAGE", "return", "reason"),
    ],
)
def test_each_status_is_one_action(status: str, action: str, field: str) -> None:
    update = to_action({**BASE, "status": status.lower(), "description": "pipe replaced"})
    assert (update.case_id, update.action) == ("C-1", action)
    assert update.body["department"] == "water_bureau"
    assert update.body[field] == "pipe replaced"


def test_every_mysociety_status_is_mapped_or_refused_with_a_reason() -> None:
    statuses = {
        "OPEN",
        "CLOSED",
        "FIXED",
        "IN_PROGRESS",
        "ACTION_SCHEDULED",
        "INVESTIGATING",
        "DUPLICATE",
        "NOT_COUNCILS_RESPONSIBILITY",
        "NO_FURTHER_ACTION",
        "INTERNAL_REFERRAL",
        "REOPEN",
        "FOR_TRIAGE",
    }
    assert statuses - set(STATUS_ACTIONS) == {"REOPEN"}
    with pytest.raises(BadUpdate, match="rating"):
        to_action({**BASE, "status": "REOPEN"})


def test_without_description_the_status_words_are_the_text() -> None:
    assert to_action({**BASE, "status": "FIXED"}).body["reply"] == "fixed"


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"department": "x", "status": "FIXED"}, "service_request_id"),
        ({"service_request_id": "C-1", "status": "FIXED"}, "department"),
        ({**BASE, "status": "BOGUS"}, "unknown status"),
        ({**BASE}, "unknown status"),
    ],
)
def test_bad_updates_are_refused_with_a_clear_reason(form: dict[str, str], message: str) -> None:
    with pytest.raises(BadUpdate, match=message):
        to_action(form)
