"""Open311 GeoReport v2 on intake: every endpoint in JSON and XML, filters, errors, clients."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from georeport import GeoReport

from deploy.local.procs import free_port
from services.intake.lifecycle import Change
from services.intake.store import apply_changes
from shared.http import make_server
from tests.helpers import eventually
from tests.integration.intake_support import JURISDICTION, ROLE_KEYS, IntakeEnv, auth
from tests.integration.open311_check import as_text, validate, validate_errors, xml_data

BASE = "/open311/v2"
HEATING = {
    "service_code": "ZH-201",
    "lat": "39.983",
    "long": "116.43",
    "description": "暖气不热，屋里只有十四度",
    "attribute[scope]": "building",
    "attribute[indoor_temp]": "14",
    "first_name": "Li",
    "last_name": "Hua",
    "phone": "13912345678",
    "email": "li@example.org",
    "media_url": "https://img.example.org/radiator.jpg",
    "device_id": "dev-1",
    "account_id": "acct-9",
}


async def both(
    env: IntakeEnv, path: str, schema: str | None = None, expect: int = 200, **params: str
) -> Any:
    """GET ``path`` as .json and .xml: same status, JSON valid, XML the same data."""
    as_json = await env.http.get(f"{BASE}/{path}.json", params=params)
    as_xml = await env.http.get(f"{BASE}/{path}.xml", params=params)
    assert as_json.status_code == expect, as_json.text
    assert as_xml.status_code == expect, as_xml.text
    assert as_json.headers["content-type"].startswith("application/json")
    assert as_xml.headers["content-type"].startswith("text/xml")
    data = as_json.json()
    if expect >= 400:
        validate_errors(data, expect)
    elif schema:
        validate(data, schema)
    assert xml_data(as_xml.content) == as_text(data)
    return data


async def post_form(
    env: IntakeEnv, form: dict[str, str], fmt: str = "json", key: str | None = "app", **headers: str
) -> httpx.Response:
    data = dict(form)
    if key:
        data["api_key"] = ROLE_KEYS[key]
    return await env.http.post(f"{BASE}/requests.{fmt}", data=data, headers=headers)


async def test_discovery_names_the_endpoint_and_both_formats(intake_env: IntakeEnv) -> None:
    data = await both(intake_env, "discovery")

    endpoint = data["endpoints"][0]
    assert endpoint["url"] == "http://intake/open311/v2"
    assert endpoint["specification"] == "http://wiki.open311.org/GeoReport_v2"
    assert set(endpoint["formats"]) == {"text/xml", "application/json"}
    assert data["contact"] == "ops@example.org"


async def test_services_come_from_the_city_taxonomy(intake_env: IntakeEnv) -> None:
    data = await both(intake_env, "services", "services.json")

    pack = intake_env.intake.pack
    assert [s["service_code"] for s in data] == [c.service_code for c in pack.categories.values()]
    heating = next(s for s in data if s["service_code"] == "ZH-201")
    assert heating["service_name"] == "供暖"
    assert heating["metadata"] is True
    assert heating["keywords"] == "暖气,供暖,不热,供热"
    assert next(s for s in data if s["service_code"] == "ZH-101")["metadata"] is False


async def test_service_definition_lists_attributes_with_values(intake_env: IntakeEnv) -> None:
    data = await both(intake_env, "services/ZH-201", "service-definition.json")

    assert data["service_code"] == "ZH-201"
    scope = next(a for a in data["attributes"] if a["code"] == "scope")
    assert scope["datatype"] == "singlevaluelist"
    assert scope["required"] is True
    assert [v["key"] for v in scope["values"]] == ["home", "building", "compound"]
    plain = await both(intake_env, "services/ZH-101", "service-definition.json")
    assert plain["attributes"] == []
    await both(intake_env, "services/NOPE", expect=404)


async def test_unknown_jurisdiction_is_404_and_ours_is_accepted(intake_env: IntakeEnv) -> None:
    await both(intake_env, "services", expect=404, jurisdiction_id="elsewhere")
    await both(intake_env, "services", "services.json", jurisdiction_id=JURISDICTION)
    response = await post_form(intake_env, HEATING | {"jurisdiction_id": "elsewhere"})
    assert response.status_code == 404
    assert await intake_env.count("requests") == 0


async def test_unknown_format_is_refused(intake_env: IntakeEnv) -> None:
    response = await intake_env.http.get(f"{BASE}/services.csv")
    assert response.status_code == 404
    validate_errors(response.json(), 404)


@pytest.mark.parametrize("fmt", ["json", "xml"])
async def test_post_creates_a_request_that_reads_back_without_personal_data(
    intake_env: IntakeEnv, fmt: str
) -> None:
    response = await post_form(intake_env, HEATING, fmt=fmt)

    assert response.status_code == 200, response.text
    answer = response.json() if fmt == "json" else xml_data(response.content)
    if fmt == "json":
        validate(answer, "post-response.json")
    case_id, token = answer[0]["service_request_id"], answer[0]["token"]
    assert answer[0]["account_id"] == "acct-9"
    record = (await both(intake_env, f"requests/{case_id}", "requests.json"))[0]
    assert record["service_code"] == "ZH-201"
    assert record["status"] == "open"
    assert record["description"] == HEATING["description"]
    assert (record["lat"], record["long"]) == (39.983, 116.43)
    assert record["media_url"] == HEATING["media_url"]
    assert "13912345678" not in str(record)
    assert "Li" not in str(record)
    tokens = await both(intake_env, f"tokens/{token}", "tokens.json")
    assert tokens == [{"service_request_id": case_id, "token": token}]
    stored = (await intake_env.sql("SELECT request FROM requests"))[0]["request"]
    assert stored["reporter"] == {
        "name": "Li Hua",
        "phone": "13912345678",
        "email": "li@example.org",
        "anonymous": False,
        "confidential": False,
        "language": None,
    }
    assert stored["extras"]["open311"]["attributes"] == {"scope": "building", "indoor_temp": "14"}
    assert ROLE_KEYS["app"] not in str(stored)  # the api_key is never stored
    assert intake_env.metric("requests_accepted_total", channel="app", via="open311") == 1


@pytest.mark.parametrize(
    ("key", "status"), [(None, 403), ("operator", 403)], ids=["no-key", "wrong-role"]
)
async def test_post_without_a_valid_api_key_is_403_and_stores_nothing(
    intake_env: IntakeEnv, key: str | None, status: int
) -> None:
    for fmt in ("json", "xml"):
        response = await post_form(intake_env, HEATING, fmt=fmt, key=key)
        assert response.status_code == status
        data = response.json() if fmt == "json" else xml_data(response.content)
        validate_errors(
            data
            if fmt == "json"
            else [{"code": int(e["code"]), "description": e["description"]} for e in data],
            status,
        )
    bad = await intake_env.http.post(f"{BASE}/requests.json", data=HEATING | {"api_key": "guess"})
    assert bad.status_code == 403
    assert await intake_env.count("requests") == 0


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"service_code": None}, "service_code is required"),
        ({"service_code": "ZH-000"}, "not a service"),
        ({"lat": None, "long": None}, "location is required"),
        ({"lat": "north"}, "lat must be a number"),
        ({"lat": "95"}, "lat"),
        ({"attribute[scope]": None}, "attribute[scope] is required"),
        ({"attribute[scope]": "street"}, "must be one of"),
        ({"attribute[indoor_temp]": "warm"}, "must be a number"),
        ({"attribute[colour]": "red"}, "not an attribute"),
        ({"description": "x" * 4001}, "description"),
        ({"media_url": "file:///etc/passwd"}, "media_url"),
        ({"phone": "call me"}, "phone"),
    ],
)
async def test_bad_post_is_400_in_the_spec_error_format(
    intake_env: IntakeEnv, change: dict[str, str | None], fragment: str
) -> None:
    form = {k: v for k, v in (HEATING | change).items() if v is not None}

    response = await post_form(intake_env, form)

    assert response.status_code == 400, response.text
    validate_errors(response.json(), 400)
    assert any(fragment in e["description"] for e in response.json()), response.json()
    assert await intake_env.count("requests") == 0


async def test_post_accepts_an_address_instead_of_coordinates(intake_env: IntakeEnv) -> None:
    form = {k: v for k, v in HEATING.items() if k not in ("lat", "long")}
    response = await post_form(intake_env, form | {"address_string": "芍药居北里201号楼"})
    assert response.status_code == 200
    case_id = response.json()[0]["service_request_id"]
    record = (await both(intake_env, f"requests/{case_id}", "requests.json"))[0]
    assert record["address"] == "芍药居北里201号楼"
    assert record["lat"] is None


async def test_post_with_the_same_idempotency_key_returns_the_original(
    intake_env: IntakeEnv,
) -> None:
    first = await post_form(intake_env, HEATING, **{"Idempotency-Key": "k-1"})
    again = await post_form(intake_env, HEATING, **{"Idempotency-Key": "k-1"})
    other = await post_form(
        intake_env, HEATING | {"description": "different"}, **{"Idempotency-Key": "k-1"}
    )
    fresh = await post_form(intake_env, HEATING)

    assert (first.status_code, again.status_code, other.status_code) == (200, 200, 409)
    assert first.json() == again.json()
    validate_errors(other.json(), 409)
    assert fresh.json()[0]["service_request_id"] != first.json()[0]["service_request_id"]
    assert await intake_env.count("requests") == 2


async def test_post_refuses_uploads_and_oversized_forms(intake_env: IntakeEnv) -> None:
    upload = await intake_env.http.post(
        f"{BASE}/requests.json",
        data={"api_key": ROLE_KEYS["app"], "service_code": "ZH-101", "lat": "1", "long": "1"},
        files={"media": ("x.jpg", b"\xff\xd8", "image/jpeg")},
    )
    huge = await post_form(intake_env, HEATING | {"description": "x" * 70_000})
    empty = await intake_env.http.post(
        f"{BASE}/requests.json",
        content=b"",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    bad_utf8 = await intake_env.http.post(
        f"{BASE}/requests.json",
        content=b"service_code=ZH-101&description=%FF%FE&lat=1&long=1&api_key="
        + ROLE_KEYS["app"].encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )

    assert [r.status_code for r in (upload, huge, empty, bad_utf8)] == [400] * 4
    for response in (upload, huge, empty, bad_utf8):
        validate_errors(response.json(), 400)
    assert await intake_env.count("requests") == 0


async def _make_requests(env: IntakeEnv, n: int) -> list[str]:
    ids = []
    for i in range(n):
        form = HEATING if i % 2 == 0 else {"service_code": "ZH-101", "lat": "39.9", "long": "116.4"}
        response = await post_form(env, form)
        ids.append(response.json()[0]["service_request_id"])
    return ids


async def _project(env: IntakeEnv, change: Change, event_id: str) -> None:
    async with env.pool.acquire() as conn:
        await apply_changes(conn, [(event_id, change)])


async def test_lifecycle_gives_status_agency_and_expected_datetime(intake_env: IntakeEnv) -> None:
    [case_id] = await _make_requests(intake_env, 1)
    now = datetime.now(UTC).replace(microsecond=0)
    due = now + timedelta(hours=24)
    await _project(
        intake_env,
        Change(case_id, "dispatched", now, "dispatched", "water_bureau", "utilities.heating"),
        "e1",
    )
    await _project(
        intake_env,
        Change(
            case_id,
            "deadlines_set",
            None,
            department="water_bureau",
            resolve_due=due,
            in_history=False,
        ),
        "e2",
    )
    dispatched = (await both(intake_env, f"requests/{case_id}", "requests.json"))[0]
    assert dispatched["status"] == "open"
    assert dispatched["agency_responsible"] == "水务局"
    assert dispatched["expected_datetime"] == due.isoformat()
    assert dispatched["status_notes"] == "已派至水务局办理。"  # the pack speaks Chinese

    resolved_at = now + timedelta(hours=3)
    await _project(
        intake_env,
        Change(
            case_id,
            "resolved",
            resolved_at,
            "resolved",
            "water_bureau",
            note="已修复管道，供暖恢复",
        ),
        "e3",
    )
    record = (await both(intake_env, f"requests/{case_id}", "requests.json", extensions="true"))[0]
    assert record["status"] == "closed"
    assert record["status_notes"] == "已修复管道，供暖恢复"
    assert record["updated_datetime"] == resolved_at.isoformat()
    history = record["extended_attributes"]["history"]
    assert [(h["kind"], h["state"], h["agency"]) for h in history] == [
        ("dispatched", "dispatched", "水务局"),
        ("resolved", "resolved", "水务局"),
    ]


async def test_get_requests_filters_and_their_defaults(intake_env: IntakeEnv) -> None:
    ids = await _make_requests(intake_env, 5)
    await _project(
        intake_env, Change(ids[0], "closed", datetime.now(UTC), "closed", "water_bureau"), "c1"
    )

    everything = await both(intake_env, "requests", "requests.json")
    assert sorted(r["service_request_id"] for r in everything) == sorted(ids)
    heating = await both(intake_env, "requests", "requests.json", service_code="ZH-201")
    assert sorted(r["service_request_id"] for r in heating) == sorted(ids[0::2])
    two_codes = await both(intake_env, "requests", "requests.json", service_code="ZH-201,ZH-101")
    assert len(two_codes) == 5
    closed = await both(intake_env, "requests", "requests.json", status="closed")
    assert [r["service_request_id"] for r in closed] == [ids[0]]
    still_open = await both(intake_env, "requests", "requests.json", status="open")
    assert sorted(r["service_request_id"] for r in still_open) == sorted(ids[1:])
    both_states = await both(intake_env, "requests", "requests.json", status="open,closed")
    assert len(both_states) == 5
    # service_request_id overrides every other filter.
    chosen = await both(
        intake_env,
        "requests",
        "requests.json",
        service_request_id=f"{ids[1]},{ids[3]}",
        status="closed",
        service_code="ZH-999",
    )
    assert sorted(r["service_request_id"] for r in chosen) == sorted([ids[1], ids[3]])
    long_ago = await both(
        intake_env,
        "requests",
        expect=200,
        start_date="2020-01-01T00:00:00Z",
        end_date="2020-02-01T00:00:00Z",
    )
    assert long_ago == []
    today = datetime.now(UTC).date().isoformat()
    since = await both(intake_env, "requests", "requests.json", start_date=f"{today}T00:00:00Z")
    assert len(since) == 5


@pytest.mark.parametrize(
    "params",
    [
        {"start_date": "2026-01-01T00:00:00Z", "end_date": "2026-05-01T00:00:00Z"},
        {"start_date": "2026-03-01T00:00:00Z", "end_date": "2026-02-01T00:00:00Z"},
        {"start_date": "yesterday"},
        {"status": "pending"},
        {"page": "0"},
        {"page_size": "1001"},
        {"page_size": "ten"},
    ],
    ids=[
        "over-90-days",
        "end-before-start",
        "bad-date",
        "bad-status",
        "page-0",
        "page-size",
        "page-size-text",
    ],
)
async def test_bad_filters_are_400(intake_env: IntakeEnv, params: dict[str, str]) -> None:
    await both(intake_env, "requests", expect=400, **params)


async def test_pages_split_the_list_newest_first(intake_env: IntakeEnv) -> None:
    ids = await _make_requests(intake_env, 5)

    pages = [
        await both(intake_env, "requests", "requests.json", page=str(p), page_size="2")
        for p in (1, 2, 3, 4)
    ]

    assert [len(p) for p in pages] == [2, 2, 1, 0]
    listed = [r["service_request_id"] for page in pages for r in page]
    assert listed == list(reversed(ids))


async def test_unknown_request_and_token_are_404(intake_env: IntakeEnv) -> None:
    await both(intake_env, "requests/CR0000000000000", expect=404)
    await both(intake_env, "tokens/o311-deadbeef", expect=404)
    await both(intake_env, "tokens/whatever", expect=404)


async def test_extensions_add_extended_attributes_only_when_asked(intake_env: IntakeEnv) -> None:
    await _make_requests(intake_env, 1)
    plain = await both(intake_env, "requests", "requests.json")
    extended = await both(intake_env, "requests", "requests.json", extensions="true")
    assert "extended_attributes" not in plain[0]
    attributes = extended[0]["extended_attributes"]
    assert attributes["channel"] == "app"
    assert attributes["state"] == "received"
    assert attributes["media_urls"] == [HEATING["media_url"]]


async def test_an_existing_open311_client_library_works_unchanged(intake_env: IntakeEnv) -> None:
    """PyPI's ``georeport`` (read side of GeoReport v2) against a live server, both formats."""
    [case_id, _] = await _make_requests(intake_env, 2)
    port = free_port()
    server = make_server(intake_env.app, "127.0.0.1", port)
    serving = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: server.started, message="uvicorn started")
        root = f"http://127.0.0.1:{port}{BASE}"
        for fmt in ("json", "xml"):
            client = GeoReport(root, jurisdiction=JURISDICTION, output_format=fmt)
            services = await asyncio.to_thread(client.get_service_list)
            assert len(services) == len(intake_env.intake.pack.categories)
            definition = await asyncio.to_thread(client.get_service_definition, "ZH-201")
            assert definition["service_code"] == "ZH-201"
            listed = await asyncio.to_thread(client.get_service_requests, service_code="ZH-201")
            listed = listed if isinstance(listed, list) else [listed]  # xmltodict: one → dict
            assert [r["service_request_id"] for r in listed] == [case_id]
            one = await asyncio.to_thread(client.get_service_request, case_id)
            assert one["service_request_id"] == case_id
            assert one["status"] == "open"
        # POST as the spec's form, with a plain HTTP client (georeport cannot create).
        async with httpx.AsyncClient() as http:
            created = await http.post(
                f"{root}/requests.xml",
                data=HEATING | {"api_key": ROLE_KEYS["app"], "jurisdiction_id": JURISDICTION},
            )
        assert created.status_code == 200
        assert xml_data(created.content)[0]["service_request_id"].startswith("CR")
    finally:
        server.should_exit = True
        await serving


async def test_reading_needs_no_key_but_v1_reads_do(intake_env: IntakeEnv) -> None:
    [case_id] = await _make_requests(intake_env, 1)
    assert (await intake_env.http.get(f"{BASE}/requests/{case_id}.json")).status_code == 200
    assert (await intake_env.http.get(f"/v1/requests/{case_id}")).status_code == 401
    assert (
        await intake_env.http.get(f"/v1/requests/{case_id}", headers=auth("app"))
    ).status_code == 200


async def test_a_nul_character_in_a_query_or_an_id_gets_400(intake_env: IntakeEnv) -> None:
    for url, params in (
        (f"{BASE}/requests.json", {"service_request_id": "\x00"}),
        (f"{BASE}/requests/BJ%00.json", {}),
        (f"{BASE}/tokens/tok%00.json", {}),
    ):
        response = await intake_env.http.get(url, params=params)
        assert response.status_code == 400, (url, response.text)
        assert "NUL" in response.text


@pytest.mark.parametrize(
    "params",
    [{"start_date": "9999-12-31T00:00:00Z"}, {"end_date": "0001-01-01T00:00:00Z"}],
    ids=["start-at-year-9999", "end-at-year-1"],
)
async def test_a_date_window_at_the_calendars_edge_gets_400_not_500(
    intake_env: IntakeEnv, params: dict[str, str]
) -> None:
    response = await intake_env.http.get(f"{BASE}/requests.json", params=params)
    assert response.status_code == 400, response.text
    assert "out of range" in response.text
