"""intake's /v1 API over the real app and PostgreSQL: auth, validation, idempotency, views."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import orjson
import pytest

from tests.integration.intake_support import IntakeEnv, auth

HOTLINE: dict[str, Any] = {
    "channel": "hotline",
    "source_ref": "BJ12345-20260310-0001",
    "operator_id": "op007",
    "caller_phone": "138 1234 5678",
    "caller_name": "张先生",
    "confidential": True,
    "address_text": "朝阳路12号院3号楼",
    "summary": "小区垃圾好几天没人清运",
    "details": "垃圾桶满了，回电 13912345678。",
    "category_hint": "sanitation.litter",
    "urgency": "general",
}
APP: dict[str, Any] = {
    "channel": "app",
    "source_ref": "APP-778899",
    "text": "河道里有人排污水",
    "lat": 39.951,
    "long": 116.462,
    "photo_urls": ["https://img.example.org/1.jpg"],
    "category": "ZH-106",
    "reporter_phone": "+86 139-1234-5678",
}
GRID: dict[str, Any] = {
    "channel": "grid",
    "source_ref": "G-20260310-17",
    "grid_worker_id": "W204",
    "grid_id": "G-CY-0012",
    "checklist_code": "construction.site",
    "text": "工地未覆盖防尘网",
    "lat": 39.9,
    "long": 116.4,
}


async def post(env: IntakeEnv, body: Any, role: str = "platform", **headers: str) -> Any:
    return await env.http.post("/v1/requests", json=body, headers={**auth(role), **headers})


@pytest.mark.parametrize("payload", [HOTLINE, APP, GRID], ids=["hotline", "app", "grid"])
async def test_each_channel_is_accepted_once_and_announced_in_the_outbox(
    intake_env: IntakeEnv, payload: dict[str, Any]
) -> None:
    response = await post(intake_env, payload)

    assert response.status_code == 201, response.text
    body = response.json()
    assert body["duplicate"] is False
    assert response.headers["location"] == f"/v1/requests/{body['case_id']}"
    rows = await intake_env.sql("SELECT channel, source_ref, request FROM requests")
    assert [(r["channel"], r["source_ref"]) for r in rows] == [
        (payload["channel"], payload["source_ref"])
    ]
    outbox = await intake_env.sql("SELECT topic, key FROM outbox")
    assert [(r["topic"], r["key"].decode()) for r in outbox] == [
        (intake_env.topics.namespace + "requests.accepted.v1", body["case_id"])
    ]
    assert intake_env.metric("requests_accepted_total", channel=payload["channel"], via="http") == 1


async def test_platform_sees_the_caller_but_an_app_sees_no_personal_data(
    intake_env: IntakeEnv,
) -> None:
    case_id = (await post(intake_env, HOTLINE)).json()["case_id"]

    full = (await intake_env.http.get(f"/v1/requests/{case_id}", headers=auth("platform"))).json()
    public = (await intake_env.http.get(f"/v1/requests/{case_id}", headers=auth("app"))).json()

    assert full["reporter"]["phone"] == "13812345678"  # normalised
    assert full["reporter"]["name"] == "张先生"
    assert full["reporter"]["confidential"] is True
    assert full["source_ref"] == HOTLINE["source_ref"]
    assert "13912345678" in full["description"]
    assert "reporter" not in public
    assert "source_ref" not in public
    assert "extras" not in public
    assert "13912345678" not in public["description"]
    assert "address_text" not in public["location"]  # a confidential caller's address
    assert full["location"]["address_text"] == HOTLINE["address_text"]
    assert public["state"] == "received"
    assert public["status"] == "open"
    assert public["category"] == "sanitation.litter"


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer not-a-key"}, 401),
        ({"X-Api-Key": "ck_wrong"}, 401),
        (auth("operator"), 403),
    ],
    ids=["missing", "unknown-bearer", "unknown-header", "wrong-role"],
)
async def test_wrong_or_missing_key_is_refused_and_nothing_stored(
    intake_env: IntakeEnv, headers: dict[str, str], status: int
) -> None:
    response = await intake_env.http.post("/v1/requests", json=HOTLINE, headers=headers)

    assert response.status_code == status
    assert await intake_env.count("requests") == 0
    assert await intake_env.count("outbox") == 0
    reason = "unauthorized" if status == 401 else "forbidden"
    assert (
        intake_env.metric("requests_rejected_total", channel="unknown", via="http", reason=reason)
        == 1
    )


async def test_reading_a_case_needs_a_key(intake_env: IntakeEnv) -> None:
    case_id = (await post(intake_env, APP)).json()["case_id"]
    assert (await intake_env.http.get(f"/v1/requests/{case_id}")).status_code == 401
    missing = await intake_env.http.get("/v1/requests/CR0000000000000", headers=auth("app"))
    assert missing.status_code == 404


async def test_resent_request_returns_the_original_case_and_emits_nothing(
    intake_env: IntakeEnv,
) -> None:
    first = await post(intake_env, APP)
    again = await post(intake_env, APP, role="app")

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == {
        "case_id": first.json()["case_id"],
        "status": "accepted",
        "duplicate": True,
    }
    assert await intake_env.count("requests") == 1
    assert await intake_env.count("outbox") == 1
    assert intake_env.metric("requests_duplicate_total", channel="app", via="http") == 1


async def test_same_source_ref_with_other_content_is_a_conflict(intake_env: IntakeEnv) -> None:
    await post(intake_env, APP)
    changed = APP | {"text": "something else entirely"}

    response = await post(intake_env, changed)

    assert response.status_code == 409
    assert await intake_env.count("requests") == 1
    assert await intake_env.count("outbox") == 1
    assert (
        intake_env.metric("requests_rejected_total", channel="app", via="http", reason="conflict")
        == 1
    )


async def test_idempotency_key_returns_the_original_and_refuses_another_body(
    intake_env: IntakeEnv,
) -> None:
    first = await post(intake_env, GRID, **{"Idempotency-Key": "retry-42"})
    again = await post(intake_env, GRID, **{"Idempotency-Key": "retry-42"})
    other = await post(
        intake_env, GRID | {"source_ref": "G-other"}, **{"Idempotency-Key": "retry-42"}
    )
    bad_key = await post(intake_env, GRID, **{"Idempotency-Key": "spaces are not allowed"})

    assert (first.status_code, again.status_code, other.status_code) == (201, 200, 409)
    assert again.json()["case_id"] == first.json()["case_id"]
    assert bad_key.status_code == 400
    assert await intake_env.count("requests") == 1
    assert await intake_env.count("outbox") == 1


async def test_concurrent_duplicate_posts_make_exactly_one_case(intake_env: IntakeEnv) -> None:
    responses = await asyncio.gather(*(post(intake_env, HOTLINE) for _ in range(12)))
    keyed = await asyncio.gather(
        *(post(intake_env, APP, **{"Idempotency-Key": "burst"}) for _ in range(12))
    )

    for batch in (responses, keyed):
        codes = sorted(r.status_code for r in batch)
        assert codes == [200] * 11 + [201]
        assert len({r.json()["case_id"] for r in batch}) == 1
    assert await intake_env.count("requests") == 2
    assert await intake_env.count("outbox") == 2


def _with(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    body = copy.deepcopy(APP)
    if value is _DROP:
        body.pop(path[0])
    else:
        body[path[0]] = value
    return body


_DROP = object()


@pytest.mark.parametrize(
    ("body", "field", "fragment"),
    [
        (_with(("lat",), 91), "lat", "less than or equal to 90"),
        (_with(("long",), -181), "long", "greater than or equal to -180"),
        (_with(("text",), "x" * 4001), "text", "at most 4000"),
        (_with(("text",), " \u200b\x00 "), "text", "empty"),
        (_with(("photo_urls",), [f"https://e.org/{i}" for i in range(11)]), "photo_urls", "10"),
        (_with(("photo_urls",), ["ftp://e.org/x.jpg"]), "photo_urls", "http(s)"),
        (_with(("photo_urls",), ["javascript:alert(1)"]), "photo_urls", "http(s)"),
        (_with(("submitted_at",), "2999-01-01T00:00:00+00:00"), "submitted_at", "future"),
        (_with(("submitted_at",), "2026-01-01T00:00:00"), "submitted_at", "timezone"),
        (_with(("submitted_at",), "0001-01-01T00:00:00+14:00"), "submitted_at", "before 2000"),
        (_with(("submitted_at",), "0001-01-01T00:00:00Z"), "submitted_at", "before 2000"),
        (_with(("reporter_phone",), "12345"), "reporter_phone", "E.164"),
        (_with(("lat",), "north"), "lat", "number"),
        (_with(("source_ref",), _DROP), "source_ref", "required"),
        (_with(("source_ref",), "has space"), "source_ref", "pattern"),
        ({"channel": "fax", "source_ref": "x"}, "", "tag"),
    ],
)
async def test_invalid_fields_get_422_with_field_level_messages(
    intake_env: IntakeEnv, body: dict[str, Any], field: str, fragment: str
) -> None:
    response = await post(intake_env, body)

    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert any(
        (not field or field in [str(p) for p in d["loc"]]) and fragment.lower() in d["msg"].lower()
        for d in detail
    ), detail
    assert await intake_env.count("requests") == 0
    assert "input" not in str(detail)  # no echo of what was sent


@pytest.mark.parametrize(
    ("content", "status", "reason"),
    [
        (b"", 400, "empty"),
        (b"   ", 400, "empty"),
        (b'{"channel": "app",', 400, "malformed"),
        (b'{"channel": "app", "text": "\xff\xfe"}', 400, "malformed"),
        (b"[1, 2, 3]", 422, "invalid"),
        (
            b'{"channel": "app", "source_ref": "x", "text": "' + b"a" * 70_000 + b'"}',
            413,
            "too_large",
        ),
    ],
    ids=["empty", "blank", "truncated-json", "invalid-utf8", "not-an-object", "over-64KiB"],
)
async def test_unparseable_bodies_get_a_clear_error_never_a_500(
    intake_env: IntakeEnv, content: bytes, status: int, reason: str
) -> None:
    response = await intake_env.http.post(
        "/v1/requests",
        content=content,
        headers={**auth("app"), "Content-Type": "application/json"},
    )

    assert response.status_code == status, response.text
    assert await intake_env.count("requests") == 0
    assert (
        sum(
            intake_env.metric("requests_rejected_total", channel=c, via="http", reason=reason)
            for c in ("unknown", "app")
        )
        == 1
    )


async def test_sql_and_html_are_stored_as_inert_text(intake_env: IntakeEnv) -> None:
    nasty = "'); DROP TABLE requests; -- <script>alert('x')</script> \" OR 1=1"
    response = await post(intake_env, APP | {"text": nasty, "address_text": "<b>x</b>"})

    assert response.status_code == 201
    case_id = response.json()["case_id"]
    view = (await intake_env.http.get(f"/v1/requests/{case_id}", headers=auth("platform"))).json()
    assert view["description"] == nasty
    assert view["location"]["address_text"] == "<b>x</b>"
    assert await intake_env.count("requests") == 1


async def test_text_is_nfc_normalised_and_control_characters_stripped(
    intake_env: IntakeEnv,
) -> None:
    decomposed = "Cafe\u0301 \u202eevil\u202c\x07 ok\r\n"  # e + combining acute; bidi; bell
    response = await post(intake_env, APP | {"text": decomposed})

    case_id = response.json()["case_id"]
    view = (await intake_env.http.get(f"/v1/requests/{case_id}", headers=auth("platform"))).json()
    assert view["description"] == "Caf\u00e9 evil ok"


async def test_unknown_fields_are_kept_under_extras(intake_env: IntakeEnv) -> None:
    response = await post(
        intake_env, HOTLINE | {"platform_queue": "east", "tags": ["a", "b\x00"], "n": 3}
    )

    case_id = response.json()["case_id"]
    rows = await intake_env.sql("SELECT request FROM requests WHERE case_id = $1", case_id)
    extras = rows[0]["request"]["extras"]
    assert extras == {"platform_queue": "east", "tags": ["a", "b"], "n": 3, "operator_id": "op007"}


async def test_openapi_document_describes_the_api_and_the_channel_payloads(
    intake_env: IntakeEnv,
) -> None:
    document = (await intake_env.http.get("/openapi.json")).json()

    assert {"/v1/requests", "/v1/requests/{case_id}", "/open311/v2/requests.{fmt}"} <= set(
        document["paths"]
    )
    schemas = document["components"]["schemas"]
    assert {"HotlineTicket", "AppReport", "GridReport", "ChannelPayload"} <= set(schemas)
    body = document["paths"]["/v1/requests"]["post"]["requestBody"]["content"]
    assert body["application/json"]["schema"] == {"$ref": "#/components/schemas/ChannelPayload"}
    assert schemas["AppReport"]["properties"]["text"]["maxLength"] == 4000


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_a_body_not_sent_as_json_gets_415_and_nothing_stored(
    intake_env: IntakeEnv, content_type: str | None
) -> None:
    headers = auth("app") | ({"Content-Type": content_type} if content_type else {})
    response = await intake_env.http.post(
        "/v1/requests", content=orjson.dumps(APP), headers=headers
    )
    assert response.status_code == 415, response.text
    assert "application/json" in response.json()["detail"]
    assert await intake_env.count("requests") == 0
    assert (
        intake_env.metric(
            "requests_rejected_total", channel="unknown", via="http", reason="media_type"
        )
        == 1
    )


async def test_json_with_a_charset_or_a_json_suffix_is_accepted(intake_env: IntakeEnv) -> None:
    for n, content_type in enumerate(
        ["application/json; charset=utf-8", "application/vnd.civicroute+json"]
    ):
        response = await intake_env.http.post(
            "/v1/requests",
            content=orjson.dumps(APP | {"source_ref": f"APP-CT-{n}"}),
            headers=auth("app") | {"Content-Type": content_type},
        )
        assert response.status_code == 201, response.text


async def test_an_unauthenticated_bad_body_gets_401_before_any_validation(
    intake_env: IntakeEnv,
) -> None:
    response = await intake_env.http.post(
        "/v1/requests", content=b"{not json", headers={"Content-Type": "text/plain"}
    )
    assert response.status_code == 401


@pytest.mark.parametrize("payload", [HOTLINE, GRID], ids=["hotline-with-urgency", "grid-trusted"])
async def test_an_app_key_cannot_submit_fields_that_steer_routing_or_deadlines(
    intake_env: IntakeEnv, payload: dict[str, Any]
) -> None:
    response = await post(
        intake_env,
        payload | {"urgency": "emergency"} if payload is HOTLINE else payload,
        role="app",
    )
    assert response.status_code == 403, response.text
    assert "come from the appeal platform" in response.json()["detail"]
    assert await intake_env.count("requests") == 0
    assert (await post(intake_env, payload, role="platform")).status_code == 201
