"""Stream lifecycle: idle expiry leaves tombstones (410 until reset), a per-model stream
limit (503 with Retry-After), and the state endpoint."""

import threading
import time

import numpy as np
import pytest

from statecast.service.settings import Settings
from statecast.service.startup import serving_app

URL = "/v1/models/sunspots/streams/{}"


@pytest.fixture(params=["memory", "sqlite", "redis"])
def make_client(request, tmp_path):
    apps = []
    redis_url = request.getfixturevalue("redis_url") if request.param == "redis" else None

    def make(**settings):
        store = {"memory": "memory", "sqlite": f"sqlite:{tmp_path / 'state.db'}"}.get(
            request.param) or redis_url
        app = serving_app(Settings(registry=tmp_path / "registry", store=store, **settings),
                         warm=False)
        apps.append(app)
        return app.test_client()

    yield make
    for app in apps:
        app.extensions["statecast"].close()


def forecast(client, stream, body):
    return client.post(URL.format(stream) + "/forecast", json=body)


def test_an_idle_stream_expires_into_a_tombstone_until_reset(make_client):
    client = make_client(stream_ttl=0.2)
    assert forecast(client, "a", {"window": [1.0, 2.0]}).status_code == 200
    time.sleep(0.3)
    response = forecast(client, "a", {"window": [3.0]})
    assert response.status_code == 410
    assert response.get_json()["error"]["code"] == "stream_expired"
    assert client.get(URL.format("a")).get_json()["expired"] is True
    assert client.get(URL.format("a") + "/state").status_code == 410
    assert forecast(client, "a", {"start": 2, "window": [3.0]}).status_code == 410
    revived = forecast(client, "a", {"start": 0, "window": [1.0], "reset": True})
    assert revived.status_code == 200 and revived.get_json()["step"] == 1
    assert forecast(client, "a", {"window": [2.0]}).get_json()["step"] == 2


def test_the_sweep_expires_streams_nobody_calls(make_client):
    client = make_client()  # no TTL at start: no sweep thread
    service = client.application.extensions["statecast"].service
    service.lifecycle.ttl = 0.2
    for name in "abc":
        forecast(client, name, {"window": [1.0]})
    assert service.expire_idle() == 0
    time.sleep(0.3)
    assert service.expire_idle() == 3
    store = client.application.extensions["statecast"].store
    assert store.count("sunspots") == 0
    assert all(record.expired for record in store.scan("sunspots"))
    assert service.expire_idle() == 0


def test_the_app_sweeps_in_the_background(make_client):
    client = make_client(stream_ttl=0.1)
    forecast(client, "a", {"window": [1.0]})
    store = client.application.extensions["statecast"].store
    deadline = time.time() + 5
    while not store.get("sunspots", "a").expired and time.time() < deadline:
        time.sleep(0.02)
    assert store.get("sunspots", "a").expired


def test_creating_past_the_stream_limit_is_503_with_retry_after(make_client):
    client = make_client(max_streams=2)
    assert forecast(client, "a", {"window": [1.0]}).status_code == 200
    assert forecast(client, "b", {"window": [1.0]}).status_code == 200
    response = forecast(client, "c", {"window": [1.0]})
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "capacity_exceeded"
    assert response.headers["Retry-After"] == "1"
    assert forecast(client, "a", {"window": [2.0]}).status_code == 200  # existing streams go on
    client.delete(URL.format("b"))
    assert forecast(client, "c", {"window": [1.0]}).status_code == 200


def test_the_state_endpoint_shows_h_and_c_per_layer(make_client):
    client = make_client()
    forecast(client, "a", {"window": [5.0, 11.0, 16.0]})
    body = client.get(URL.format("a") + "/state").get_json()
    assert (body["stream"], body["version"], body["step"]) == ("a", "1", 3)
    assert [sorted(layer) for layer in body["layers"]] == [["c", "h"]]
    assert len(body["layers"][0]["h"]) == 32 and len(body["layers"][0]["c"]) == 32
    record = client.application.extensions["statecast"].store.get("sunspots", "a")
    np.testing.assert_array_equal(np.float32(body["layers"][0]["h"] + body["layers"][0]["c"]),
                                  record.state)
    assert client.get(URL.format("nope") + "/state").status_code == 404


def test_limits_are_configurable_and_answer_their_codes(make_client):
    client = make_client(max_window=3, max_stream_id_length=5, max_batch_items=2,
                         max_body_bytes=2048)
    assert forecast(client, "abcde", {"window": [1.0, 2.0, 3.0]}).status_code == 200
    response = forecast(client, "abcdef", {"window": [1.0]})
    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "invalid_stream_id"
    response = forecast(client, "a", {"window": [1.0] * 4})
    assert response.status_code == 422 and response.get_json()["error"]["limit"] == 3
    items = [{"stream": s, "window": [1.0]} for s in "xyz"]
    response = client.post("/v1/models/sunspots/forecast", json={"items": items})
    assert response.get_json()["error"]["code"] == "batch_too_large"
    response = client.post(URL.format("a") + "/forecast", data="[" + "1," * 2000 + "1]",
                           content_type="application/json")
    assert response.status_code == 413


def test_with_redis_the_ttl_is_done_by_redis(redis_url, tmp_path):
    sweeps = sum(t.name == "statecast-expiry" for t in threading.enumerate())
    app = serving_app(Settings(registry=tmp_path / "registry", store=redis_url, stream_ttl=0.2,
                              tombstone_ttl=60), warm=False)
    try:
        assert sum(t.name == "statecast-expiry" for t in threading.enumerate()) == sweeps
        client = app.test_client()
        assert forecast(client, "r", {"window": [1.0, 2.0]}).status_code == 200
        raw = app.extensions["statecast"].store.inner.client
        assert 0 < raw.pttl("statecast:{sunspots/r}") <= 200
        time.sleep(0.35)
        assert not raw.exists("statecast:{sunspots/r}")
        assert 0 < raw.pttl("statecast-seen:{sunspots/r}") <= 60_200
        response = forecast(client, "r", {"window": [3.0]})
        assert response.status_code == 410
        assert client.get(URL.format("r")).get_json()["step"] == 2
        revived = forecast(client, "r", {"window": [1.0], "reset": True})
        assert revived.status_code == 200 and revived.get_json()["step"] == 1
    finally:
        app.extensions["statecast"].close()
