"""Citizen notices, pure: templates in both languages, quiet hours, which events bring what."""

from __future__ import annotations

from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

import orjson

from services.notify.config import Notices, QuietHours
from services.notify.notices import Contact, body, kinds_for, released_at, render
from shared.events import EventType

SHANGHAI = ZoneInfo("Asia/Shanghai")
NIGHT = QuietHours(start=time(22, 0), end=time(7, 0))


def test_templates_render_in_chinese_and_english() -> None:
    notices = Notices()
    zh = render(notices, "dispatched", "zh", case_id="CR1", department="水务局")
    en = render(notices, "resolved", "en", case_id="CR1", department="Water", reply="fixed")
    assert zh == "【12345】工单CR1已派至水务局办理。"
    assert en == "311: case CR1 was resolved by Water: fixed"


def test_long_replies_are_shortened() -> None:
    text = render(Notices(), "resolved", "en", case_id="CR1", department="W", reply="x" * 1000)
    assert len(text) < 400
    assert text.endswith("…")


def test_events_bring_their_notices_in_order() -> None:
    every = ["accepted", "dispatched", "resolved", "feedback"]
    assert kinds_for(EventType.REQUEST_ACCEPTED, every) == ["accepted"]
    assert kinds_for(EventType.CASE_RESOLVED, every) == ["resolved", "feedback"]
    assert kinds_for(EventType.CASE_RESOLVED, ["resolved"]) == ["resolved"]
    assert kinds_for(EventType.CASE_SIGNED, every) == []


def test_quiet_hours_hold_until_morning_local_time_across_midnight() -> None:
    late = datetime(2026, 11, 26, 15, 30, tzinfo=UTC)  # 23:30 in Shanghai
    assert released_at(late, NIGHT, SHANGHAI, emergency=False) == datetime(
        2026, 11, 27, 7, 0, tzinfo=SHANGHAI
    )
    early = datetime(2026, 11, 26, 20, 0, tzinfo=UTC)  # 04:00 next day in Shanghai
    assert released_at(early, NIGHT, SHANGHAI, emergency=False) == datetime(
        2026, 11, 27, 7, 0, tzinfo=SHANGHAI
    )
    day = datetime(2026, 11, 26, 4, 0, tzinfo=UTC)  # noon in Shanghai
    assert released_at(day, NIGHT, SHANGHAI, emergency=False) == day


def test_emergencies_ignore_quiet_hours() -> None:
    late = datetime(2026, 11, 26, 15, 30, tzinfo=UTC)
    assert released_at(late, NIGHT, SHANGHAI, emergency=True) == late


def test_notice_goes_by_sms_when_there_is_a_phone_else_by_email() -> None:
    both = Contact("13812345678", "a@example.org", "zh")
    only_mail = Contact(None, "a@example.org", "en")
    kwargs = {"notice": "n1", "case_id": "CR1", "kind": "accepted", "text": "t"}
    sms = orjson.loads(body(contact=both, language="zh", emergency=False, **kwargs))
    mail = orjson.loads(body(contact=only_mail, language="en", emergency=False, **kwargs))
    assert (sms["channel"], sms["to"]) == ("sms", "13812345678")
    assert (mail["channel"], mail["to"]) == ("email", "a@example.org")
