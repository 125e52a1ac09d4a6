"""Citizen notices through a real local gateway, and what departments may see of a caller."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import orjson

from shared.events import EventType, Urgency
from tests.helpers import eventually
from tests.notify_kit import (
    accepted,
    case_action,
    citizen_request,
    dispatched,
    fail_first,
    new_case_id,
    notify_serving,
    write_notify_yaml,
)

PHONE = "13812345678"


async def test_citizen_hears_accepted_dispatched_resolved_and_feedback_in_order(
    database_url: str, city_pack: Path
) -> None:
    write_notify_yaml(city_pack, {"notices": {"default_language": "zh"}})
    async with notify_serving(
        database_url, city_pack, scripts={"gateway": fail_first(1)}, notices=True
    ) as (notify, server):
        case_id = new_case_id()
        request = citizen_request(case_id, phone=PHONE)
        await notify.publish(accepted(request))
        await notify.publish(dispatched(case_id, "community_committee", request=request))
        await notify.publish(
            case_action(
                EventType.CASE_RESOLVED,
                case_id,
                "community_committee",
                reply="垃圾已清运完毕",
            )
        )
        await eventually(notify.settled, timeout=30)

        notices = [hit.event for hit in server.of("gateway")]
        assert [n["kind"] for n in notices] == [
            "accepted",
            "dispatched",
            "resolved",
            "feedback",
        ]
        assert {(n["channel"], n["to"], n["language"]) for n in notices} == {("sms", PHONE, "zh")}
        assert case_id in notices[0]["text"]
        assert "社区居委会" in notices[1]["text"]
        assert "垃圾已清运完毕" in notices[2]["text"]
        assert "评价" in notices[3]["text"]
        # The gateway failed each first try: retried with the same notice id.
        assert all(server.tries[n["id"]] == 2 for n in notices)
        assert notify.metric("notices_total", kind="accepted", outcome="queued") == 1


async def test_english_speaker_gets_english_with_the_department_english_name(
    database_url: str, city_pack: Path
) -> None:
    write_notify_yaml(city_pack, {"notices": {"default_language": "zh"}})
    async with notify_serving(database_url, city_pack, notices=True) as (notify, server):
        case_id = new_case_id()
        request = citizen_request(case_id, phone=None, email="li@example.org", language="en")
        await notify.publish(accepted(request))
        await notify.publish(dispatched(case_id, "water_bureau", request=request))
        await eventually(notify.settled, timeout=30)
        accepted_notice, dispatched_notice = (hit.event for hit in server.of("gateway"))
        assert (accepted_notice["channel"], accepted_notice["to"]) == (
            "email",
            "li@example.org",
        )
        assert f"Case number {case_id}" in accepted_notice["text"]
        assert "Water affairs bureau" in dispatched_notice["text"]


def quiet_around_now() -> tuple[str, str, datetime]:
    """A quiet window (UTC) that holds now, and when it ends."""
    now = datetime.now(UTC)
    start, end = now - timedelta(hours=1), now + timedelta(hours=1)
    end_at = end.replace(second=0, microsecond=0)
    return start.strftime("%H:%M"), end.strftime("%H:%M"), end_at


async def test_quiet_hours_hold_notices_but_not_emergencies(
    database_url: str, city_pack: Path
) -> None:
    start, end, end_at = quiet_around_now()
    write_notify_yaml(
        city_pack,
        {"timezone": "UTC", "notices": {"quiet_hours": {"start": start, "end": end}}},
    )
    async with notify_serving(database_url, city_pack, notices=True) as (notify, server):
        calm = citizen_request(new_case_id())
        fire = citizen_request(new_case_id(), urgency_hint=Urgency.EMERGENCY)
        await notify.publish(accepted(calm), accepted(fire))
        await eventually(lambda: server.of("gateway"), timeout=30)
        (sent,) = [hit.event for hit in server.of("gateway")]
        assert sent["case_id"] == fire.case_id
        assert sent["emergency"] is True

        # The gateway sees the emergency a moment before notify records it as delivered.
        async def only_the_calm_one_pending() -> list[asyncpg.Record] | None:
            pending = await notify.rows("WHERE status = 'pending'")
            return pending if len(pending) == 1 else None

        (held,) = await eventually(only_the_calm_one_pending, timeout=30)
        assert held["case_id"] == calm.case_id
        assert held["next_attempt_at"] == end_at
        assert notify.metric("notices_total", kind="accepted", outcome="held") == 1


async def test_no_contact_means_no_notice_and_is_counted(
    database_url: str, city_pack: Path
) -> None:
    write_notify_yaml(city_pack, {})
    async with notify_serving(database_url, city_pack, notices=True) as (notify, _):
        request = citizen_request(new_case_id(), phone=None, email=None)
        await notify.publish(accepted(request))
        assert await notify.rows() == []
        assert notify.metric("notices_total", kind="accepted", outcome="no_contact") == 1


async def test_confidential_caller_hidden_from_departments_beyond_what_the_pack_allows(
    database_url: str, city_pack: Path
) -> None:
    write_notify_yaml(city_pack, {"privacy": {"confidential_reveal": ["phone"]}})
    async with notify_serving(database_url, city_pack) as (notify, server):
        secret_case, open_case = new_case_id(), new_case_id()
        await notify.publish(
            dispatched(
                secret_case,
                "public_security",
                request=citizen_request(secret_case, confidential=True),
            ),
            dispatched(open_case, "public_security", request=citizen_request(open_case)),
        )
        await eventually(notify.settled, timeout=30)
        reporters = {
            hit.case_id: hit.event["data"]["request"]["reporter"]
            for hit in server.of("public_security")
        }
        assert (reporters[secret_case]["name"], reporters[secret_case]["phone"]) == (
            None,
            PHONE,
        )
        assert (reporters[open_case]["name"], reporters[open_case]["phone"]) == (
            "张先生",
            PHONE,
        )
        stored = (await notify.rows("WHERE case_id = $1", secret_case))[0]["body"]
        assert "张先生" not in orjson.loads(stored)["data"]["request"]["reporter"].values()


async def test_department_receives_only_the_event_types_it_subscribes_to(
    database_url: str, city_pack: Path
) -> None:
    write_notify_yaml(city_pack, {"departments": {"property_company": {"events": ["dispatched"]}}})
    async with notify_serving(database_url, city_pack) as (notify, server):
        case_id = new_case_id()
        await notify.publish(
            dispatched(case_id, "community_committee", ("property_company",)),
            case_action(EventType.CASE_RESOLVED, case_id, "community_committee", reply="ok"),
        )
        await eventually(notify.settled, timeout=30)
        assert [h.event["type"] for h in server.of("property_company")] == [
            EventType.CASE_DISPATCHED
        ]
        assert [h.event["type"] for h in server.of("community_committee")] == [
            EventType.CASE_DISPATCHED,
            EventType.CASE_RESOLVED,
        ]
        assert notify.metric("webhooks_unsubscribed_total", department="property_company")
