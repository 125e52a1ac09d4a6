"""Hypothesis strategies for what the platform and clients might send intake: valid
payloads, payloads with any field replaced by anything, and plain garbage."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

NASTY = [
    "'); DROP TABLE requests; --",
    "<script>alert('x')</script>",
    "<b onmouseover=alert(1)>hi</b>",
    "\x00",
    "\x00\x01\x1b[31m",
    "\u202eevil\u202c",
    "Cafe\u0301",
    "\ufeff\u200b",
    " ",
    "",
    "x" * 4001,
    "１３８１２３４５６７８",
    "+86 138 1234 5678",
    "null",
    "../../etc/passwd",
    "javascript:alert(1)",
    "https://ok.example/a.jpg",
    "ftp://x.example/a",
    "2999-01-01T00:00:00Z",
    "2026-01-01T00:00:00",
    "1e309",
]
texts = st.one_of(st.text(max_size=40), st.sampled_from(NASTY), st.text(max_size=600))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    texts,
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)
moments = st.datetimes(
    min_value=datetime(1990, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.sampled_from([UTC, None]),
).map(lambda d: d.isoformat())
recent = st.timedeltas(min_value=timedelta(days=-400), max_value=timedelta(hours=2)).map(
    lambda delta: (datetime.now(UTC) + delta).isoformat()
)
coordinates = st.one_of(st.floats(), st.floats(min_value=-200, max_value=200), texts)
urls = st.lists(
    st.one_of(st.sampled_from(NASTY), st.from_regex(r"https?://[a-z]{1,8}\.example/[a-z0-9]{0,8}")),
    max_size=12,
)

TEMPLATES: dict[str, dict[str, Any]] = {
    "hotline": {
        "caller_phone": "13812345678",
        "caller_name": "张先生",
        "anonymous": False,
        "confidential": True,
        "address_text": "朝阳路12号院",
        "summary": "垃圾没人清运",
        "details": "三号楼下垃圾桶满了",
        "category_hint": "sanitation.litter",
        "urgency": "general",
    },
    "app": {
        "text": "河道里有人排污水",
        "lat": 39.95,
        "long": 116.46,
        "photo_urls": ["https://img.example/1.jpg"],
        "category": "ZH-106",
        "reporter_phone": "+8613912345678",
    },
    "grid": {
        "grid_worker_id": "W204",
        "grid_id": "G-CY-0012",
        "checklist_code": "construction.site",
        "text": "工地未覆盖防尘网",
        "photo_urls": [],
    },
}


def _field(name: str, good: Any) -> st.SearchStrategy[Any]:
    if name in ("lat", "long"):
        return st.one_of(st.just(good), coordinates)
    if name == "photo_urls":
        return st.one_of(st.just(good), urls, json_values)
    return st.one_of(st.just(good), st.just(good), texts, json_values)


@st.composite
def payloads(draw: st.DrawFn) -> dict[str, Any]:
    """A channel payload, each field either right or anything at all, plus unknown fields."""
    channel = draw(st.sampled_from([*TEMPLATES, "fax"]))
    template = TEMPLATES.get(channel, TEMPLATES["app"])
    body: dict[str, Any] = {
        "channel": channel,
        "source_ref": draw(st.one_of(st.uuids().map(lambda u: f"P-{u}"), texts)),
    }
    for name, good in template.items():
        if draw(st.integers(0, 9)) > 0:  # now and then a field is left out
            body[name] = draw(_field(name, good))
    if draw(st.booleans()):
        body["submitted_at"] = draw(st.one_of(recent, moments, texts))
    body.update(draw(st.dictionaries(st.text(min_size=1, max_size=12), json_values, max_size=3)))
    return body


@st.composite
def near_valid(draw: st.DrawFn) -> dict[str, Any]:
    """A complete, valid payload with at most one field changed to text or anything."""
    channel = draw(st.sampled_from(list(TEMPLATES)))
    body: dict[str, Any] = {"channel": channel, "source_ref": f"P-{draw(st.uuids())}"}
    body |= TEMPLATES[channel]
    name = draw(st.sampled_from([*TEMPLATES[channel], "submitted_at", None]))
    if name == "submitted_at":
        body[name] = draw(st.one_of(recent, moments))
    elif name is not None:
        body[name] = draw(st.one_of(texts, _field(name, body[name])))
    body.update(draw(st.dictionaries(st.text(min_size=1, max_size=12), json_values, max_size=3)))
    return body


def as_json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8")


bodies = st.one_of(
    near_valid().map(as_json),
    near_valid().map(as_json),
    payloads().map(as_json),
    json_values.map(as_json),
    st.binary(max_size=300),
    payloads().map(lambda p: as_json(p | {"padding": "x" * 70_000})),
    payloads().map(lambda p: as_json(p)[:-3]),
)
