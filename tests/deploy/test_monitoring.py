"""deploy/monitoring: the Prometheus alert rules and the Grafana dashboard shipped with kbrelease, and how the compose
file provisions them. (That every metric they name is exported: tests/service/test_operations.py, on running replicas.)"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "deploy" / "monitoring"
RULES = MONITORING / "kbrelease-alerts.yml"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "kbrelease.json"


def promtool() -> str:
    found = shutil.which("promtool")
    if not found:
        pytest.skip("promtool is not installed (apt-get install prometheus; scripts/setup does as root)")
    return found


def test_promtool_accepts_the_alert_rules() -> None:
    result = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, check=False)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 13 rules found" in result.stdout


def test_promtool_accepts_the_prometheus_config_of_the_compose_setup(tmp_path: Path) -> None:
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text(encoding="utf-8"))
    assert config["rule_files"] == ["/etc/prometheus/kbrelease-alerts.yml"]  # where the compose file mounts the rules
    shutil.copy(RULES, tmp_path / "kbrelease-alerts.yml")
    config["rule_files"] = [str(tmp_path / "kbrelease-alerts.yml")]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")

    result = subprocess.run([promtool(), "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True, text=True, check=False)

    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_severity_a_summary_and_a_description() -> None:
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    rules = [r for g in groups for r in g["rules"]]

    assert [g["name"] for g in groups] == ["kbrelease-service", "kbrelease-monitor"]
    assert len({r["alert"] for r in rules}) == len(rules) == 13
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


def _targets(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for p in dashboard["panels"] for t in p.get("targets", [])]


def test_the_dashboard_is_grafana_json_over_the_provisioned_datasource() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    datasource = yaml.safe_load((MONITORING / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text(encoding="utf-8"))
    provider = yaml.safe_load((MONITORING / "grafana" / "provisioning" / "dashboards" / "kbrelease.yml").read_text(encoding="utf-8"))

    (source,) = datasource["datasources"]
    assert (source["type"], source["url"]) == ("prometheus", "http://prometheus:9090")
    assert dashboard["uid"] == "kbrelease" and dashboard["title"].startswith("kbrelease")
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert {"x", "y", "w", "h"} <= panel["gridPos"].keys() and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": source["uid"]}, panel["title"]
            assert panel["targets"], panel["title"]
    assert all(t["expr"].strip() and t["refId"] for t in _targets(dashboard))
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_the_compose_file_mounts_the_rules_dashboard_and_provisioning_it_ships() -> None:
    compose = yaml.safe_load((REPO / "deploy" / "compose" / "docker-compose.yml").read_text(encoding="utf-8"))
    services = compose["services"]

    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"]
        assert all(p.startswith("127.0.0.1:") for p in services[name]["ports"]), name
        for volume in services[name]["volumes"]:
            source, target = volume.split(":")[:2]
            if source.startswith("../"):
                assert (REPO / "deploy" / "compose" / source).resolve().exists(), volume
                assert target.startswith(("/etc/", "/var/lib/grafana/"))
    mounts = " ".join(services["prometheus"]["volumes"])
    assert "../monitoring/kbrelease-alerts.yml:/etc/prometheus/kbrelease-alerts.yml:ro" in mounts
    scrape = yaml.safe_load((MONITORING / "prometheus.yml").read_text(encoding="utf-8"))["scrape_configs"][0]
    assert scrape["dns_sd_configs"][0] == {"names": ["search"], "type": "A", "port": 8000, "refresh_interval": "30s"}
