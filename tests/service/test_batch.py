"""Batch jobs: long-format round trips, equality with per-series Model.run, backtests,
metrics, hand-off to the service, Dask, and input errors that leave no output."""

import json

import numpy as np
import pandas as pd
import pytest

from statecast.models import Registry
from statecast.service.app import create_app
from statecast.service.batch import BatchInputError, JobSpec, evaluate, forecast, run_job
from statecast.service.bundled import seed_registry
from statecast.service.cli import main
from statecast.service.settings import Settings

LENGTHS = {"b": 30, "a": 17, "c": 24}


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch") / "registry"
    seed_registry(Registry(root))
    return root


@pytest.fixture(scope="module")
def model(registry):
    return Registry(registry).load("sunspots")


def long_frame(datetimes=False, shuffle=True):
    rng = np.random.default_rng(0)
    parts = []
    for index, (series, length) in enumerate(LENGTHS.items()):
        t = np.arange(length)
        ds = (pd.date_range("2020-01-01", periods=length, freq="MS") if datetimes
              else 100 + 2 * t)
        y = 80 + 50 * np.sin(t / 4 + index) + rng.normal(0, 3, length)
        parts.append(pd.DataFrame({"unique_id": series, "ds": ds, "y": y.round(2)}))
    frame = pd.concat(parts, ignore_index=True)
    return frame.sample(frac=1, random_state=1) if shuffle else frame


def reference(model, values, h):
    """What Model.run gives for one series from the initial state, in original units."""
    x = model.scale_inputs(np.asarray(values, np.float32).reshape(1, -1, 1))
    _, _, head = model.run(x)
    return model.unscale_targets(head.reshape(model.spec.horizon, 1))[:h, 0]


@pytest.mark.parametrize("datetimes", [False, True], ids=["integer ds", "datetime ds"])
def test_forecasts_equal_per_series_model_run(registry, model, datetimes):
    frame = long_frame(datetimes)
    out = forecast(frame, "sunspots", 6, registry=registry)
    assert list(out.columns) == ["unique_id", "ds", "sunspots"]
    assert out["unique_id"].tolist() == [s for s in sorted(LENGTHS) for _ in range(6)]
    for series, rows in out.groupby("unique_id"):
        history = frame[frame.unique_id == series].sort_values("ds")
        np.testing.assert_allclose(rows["sunspots"], reference(model, history.y, 6),
                                   rtol=1e-5, atol=1e-4)
        last = history.ds.iloc[-1]
        expected = (pd.date_range(last, periods=7, freq="MS")[1:] if datetimes
                    else last + 2 * np.arange(1, 7))
        np.testing.assert_array_equal(rows["ds"].to_numpy(), np.asarray(expected))


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_file_round_trip_in_chunks(registry, tmp_path, suffix):
    frame = long_frame()
    source = tmp_path / f"in{suffix}"
    (frame.to_parquet if suffix == ".parquet" else frame.to_csv)(source, index=False)
    spec = JobSpec("sunspots", str(registry), h=4)
    whole = run_job(source, tmp_path / f"whole{suffix}", spec, chunk_size=100)
    assert whole["series"] == 3 and whole["rows"] == 12 and whole["version"] == "1"
    totals, done = [], []
    run_job(source, tmp_path / f"one-by-one{suffix}", spec, chunk_size=1,
            on_total=totals.append, progress=done.append)
    assert totals == [3] and done == [1, 1, 1]  # the progress bar's total and updates
    read = pd.read_parquet if suffix == ".parquet" else pd.read_csv
    a, b = read(tmp_path / f"whole{suffix}"), read(tmp_path / f"one-by-one{suffix}")
    pd.testing.assert_frame_equal(a, b)
    np.testing.assert_allclose(a.sunspots, forecast(frame, "sunspots", 4, registry=registry)
                               .sunspots, rtol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir() if "partial" in p.name) == []


def test_backtest_cutoffs_and_actuals(registry, model):
    frame = long_frame(shuffle=False)
    out = forecast(frame, "sunspots", 4, registry=registry, n_windows=2, step_size=3)
    assert list(out.columns) == ["unique_id", "ds", "cutoff", "y", "sunspots"]
    for series, length in LENGTHS.items():
        history = frame[frame.unique_id == series].reset_index(drop=True)
        rows = out[out.unique_id == series]
        cutoffs = sorted(rows.cutoff.unique())
        assert cutoffs == [history.ds[length - 4 - 3 - 1], history.ds[length - 4 - 1]]
        for cutoff in cutoffs:
            window = rows[rows.cutoff == cutoff]
            position = int(np.flatnonzero(history.ds == cutoff)[0])
            np.testing.assert_array_equal(window.y, history.y[position + 1:position + 5])
            np.testing.assert_allclose(window.sunspots,
                                       reference(model, history.y[:position + 1], 4),
                                       rtol=1e-5, atol=1e-4)


def test_metrics_on_hand_computed_examples():
    forecasts = pd.DataFrame({"unique_id": ["a"] * 3 + ["b"] * 2, "ds": [1, 2, 3, 1, 2],
                              "y": [1.0, 2.0, 4.0, 0.0, 10.0],
                              "m": [2.0, 2.0, 1.0, 0.0, 5.0]})
    train = pd.DataFrame({"unique_id": ["a"] * 4 + ["b"] * 3, "ds": [0, 1, 2, 3, 0, 1, 2],
                          "y": [1.0, 3.0, 2.0, 6.0, 0.0, 4.0, 8.0]})
    table = evaluate(forecasts, ("mae", "rmse", "smape", "mase"), train=train, seasonality=1)
    got = {(r.unique_id, r.metric): r.m for r in table.itertuples()}
    assert got[("a", "mae")] == pytest.approx(4 / 3)
    assert got[("a", "rmse")] == pytest.approx(np.sqrt(10 / 3))
    assert got[("a", "smape")] == pytest.approx(200 / 3 * (1 / 3 + 0 + 3 / 5))
    assert got[("a", "mase")] == pytest.approx((4 / 3) / ((2 + 1 + 4) / 3))
    assert got[("b", "smape")] == pytest.approx(100 * (0 + 5 / 15))  # 0/0 counts 0
    assert got[("b", "mase")] == pytest.approx(2.5 / 4)
    with pytest.raises(BatchInputError, match="seasonality"):
        evaluate(forecasts, ("mase",), train=train)


def test_hand_off_then_online_call_equals_full_replay(registry, tmp_path):
    frame = long_frame()
    source = tmp_path / "in.parquet"
    frame.to_parquet(source, index=False)
    store = f"sqlite:{tmp_path / 'state.db'}"
    run_job(source, tmp_path / "out.parquet", JobSpec("sunspots", str(registry)),
            to_store=store)
    served = create_app(Settings(registry=registry, store=store, access_log=False))
    replay = create_app(Settings(registry=registry, store="memory", access_log=False))
    try:
        for series, length in LENGTHS.items():
            history = frame[frame.unique_id == series].sort_values("ds").y.tolist()
            url = f"/v1/models/sunspots/streams/{series}/forecast"
            described = served.test_client().get(f"/v1/models/sunspots/streams/{series}")
            assert described.get_json()["step"] == length
            online = served.test_client().post(url, json={"start": length, "window": [42.0]})
            assert online.status_code == 200 and online.get_json()["consumed"] == 1
            full = replay.test_client().post(url, json={"window": [*history, 42.0]})
            np.testing.assert_allclose(online.get_json()["forecast"],
                                       full.get_json()["forecast"], rtol=1e-5, atol=1e-4)
    finally:
        served.extensions["statecast"].close()
        replay.extensions["statecast"].close()


@pytest.mark.slow
def test_a_dask_local_cluster_gives_the_local_results(registry, tmp_path):
    frame = long_frame()
    source = tmp_path / "in.parquet"
    frame.to_parquet(source, index=False)
    spec = JobSpec("sunspots", str(registry), h=5)
    run_job(source, tmp_path / "local.parquet", spec, chunk_size=1)
    summary = run_job(source, tmp_path / "dask.parquet", spec, chunk_size=1, dask="local")
    assert summary["series"] == 3
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "local.parquet"),
                                  pd.read_parquet(tmp_path / "dask.parquet"))


@pytest.mark.parametrize("change,words", [
    (lambda f: f.drop(columns=["y"]), "missing columns"),
    (lambda f: f.assign(y=f.y.astype(str)), "must be numeric"),
    (lambda f: pd.concat([f, f.iloc[:1]]), "duplicate"),
    (lambda f: f.assign(y=f.y.where(f.index != 5)), "missing values"),
])
def test_bad_input_is_a_clear_error_and_no_output(registry, tmp_path, change, words):
    source = tmp_path / "in.parquet"
    change(long_frame()).to_parquet(source, index=False)
    target = tmp_path / "out.parquet"
    with pytest.raises(BatchInputError, match=words):
        run_job(source, target, JobSpec("sunspots", str(registry)), chunk_size=1)
    assert not target.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["in.parquet"]


def test_missing_values_can_be_filled(registry):
    frame = long_frame(shuffle=False)
    frame.loc[3, "y"] = np.nan
    filled = forecast(frame, "sunspots", 3, registry=registry, fill="ffill")
    manual = frame.copy()
    manual.loc[3, "y"] = manual.loc[2, "y"]
    np.testing.assert_array_equal(filled.sunspots,
                                  forecast(manual, "sunspots", 3, registry=registry).sunspots)


def test_command_line_batch_evaluate_and_plot(registry, tmp_path, capsys):
    frame = long_frame(datetimes=True)
    source = tmp_path / "in.csv"
    frame.to_csv(source, index=False)
    out, png = tmp_path / "bt.parquet", tmp_path / "plot.png"
    assert main(["batch", "--model", "sunspots", "--registry", str(registry), "--input",
                 str(source), "--output", str(out), "--h", "3", "--backtest", "--n-windows",
                 "2", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["series"] == 3
    assert main(["evaluate", str(out), "--metrics", "mae,smape,mase", "--train", str(source),
                 "--seasonality", "12"]) == 0
    printed = capsys.readouterr().out
    assert "mae" in printed and "mase" in printed
    forecast_out = tmp_path / "f.parquet"
    assert main(["batch", "--model", "sunspots", "--registry", str(registry), "--input",
                 str(source), "--output", str(forecast_out), "--plot", str(png),
                 "--quiet"]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["batch", "--model", "sunspots", "--registry", str(registry), "--input",
                 str(tmp_path / "nope.csv"), "--output", str(out), "--quiet"]) == 2


@pytest.mark.parametrize("lasts,freq", [
    (np.array([3, 10, -2]), 2),
    (np.array(["2024-01-01T05", "2024-03-31T23"], "datetime64[ns]"), pd.offsets.Hour(1)),
    (np.array(["2024-01-31", "2024-02-29"], "datetime64[ns]"), pd.offsets.MonthEnd(1)),
    (np.array(["2024-01-01", "2024-02-15"], "datetime64[ns]"), pd.offsets.MonthBegin(1)),
])
def test_future_times_of_many_series_equal_one_at_a_time(lasts, freq):
    from statecast.service.batch.frames import future_times, future_times_of

    expected = np.stack([future_times(last, 4, freq) for last in lasts])
    np.testing.assert_array_equal(future_times_of(lasts, 4, freq), expected)
