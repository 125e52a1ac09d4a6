"""docker-compose.yml and the Dockerfile agree with the settings code (no Docker engine here)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from pydantic_settings import BaseSettings

from services.escalation.app import EscalationSettings
from services.intake.app import IntakeSettings
from services.notify.app import NotifySettings
from services.router.app import RouterSettings
from shared.settings import REPO_ROOT

SETTINGS: dict[str, type[BaseSettings]] = {
    "intake": IntakeSettings,
    "router": RouterSettings,
    "escalation": EscalationSettings,
    "notify": NotifySettings,
}


@pytest.fixture(scope="module")
def compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())


def env_names(settings: type[BaseSettings]) -> dict[str, bool]:
    """CIVIC_* variable name → whether the setting is required."""
    prefix = settings.model_config["env_prefix"]
    return {f"{prefix}{n}".upper(): f.is_required() for n, f in settings.model_fields.items()}


def test_compose_runs_the_four_services_kafka_postgres_prometheus_grafana(compose) -> None:  # type: ignore[no-untyped-def]
    assert set(compose["services"]) == {
        "kafka",
        "postgres",
        "intake",
        "router",
        "escalation",
        "notify",
        "prometheus",
        "grafana",
    }
    assert compose["services"]["kafka"]["image"].startswith("apache/kafka:")
    assert compose["services"]["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"


@pytest.mark.parametrize("service", list(SETTINGS))
def test_each_service_gets_known_settings_and_every_required_one(compose, service: str) -> None:  # type: ignore[no-untyped-def]
    definition = compose["services"][service]
    environment = definition["environment"]
    known = env_names(SETTINGS[service])
    unknown = [name for name in environment if name not in known]
    assert unknown == [], f"{service}: compose sets variables the code does not read: {unknown}"
    missing = [name for name, required in known.items() if required and name not in environment]
    assert missing == [], f"{service}: required settings not set in compose: {missing}"
    assert definition["command"] == ["python", "-m", f"services.{service}"]


@pytest.mark.parametrize("service", list(SETTINGS))
def test_published_port_is_the_service_http_port(compose, service: str) -> None:  # type: ignore[no-untyped-def]
    definition = compose["services"][service]
    port = int(definition["environment"]["CIVIC_HTTP_PORT"])
    assert port == SETTINGS[service].model_fields["http_port"].default
    assert definition["ports"] == [f"{port}:{port}"]


def test_compose_points_services_at_its_own_kafka_and_postgres(compose) -> None:  # type: ignore[no-untyped-def]
    env = compose["services"]["router"]["environment"]
    assert env["CIVIC_KAFKA_BOOTSTRAP"] == "kafka:9092"
    pg = compose["services"]["postgres"]["environment"]
    assert env["CIVIC_DATABASE_URL"] == (
        f"postgresql://{pg['POSTGRES_USER']}:{pg['POSTGRES_PASSWORD']}@postgres:5432/{pg['POSTGRES_DB']}"
    )
    for name in ("CIVIC_SECRETS_FILE", "CIVIC_API_KEYS_FILE"):
        secret = Path(env[name]).name
        assert secret in compose["secrets"]
        assert (REPO_ROOT / compose["secrets"][secret]["file"]).exists()


def test_prometheus_scrapes_every_service_on_its_port(compose) -> None:  # type: ignore[no-untyped-def]
    config = yaml.safe_load((REPO_ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = set(config["scrape_configs"][0]["static_configs"][0]["targets"])
    expected = {f"{s}:{SETTINGS[s].model_fields['http_port'].default}" for s in SETTINGS}
    assert targets == expected


def test_grafana_dashboard_queries_metrics_the_services_define() -> None:
    dashboard = json.loads((REPO_ROOT / "deploy/grafana/dashboards/civicroute.json").read_text())
    source = "\n".join(p.read_text() for p in (REPO_ROOT / "services").rglob("*.py"))
    source += "\n".join(p.read_text() for p in (REPO_ROOT / "shared").rglob("*.py"))
    for panel in dashboard["panels"]:
        for name in re.findall(
            r"civicroute_(intake|router|escalation|notify)_(\w+?)(?:_bucket)?\b",
            panel["targets"][0]["expr"],
        ):
            service, metric = name
            base = re.sub(r"_total$", "", metric)
            assert f'"{base}' in source, f"{panel['title']}: no metric {metric} in {service}"


def test_dockerfile_installs_the_package_and_exposes_the_ports() -> None:
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.1[1-9]", dockerfile, re.MULTILINE)
    assert "pip install" in dockerfile
    assert "EXPOSE 8001 8002 8003 8004" in dockerfile
