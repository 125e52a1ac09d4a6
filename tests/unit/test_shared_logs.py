"""Logs never carry a citizen's phone number, name or ID number."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from shared.logs import MASK, mask_text, mask_value


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
