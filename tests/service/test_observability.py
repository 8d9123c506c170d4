"""Metrics at /metrics and the JSON access log, in one process (the multi-worker sum is in
test_server_metrics.py)."""

import json
import logging
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from statecast.service.access_log import LOGGER
from statecast.service.settings import Settings
from statecast.service.startup import serving_app
from statecast.service.stores import MemoryStore

URL = "/v1/models/sunspots/streams/{}/forecast"


def samples(client) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    found = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found, name, **labels) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


class RacedStore(MemoryStore):
    """A real memory store where another writer wins the first compare-and-set: just before
    it, the same record is written by "someone else" (a concurrent retry of the call)."""

    def __init__(self) -> None:
        super().__init__()
        self.raced = False

    def compare_and_set(self, record, expected_revision, scores=None):
        if not self.raced:
            self.raced = True
            assert super().compare_and_set(record, expected_revision, scores)
        return super().compare_and_set(record, expected_revision, scores)


@pytest.fixture()
def make_client(tmp_path):
    apps = []

    def build(store=None, **overrides):
        settings = Settings(registry=tmp_path / "registry", store="memory", **overrides)
        app = serving_app(settings, store=store)
        apps.append(app)
        return app.test_client()

    yield build
    for app in apps:
        app.extensions["statecast"].close()


def test_metrics_move_with_calls(make_client):
    client = make_client()
    before = samples(client)
    for start in range(3):
        assert client.post(URL.format("a"), json={"start": start, "window": [5.0]}
                           ).status_code == 200
    assert client.post(URL.format("b"), data="{", content_type="application/json"
                       ).status_code == 400
    assert client.delete("/v1/models/sunspots/streams/a").status_code == 200
    after = samples(client)
    route = "/v1/models/<model>/streams/<stream>/forecast"
    count = "statecast_request_duration_seconds_count"
    assert value(after, count, route=route, method="POST", status="200") == 3
    assert value(after, count, route=route, method="POST", status="400") == 1
    assert value(before, count, route=route, method="POST", status="200") == 0
    assert value(after, "statecast_kernel_duration_seconds_count", model="sunspots") == 3
    assert value(after, "statecast_store_duration_seconds_count", operation="get") >= 3
    assert value(after, "statecast_store_duration_seconds_count",
                 operation="compare_and_set") == 3
    assert value(after, "statecast_stream_evictions_total", reason="deleted") == 1
    assert value(after, "statecast_models_loaded") == 1
    assert value(after, "statecast_active_streams", model="sunspots") == 0


def test_active_streams_and_expiries(make_client):
    client = make_client(stream_ttl=0.2)
    for stream in ("x", "y"):
        client.post(URL.format(stream), json={"window": [1.0, 2.0]})
    assert value(samples(client), "statecast_active_streams", model="sunspots") == 2
    time.sleep(0.3)
    response = client.post(URL.format("x"), json={"window": [3.0]})
    assert response.status_code == 410
    deadline = time.time() + 5
    while time.time() < deadline:
        found = samples(client)
        expired = (value(found, "statecast_stream_expiries_total", reason="access")
                   + value(found, "statecast_stream_expiries_total", reason="sweep"))
        if expired == 2:
            break
        time.sleep(0.1)
    assert expired == 2
    assert value(found, "statecast_active_streams", model="sunspots") == 0


def test_a_lost_compare_and_set_is_counted_and_retried(make_client):
    client = make_client(store=RacedStore())
    response = client.post(URL.format("r"), json={"start": 0, "window": [4.0, 5.0]})
    assert response.status_code == 200
    assert response.get_json()["step"] == 2
    assert value(samples(client), "statecast_cas_conflicts_total", model="sunspots") == 1


def test_access_log_lines_are_json_with_the_call(make_client, caplog):
    logger = logging.getLogger(LOGGER)
    client = make_client()
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger=LOGGER):
            client.post(URL.format("s"), json={"window": [1.0]})
            client.post("/v1/models/sunspots/forecast",
                        json={"items": [{"stream": "s", "window": [2.0]},
                                        {"stream": "t", "window": [1.0]}]})
            client.post(URL.format("s"), json={"window": [1.0], "bogus": 1})
            client.get("/no/such/route")
    finally:
        logger.removeHandler(caplog.handler)
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == LOGGER]
    assert len(lines) == 4
    single, batch, rejected, unmatched = lines
    assert single["route"] == "/v1/models/<model>/streams/<stream>/forecast"
    assert single["status"] == 200 and single["model"] == "sunspots"
    assert single["version"] == "1" and single["streams"] == 1
    assert single["latency_ms"] > 0 and single["method"] == "POST"
    assert batch["route"] == "/v1/models/<model>/forecast" and batch["streams"] == 2
    assert rejected["status"] == 422 and "version" not in rejected
    assert unmatched["status"] == 404 and unmatched["route"] == "<unmatched>"


def test_access_log_can_be_turned_off(make_client, caplog):
    logger = logging.getLogger(LOGGER)
    client = make_client(access_log=False)
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger=LOGGER):
            client.get("/healthz")
    finally:
        logger.removeHandler(caplog.handler)
    assert not [r for r in caplog.records if r.name == LOGGER]


def test_access_log_lines_reach_standard_output_directly(make_client):
    """With only its default handler the logger's lines are written straight to its
    stream (no log record): still one JSON line per request."""
    import io

    client = make_client()
    handler = logging.getLogger(LOGGER).handlers[0]
    captured = io.StringIO()
    previous = handler.setStream(captured)
    try:
        client.post(URL.format("direct"), json={"window": [1.0]})
        client.get("/healthz")
    finally:
        handler.setStream(previous)
    lines = [json.loads(line) for line in captured.getvalue().splitlines()]
    assert [line["route"] for line in lines] == [
        "/v1/models/<model>/streams/<stream>/forecast", "/healthz"]
    assert lines[0]["streams"] == 1 and lines[0]["status"] == 200
