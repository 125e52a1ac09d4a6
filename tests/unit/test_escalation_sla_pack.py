"""sla.yaml: forms, cross-checks with the taxonomy, errors naming file and line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from shared.citypack import PackError, load_pack
from shared.citypack.loader import parse, read_yaml
from shared.citypack.sla import Basis, SlaFile
from shared.settings import DEFAULT_CITIES_DIR
from shared.workdays import HolidayWorkdays, make_calendar


def edit(pack: Path, change: dict[str, object]) -> None:
    path = pack / "sla.yaml"
    data = yaml.safe_load(path.read_text())
    data.update(change)
    path.write_text(yaml.safe_dump(data, allow_unicode=True))


def test_demo_pack_policies_calendar_and_overrides() -> None:
    pack = load_pack(DEFAULT_CITIES_DIR / "demo-zh")
    assert pack.sla.timezone == "Asia/Shanghai"
    assert make_calendar(pack.sla.calendar).name == "chinese"
    name, general = pack.sla.policy("sanitation.litter", "general")
    assert name == "general"
    assert general.resolve.basis is Basis.WORKING
    assert general.resolve.days == 7
    name, heating = pack.sla.policy("utilities.heating", "utilities")
    assert name == "utilities/utilities.heating"
    assert heating.resolve.rest.total_seconds() == 12 * 3600
    assert heating.sign_for == pack.sla.policies["utilities"].sign_for
    # An urgency without a policy of its own falls back to general.
    assert pack.sla.policy(None, "nonexistent")[0] == "general"


def test_nyc_sla_file_runs_on_new_york_time_and_holidays() -> None:
    doc = read_yaml(DEFAULT_CITIES_DIR / "nyc" / "sla.yaml")
    sla = parse(doc, SlaFile)
    assert sla.timezone == "America/New_York"
    calendar = make_calendar(sla.calendar)
    assert isinstance(calendar, HolidayWorkdays)
    assert set(sla.policies) == {"emergency", "utilities", "general", "complex"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"categories": {"no.such": {"contact": "1h"}}}, "unknown category 'no.such'"),
        ({"timezone": "Mars/Olympus"}, "unknown timezone"),
        ({"calendar": {"kind": "holidays"}}, "needs a country"),
        ({"calendar": {"kind": "holidays", "country": "XX"}}, "Country XX not available"),
        ({"calendar": {"kind": "lunar"}}, "calendar.kind"),
        (
            {"policies": {"general": {"sign_for": "2h", "contact": "1h", "resolve": "0s"}}},
            "must allow some time",
        ),
        (
            {
                "policies": {
                    "general": {"sign_for": "2h", "contact": "1h", "resolve": "1d"},
                    "urgent": {"sign_for": "2h", "contact": "1h", "resolve": "1d"},
                }
            },
            "not an urgency",
        ),
        (
            {"ladder": [{"level": 1, "after": "2h"}, {"level": 2, "after": "1h"}]},
            "cannot come before",
        ),
        (
            {"ladder": [{"level": 1, "after": "0s", "targets": ["duty contact, supervisor"]}]},
            "ladder.0.targets.0",
        ),
    ],
)
def test_bad_sla_file_stops_with_file_and_line(
    city_pack: Path, change: dict[str, object], message: str
) -> None:
    edit(city_pack, change)
    with pytest.raises(PackError, match=message) as error:
        load_pack(city_pack)
    assert f"{city_pack / 'sla.yaml'} line " in str(error.value)


def test_a_category_override_never_loosens_an_urgencys_clocks() -> None:
    pack = load_pack(DEFAULT_CITIES_DIR / "demo-zh")
    emergency = pack.sla.policies["emergency"]
    # Heating's 12 h resolve and 4 h contact are looser than an emergency's 2 h and 1 h.
    name, heating = pack.sla.policy("utilities.heating", "emergency")
    assert name == "emergency"
    assert heating == emergency
    # Under the general policy the same override tightens both clocks, so it applies.
    name, general = pack.sla.policy("utilities.heating", "general")
    assert name == "general/utilities.heating"
    assert general.resolve.nominal.total_seconds() == 12 * 3600
    assert general.contact.nominal.total_seconds() == 4 * 3600


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"categories": {"utilities.heating": {"resolve": "12h"}}},
            "/utilities.heating: the contact clock",
        ),
        (
            {
                "policies": {
                    "general": {"sign_for": "2h", "contact": "10d", "resolve": "7d"},
                }
            },
            "policy general: the contact clock (10d) may end after the resolve clock (7d)",
        ),
        (
            {
                "policies": {
                    "general": {
                        "sign_for": "2h",
                        "contact": {"within": "3d", "calendar": "working"},
                        "resolve": "3d",
                    },
                }
            },
            "the contact clock (3d working) may end after the resolve clock (3d)",
        ),
    ],
    ids=["override-resolve-before-contact", "contact-after-resolve", "working-vs-wall"],
)
def test_pack_with_a_clock_ending_after_resolve_is_refused(
    city_pack: Path, change: dict[str, object], message: str
) -> None:
    edit(city_pack, change)
    with pytest.raises(PackError) as error:
        load_pack(city_pack)
    assert message in str(error.value)
