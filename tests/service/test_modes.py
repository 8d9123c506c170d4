"""Forecast modes through the API against PyTorch: recursive rollouts with covariates,
``window:W`` models, heads applied at every step."""

import numpy as np
import torch

from statecast.models.importers import ForecastOptions, import_state_dict

TOL = {"rtol": 1e-5, "atol": 1e-4}


def publish(app, name, module, options, **kwargs):
    imported = import_state_dict({k: v.detach().numpy() for k, v in module.state_dict().items()},
                                 options, **kwargs)
    app.extensions["statecast"].registry.publish(name, imported.spec, imported.tensors)


def forecaster(cell, inputs, hidden, outputs, seed):
    torch.manual_seed(seed)
    net = torch.nn.Module()
    net.rnn = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(inputs, hidden,
                                                                 batch_first=True)
    net.fc = torch.nn.Linear(hidden, outputs)
    return net


def test_recursive_rollout_with_future_covariates_matches_torch(app, client):
    net = forecaster("lstm", 2, 8, 1, seed=1)
    mean, std = np.array([100.0, 12.0]), np.array([20.0, 7.0])
    publish(app, "demand", net, ForecastOptions(
        mode="recursive", horizon=5, features=("load", "hour"), targets=("load",),
        scaler={"method": "standard", "mean": mean.tolist(), "std": std.tolist()}))
    rng = np.random.default_rng(0)
    window = np.column_stack([100 + 20 * rng.standard_normal(10), np.arange(10) % 24])
    future = [[float(h)] for h in range(10, 15)]
    body = {"start": 0, "window": window.tolist(), "future": future}
    got = client.post("/v1/models/demand/streams/a/forecast", json=body).get_json()
    with torch.no_grad():
        x = torch.tensor((window - mean) / std, dtype=torch.float32)[None]
        out, state = net.rnn(x)
        prediction = net.fc(out[:, -1])
        expected = []
        for step in range(5):
            expected.append(float(prediction) * std[0] + mean[0])
            hour = (future[step][0] - mean[1]) / std[1]
            step_input = torch.tensor([[[float(prediction), hour]]], dtype=torch.float32)
            out, state = net.rnn(step_input, state)
            prediction = net.fc(out[:, -1])
    np.testing.assert_allclose(np.array(got["forecast"])[:, 0], expected, **TOL)
    again = client.post("/v1/models/demand/streams/a/forecast", json=body).get_json()
    assert again["forecast"] == got["forecast"] and again["consumed"] == 0  # state untouched
    shorter = client.post("/v1/models/demand/streams/a/forecast",
                          json={"window": [[101.0, 10.0]], "future": future[:2],
                                "horizon": 2})
    assert shorter.status_code == 200 and len(shorter.get_json()["forecast"]) == 2


def test_recursive_models_name_the_covariates_they_need(app, client):
    publish(app, "demand", forecaster("gru", 2, 4, 1, seed=2), ForecastOptions(
        mode="recursive", horizon=3, features=("load", "temp"), targets=("load",)))
    response = client.post("/v1/models/demand/streams/a/forecast",
                           json={"window": [[1.0, 2.0]]})
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["code"] == "missing_future" and error["covariates"] == ["temp"]
    response = client.post("/v1/models/demand/streams/a/forecast",
                           json={"window": [[1.0, 2.0]], "future": [[1.0]]})
    assert response.get_json()["error"]["code"] == "missing_future"
    response = client.post("/v1/models/sunspots/streams/a/forecast",
                           json={"window": [1.0], "future": [[1.0]]})
    assert response.status_code == 422
    assert "takes no future covariates" in response.get_json()["error"]["message"]


def test_univariate_recursive_model_needs_no_future(app, client):
    net = forecaster("gru", 1, 6, 1, seed=3)
    publish(app, "uni", net, ForecastOptions(mode="recursive", horizon=4))
    window = [0.5, -0.2, 0.1, 0.7]
    got = client.post("/v1/models/uni/streams/a/forecast", json={"window": window,
                                                                "horizon": 6}).get_json()
    with torch.no_grad():
        out, state = net.rnn(torch.tensor(window, dtype=torch.float32).reshape(1, -1, 1))
        value = net.fc(out[:, -1])
        expected = []
        for _ in range(6):
            expected.append(float(value))
            out, state = net.rnn(value.reshape(1, 1, 1), state)
            value = net.fc(out[:, -1])
    np.testing.assert_allclose(np.array(got["forecast"])[:, 0], expected, **TOL)


def test_window_models_rerun_their_last_w_observations_from_zero(app, client):
    net = forecaster("lstm", 1, 8, 3, seed=4)
    publish(app, "windowed", net, ForecastOptions(horizon=3, state_mode="window:6"))
    series = np.random.default_rng(1).standard_normal(12).round(3)

    def torch_forecast(observations):
        with torch.no_grad():
            out, _ = net.rnn(torch.tensor(observations, dtype=torch.float32).reshape(1, -1, 1))
            return net.fc(out[:, -1]).numpy().reshape(3, 1)

    url = "/v1/models/windowed/streams/w/forecast"
    first = client.post(url, json={"start": 0, "window": series[:4].tolist()}).get_json()
    np.testing.assert_allclose(first["forecast"], torch_forecast(series[:4]), **TOL)
    second = client.post(url, json={"start": 2, "window": series[2:11].tolist()}).get_json()
    assert (second["consumed"], second["skipped"], second["step"]) == (7, 2, 11)
    np.testing.assert_allclose(second["forecast"], torch_forecast(series[5:11]), **TOL)
    third = client.post(url, json={"window": [float(series[11])]}).get_json()
    np.testing.assert_allclose(third["forecast"], torch_forecast(series[6:12]), **TOL)
    retry = client.post(url, json={"start": 11, "window": [float(series[11])]}).get_json()
    assert retry["forecast"] == third["forecast"]
    record = app.extensions["statecast"].store.get("windowed", "w")
    np.testing.assert_array_equal(record.tail[:, 0], series[6:12].astype(np.float32))


def test_a_head_applied_at_every_step_forecasts_from_the_last_one(app, client):
    net = forecaster("gru", 1, 6, 4, seed=5)
    publish(app, "seq2seq", net, ForecastOptions(horizon=4), head_every_step=True)
    window = [0.3, 0.1, -0.4, 0.2, 0.9]
    got = client.post("/v1/models/seq2seq/streams/a/forecast",
                      json={"window": window}).get_json()
    with torch.no_grad():
        out, _ = net.rnn(torch.tensor(window, dtype=torch.float32).reshape(1, -1, 1))
        expected = net.fc(out[:, -1]).numpy().reshape(4, 1)
    np.testing.assert_allclose(got["forecast"], expected, **TOL)
