"""The monitoring profile, checked without Grafana or Prometheus: every metric the
provisioned dashboard queries is one the server exports, and the compose file wires the
files that provision it."""

import json
import re
from pathlib import Path

from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "service" / "deploy" / "monitoring"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "statecast.json"


def queried_metrics() -> set[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert exprs
    return {name for expr in exprs for name in re.findall(r"\bstatecast_[a-z_]+", expr)}


def exported_metrics(client) -> set[str]:
    """Sample names in /metrics, and each metric family's name with the suffixes its
    samples take (a labelled family without samples yet still has its TYPE line)."""
    text = client.get("/metrics").get_data(as_text=True)
    names = set(re.findall(r"^(statecast_[a-z_]+)", text, re.MULTILINE))
    for family in re.findall(r"^# TYPE (statecast_[a-z_]+) ", text, re.MULTILINE):
        names |= {family + suffix for suffix in ("", "_total", "_bucket", "_sum", "_count")}
    return names


def test_every_metric_the_dashboard_queries_is_exported(client):
    assert client.post("/v1/models/sunspots/streams/m/forecast",
                       json={"window": [1.0, 2.0]}).status_code == 200
    missing = queried_metrics() - exported_metrics(client)
    assert not missing, f"the dashboard queries metrics the server does not export: {missing}"


def test_the_monitoring_profile_provisions_prometheus_and_grafana():
    compose = YAML(typ="safe").load((ROOT / "docker-compose.yml").read_text())
    prometheus, grafana = compose["services"]["prometheus"], compose["services"]["grafana"]
    assert prometheus["profiles"] == ["monitoring"] == grafana["profiles"]
    for service in (prometheus, grafana):
        for volume in service["volumes"]:
            assert (ROOT / volume.split(":")[0]).exists(), volume
    scrape = YAML(typ="safe").load((MONITORING / "prometheus.yml").read_text())
    assert scrape["scrape_configs"][0]["static_configs"][0]["targets"] == ["statecast:8000"]
    assert "profiles" not in compose["services"]["statecast"]  # it runs without the profile
    assert "profiles" not in compose["services"]["redis"]
