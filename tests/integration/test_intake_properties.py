"""Properties over intake's live HTTP APIs (real app, real PostgreSQL) and its Kafka consumer.

Budgets: POST /v1/requests 200 examples; Open311 POST 100; Open311 GET requests 100;
the Kafka consumer 8 examples of up to 20 messages each.
"""

from __future__ import annotations

import re
import string
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.topics import Topic
from tests.helpers import eventually
from tests.intake_strategies import NASTY, bodies, texts
from tests.integration.intake_support import ROLE_KEYS, IntakeEnv, KafkaSide, auth
from tests.integration.open311_check import validate, validate_errors

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e]")
LIVE = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
header_keys = st.none() | st.text(alphabet=string.printable.strip(), max_size=12)


@settings(LIVE, max_examples=200)
@given(body=bodies, role=st.sampled_from(["platform", "app"]), key=header_keys)
async def test_any_post_body_gets_a_clear_answer_and_accepted_text_is_clean(
    intake_env: IntakeEnv, body: bytes, role: str, key: str | None
) -> None:
    headers = {**auth(role), "Content-Type": "application/json"}
    if key is not None:
        headers["Idempotency-Key"] = key
    response = await intake_env.http.post("/v1/requests", content=body, headers=headers)

    # 403: an app key sent a hotline or grid payload (only the platform may)
    allowed = {200, 201, 400, 409, 413, 422} | ({403} if role == "app" else set())
    assert response.status_code in allowed, response.text
    if response.status_code == 422:
        assert all({"loc", "msg", "type"} <= set(d) for d in response.json()["detail"])
    if response.status_code in (200, 201):
        case_id = response.json()["case_id"]
        view = await intake_env.http.get(f"/v1/requests/{case_id}", headers=auth("platform"))
        assert view.status_code == 200
        description = view.json()["description"]
        assert 0 < len(description) <= 4000
        assert not _CONTROL.search(description)


form_fields = st.dictionaries(
    st.sampled_from(
        [
            "service_code",
            "lat",
            "long",
            "address_string",
            "address_id",
            "description",
            "media_url",
            "phone",
            "email",
            "first_name",
            "attribute[scope]",
            "attribute[indoor_temp]",
            "attribute[x][]",
            "jurisdiction_id",
            "whatever",
        ]
    ),
    st.one_of(texts, st.sampled_from(["ZH-201", "ZH-101", "39.9", "116.4", "building", *NASTY])),
    max_size=10,
)


@settings(LIVE, max_examples=100)
@given(form=form_fields, fmt=st.sampled_from(["json", "xml"]))
async def test_any_open311_form_gets_an_answer_in_the_spec_format(
    intake_env: IntakeEnv, form: dict[str, str], fmt: str
) -> None:
    response = await intake_env.http.post(
        f"/open311/v2/requests.{fmt}", data=form | {"api_key": ROLE_KEYS["app"]}
    )

    assert response.status_code in {200, 400, 404}, response.text
    if fmt == "json":
        if response.status_code == 200:
            validate(response.json(), "post-response.json")
        else:
            validate_errors(response.json(), response.status_code)


query_params = st.dictionaries(
    st.sampled_from(
        [
            "service_request_id",
            "service_code",
            "start_date",
            "end_date",
            "status",
            "page",
            "page_size",
            "extensions",
            "jurisdiction_id",
        ]
    ),
    st.one_of(
        texts,
        st.sampled_from(["open", "closed", "open,closed", "true", "1", "0", "1000", "ZH-201"]),
        st.datetimes(timezones=st.none()).map(lambda d: d.isoformat()),
    ),
    max_size=5,
)


@settings(LIVE, max_examples=100)
@given(params=query_params)
async def test_any_open311_query_gets_valid_requests_or_a_spec_error(
    intake_env: IntakeEnv, params: dict[str, str]
) -> None:
    response = await intake_env.http.get("/open311/v2/requests.json", params=params)

    assert response.status_code in {200, 400, 404}, response.text
    if response.status_code == 200:
        validate(response.json(), "requests.json")
    else:
        validate_errors(response.json(), response.status_code)


@pytest.mark.kafka
@settings(LIVE, max_examples=8)
@given(batch=st.lists(bodies, min_size=1, max_size=20))
async def test_every_kafka_message_becomes_a_case_a_duplicate_or_a_dead_letter(
    kafka_intake: tuple[IntakeEnv, KafkaSide], batch: list[bytes]
) -> None:
    env, kafka = kafka_intake
    before = _handled(env)
    for raw in batch:
        data = (
            b'{"specversion":"1.0","id":"' + uuid.uuid4().hex.encode() + b'","source":"/p",'
            b'"type":"civicroute.request.submitted.v1","data":' + raw + b"}"
        )
        await kafka.publish(Topic.CITIZEN_REQUESTS, data, key="fuzz")

    await eventually(
        lambda: _handled(env) >= before + len(batch), timeout=90, message="every message handled"
    )
    assert _handled(env) == before + len(batch)


def _handled(env: IntakeEnv) -> float:
    """Requests received over Kafka so far: accepted, duplicate or rejected."""
    total = 0.0
    for metric in env.registry.collect():
        if metric.name == "civicroute_intake_requests_received":
            total += sum(
                s.value
                for s in metric.samples
                if s.name.endswith("_total") and s.labels.get("via") == "kafka"
            )
    return total
