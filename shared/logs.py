"""Structured JSON logs that never carry a citizen's phone number, name or ID number."""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

import orjson
import structlog

# Keys whose values are personal data whatever they hold.
PERSONAL_KEYS = frozenset(
    {
        "name",
        "caller_name",
        "reporter_name",
        "first_name",
        "last_name",
        "full_name",
        "phone",
        "caller_phone",
        "reporter_phone",
        "mobile",
        "email",
        "reporter_email",
        "id_number",
        "id_card",
        "national_id",
        "reporter",
        "contact",
    }
)
MASK = "***"

# Mainland resident ID (18 chars, last may be X), mainland mobiles, E.164 and
# North American numbers, e-mail addresses. Order matters: IDs before phones.
_PATTERNS = [
    re.compile(
        r"(?<!\d)[1-9]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:[0-2]\d|3[01])\d{3}[\dXx](?!\d)"
    ),
    re.compile(r"(?<!\d)(?:\+?86[\s-]?)?1[3-9]\d[\s-]?\d{4}[\s-]?\d{4}(?!\d)"),
    re.compile(r"\+\d[\d\s-]{7,16}\d"),
    re.compile(r"(?<!\d)(?:\(\d{3}\)\s?|\d{3}[\s.-])\d{3}[\s.-]\d{4}(?!\d)"),
    re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+"),
]


# Every pattern above needs an "@" or seven digits and separators in a row: text without
# either (most log values) skips the five substitutions.
_SUSPECT = re.compile(r"@|\d[\d\s().+-]{6,}")


def mask_text(text: str) -> str:
    if _SUSPECT.search(text) is None:
        return text
    return mask_text_fully(text)


def mask_text_fully(text: str) -> str:
    """Every pattern, without the pre-screen (the reference mask_text must agree with)."""
    for pattern in _PATTERNS:
        text = pattern.sub(MASK, text)
    return text


def mask_value(value: Any, key: str | None = None) -> Any:
    if key is not None and key.lower() in PERSONAL_KEYS and value not in (None, "", False):
        return MASK
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, Mapping):
        return {k: mask_value(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [mask_value(v) for v in value]
    return value


def mask_personal_data(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: the last line of defence before a log line is written."""
    for key, value in list(event_dict.items()):
        event_dict[key] = mask_value(value, key)
    return event_dict


def _dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default or str).decode()


class RepeatLimiter(logging.Filter):
    """Lets one of a run of like library messages through per ``window`` seconds.

    While the broker is down aiokafka logs each refused connection and failed fetch,
    some hundred ERROR lines a second per process; one line per message kind every
    ``window`` seconds, saying how many like it were held back, tells ops as much.
    Messages are alike when they share logger, level and format string.
    """

    MAX_KINDS = 1000

    def __init__(
        self,
        prefixes: tuple[str, ...] = ("aiokafka",),
        window: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._prefixes = prefixes
        self._window = window
        self._clock = clock
        self._runs: dict[tuple[str, int, str], tuple[float, int]] = {}  # → (shown at, held)

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self._prefixes):
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        shown = self._runs.get(key)
        if shown is None and len(self._runs) >= self.MAX_KINDS:
            self._runs.clear()  # a library formatting its own lines: forget, stay bounded
        if shown is not None and now - shown[0] < self._window:
            self._runs[key] = (shown[0], shown[1] + 1)
            return False
        self._runs[key] = (now, 0)
        if shown is not None and shown[1]:
            record.msg = f"{record.msg} (+{shown[1]} like it since the last one shown)"
        return True


def configure_logging(service: str, level: str = "info") -> None:
    """JSON lines on stdout: one object per event, with ``service`` on every line."""
    numeric = logging.getLevelName(level.upper())
    shared_processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
        structlog.processors.format_exc_info,
    ]
    structlog.configure(
        processors=[
            *shared_processors,
            _bind_service(service),
            mask_personal_data,
            structlog.processors.JSONRenderer(serializer=_dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        # One write per line (print() makes two: the text, then the newline), so services
        # that share a stdout (make run, a container's log pipe) never splice their lines.
        logger_factory=structlog.WriteLoggerFactory(file=sys.stdout),
        cache_logger_on_first_use=True,
    )
    # Libraries log through stdlib logging; route them through the same JSON and mask.
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                _bind_service(service),
                mask_personal_data,
                structlog.processors.JSONRenderer(serializer=_dumps),
            ],
            foreign_pre_chain=[*shared_processors, structlog.stdlib.add_logger_name],
        )
    )
    handler.addFilter(RepeatLimiter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, logging.INFO))
    # aiokafka narrates coordinator changes at INFO; keep warnings and up.
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # Startup races with the group coordinator are retried by aiokafka itself.
    logging.getLogger("aiokafka.consumer.group_coordinator").setLevel(logging.CRITICAL)


def _bind_service(service: str) -> Any:
    def processor(
        _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        event_dict.setdefault("service", service)
        return event_dict

    return processor
