"""Distribution heads declared at import (``--head-output gaussian``, ``--quantiles``): the
service's intervals are the head's own, computed in the framework as the oracle."""

import io
import json
import os
from statistics import NormalDist

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np
import pytest
import torch

from statecast.models import ImportFailed, Registry
from statecast.models.importers import output_from_flags
from statecast.models.spec import POINT, OutputSpec
from statecast.service.cli import main
from statecast.service.settings import Settings
from statecast.service.startup import serving_app

H, W = 4, 8
TOL = {"atol": 1e-5, "rtol": 1e-4}
TOKEN = "s3cret-token"
SERIES = np.random.default_rng(7).standard_normal(13).round(3)  # longer than the window


class Forecaster(torch.nn.Module):
    def __init__(self, outputs, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.lstm = torch.nn.LSTM(1, 16, batch_first=True)
        self.fc = torch.nn.Linear(16, outputs)

    def head(self, window):
        """The head's outputs ``[H, 1, params]`` on a window of scaled observations."""
        with torch.no_grad():
            out, _ = self.lstm(torch.tensor(window, dtype=torch.float32).reshape(1, -1, 1))
            return self.fc(out[:, -1]).numpy().reshape(H, 1, -1)


@pytest.fixture()
def app(tmp_path):
    application = serving_app(Settings(registry=tmp_path / "registry", store="memory",
                                       access_log=False, admin_token=TOKEN))
    yield application
    application.extensions["statecast"].close()


def saved(tmp_path, params, seed=0):
    net = Forecaster(H * params, seed)
    torch.save(net.state_dict(), tmp_path / "net.pt")
    return net, str(tmp_path / "net.pt")


def imported(app, path, *flags, name="m"):
    registry = str(app.extensions["statecast"].settings.registry)
    return main(["import", path, "--name", name, "--registry", registry, *flags])


def forecast(app, body, name="m"):
    return app.test_client().post(f"/v1/models/{name}/streams/s/forecast", json=body)


@pytest.mark.parametrize("scaled", [False, True], ids=["raw", "scaled"])
def test_a_gaussian_head_gives_mu_and_its_intervals(app, tmp_path, capsys, scaled):
    net, path = saved(tmp_path, params=2)
    mean, std = 50.0, 20.0
    flags = ["--state-mode", f"window:{W}", "--head-output", "gaussian"]
    if scaled:
        (tmp_path / "scaler.json").write_text(json.dumps({"mean": [mean], "std": [std]}))
        flags += ["--scaler", str(tmp_path / "scaler.json")]
    assert imported(app, path, *flags) == 0
    assert "horizon 4, window:8; gaussian head" in capsys.readouterr().out
    series = SERIES * std + mean if scaled else SERIES
    response = forecast(app, {"start": 0, "window": series.tolist(), "level": [80, 95]})
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    out = net.head(SERIES[-W:])  # a window:W model re-runs the last W from the zero state
    mu, sigma = out[..., 0], torch.nn.functional.softplus(torch.from_numpy(out[..., 1]))
    sigma = sigma.numpy()
    if scaled:
        mu, sigma = mu * std + mean, sigma * std
    np.testing.assert_allclose(body["forecast"], mu, **TOL)
    assert set(body["intervals"]) == {"lo-80", "hi-80", "lo-95", "hi-95"}
    for level in (80, 95):
        z = NormalDist().inv_cdf(1 - (100 - level) / 200)
        np.testing.assert_allclose(body["intervals"][f"lo-{level}"], mu - z * sigma, **TOL)
        np.testing.assert_allclose(body["intervals"][f"hi-{level}"], mu + z * sigma, **TOL)


def test_a_quantile_head_gives_the_median_and_the_levels_it_holds(app, tmp_path, capsys):
    net, path = saved(tmp_path, params=3, seed=1)
    assert imported(app, path, "--state-mode", f"window:{W}", "--quantiles",
                    "0.1,0.5,0.9") == 0
    assert "quantile head [0.1, 0.5, 0.9]" in capsys.readouterr().out
    spec = Registry(app.extensions["statecast"].settings.registry).load("m").spec
    assert spec.output == OutputSpec("quantile", 3, 1, (0.1, 0.5, 0.9)) and spec.horizon == H
    body = forecast(app, {"start": 0, "window": SERIES.tolist(), "level": [80]}).get_json()
    out = net.head(SERIES[-W:])
    np.testing.assert_allclose(body["forecast"], out[..., 1], **TOL)
    np.testing.assert_allclose(body["intervals"]["lo-80"], out[..., 0], **TOL)
    np.testing.assert_allclose(body["intervals"]["hi-80"], out[..., 2], **TOL)
    for levels in ([95], [80, 95]):
        refused = forecast(app, {"window": SERIES.tolist(), "level": levels})
        assert refused.status_code == 422
        assert refused.get_json()["error"]["code"] == "level_unavailable"
        assert "0.025" in refused.get_json()["error"]["message"]


def test_a_head_applied_at_every_step_gives_its_last_steps_distribution(app, tmp_path):
    net, path = saved(tmp_path, params=2, seed=4)
    assert imported(app, path, "--state-mode", f"window:{W}", "--head-output", "gaussian",
                    "--head-every-step") == 0
    body = forecast(app, {"start": 0, "window": SERIES.tolist(), "level": [80]}).get_json()
    out = net.head(SERIES[-W:])
    sigma = torch.nn.functional.softplus(torch.from_numpy(out[..., 1])).numpy()
    z = NormalDist().inv_cdf(0.9)
    np.testing.assert_allclose(body["forecast"], out[..., 0], **TOL)
    np.testing.assert_allclose(body["intervals"]["hi-80"], out[..., 0] + z * sigma, **TOL)


def test_a_keras_quantile_head_gives_keras_quantiles(app, tmp_path):
    import keras

    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((None, 1)), keras.layers.LSTM(16),
                              keras.layers.Dense(H * 3)])
    model.save(tmp_path / "model.keras")
    assert imported(app, str(tmp_path / "model.keras"), "--state-mode", f"window:{W}",
                    "--head-output", "quantile", "--quantiles", "0.1,0.5,0.9") == 0
    body = forecast(app, {"start": 0, "window": SERIES.tolist(), "level": [80]}).get_json()
    x = SERIES[-W:].astype(np.float32).reshape(1, W, 1)
    out = keras.ops.convert_to_numpy(model(x, training=False)).reshape(H, 1, 3)
    np.testing.assert_allclose(body["forecast"], out[..., 1], **TOL)
    np.testing.assert_allclose(body["intervals"]["lo-80"], out[..., 0], **TOL)
    np.testing.assert_allclose(body["intervals"]["hi-80"], out[..., 2], **TOL)


def test_an_admin_upload_declares_its_head_with_form_fields(app):
    net = Forecaster(H * 2, seed=2)
    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)

    def upload(**form):
        return app.test_client().post(
            "/v1/admin/models/g/versions", headers={"Authorization": f"Bearer {TOKEN}"},
            data={"file": (io.BytesIO(buffer.getvalue()), "net.pt"), **form},
            content_type="multipart/form-data")

    refused = upload(state_mode=f"window:{W}", head_output="gaussian", quantiles="0.1,0.5")
    assert refused.status_code == 422 and "quantile head" in refused.get_json()["error"][
        "message"]
    assert upload(state_mode=f"window:{W}", head_output="gaussian").status_code == 201
    body = forecast(app, {"window": SERIES.tolist(), "level": [90]}, name="g").get_json()
    out = net.head(SERIES[-W:])
    np.testing.assert_allclose(body["forecast"], out[..., 0], **TOL)
    assert set(body["intervals"]) == {"lo-90", "hi-90"}


@pytest.mark.parametrize("head_output,quantiles,expected", [
    (None, None, POINT),
    ("point", None, POINT),
    ("gaussian", None, OutputSpec("gaussian", 2, 0)),
    (None, "0.1,0.5,0.9", OutputSpec("quantile", 3, 1, (0.1, 0.5, 0.9))),
    ("quantile", " 0.5, 0.75 ", OutputSpec("quantile", 2, 0, (0.5, 0.75))),
])
def test_head_flags_parse(head_output, quantiles, expected):
    assert output_from_flags(head_output, quantiles) == expected


@pytest.mark.parametrize("head_output,quantiles,message", [
    (None, "0.1,0.9", "must hold 0.5"),
    (None, "0.5,0.1", "strictly increasing"),
    (None, "0.1,0.5,0.5", "strictly increasing"),
    (None, "0,0.5", "strictly between 0 and 1"),
    (None, "0.5,1", "strictly between 0 and 1"),
    (None, "0.5,nan", "strictly between 0 and 1"),
    (None, "0.1;0.5", "comma-separated numbers"),
    ("quantile", None, "needs its quantiles"),
    ("gaussian", "0.1,0.5,0.9", "quantiles are for a quantile head"),
    ("normal", None, "head output must be one of"),
])
def test_bad_head_flags_are_refused(head_output, quantiles, message):
    with pytest.raises(ImportFailed, match=message):
        output_from_flags(head_output, quantiles)


def test_the_command_line_refuses_heads_that_do_not_fit(app, tmp_path, capsys):
    _, path = saved(tmp_path, params=2)
    assert imported(app, path, "--state-mode", f"window:{W}", "--quantiles", "0.1,0.9") == 2
    assert "must hold 0.5" in capsys.readouterr().err
    assert imported(app, path, "--head-output", "gaussian") == 2  # carry by default
    assert "--state-mode window:W" in capsys.readouterr().err
    assert imported(app, path, "--state-mode", f"window:{W}", "--quantiles",
                    "0.1,0.5,0.9") == 2  # 8 outputs: not H steps x 3 quantiles
    assert "8 values, not a multiple of 1 target(s) x 3 quantile parameters" in (
        capsys.readouterr().err)
    assert imported(app, path, "--state-mode", f"window:{W}", "--head-output", "gaussian",
                    "--horizon", "3") == 2
    assert "horizon 3 x 1 target(s) x 2 params" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        imported(app, path, "--head-output", "normal")
    assert "invalid choice: 'normal'" in capsys.readouterr().err
    assert not (app.extensions["statecast"].settings.registry / "m").exists()
