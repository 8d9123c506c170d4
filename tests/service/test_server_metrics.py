"""/metrics under gunicorn with two workers: whichever worker answers a scrape, it reports
the calls both workers served (prometheus_client's multiprocess mode)."""

import json
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.service.test_server import Server, call, free_port

pytestmark = pytest.mark.slow

ROUTE = "/v1/models/<model>/streams/<stream>/forecast"


def forecast_count(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (sample.name == "statecast_request_duration_seconds_count"
                    and sample.labels.get("route") == ROUTE
                    and sample.labels.get("status") == "200"):
                total += sample.value
    return total


def test_metrics_add_up_over_workers_and_calls_are_logged(tmp_path):
    server = Server(tmp_path, free_port())
    server.start()
    try:
        calls = 24
        for index in range(calls):
            status, _ = call(server.port, f"m-{index % 4}", {"window": [float(index)]})
            assert status == 200
        # Each scrape may land on either worker; every one must see all the calls.
        assert [forecast_count(server.port) for _ in range(8)] == [calls] * 8
    finally:
        server.stop()
    lines = [json.loads(line) for line in (tmp_path / "server.log").read_text().splitlines()
             if line.startswith("{")]
    served = [line for line in lines if line.get("route") == ROUTE]
    assert len(served) == calls
    assert {line["status"] for line in served} == {200}
    assert all(line["model"] == "sunspots" and line["streams"] == 1 for line in served)
