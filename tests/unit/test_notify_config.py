"""notify.yaml: optional, defaults when absent, clear errors naming file and line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from services.notify.config import CASE_EVENT_TYPES, GATEWAY, load_notify_config
from shared.citypack import PackError, load_pack
from shared.settings import DEFAULT_CITIES_DIR


@pytest.fixture
def pack_dir(tmp_path: Path) -> Path:
    target = tmp_path / "demo-zh"
    shutil.copytree(DEFAULT_CITIES_DIR / "demo-zh", target)
    return target


def test_shipped_demo_pack_loads_with_its_subscriptions_and_quiet_hours() -> None:
    config = load_notify_config(load_pack(DEFAULT_CITIES_DIR / "demo-zh"))
    assert config.zone.key == "Asia/Shanghai"
    assert config.file.notices.quiet_hours is not None
    assert not config.subscribed("property_company", "civicroute.case.signed.v1")
    assert config.subscribed("property_company", "civicroute.case.dispatched.v1")
    assert config.endpoint("public_security").timeout == 3
    assert config.endpoint("water_bureau").url == (
        "https://hooks.demo-district.example/water_bureau"
    )


def test_a_pack_without_notify_yaml_gets_the_defaults(pack_dir: Path) -> None:
    (pack_dir / "notify.yaml").unlink()
    config = load_notify_config(load_pack(pack_dir))
    water = config.endpoint("water_bureau")
    assert (water.timeout, water.concurrency, water.breaker_failures) == (5, 8, 5)
    assert water.events == CASE_EVENT_TYPES
    assert config.file.notices.quiet_hours is None
    assert GATEWAY in config.endpoints


def test_endpoint_override_replaces_the_departments_yaml_url(pack_dir: Path) -> None:
    (pack_dir / "notify.yaml").write_text(
        "departments:\n  water_bureau:\n    url: http://water.internal/hook\n"
    )
    config = load_notify_config(load_pack(pack_dir))
    assert config.endpoint("water_bureau").url == "http://water.internal/hook"


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("departments:\n  no_such_dept:\n    timeout: 2s\n", 2, "unknown department"),
        ("departments:\n  water_bureau:\n    events: [exploded]\n", 3, "unknown case event"),
        ("timezone: Mars/Olympus\n", 1, "unknown time zone"),
        (
            "notices:\n  templates:\n    en:\n      accepted: '{case_id} {phone}'\n"
            "      dispatched: a\n      resolved: b\n      feedback: c\n",
            4,
            "unknown field",
        ),
        ("defaults:\n  timeuot: 2s\n", 2, "Extra inputs"),
    ],
)
def test_bad_notify_yaml_names_file_line_and_problem(
    pack_dir: Path, text: str, line: int, words: str
) -> None:
    (pack_dir / "notify.yaml").write_text(text)
    with pytest.raises(PackError) as caught:
        load_notify_config(load_pack(pack_dir))
    message = str(caught.value)
    assert f"notify.yaml line {line}" in message
    assert words in message
