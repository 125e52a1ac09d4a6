"""Open311 GeoReport v2, the pure part: documents, form and query parsing, XML. No I/O.

Formats are chosen by suffix (``.json`` / ``.xml``); errors are a list of
``{code, description}`` (``<errors><error>`` in XML) with 404 for an unknown
resource or jurisdiction, 403 for a bad api_key and 400 otherwise.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import ValidationError

from services.intake.lifecycle import CLOSED_STATES, CaseView, open311_status, status_notes
from shared.channels import MAX_DESCRIPTION, AppReport
from shared.citypack.departments import Department
from shared.citypack.public import PublicText
from shared.citypack.taxonomy import Category, ServiceAttribute
from shared.events import CitizenRequest
from shared.logs import mask_text

Format = Literal["json", "xml"]
SPECIFICATION = "http://wiki.open311.org/GeoReport_v2"
CHANGESET = "2026-01-01T00:00:00+00:00"  # when this API last changed shape
MAX_WINDOW = timedelta(days=90)
MAX_PAGE_SIZE = 1000
# A request no category has been given yet (the router has not classified it).
UNCLASSIFIED_CODE = "unclassified"
UNCLASSIFIED_NAME = "Not yet classified"


@dataclass(frozen=True)
class Open311Config:
    """What Open311 discovery tells clients, and the jurisdiction the API answers for."""

    jurisdiction: str
    contact: str
    key_service: str


class Open311Error(Exception):
    """An error answered in the spec's format: ``[{"code": status, "description": ...}]``."""

    def __init__(self, status: int, *descriptions: str) -> None:
        super().__init__("; ".join(descriptions))
        self.status = status
        self.descriptions = list(descriptions) or ["error"]

    def body(self) -> list[dict[str, Any]]:
        return [{"code": self.status, "description": d} for d in self.descriptions]


def check_format(fmt: str) -> Format:
    if fmt not in ("json", "xml"):
        raise Open311Error(404, f"unknown format {fmt[:20]!r}: use .json or .xml")
    return fmt  # type: ignore[return-value]


def iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat(timespec="seconds") if value else None


# --- discovery and services -----------------------------------------------------------------


def discovery(url: str, contact: str, key_service: str) -> dict[str, Any]:
    return {
        "changeset": CHANGESET,
        "contact": contact,
        "key_service": key_service,
        "endpoints": [
            {
                "specification": SPECIFICATION,
                "url": url,
                "changeset": CHANGESET,
                "type": "production",
                "formats": ["text/xml", "application/json"],
            }
        ],
    }


def service(category: Category) -> dict[str, Any]:
    return {
        "service_code": category.service_code,
        "service_name": category.name,
        "description": category.name_en or category.name,
        "metadata": bool(category.attributes),
        "type": "realtime",
        "keywords": ",".join(category.keywords),
        "group": category.group,
    }


def _attribute(attribute: ServiceAttribute, order: int) -> dict[str, Any]:
    return {
        "variable": attribute.variable,
        "code": attribute.code,
        "datatype": attribute.datatype,
        "required": attribute.required,
        "datatype_description": attribute.datatype_description,
        "order": attribute.order if attribute.order is not None else order,
        "description": attribute.description,
        "values": [{"key": v.key, "name": v.name} for v in attribute.values],
    }


def service_definition(category: Category) -> dict[str, Any]:
    return {
        "service_code": category.service_code,
        "attributes": [_attribute(a, i) for i, a in enumerate(category.attributes, start=1)],
    }


def category_by_code(categories: Mapping[str, Category], code: str) -> Category | None:
    return next((c for c in categories.values() if c.service_code == code), None)


# --- POST requests --------------------------------------------------------------------------

_ATTRIBUTE_KEY = re.compile(r"^attribute\[([^\]]{1,80})\](\[\])?$")
_KNOWN = frozenset(
    {
        "api_key",
        "jurisdiction_id",
        "service_code",
        "lat",
        "long",
        "address_string",
        "address_id",
        "email",
        "device_id",
        "account_id",
        "first_name",
        "last_name",
        "phone",
        "description",
        "media_url",
    }
)
# AppReport field → the Open311 parameter a client sent it as (for error messages).
_PARAMETER = {
    "text": "description",
    "photo_urls": "media_url",
    "address_text": "address_string",
    "reporter_name": "first_name/last_name",
    "reporter_phone": "phone",
    "reporter_email": "email",
}


def _float(form: Mapping[str, str], name: str, errors: list[str]) -> float | None:
    raw = form.get(name, "").strip()
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        errors.append(f"{name} must be a number")
        return None


def _check_answer(attribute: ServiceAttribute, answers: list[str]) -> str | None:
    """What is wrong with the answers to one attribute, or None."""
    keys = {v.key for v in attribute.values}
    name = f"attribute[{attribute.code}]"
    if not answers:
        return f"{name} is required" if attribute.required else None
    if attribute.datatype != "multivaluelist" and len(answers) > 1:
        return f"{name} takes one value"
    if attribute.datatype.endswith("valuelist"):
        unknown = [a for a in answers if a not in keys]
        return f"{name} must be one of {sorted(keys)}" if unknown else None
    if attribute.datatype == "number":
        try:
            float(answers[0])
        except ValueError:
            return f"{name} must be a number"
    if attribute.datatype == "datetime":
        try:
            datetime.fromisoformat(answers[0])
        except ValueError:
            return f"{name} must be an ISO 8601 date and time"
    if len(answers[0]) > MAX_DESCRIPTION:
        return f"{name} is over {MAX_DESCRIPTION} characters"
    return None


def parse_attributes(
    fields: Sequence[tuple[str, str]], category: Category
) -> tuple[dict[str, str | list[str]], list[str]]:
    """``attribute[code]=v`` / ``attribute[code][]=v`` checked against the service definition."""
    given: dict[str, list[str]] = {}
    errors: list[str] = []
    for key, value in fields:
        match = _ATTRIBUTE_KEY.match(key)
        if match and value.strip():
            given.setdefault(match.group(1), []).append(value.strip())
    defined = {a.code: a for a in category.attributes if a.variable}
    errors += [
        f"attribute[{code}] is not an attribute of service {category.service_code}"
        for code in given
        if code not in defined
    ]
    answers: dict[str, str | list[str]] = {}
    for code, attribute in defined.items():
        values = given.get(code, [])
        problem = _check_answer(attribute, values)
        if problem:
            errors.append(problem)
        elif values:
            answers[code] = values if attribute.datatype == "multivaluelist" else values[0]
    return answers, errors


def submission(
    fields: Sequence[tuple[str, str]],
    categories: Mapping[str, Category],
    *,
    source_ref: str,
    client: str,
) -> AppReport:
    """An Open311 ``POST requests`` form as the app channel's payload; Open311Error(400) if bad."""
    form = dict(fields)
    code = form.get("service_code", "").strip()
    if not code:
        raise Open311Error(400, "service_code is required")
    category = category_by_code(categories, code)
    if category is None:
        raise Open311Error(400, f"service_code {code[:40]!r} is not a service here")
    errors: list[str] = []
    lat, long = _float(form, "lat", errors), _float(form, "long", errors)
    address = form.get("address_string", "").strip()
    address_id = form.get("address_id", "").strip()
    if not errors and (lat is None or long is None) and not address and not address_id:
        errors.append("a location is required: lat and long, address_string or address_id")
    answers, attribute_errors = parse_attributes(fields, category)
    errors += attribute_errors
    if errors:
        raise Open311Error(400, *errors)
    name = " ".join(p for p in (form.get("first_name", ""), form.get("last_name", "")) if p)
    unknown = {k: v for k, v in form.items() if k not in _KNOWN and not _ATTRIBUTE_KEY.match(k)}
    open311 = {
        "service_code": category.service_code,
        "attributes": answers,
        "address_id": address_id or None,
        "device_id": form.get("device_id") or None,
        "account_id": form.get("account_id") or None,
        "client": client,
        "fields": unknown,
    }
    candidate: dict[str, Any] = {
        "channel": "app",
        "source_ref": source_ref,
        "text": form.get("description", "").strip() or category.name,
        "photo_urls": [form["media_url"]] if form.get("media_url", "").strip() else [],
        "lat": lat,
        "long": long,
        "address_text": address or None,
        "category": category.id,
        "reporter_name": name or None,
        "reporter_phone": form.get("phone") or None,
        "reporter_email": form.get("email") or None,
        "open311": {k: v for k, v in open311.items() if v not in (None, {}, "")},
    }
    try:
        return AppReport.model_validate(candidate)
    except ValidationError as error:
        raise Open311Error(
            400,
            *(
                f"{_PARAMETER.get(str(e['loc'][0]), str(e['loc'][0])) if e['loc'] else 'request'}:"
                f" {e['msg']}"
                for e in error.errors(include_url=False, include_input=False)
            ),
        ) from error


def post_response(case_id: str, token: str, account_id: str | None) -> dict[str, Any]:
    return {
        "service_request_id": case_id,
        "token": token,
        "service_notice": "Received; you can follow it with GET requests/{id}.",
        "account_id": account_id,
    }


# --- GET requests ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestQuery:
    case_ids: tuple[str, ...]
    service_codes: tuple[str, ...] | None
    start: datetime
    end: datetime
    closed: bool | None  # None: both
    page: int
    page_size: int
    extensions: bool


def _datetime(name: str, raw: str) -> datetime:
    try:
        value = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise Open311Error(
            400, f"{name} must be an ISO 8601 date-time, e.g. 2026-01-01T00:00:00Z"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _int(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = params.get(name, "").strip()
    if not raw:
        return default
    if not raw.isascii() or not raw.isdigit() or not low <= int(raw) <= high:
        raise Open311Error(400, f"{name} must be a whole number from {low} to {high}")
    return int(raw)


def _list(raw: str | None) -> tuple[str, ...]:
    return tuple(dict.fromkeys(p.strip() for p in (raw or "").split(",") if p.strip()))


def _window(start_raw: str | None, end_raw: str | None, now: datetime) -> tuple[datetime, datetime]:
    """The spec's window: both given (at most 90 days apart), or 90 days from the one given,
    or the last 90 days."""
    start = _datetime("start_date", start_raw) if start_raw else None
    end = _datetime("end_date", end_raw) if end_raw else None
    if start and end:
        if end < start:
            raise Open311Error(400, "end_date is before start_date")
        if end - start > MAX_WINDOW:
            raise Open311Error(400, "start_date and end_date may not span more than 90 days")
        return start, end
    if start:
        return start, start + MAX_WINDOW
    if end:
        return end - MAX_WINDOW, end
    return now - MAX_WINDOW, now


def parse_request_query(params: Mapping[str, str], now: datetime) -> RequestQuery:
    """The filters of ``GET requests`` with the spec's defaults (last 90 days, first 1000)."""
    start, end = _window(params.get("start_date"), params.get("end_date"), now)
    statuses = set(_list(params.get("status")))
    if statuses - {"open", "closed"}:
        raise Open311Error(400, "status must be open, closed or both (comma separated)")
    case_ids = _list(params.get("service_request_id"))
    if len(case_ids) > MAX_PAGE_SIZE:
        raise Open311Error(400, f"at most {MAX_PAGE_SIZE} service_request_id at once")
    return RequestQuery(
        case_ids=case_ids,
        service_codes=_list(params.get("service_code")) or None,
        start=start,
        end=end,
        closed=None if len(statuses) != 1 else statuses == {"closed"},
        page=_int(params, "page", 1, 1, 1_000_000),
        page_size=_int(params, "page_size", MAX_PAGE_SIZE, 1, MAX_PAGE_SIZE),
        extensions=params.get("extensions", "").strip().lower() == "true",
    )


def closed_states() -> list[str]:
    return sorted(CLOSED_STATES)


def request_record(
    view: CaseView,
    categories: Mapping[str, Category],
    departments: Mapping[str, Department],
    *,
    extensions: bool,
    public: PublicText,
) -> dict[str, Any]:
    """One request as Open311 shows it to anyone: no personal data, masked free text."""
    request = view.request
    category = categories.get(view.category or "")
    department = departments.get(view.department or "")
    agency = department.name if department else view.department
    open311 = request.extras.get("open311") if isinstance(request.extras, dict) else None
    record: dict[str, Any] = {
        "service_request_id": request.case_id,
        "status": open311_status(view.state),
        "status_notes": mask_text(status_notes(view.state, agency, view.status_notes, public) or "")
        or None,
        "service_name": category.name if category else UNCLASSIFIED_NAME,
        "service_code": category.service_code if category else UNCLASSIFIED_CODE,
        "description": mask_text(request.description),
        "agency_responsible": agency,
        "service_notice": None,
        "requested_datetime": iso(view.requested_at),
        "updated_datetime": iso(view.updated_at),
        "expected_datetime": iso(view.resolve_due),
        "address": public_address(request),
        "address_id": open311.get("address_id") if isinstance(open311, dict) else None,
        "zipcode": None,
        "lat": request.location.lat,
        "long": request.location.long,
        "media_url": request.media_urls[0] if request.media_urls else None,
    }
    if extensions:
        record["extended_attributes"] = {
            "channel": request.channel.value,
            "state": view.state,
            "category": view.category,
            "grid_id": request.location.grid_id,
            "media_urls": list(request.media_urls),
            "history": [public_step(step, departments) for step in view.history],
        }
    return record


def public_address(request: CitizenRequest) -> str | None:
    """Where, for the public: masked, and not at all for a confidential caller (it may be home)."""
    if request.reporter.confidential or not request.location.address_text:
        return None
    return mask_text(request.location.address_text)


def public_step(step: Mapping[str, Any], departments: Mapping[str, Department]) -> dict[str, Any]:
    department = departments.get(step.get("department") or "")
    return {
        "at": iso(step["at"]),
        "kind": step["kind"],
        "state": step.get("state"),
        "agency": department.name if department else step.get("department"),
        "note": mask_text(step["note"]) if step.get("note") else None,
    }


# --- XML --------------------------------------------------------------------------------------

# Container element → the element of each item in it.
_ITEM_TAGS = {
    "attributes": "attribute",
    "values": "value",
    "endpoints": "endpoint",
    "formats": "format",
    "history": "event",
    "media_urls": "media_url",
}
# Characters XML 1.0 cannot carry at all.
_XML_INVALID = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return _XML_INVALID.sub("", str(value))


def _fill(element: ET.Element, value: Any) -> None:
    if isinstance(value, Mapping):
        for key, child in value.items():
            _fill(ET.SubElement(element, str(key)), child)
    elif isinstance(value, list):
        tag = _ITEM_TAGS.get(element.tag, "item")
        for child in value:
            _fill(ET.SubElement(element, tag), child)
    else:
        element.text = _text(value)


def to_xml(root: str, value: Any, item: str | None = None) -> bytes:
    """``value`` as the spec's XML: a list becomes ``<root><item>…</item>…</root>``."""
    element = ET.Element(root)
    if isinstance(value, list):
        for child in value:
            _fill(ET.SubElement(element, item or "item"), child)
    else:
        _fill(element, value)
    return ET.tostring(element, encoding="utf-8", xml_declaration=True)
