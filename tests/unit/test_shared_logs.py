"""Logs never carry a citizen's phone number, name or ID number."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.logs import MASK, RepeatLimiter, mask_text, mask_text_fully, mask_value


@pytest.mark.parametrize(
    "text",
    [
        "caller 13812345678 says",
        "call +86 138 1234 5678 back",
        "number 138-1234-5678",
        "NYC caller (212) 555-0143",
        "NYC caller 212-555-0143",
        "intl +44 20 7946 0958",
        "ID 11010519491231002X on file",
        "mail zhang.san@example.cn now",
    ],
)
def test_personal_numbers_in_free_text_are_masked(text: str) -> None:
    masked = mask_text(text)
    assert MASK in masked
    for secret in (
        "13812345678",
        "1234 5678",
        "555-0143",
        "7946",
        "11010519491231002X",
        "zhang.san",
    ):
        assert secret not in masked


@settings(max_examples=2000)
@given(
    st.text(alphabet="0123456789 ()+-.@xX中a_", max_size=40)
    | st.from_regex(r"(\+86 ?)?1[3-9]\d{9}|\(\d{3}\) \d{3}-\d{4}|\w+@\w+\.cn")
)
def test_the_quick_pre_screen_never_lets_through_what_the_full_mask_catches(text: str) -> None:
    assert mask_text(text) == mask_text_fully(text)


def test_case_ids_and_ordinary_numbers_survive() -> None:
    text = "case CR2611260000001 at 朝阳路12号院3号楼 level 2 in 350 ms"
    assert mask_text(text) == text


def test_personal_keys_are_masked_whatever_they_hold_and_nested() -> None:
    value = {
        "reporter": {"name": "张先生"},
        "caller_name": "李女士",
        "lead": "water_bureau",
        "request": {"caller_phone": "x", "description": "ok"},
    }
    masked = mask_value(value)
    assert masked["reporter"] == MASK
    assert masked["caller_name"] == MASK
    assert masked["request"]["caller_phone"] == MASK
    assert masked["request"]["description"] == "ok"
    assert masked["lead"] == "water_bureau"


def test_a_real_log_line_is_json_and_masked() -> None:
    code = (
        "from shared.logs import configure_logging; import structlog, logging;"
        "configure_logging('intake');"
        "structlog.get_logger().info('accepted', case_id='CR1', caller_phone='13812345678',"
        " note='call me on 13912345678');"
        "logging.getLogger('lib').warning('user 13700000000 failed')"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[0]["service"] == "intake"
    assert lines[0]["case_id"] == "CR1"
    assert "1381234" not in out
    assert "1391234" not in out
    assert "13700000000" not in out
    assert lines[1]["level"] == "warning"


def test_services_sharing_one_stdout_never_splice_their_log_lines() -> None:
    # make run: four services write to one pipe, unbuffered; each line must stay whole.
    code = (
        "from shared.logs import configure_logging; import structlog;"
        "configure_logging('intake'); log = structlog.get_logger();"
        "[log.info('case accepted', case_id=f'CR{n:06d}', note='x' * 300) for n in range(1500)]"
    )
    read, write = os.pipe()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    writers = [
        subprocess.Popen([sys.executable, "-c", code], stdout=write, env=env) for _ in range(4)
    ]
    os.close(write)
    with os.fdopen(read) as pipe:
        lines = pipe.read().splitlines()
    assert [p.wait(60) for p in writers] == [0, 0, 0, 0]
    assert len(lines) == 6000
    assert all(json.loads(line)["event"] == "case accepted" for line in lines)


def _record(name: str, msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, None)


def test_a_flood_of_like_kafka_errors_shows_one_line_per_window_with_the_count_held_back() -> None:
    now = [0.0]
    limiter = RepeatLimiter(window=10, clock=lambda: now[0])
    template = "Unable connect to node with id %s: %s"
    shown = []
    for tick in range(300):  # 30 s of a refused broker, ten a second
        now[0] = tick / 10
        record = _record("aiokafka.client", template, 1, f"refused #{tick}")
        if limiter.filter(record):
            shown.append(record.getMessage())
    assert len(shown) == 3
    assert shown[0] == "Unable connect to node with id 1: refused #0"
    assert shown[1] == (
        "Unable connect to node with id 1: refused #100 (+99 like it since the last one shown)"
    )
    # Another kind of message, and other libraries, are not held back by it.
    assert limiter.filter(_record("aiokafka.client", "Unable to update metadata from %s", [1]))
    assert all(
        limiter.filter(_record("uvicorn.error", "Exception in ASGI application")) for _ in "xy"
    )
