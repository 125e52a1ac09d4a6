"""Routing decisions: where, what, who and whether, on the real demo-zh pack."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from services.router import domain
from services.router.classifier import KeywordClassifier
from services.router.model_store import load_or_train
from shared.citypack import CityPack, PackError, load_pack
from shared.events import Channel, CitizenRequest, Location, Urgency
from shared.settings import DEFAULT_CITIES_DIR

BEIJING = ZoneInfo("Asia/Shanghai")


@pytest.fixture(scope="module")
def pack() -> CityPack:
    return load_pack(DEFAULT_CITIES_DIR / "demo-zh")


@pytest.fixture(scope="module")
def keywords(pack: CityPack) -> domain.Model:
    """The taxonomy-keyword classifier: predictable, so the tree's behaviour is what is tested."""
    return domain.Model(KeywordClassifier(list(pack.categories.values())), "kw")


@pytest.fixture(scope="module")
def trained(pack: CityPack, tmp_path_factory: pytest.TempPathFactory) -> domain.Model:
    return load_or_train(pack, Path(tmp_path_factory.mktemp("models"))).model


def request(
    text: str,
    *,
    address: str | None = None,
    lat: float | None = None,
    long: float | None = None,
    grid: str | None = None,
    at: str = "2025-03-04T10:00:00",
    channel: Channel = Channel.HOTLINE,
    hint: str | None = None,
    trusted: bool = False,
    urgency: Urgency | None = None,
) -> CitizenRequest:
    return CitizenRequest(
        case_id="CR2503040000001",
        channel=channel,
        source_ref="t-1",
        received_at=datetime.fromisoformat(at).replace(tzinfo=BEIJING),
        description=text,
        category_hint=hint,
        category_trusted=trusted,
        urgency_hint=urgency,
        location=Location(address_text=address, lat=lat, long=long, grid_id=grid),
    )


def test_grid_id_is_looked_up_first(pack: CityPack) -> None:
    # The point is in 望京, but the grid (团结湖) wins: a grid worker stands in it.
    where, trace = domain.locate(request("x", grid="G-CY-0012", lat=39.996, long=116.47), pack)
    assert (where.method, where.district, where.street, where.grid_id) == (
        "grid",
        "chaoyang",
        "tuanjiehu",
        "G-CY-0012",
    )
    assert "grid G-CY-0012" in trace


def test_point_in_polygon_when_no_grid_then_address(pack: CityPack) -> None:
    where, _ = domain.locate(request("x", lat=39.996, long=116.47, address="团结湖北里"), pack)
    assert (where.method, where.street) == ("point", "wangjing")
    where, trace = domain.locate(request("x", grid="G-XX-9999", address="团结湖北里5号楼"), pack)
    assert (where.method, where.street) == ("address", "tuanjiehu")
    assert "grid 'G-XX-9999' unknown" not in trace  # found by address: no failure to report
    assert "'团结湖北里'" in trace


def test_place_name_in_the_text_when_the_address_is_empty(pack: CityPack) -> None:
    where, trace = domain.locate(request("金台路与朝阳北路路口的红绿灯坏了"), pack)
    assert (where.method, where.street) == ("address", "hujialou")
    assert trace.startswith("jurisdiction: text names '金台路'")


def test_another_districts_address_is_set_aside_never_dispatched(
    pack: CityPack, keywords: domain.Model
) -> None:
    outcome = domain.decide(
        request("小区垃圾没人清运", address="海淀区中关村", lat=31.2, long=121.4, grid="G-9"),
        pack,
        keywords,
    )
    assert isinstance(outcome, domain.Triage)
    assert outcome.kind == "out_of_jurisdiction"
    assert "海淀区" in outcome.reason
    assert "转办" in outcome.reason
    assert "place: names '海淀区': 海淀区, outside this jurisdiction" in outcome.trace


def test_another_district_named_only_by_a_landmark_in_the_text_is_set_aside(
    pack: CityPack, keywords: domain.Model
) -> None:
    outcome = domain.decide(request("我在中关村一家公司上班，老板拖欠工资三个月"), pack, keywords)
    assert isinstance(outcome, domain.Triage)
    assert outcome.kind == "out_of_jurisdiction"
    assert "海淀区 (as '中关村')" in outcome.reason


def test_text_naming_the_home_district_too_is_not_set_aside(
    pack: CityPack, keywords: domain.Model
) -> None:
    outcome = domain.decide(
        request("我从海淀区搬到朝阳区团结湖，小区垃圾桶满了没人清运"), pack, keywords
    )
    assert isinstance(outcome, domain.Decision)
    assert outcome.lead == "community_committee"


def test_a_grid_inside_the_map_is_not_overruled_by_a_district_named_in_the_text(
    pack: CityPack, keywords: domain.Model
) -> None:
    outcome = domain.decide(
        request("垃圾桶满了，海淀来的清运车不管", grid="G-CY-0012"), pack, keywords
    )
    assert isinstance(outcome, domain.Decision)
    assert outcome.jurisdiction.method == "grid"


def test_no_place_is_routed_by_subject_inside_the_home_district(
    pack: CityPack, keywords: domain.Model
) -> None:
    outcome = domain.decide(request("公司拖欠工资三个月了，老板不见人"), pack, keywords)
    assert isinstance(outcome, domain.Decision)
    assert outcome.lead == "human_resources_social_security"
    assert (outcome.jurisdiction.method, outcome.jurisdiction.district) == ("home", "chaoyang")
    assert "place: none found; routed by subject inside the home jurisdiction 朝阳区" in (
        outcome.trace
    )


def test_a_category_that_needs_a_place_goes_to_a_person_when_none_is_found(
    pack: CityPack, keywords: domain.Model
) -> None:
    outcome = domain.decide(request("垃圾桶满了好几天没人清运"), pack, keywords)
    assert isinstance(outcome, domain.Triage)
    assert outcome.kind == "no_place"
    assert outcome.category == "sanitation.litter"
    assert outcome.trace[-1].startswith("triage: sanitation.litter needs a place")


def test_a_pack_may_send_unplaced_requests_to_its_fallback_unit(
    city_pack: Path, keywords: domain.Model
) -> None:
    path = city_pack / "routes.yaml"
    path.write_text(
        path.read_text(encoding="utf-8").replace("no_place: triage", "no_place: fallback"),
        encoding="utf-8",
    )
    outcome = domain.decide(request("垃圾桶满了好几天没人清运"), load_pack(city_pack), keywords)
    assert isinstance(outcome, domain.Decision)
    assert outcome.lead == "district_government"
    assert (
        "sanitation.litter needs a place, none found: district_government takes it (兜底)"
        in outcome.trace
    )


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("home: chaoyang", "home: haidian", "home 'haidian' is not a district"),
        ("home: chaoyang", "home: jianwai", "home 'jianwai' is not a district"),
        ("延庆区: [延庆]", "延庆区: [延庆, 朝阳]", "朝阳 names the home district 朝阳区"),
        (
            "when_no_jurisdiction: false",
            "when_no_jurisdiction: true",
            "place and fallback.when_no_jurisdiction exclude each other",
        ),
    ],
)
def test_pack_loader_refuses_a_broken_place_rule(
    city_pack: Path, old: str, new: str, message: str
) -> None:
    path = city_pack / "routes.yaml"
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new), encoding="utf-8")
    with pytest.raises(PackError, match=message):
        load_pack(city_pack)


def test_category_route_gives_lead_cooperating_sla_and_trace(
    pack: CityPack, keywords: domain.Model
) -> None:
    outcome = domain.decide(request("楼下垃圾桶满了没人清运", address="团结湖北里"), pack, keywords)
    assert isinstance(outcome, domain.Decision)
    assert (outcome.category, outcome.lead, outcome.route_id) == (
        "sanitation.litter",
        "community_committee",
        "litter",
    )
    assert outcome.cooperating == ["housing_bureau", "property_company"]
    assert (outcome.urgency, outcome.sla_policy) == (Urgency.GENERAL, "general")
    assert outcome.trace[-1] == (
        "route litter: lead community_committee, cooperating housing_bureau, property_company"
    )


def test_a_rule_overrides_the_classifier(pack: CityPack, trained: domain.Model) -> None:
    text = "物业电梯老坏，今天楼道里燃气味特别大，物业说不归他们管"
    outcome = domain.decide(request(text, address="望京西园"), pack, trained)
    assert isinstance(outcome, domain.Decision)
    assert (outcome.method, outcome.category, outcome.lead) == (
        "rule",
        "public.safety",
        "public_security",
    )
    assert (outcome.urgency, outcome.confidence) == (Urgency.EMERGENCY, 1.0)
    assert "rule gas-leak overrides the classifier: category public.safety" in outcome.trace


@pytest.mark.parametrize(
    ("text", "at", "lead", "route"),
    [
        ("工地施工扬尘很大", "2025-03-04T10:00:00", "environment_bureau", "construction"),
        ("工地施工扬尘很大", "2025-03-04T23:30:00", "urban_law_enforcement", "construction-night"),
        ("工地施工扬尘很大", "2025-03-05T05:59:00", "urban_law_enforcement", "construction-night"),
        (
            "工地渣土车遗撒",
            "2025-03-04T10:00:00",
            "urban_law_enforcement",
            "construction-muck-trucks",
        ),
    ],
)
def test_children_match_on_time_of_day_and_keywords(
    pack: CityPack, keywords: domain.Model, text: str, at: str, lead: str, route: str
) -> None:
    outcome = domain.decide(request(text, address="望京", at=at), pack, keywords)
    assert isinstance(outcome, domain.Decision)
    assert (outcome.lead, outcome.route_id) == (lead, route)


def test_a_continue_route_adds_its_units_as_cooperating(
    pack: CityPack, keywords: domain.Model
) -> None:
    at_sanlitun = domain.decide(request("KTV扰民", address="三里屯路"), pack, keywords)
    elsewhere = domain.decide(request("KTV扰民", address="望京"), pack, keywords)
    assert isinstance(at_sanlitun, domain.Decision)
    assert isinstance(elsewhere, domain.Decision)
    assert at_sanlitun.lead == elsewhere.lead == "market_supervision"
    assert "public_security" in at_sanlitun.cooperating
    assert "public_security" not in elsewhere.cooperating


def test_a_grid_workers_checklist_category_is_trusted(
    pack: CityPack, keywords: domain.Model
) -> None:
    grid_report = request(
        "电线杆上贴满小广告", grid="G-CY-0047", hint="ZH-105", trusted=True, channel=Channel.GRID
    )
    outcome = domain.decide(grid_report, pack, keywords)
    assert isinstance(outcome, domain.Decision)
    assert (outcome.category, outcome.method, outcome.confidence) == (
        "construction.site",
        "trusted",
        1.0,
    )
    untrusted = domain.decide(
        request("电线杆上贴满小广告", grid="G-CY-0047", hint="ZH-105"), pack, keywords
    )
    assert isinstance(untrusted, domain.Decision)
    assert untrusted.category == "cityscape.ads_stalls"


def test_returned_lead_is_skipped_for_the_next_matching_route(
    pack: CityPack, keywords: domain.Model
) -> None:
    night = request("工地施工扬尘很大", address="望京", at="2025-03-04T23:30:00")
    outcome = domain.decide(night, pack, keywords, excluded=frozenset({"urban_law_enforcement"}))
    assert isinstance(outcome, domain.Decision)
    assert (outcome.lead, outcome.route_id) == ("environment_bureau", "construction")
    assert "urban_law_enforcement" not in outcome.cooperating
    assert any("lead urban_law_enforcement returned it" in line for line in outcome.trace)


def test_when_every_route_returned_it_the_fallback_then_triage_take_it(
    pack: CityPack, keywords: domain.Model
) -> None:
    litter = request("楼下垃圾没人清运", address="望京")
    first = domain.decide(litter, pack, keywords, excluded=frozenset({"community_committee"}))
    assert isinstance(first, domain.Decision)
    assert first.lead == "district_government"
    both = frozenset({"community_committee", "district_government"})
    second = domain.decide(litter, pack, keywords, excluded=both)
    assert isinstance(second, domain.Triage)
    assert second.kind == "all_excluded"


def test_no_category_means_no_route_and_triage(pack: CityPack, keywords: domain.Model) -> None:
    outcome = domain.decide(request("你好，我想咨询一件事", address="望京"), pack, keywords)
    assert isinstance(outcome, domain.Triage)
    assert (outcome.kind, outcome.reason) == ("no_route", "no route for no category")


def test_low_confidence_goes_to_triage_with_candidates(
    pack: CityPack, trained: domain.Model
) -> None:
    outcome = domain.decide(request("这个问题反映好多次了", address="望京"), pack, trained)
    assert isinstance(outcome, domain.Triage)
    assert outcome.kind == "low_confidence"
    assert outcome.confidence < pack.routes.classifier.min_confidence
    assert len(outcome.candidates) == 3
    assert all("→" in c for c in outcome.candidates)


def test_model_decision_carries_confidence_and_top_features(
    pack: CityPack, trained: domain.Model
) -> None:
    outcome = domain.decide(
        request("家里暖气片一点都不热，屋里才十四度", address="芍药居北里"), pack, trained
    )
    assert isinstance(outcome, domain.Decision)
    assert (outcome.category, outcome.lead, outcome.method) == (
        "utilities.heating",
        "housing_bureau",
        "model",
    )
    assert outcome.confidence >= pack.routes.classifier.min_confidence
    assert outcome.urgency == Urgency.UTILITIES
    model_line = next(line for line in outcome.trace if line.startswith("category "))
    assert f"model tfidf-linear@{trained.version}" in model_line
    assert "top features" in model_line
    assert "暖气" in model_line


def test_an_urgency_hint_from_the_operator_beats_the_category_default(
    pack: CityPack, keywords: domain.Model
) -> None:
    outcome = domain.decide(
        request("楼下垃圾没人清运", address="望京", urgency=Urgency.EMERGENCY), pack, keywords
    )
    assert isinstance(outcome, domain.Decision)
    assert (outcome.urgency, outcome.sla_policy) == (Urgency.EMERGENCY, "emergency")


def test_alertmanager_matchers_select_routes(tmp_path: Path, keywords: domain.Model) -> None:
    target = tmp_path / "demo-zh"
    shutil.copytree(DEFAULT_CITIES_DIR / "demo-zh", target)
    routes = yaml.safe_load((target / "routes.yaml").read_text(encoding="utf-8"))
    routes["routes"].insert(
        1,
        {
            "id": "app-heating-outside-wangjing",
            "match": {"category": "utilities.heating"},
            "matchers": ["channel != grid", 'street !~ "wang.*"', "district =~ chao.*"],
            "lead": "district_government",
        },
    )
    (target / "routes.yaml").write_text(yaml.safe_dump(routes, allow_unicode=True))
    pack = load_pack(target)

    def lead(**kwargs) -> str:  # type: ignore[no-untyped-def]
        outcome = domain.decide(request("暖气不热", **kwargs), pack, keywords)
        assert isinstance(outcome, domain.Decision)
        return outcome.lead

    assert lead(address="团结湖") == "district_government"
    assert lead(address="望京") == "housing_bureau"  # street matches wang.*
    assert lead(grid="G-CY-0012", channel=Channel.GRID) == "housing_bureau"  # channel is grid


def test_nyc_points_fall_in_their_borough() -> None:
    nyc = load_pack(DEFAULT_CITIES_DIR / "nyc")
    for lat, long, borough in [
        (40.7580, -73.9855, "manhattan"),  # Times Square
        (40.6782, -73.9442, "brooklyn"),
        (40.7282, -73.7949, "queens"),
        (40.8448, -73.8648, "bronx"),
        (40.5795, -74.1502, "staten-island"),
    ]:
        area = nyc.jurisdictions.by_point(lat, long)
        assert area is not None, (lat, long)
        assert area.id == borough
