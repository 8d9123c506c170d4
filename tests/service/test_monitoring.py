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
    exprs = [target["expr"] for panel in dashboard["panels"]
             for target in panel.get("targets", [])]  # a row panel has no targets
    assert exprs
    return {name for expr in exprs for name in re.findall(r"\bstatecast_[a-z_]+", expr)}


def sampled_metrics(text: str) -> set[str]:
    """The names of the samples in an exposition."""
    return set(re.findall(r"^(statecast_[a-z_]+)", text, re.MULTILINE))


def exported_metrics(text: str) -> set[str]:
    """Sample names in an exposition, and each metric family's name with the suffixes its
    samples take (a labelled family without samples yet still has its TYPE line)."""
    names = sampled_metrics(text)
    for family in re.findall(r"^# TYPE (statecast_[a-z_]+) ", text, re.MULTILINE):
        names |= {family + suffix for suffix in ("", "_total", "_bucket", "_sum", "_count")}
    return names


def test_every_metric_the_dashboard_queries_is_exported(client):
    # A committed forecast, then observations that score it (steps 1..3 of the horizon).
    url = "/v1/models/sunspots/streams/m/forecast"
    window = [[float(10 + i % 7)] for i in range(30)]
    assert client.post(url, json={"window": window}).status_code == 200
    for value in (12.0, 13.0, 11.0):
        assert client.post(url, json={"window": [[value]]}).status_code == 200
    text = client.get("/metrics").get_data(as_text=True)
    queried = queried_metrics()
    missing = queried - exported_metrics(text)
    assert not missing, f"the dashboard queries metrics the server does not export: {missing}"
    # The accuracy panels query series that exist once a forecast is scored; the interval
    # counters need a calibrated model (the bundled one has none), so only their TYPE shows.
    scored = {name for name in queried if name.startswith("statecast_forecast_abs_error")}
    assert scored == {f"statecast_forecast_abs_error_{suffix}"
                      for suffix in ("bucket", "sum", "count")}
    assert not scored - sampled_metrics(text), "no scored forecast reached /metrics"
    assert {"statecast_interval_checks_total", "statecast_interval_covered_total"} <= queried


def test_the_dashboard_panels_have_unique_ids_and_do_not_overlap():
    panels = json.loads(DASHBOARD.read_text())["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    grids = [panel["gridPos"] for panel in panels]
    cells = [(x, y) for grid in grids for x in range(grid["x"], grid["x"] + grid["w"])
             for y in range(grid["y"], grid["y"] + grid["h"])]
    assert len(cells) == len(set(cells)), "two panels share a grid cell"
    assert all(x < 24 for x, _ in cells)


def test_the_monitoring_profile_provisions_prometheus_and_grafana():
    compose = YAML(typ="safe").load((ROOT / "docker-compose.yml").read_text())
    prometheus, grafana = compose["services"]["prometheus"], compose["services"]["grafana"]
    assert prometheus["profiles"] == ["monitoring"] == grafana["profiles"]
    for service in (prometheus, grafana):
        for volume in service["volumes"]:
            assert (ROOT / volume.split(":")[0]).exists(), volume
    scrape = YAML(typ="safe").load((MONITORING / "prometheus.yml").read_text())
    assert scrape["scrape_configs"][0]["static_configs"][0]["targets"] == [
        "statecast:8000", "statecast-2:8000"]
    assert "profiles" not in compose["services"]["statecast"]  # it runs without the profile
    assert "profiles" not in compose["services"]["redis"]
