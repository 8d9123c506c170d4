"""The /v1 API through the Flask test client, on the bundled model and both stores."""

import json

import numpy as np
import pytest

from statecast.models import Registry

URL = "/v1/models/sunspots/streams/{}/forecast"
SUNSPOTS = [5.0, 11.0, 16.0, 23.0, 36.0, 58.0, 29.0, 20.0, 10.0, 8.0, 3.0, 0.0, 0.0, 2.0,
            11.0, 27.0, 47.0, 63.0, 60.0, 39.0, 28.0, 26.0, 22.0, 11.0]


def post(client, stream, body, **kwargs):
    return client.post(URL.format(stream), json=body, **kwargs)


def offline_forecast(app, values, horizon=12):
    """What the model gives for these observations from the zero state, in original units."""
    model = Registry(app.extensions["statecast"].settings.registry).load("sunspots")
    x = model.scale_inputs(np.asarray(values, np.float32).reshape(1, -1, 1))
    _, _, head = model.run(x)
    return model.unscale_targets(head.reshape(12, 1))[:horizon]


def stream_state(app, stream):
    return app.extensions["statecast"].store.get("sunspots", stream)


def test_health_and_readiness(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["models"] == ["sunspots"]


def test_models_are_listed_with_versions_and_aliases(client):
    models = client.get("/v1/models").get_json()["models"]
    assert [m["name"] for m in models] == ["sunspots"]
    assert models[0]["aliases"] == {"latest": "1", "production": "1"}
    version = models[0]["versions"][0]
    assert (version["version"], version["horizon"], version["targets"]) == ("1", 12,
                                                                            ["sunspots"])
    assert client.get("/v1/models/sunspots").get_json()["default_version"] == "1"
    missing = client.get("/v1/models/nope")
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == (
        "model_not_found")


def test_a_new_stream_takes_its_origin_and_forecasts_like_the_model(app, client):
    response = post(client, "plant-7", {"start": 1700, "window": [[v] for v in SUNSPOTS]})
    assert response.status_code == 200
    body = response.get_json()
    assert body["created"] and (body["step"], body["consumed"], body["skipped"]) == (1724, 24, 0)
    assert (body["model"], body["version"], body["stream"]) == ("sunspots", "1", "plant-7")
    forecast = np.array(body["forecast"])
    assert forecast.shape == (12, 1)
    np.testing.assert_allclose(forecast, offline_forecast(app, SUNSPOTS), rtol=1e-5, atol=1e-4)
    described = client.get("/v1/models/sunspots/streams/plant-7").get_json()
    assert (described["step"], described["version"], described["origin"]) == (1724, "1", 1700)


def test_a_retry_consumes_nothing_and_returns_the_same_forecast(client):
    first = post(client, "s", {"start": 0, "window": SUNSPOTS}).get_json()
    again = post(client, "s", {"start": 0, "window": SUNSPOTS}).get_json()
    assert (again["consumed"], again["skipped"], again["step"]) == (0, 24, 24)
    assert again["forecast"] == first["forecast"] and not again["created"]


def test_sliding_windows_consume_only_what_is_new(app, client):
    post(client, "s", {"start": 0, "window": SUNSPOTS[:10]})
    body = post(client, "s", {"start": 5, "window": SUNSPOTS[5:24]}).get_json()
    assert (body["consumed"], body["skipped"], body["step"]) == (14, 5, 24)
    np.testing.assert_allclose(body["forecast"], offline_forecast(app, SUNSPOTS), rtol=1e-5,
                               atol=1e-4)
    appended = post(client, "s", {"window": [7.0]}).get_json()
    assert (appended["consumed"], appended["step"]) == (1, 25)


def test_a_gap_is_refused_and_changes_nothing(app, client):
    post(client, "s", {"start": 0, "window": SUNSPOTS[:10]})
    before = stream_state(app, "s")
    response = post(client, "s", {"start": 12, "window": [1.0]})
    assert response.status_code == 409
    error = response.get_json()["error"]
    assert error["code"] == "gap_in_stream" and error["expected_start"] == 10
    assert stream_state(app, "s").same_content(before)


def test_a_resent_observation_that_differs_is_refused(app, client):
    post(client, "s", {"start": 0, "window": SUNSPOTS[:10]})
    before = stream_state(app, "s")
    changed = SUNSPOTS[5:12]
    changed[1] += 1.0
    response = post(client, "s", {"start": 5, "window": changed})
    assert response.status_code == 409
    assert response.get_json()["error"] == {
        "code": "overlap_mismatch", "index": 6,
        "message": "observation 6 of stream 's' differs from the one it consumed; reset the "
                   "stream to correct history"}
    assert stream_state(app, "s").same_content(before)


def test_reset_starts_over_from_the_zero_state(app, client):
    post(client, "s", {"start": 0, "window": [1.0, 2.0, 3.0]})
    body = post(client, "s", {"start": 100, "window": SUNSPOTS, "reset": True}).get_json()
    assert not body["created"] and body["step"] == 124
    np.testing.assert_allclose(body["forecast"], offline_forecast(app, SUNSPOTS), rtol=1e-5,
                               atol=1e-4)


def test_commit_false_is_a_what_if(app, client):
    post(client, "s", {"start": 0, "window": SUNSPOTS[:12]})
    before = stream_state(app, "s")
    what_if = post(client, "s", {"window": SUNSPOTS[12:], "commit": False}).get_json()
    assert what_if["step"] == 24 and not what_if["committed"]
    assert stream_state(app, "s").same_content(before)
    real = post(client, "s", {"window": SUNSPOTS[12:]}).get_json()
    assert real["forecast"] == what_if["forecast"]


def test_horizon_is_capped_by_the_model(client):
    body = post(client, "s", {"window": SUNSPOTS, "horizon": 3}).get_json()
    assert np.array(body["forecast"]).shape == (3, 1)
    response = post(client, "t", {"window": SUNSPOTS, "horizon": 13})
    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "horizon_too_long"


@pytest.mark.parametrize("raw,status,code", [
    (b'{"window": [1.0, NaN]}', 422, "non_finite_value"),
    (b'{"window": [1.0, Infinity]}', 422, "non_finite_value"),
    (b'{"window": [1.0, null]}', 422, "non_finite_value"),
    (b'{"window": [[1.0, 2.0]]}', 422, "wrong_feature_count"),
    (b'{"window": [[1.0], [2.0, 3.0]]}', 422, "wrong_feature_count"),
    (b'{"window": []}', 422, "invalid_request"),
    (b'{"window": ["1"]}', 422, "invalid_request"),
    (b'{"window": [1.0], "start": -1}', 422, "invalid_request"),
    (b'{"window": [1.0], "commit": "yes"}', 422, "invalid_request"),
    (b'{"window": [1.0], "colour": 1}', 422, "invalid_request"),
    (b'{"window": [1e39]}', 422, "non_finite_value"),
    (b'{"window": [1.0]', 400, "malformed_json"),
    (b'[1, 2]', 422, "invalid_request"),
])
def test_bad_bodies_get_a_clear_error_and_change_nothing(app, client, raw, status, code):
    post(client, "s", {"start": 0, "window": SUNSPOTS[:5]})
    before = stream_state(app, "s")
    response = client.post(URL.format("s"), data=raw, content_type="application/json")
    assert response.status_code == status
    assert response.get_json()["error"]["code"] == code
    assert stream_state(app, "s").same_content(before)


def test_too_long_windows_wrong_content_type_and_oversize_bodies(client):
    response = post(client, "s", {"window": [1.0] * 501})
    assert response.status_code == 422 and response.get_json()["error"]["code"] == (
        "window_too_long")
    response = client.post(URL.format("s"), data="window=1", content_type="text/plain")
    assert response.status_code == 415
    assert response.get_json()["error"]["code"] == "unsupported_media_type"
    big = json.dumps({"window": [1.0] * 20000})
    response = client.post(URL.format("s"), data=big, content_type="application/json")
    assert response.status_code == 413 and response.get_json()["error"]["code"] == (
        "body_too_large")


def test_unknown_models_streams_and_bad_ids(client):
    assert post(client, "s", {"window": [1.0]}).status_code == 200
    response = client.post("/v1/models/nope/streams/s/forecast", json={"window": [1.0]})
    assert response.status_code == 404
    assert client.get("/v1/models/sunspots/streams/other").status_code == 404
    response = post(client, "bad id!", {"window": [1.0]})
    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "invalid_stream_id"
    assert client.get("/v1/nowhere").get_json()["error"]["code"] == "not_found"


def test_delete_forgets_a_stream(client):
    post(client, "s", {"start": 40, "window": SUNSPOTS})
    assert client.delete("/v1/models/sunspots/streams/s").get_json()["deleted"]
    assert client.get("/v1/models/sunspots/streams/s").status_code == 404
    assert client.delete("/v1/models/sunspots/streams/s").status_code == 404
    body = post(client, "s", {"start": 0, "window": [1.0]}).get_json()
    assert body["created"] and body["step"] == 1


def test_a_stream_stays_on_its_version_when_the_alias_moves(app, client):
    post(client, "s", {"window": SUNSPOTS})
    registry = app.extensions["statecast"].registry
    model = registry.load("sunspots")
    registry.publish("sunspots", model.spec, model.tensors, aliases=("latest", "production"))
    body = post(client, "s", {"window": [3.0]}).get_json()
    assert body["version"] == "1"
    assert post(client, "new", {"window": [3.0]}).get_json()["version"] == "2"
    assert post(client, "s", {"window": [4.0], "start": 25}).status_code == 200
    response = client.post("/v1/models/sunspots@2/streams/s/forecast", json={"window": [4.0]})
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "version_conflict"


def test_a_scaled_two_feature_gru_model_forecasts_in_original_units(app, client):
    """Targets are the second feature: inputs scaled per feature, outputs unscaled per
    target, exactly as an offline run of the same model."""
    import torch

    from statecast.models.importers import ForecastOptions, import_state_dict

    torch.manual_seed(4)
    net = torch.nn.Module()
    net.rnn = torch.nn.GRU(2, 8, num_layers=2, batch_first=True)
    net.fc = torch.nn.Linear(8, 6)
    imported = import_state_dict(
        {k: v.detach().numpy() for k, v in net.state_dict().items()},
        ForecastOptions(horizon=6, features=("temp", "load"), targets=("load",),
                        scaler={"method": "standard", "mean": [20.0, 500.0],
                                "std": [5.0, 100.0]}))
    registry = app.extensions["statecast"].registry
    registry.publish("grid", imported.spec, imported.tensors)
    window = [[18.0, 450.0], [19.5, 480.0], [21.0, 530.0], [22.5, 610.0]]
    body = client.post("/v1/models/grid/streams/feeder-1/forecast",
                       json={"window": window, "horizon": 4}).get_json()
    with torch.no_grad():
        x = (torch.tensor(window) - torch.tensor([20.0, 500.0])) / torch.tensor([5.0, 100.0])
        y, _ = net.rnn(x[None])
        expected = net.fc(y[:, -1]).numpy().reshape(6, 1)[:4] * 100.0 + 500.0
    np.testing.assert_allclose(body["forecast"], expected, rtol=1e-5, atol=1e-3)
    wrong = client.post("/v1/models/grid/streams/feeder-1/forecast", json={"window": [1.0]})
    assert wrong.status_code == 422
    assert "this model takes 2 (temp, load)" in wrong.get_json()["error"]["message"]


BATCH = "/v1/models/sunspots/forecast"


def test_a_batch_answers_item_by_item_like_single_calls(app, client):
    post(client, "b", {"start": 0, "window": SUNSPOTS[:10]})
    post(client, "b-single", {"start": 0, "window": SUNSPOTS[:10]})
    items = [{"stream": "a", "start": 0, "window": SUNSPOTS[:7]},
             {"stream": "b", "start": 8, "window": SUNSPOTS[8:15], "horizon": 3},
             {"stream": "c", "window": SUNSPOTS[:7]},
             {"stream": "d", "window": SUNSPOTS}]
    response = client.post(BATCH, json={"horizon": 6, "items": items})
    assert response.status_code == 200
    got = response.get_json()["items"]
    assert [item["stream"] for item in got] == ["a", "b", "c", "d"]
    singles = [post(client, "a-single", {"start": 0, "window": SUNSPOTS[:7], "horizon": 6}),
               post(client, "b-single", {"start": 8, "window": SUNSPOTS[8:15], "horizon": 3}),
               post(client, "c-single", {"window": SUNSPOTS[:7], "horizon": 6}),
               post(client, "d-single", {"window": SUNSPOTS, "horizon": 6})]
    for item, single in zip(got, singles, strict=True):
        expected = single.get_json()
        for key in ("step", "consumed", "skipped", "created", "version"):
            assert item[key] == expected[key], key
        np.testing.assert_allclose(item["forecast"], expected["forecast"], rtol=1e-6,
                                   atol=0)  # a batch may differ by float32 rounding only
    assert np.array(got[1]["forecast"]).shape == (3, 1)
    assert stream_state(app, "d").step == 24


def test_one_bad_item_fails_alone(app, client):
    post(client, "g", {"start": 0, "window": SUNSPOTS[:5]})
    before = stream_state(app, "g")
    items = [{"stream": "ok", "window": [1.0, 2.0]},
             {"stream": "g", "start": 9, "window": [1.0]},
             {"stream": "ok", "window": [3.0]},
             {"stream": "bad id!", "window": [1.0]},
             {"stream": "h", "window": [1.0, None]}]
    got = client.post(BATCH, json={"items": items}).get_json()["items"]
    assert got[0]["step"] == 2
    assert got[1]["error"]["code"] == "gap_in_stream" and got[1]["error"]["expected_start"] == 5
    assert got[2]["error"]["code"] == "invalid_request"
    assert got[3]["error"]["code"] == "invalid_stream_id"
    assert got[4]["error"]["code"] == "non_finite_value"
    assert stream_state(app, "g").same_content(before)
    assert stream_state(app, "h") is None


@pytest.mark.parametrize("body,status,code", [
    ({"items": []}, 422, "invalid_request"),
    ({"stream": "a"}, 422, "invalid_request"),
    ({"items": [{"stream": "a", "window": [1.0]}], "colour": 1}, 422, "invalid_request"),
])
def test_bad_batches_are_refused_whole(client, body, status, code):
    response = client.post(BATCH, json=body)
    assert response.status_code == status
    assert response.get_json()["error"]["code"] == code


def test_batch_limits_and_unknown_models(client):
    items = [{"stream": f"s{i}", "window": [1.0]} for i in range(1001)]
    response = client.post(BATCH, json={"items": items})
    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "batch_too_large"
    response = client.post("/v1/models/nope/forecast", json={"items": items[:1]})
    assert response.status_code == 404
