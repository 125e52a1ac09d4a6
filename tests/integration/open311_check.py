"""Checks for Open311 responses: the published JSON Schemas, and XML read back as data."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft4Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

SCHEMAS = Path(__file__).resolve().parents[1] / "data" / "open311"
# XML elements whose children are the items of a list.
CONTAINERS = frozenset(
    {
        "services",
        "service_requests",
        "errors",
        "attributes",
        "values",
        "endpoints",
        "formats",
        "history",
        "media_urls",
    }
)


@cache
def _registry() -> Registry:
    resources = []
    for path in SCHEMAS.glob("*.json"):
        if path.name != "swagger.json":
            contents = json.loads(path.read_text())
            resources.append((path.name, Resource.from_contents(contents, DRAFT4)))
    swagger = json.loads((SCHEMAS / "swagger.json").read_text())["definitions"]
    for name, definition in (
        ("post-response.json", swagger["RequestResponse"]),
        ("tokens.json", swagger["TokenResponse"]),
    ):
        schema = {"type": "array", "minItems": 1, "items": definition}
        resources.append((name, Resource.from_contents(schema, DRAFT4)))
    return Registry().with_resources(resources)


def validate(data: Any, schema: str) -> None:
    """Raise unless ``data`` fits the named Open311 schema (requests.json, services.json, …)."""
    validator = Draft4Validator(
        {"$ref": schema}, registry=_registry(), format_checker=Draft4Validator.FORMAT_CHECKER
    )
    validator.validate(data)


def validate_errors(data: Any, status: int) -> None:
    assert isinstance(data, list), data
    assert data, "an error list is never empty"
    for error in data:
        assert set(error) == {"code", "description"}, error
        assert error["code"] == status
        assert isinstance(error["description"], str)
        assert error["description"]


def xml_data(raw: bytes) -> Any:
    """An Open311 XML document as plain data (lists for container elements, text leaves)."""
    return _node(ET.fromstring(raw))  # noqa: S314 - our own server's answers


def _node(element: ET.Element) -> Any:
    children = list(element)
    if element.tag in CONTAINERS:
        return [_node(child) for child in children]
    if not children:
        return element.text or None
    return {child.tag: _node(child) for child in children}


def as_text(value: Any) -> Any:
    """JSON data as XML carries it: every scalar a string, empty and null alike."""
    if isinstance(value, dict):
        return {k: as_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_text(v) for v in value]
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None or value == "":
        return None
    return str(value)
