"""Intervals on /v1 calls: conformal, from the calibration ``statecast calibrate`` stores."""

import numpy as np
import pandas as pd
import pytest

from statecast.service.cli import main
from tests.service.test_app import SUNSPOTS, post, stream_state


def history(path):
    from statsmodels.datasets import sunspots

    data = sunspots.load_pandas().data
    frame = pd.DataFrame({"unique_id": "sunspots", "ds": data["YEAR"].astype(int),
                          "y": data["SUNACTIVITY"]})
    frame.to_csv(path, index=False)
    return path


def calibrate(app, tmp_path, windows=12, h=12):
    registry = app.extensions["statecast"].settings.registry
    assert main(["calibrate", "--registry", str(registry), "--model", "sunspots", "--input",
                 str(history(tmp_path / "history.csv")), "--n-windows", str(windows),
                 "--h", str(h)]) == 0


def test_a_refused_level_leaves_an_existing_stream_as_it_was(app, client):
    assert post(client, "e", {"window": SUNSPOTS[:10]}).status_code == 200
    before = stream_state(app, "e")
    response = post(client, "e", {"window": SUNSPOTS[10:], "level": [80]})
    assert response.get_json()["error"]["code"] == "level_unavailable"
    after = stream_state(app, "e")
    assert (after.step, after.revision) == (before.step, before.revision)


def test_a_batch_item_beyond_its_calibration_fails_alone(app, client, tmp_path):
    calibrate(app, tmp_path, h=6)
    response = client.post("/v1/models/sunspots/forecast", json={"level": [80], "items": [
        {"stream": "ok", "window": SUNSPOTS, "horizon": 6},
        {"stream": "long", "window": SUNSPOTS, "horizon": 12},
        {"stream": "plain", "window": SUNSPOTS, "horizon": 12, "level": None}]})
    ok, long, plain = response.get_json()["items"]
    assert set(ok["intervals"]) == {"lo-80", "hi-80"}  # the batch's level, inherited
    assert long["error"]["code"] == "level_unavailable" and stream_state(app, "long") is None
    assert "intervals" not in plain and stream_state(app, "plain").step == len(SUNSPOTS)
    assert stream_state(app, "ok").step == len(SUNSPOTS)


def test_levels_without_calibration_are_refused_and_change_nothing(app, client):
    response = post(client, "s", {"window": SUNSPOTS, "level": [80]})
    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "level_unavailable"
    assert stream_state(app, "s") is None


@pytest.mark.parametrize("level", [[0], [100], [80, 80], "80"])
def test_bad_levels_are_refused(client, level):
    response = post(client, "s", {"window": SUNSPOTS, "level": level})
    assert response.status_code == 422


def test_calibrated_levels_bracket_the_forecast(app, client, tmp_path, capsys):
    calibrate(app, tmp_path)
    plain = post(client, "a", {"window": SUNSPOTS, "commit": False}).get_json()
    assert "intervals" not in plain
    body = post(client, "a", {"window": SUNSPOTS, "level": [80, 95], "horizon": 6}).get_json()
    forecast = np.array(body["forecast"])
    np.testing.assert_allclose(forecast, np.array(plain["forecast"])[:6], rtol=1e-6)
    intervals = {name: np.array(bound) for name, bound in body["intervals"].items()}
    assert set(intervals) == {"lo-80", "hi-80", "lo-95", "hi-95"}
    assert all(bound.shape == forecast.shape for bound in intervals.values())
    assert (intervals["lo-95"] <= intervals["lo-80"]).all()
    assert (intervals["lo-80"] <= forecast + 1e-4).all()
    assert (forecast <= intervals["hi-80"] + 1e-4).all()
    assert (intervals["hi-80"] <= intervals["hi-95"]).all()


def test_a_batch_item_asks_for_levels_alone(app, client, tmp_path):
    calibrate(app, tmp_path)
    response = client.post("/v1/models/sunspots/forecast", json={"items": [
        {"stream": "x", "window": SUNSPOTS, "level": [90]},
        {"stream": "y", "window": SUNSPOTS},
        {"stream": "z", "window": SUNSPOTS, "level": [120]}]})
    items = response.get_json()["items"]
    assert set(items[0]["intervals"]) == {"lo-90", "hi-90"}
    assert "intervals" not in items[1]
    assert items[2]["error"]["code"] == "invalid_request" and stream_state(app, "z") is None


def test_a_calibration_replaced_is_served_without_a_restart(app, client, tmp_path):
    calibrate(app, tmp_path, windows=4)
    first = post(client, "r", {"window": SUNSPOTS, "level": [80], "commit": False})
    calibrate(app, tmp_path, windows=40)
    second = post(client, "r", {"window": SUNSPOTS, "level": [80], "commit": False})
    assert first.get_json()["intervals"] != second.get_json()["intervals"]


def test_batch_jobs_add_nixtlas_interval_columns(tmp_path):
    from statecast.models import Registry
    from statecast.service.batch import forecast

    registry = tmp_path / "registry"
    path = history(tmp_path / "history.csv")
    assert main(["calibrate", "--registry", str(registry), "--model", "sunspots", "--input",
                 str(path), "--n-windows", "20", "--step-size", "2"]) == 0
    out = forecast(pd.read_csv(path), "sunspots", registry=registry, level=[95, 80])
    model = "sunspots"
    assert list(out.columns) == ["unique_id", "ds", model, f"{model}-lo-95", f"{model}-lo-80",
                                 f"{model}-hi-80", f"{model}-hi-95"]
    calibration = Registry(registry).calibration("sunspots")
    assert calibration.info["windows"] == 20 and calibration.scores.shape == (20, 12, 1)
    assert calibration.info["version"] == "1"  # the version the errors were measured on
    expected = calibration.intervals(out[model].to_numpy(np.float32).reshape(12, 1), (80.0,))
    np.testing.assert_array_equal(out[f"{model}-lo-80"], expected["lo-80"][:, 0])
    ordered = out[[f"{model}-lo-95", f"{model}-lo-80", model, f"{model}-hi-80",
                   f"{model}-hi-95"]].to_numpy()
    assert (np.diff(ordered, axis=1) >= -1e-4).all()
    assert main(["batch", "--registry", str(registry), "--model", "sunspots", "--input",
                 str(path), "--output", str(tmp_path / "out.csv"), "--level", "80",
                 "--quiet"]) == 0
    written = pd.read_csv(tmp_path / "out.csv")
    assert {f"{model}-lo-80", f"{model}-hi-80"} <= set(written.columns)


def batch_on_a_fresh_registry(tmp_path, *options) -> int:
    """``statecast batch`` of the sunspots history into out.csv; its exit status."""
    return main(["batch", "--registry", str(tmp_path / "r"), "--model", "sunspots", "--input",
                 str(history(tmp_path / "history.csv")), "--output",
                 str(tmp_path / "out.csv"), "--quiet", *options])


def test_batch_levels_need_a_calibration(tmp_path, capsys):
    assert batch_on_a_fresh_registry(tmp_path, "--level", "80") == 2
    assert "calibration" in capsys.readouterr().err


def test_batch_calibrates_each_series_on_its_own_backtest(tmp_path):
    from statecast.models import Registry
    from statecast.models.conformal import conformal_intervals
    from statecast.service.batch import forecast
    from statecast.service.batch.engine import backtest

    frame = pd.read_csv(history(tmp_path / "history.csv"))
    frame = pd.concat([frame.assign(unique_id="a"),
                       frame.iloc[:200].assign(unique_id="b")])
    registry = tmp_path / "registry"
    main(["models", "list", "--registry", str(registry)])  # seeds the bundled model
    out = forecast(frame, "sunspots", registry=registry, level=[80], calibrate_windows=6,
                   calibrate_step=3)
    model = Registry(registry).load("sunspots")
    for uid, length in (("a", len(frame) - 200), ("b", 200)):
        values = frame[frame.unique_id == uid]["y"].to_numpy(np.float32)[:length, None]
        errors = np.stack([np.abs(forecasts[0].astype(np.float64) - values[
            cutoff + 1:cutoff + 13]) for cutoff, forecasts in backtest(
                model, values[None], 12, 6, 3)]).astype(np.float32)
        mine = out[out.unique_id == uid]
        expected = conformal_intervals(mine["sunspots"].to_numpy(np.float32)[:, None], errors,
                                       (80.0,))
        np.testing.assert_array_equal(mine["sunspots-lo-80"], expected["lo-80"][:, 0])
        np.testing.assert_array_equal(mine["sunspots-hi-80"], expected["hi-80"][:, 0])
    assert not (Registry(registry).path("sunspots", "1") / "calibration.json").exists()


def test_per_series_intervals_equal_neuralforecasts_on_the_same_errors(tmp_path):
    """NeuralForecast's conformal_distribution with scores per series (n_series=2) gives
    the bounds of the per-series calibration."""
    from neuralforecast.utils import add_conformal_distribution_intervals

    from statecast.models.conformal import conformal_intervals

    rng = np.random.default_rng(5)
    scores = np.abs(rng.standard_normal((2, 4, 6))).astype(np.float32)  # series, windows, h
    forecasts = rng.standard_normal((2, 6)).astype(np.float32)
    theirs, columns = add_conformal_distribution_intervals(
        forecasts.reshape(-1, 1).astype(np.float64), pd.DataFrame({"m": scores.reshape(-1)}),
        "m", cs_n_windows=4, n_series=2, horizon=6, level=[80, 95])
    for series in range(2):
        ours = conformal_intervals(forecasts[series][:, None], scores[series][:, :, None],
                                   (80.0, 95.0))
        rows = theirs[series * 6:(series + 1) * 6]
        for index, column in enumerate(columns):
            np.testing.assert_allclose(ours[column.removeprefix("m-")][:, 0],
                                       rows[:, 1 + index], rtol=1e-6)


def test_calibrate_windows_without_a_level_is_refused(tmp_path, capsys):
    assert batch_on_a_fresh_registry(tmp_path, "--calibrate-windows", "3") == 2
    assert "--level" in capsys.readouterr().err
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize("binary", [False, True])
def test_v2_level_parameter_adds_lo_and_hi_outputs(app, client, tmp_path, binary):
    calibrate(app, tmp_path)
    tensor = {"name": "window", "datatype": "FP32", "shape": [2, len(SUNSPOTS), 1],
              "data": SUNSPOTS + SUNSPOTS[::-1]}
    body = {"inputs": [tensor], "parameters": {"level": "95,80", "horizon": 4,
                                               "binary_data_output": binary}}
    response = client.post("/v2/models/sunspots/infer", json=body)
    assert response.status_code == 200, response.data[:300]
    if binary:
        import json

        length = int(response.headers["Inference-Header-Content-Length"])
        head = json.loads(response.data[:length])
        raw, offset, outputs = response.data[length:], 0, {}
        for output in head["outputs"]:
            size = output["parameters"]["binary_data_size"]
            outputs[output["name"]] = np.frombuffer(raw[offset:offset + size], "<f4").reshape(
                output["shape"])
            offset += size
    else:
        outputs = {output["name"]: np.reshape(output["data"], output["shape"])
                   for output in response.get_json()["outputs"]}
    assert list(outputs) == ["forecast", "lo-95", "lo-80", "hi-80", "hi-95"]
    assert all(values.shape == (2, 4, 1) for values in outputs.values())
    single = post(client, "v", {"window": SUNSPOTS, "level": [80], "horizon": 4,
                                "commit": False}).get_json()
    np.testing.assert_allclose(outputs["lo-80"][0], single["intervals"]["lo-80"], rtol=1e-6)
    sequence = dict(body, parameters={"level": 90, "sequence_id": "q", "sequence_start": True})
    sequence["inputs"] = [dict(tensor, shape=[1, len(SUNSPOTS), 1], data=SUNSPOTS)]
    answer = client.post("/v2/models/sunspots/infer", json=sequence).get_json()
    assert [output["name"] for output in answer["outputs"]] == ["forecast", "lo-90", "hi-90"]


def test_v2_levels_without_calibration_are_refused(client):
    tensor = {"name": "window", "datatype": "FP32", "shape": [1, 3, 1], "data": [1, 2, 3]}
    response = client.post("/v2/models/sunspots/infer", json={
        "inputs": [tensor], "parameters": {"level": 80}})
    assert response.status_code == 400  # the Open Inference Protocol's refusal
    assert "calibration" in response.get_json()["error"]


def test_the_batch_plot_shades_the_intervals(tmp_path):
    from statecast.service.batch import forecast
    from statecast.service.batch.plot import plot

    frame = pd.read_csv(history(tmp_path / "history.csv"))
    registry = tmp_path / "registry"
    main(["models", "list", "--registry", str(registry)])  # seeds the bundled model
    out = forecast(frame, "sunspots", registry=registry, level=[80, 95], calibrate_windows=5)
    shaded = plot(frame, out, "sunspots", tmp_path / "shaded.png")
    plain = plot(frame, out[["unique_id", "ds", "sunspots"]], "sunspots", tmp_path / "plain.png")
    assert shaded.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shaded.read_bytes() != plain.read_bytes()


def test_too_short_a_series_for_its_calibration_windows_stops_the_job_first(tmp_path, capsys):
    frame = pd.read_csv(history(tmp_path / "history.csv"))
    frame = pd.concat([frame, frame.iloc[:20].assign(unique_id="short")])
    frame.to_csv(tmp_path / "history.csv", index=False)
    store = tmp_path / "state.db"
    assert main(["batch", "--registry", str(tmp_path / "r"), "--model", "sunspots", "--input",
                 str(tmp_path / "history.csv"), "--output", str(tmp_path / "out.csv"),
                 "--level", "80", "--calibrate-windows", "10", "--chunk-size", "1",
                 "--to-store", f"sqlite:{store}", "--quiet"]) == 2
    assert "'short' has 20 observations" in capsys.readouterr().err
    assert not (tmp_path / "out.csv").exists()
    if store.exists():  # nothing was handed off
        from statecast.service.stores import open_store

        assert list(open_store(f"sqlite:{store}").scan()) == []
