"""Online scoring: every committed forecast is scored once against the observations that
arrive for it, per model version and horizon step, in the stream's compare-and-set."""

import threading
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from statecast.models.conformal import conformal_intervals
from statecast.service.accuracy import (
    RESIDUALS_PER_WRITE,
    Scores,
    accuracy_report,
    decode_residual_chunk,
    online_calibration,
    residual_chunk,
)
from statecast.service.scoring import MAX_SCORED_STEPS, ROLLING_SPAN, Pending, Scorer, WriteScores
from statecast.service.settings import Settings
from statecast.service.startup import serving_app
from statecast.service.stores import MemoryStore, SqliteStore, StreamRecord, open_store

URL = "/v1/models/sunspots/streams/{}/forecast"


def series(n=400, seed=0):
    rng = np.random.default_rng(seed)
    return (60 + 45 * np.sin(np.arange(n) / 9.0) + rng.normal(0, 6, n)).round(2)


def one_target(steps):
    """What a scorer reads of a model: one feature that is its target, ``steps`` steps."""
    spec = SimpleNamespace(features=("y",), targets=("y",), horizon=steps)
    return SimpleNamespace(spec=spec)


def advance(data, observed, forecast, bounds=None, levels=(), steps=4):
    """A stream's pending forecasts after one committed call, and what it scored."""
    scorer = Scorer(one_target(steps), 1)
    scorer.add(0, data, observed, forecast, bounds, levels)
    data = scorer.run()[0]
    scores = scorer.scores([0])
    return data, None if scores is None else scores.select([True])


def reference_scores(calls, steps):
    """A plain reference: forecasts kept in a dict by origin; each observation scored
    against every kept forecast that covers it. ``calls``: (observations, forecast,
    bounds per level or None, levels)."""
    kept, step = {}, 0
    count, abs_error, smape = np.zeros(steps), np.zeros(steps), np.zeros(steps)
    checks, covered = {}, {}
    for observations, forecast, bounds, levels in calls:
        for y in observations[:, 0]:
            for origin, (values, lows_highs) in list(kept.items()):
                k = step - origin
                if 0 <= k < len(values):
                    f = values[k]
                    count[k] += 1
                    abs_error[k] += abs(y - f)
                    smape[k] += abs(y - f) / (abs(y) + abs(f)) if abs(y) + abs(f) else 0.0
                    for level, (lo, hi) in lows_highs.items():
                        checks.setdefault(level, np.zeros(steps))[k] += 1
                        covered.setdefault(level, np.zeros(steps))[k] += lo[k] <= y <= hi[k]
            step += 1
        values = forecast[:steps, 0].astype(np.float64)
        bands = {} if bounds is None else {
            level: (bounds[f"lo-{level}"][:steps, 0], bounds[f"hi-{level}"][:steps, 0])
            for level in levels}
        kept[step] = (values, bands)
    return count, abs_error, smape, checks, covered


def test_the_kernel_scores_like_a_plain_reference():
    rng = np.random.default_rng(3)
    steps = 4
    pending = b""
    calls, totals = [], {}
    for _ in range(60):
        observations = rng.normal(size=(int(rng.integers(1, 4)), 1)).astype(np.float32)
        horizon = int(rng.integers(1, steps + 2))
        forecast = rng.normal(size=(horizon, 1)).astype(np.float32)
        levels = (80.0,) if rng.random() < 0.5 else ()
        spread = np.abs(rng.normal(size=(horizon, 1))).astype(np.float32)
        bounds = {"lo-80": forecast - spread, "hi-80": forecast + spread} if levels else None
        pending, scores = advance(pending, observations, forecast, bounds, levels)
        if scores is not None:
            for name, row in scores.totals.items():
                totals[name] = totals.get(name, 0) + row
        calls.append((observations, forecast, bounds, ("80",) if levels else ()))
    count, abs_error, smape, checks, covered = reference_scores(calls, steps)
    np.testing.assert_array_equal(totals["count"], count)
    np.testing.assert_allclose(totals["abs_error"], abs_error, rtol=1e-6)
    np.testing.assert_allclose(totals["smape"], smape, rtol=1e-6)
    np.testing.assert_array_equal(totals["checks:80"], checks["80"])
    np.testing.assert_array_equal(totals["covered:80"], covered["80"])
    assert Pending.decode(pending).scored == count.sum()


def test_pending_forecasts_round_trip_through_bytes():
    pending = Pending.empty(3, 2, (80.0, 99.99999))
    pending.values[:] = np.arange(12, dtype=np.float32).reshape(6, 2)
    pending.bounds[:] = 7.0
    pending.rolling[:] = [[1.5, 2.5, 0.0], [1.0, 2.0, 0.0]]
    back = Pending.decode(pending.encode())
    assert back.levels == (80.0, 99.99999) and back.steps == 3
    np.testing.assert_array_equal(back.values, pending.values)
    np.testing.assert_array_equal(back.bounds, pending.bounds)
    assert back.rolling_mae() == [1.5, 1.25, None]


def test_a_streams_rolling_error_is_pandas_ewm_of_its_errors():
    rng = np.random.default_rng(5)
    pending, errors, before = b"", [], None
    for _ in range(120):
        y = rng.normal(size=(1, 1)).astype(np.float32)
        forecast = rng.normal(size=(1, 1)).astype(np.float32)
        pending, _ = advance(pending, y, forecast, steps=1)
        if before is not None:
            errors.append(abs(float(y[0, 0]) - float(before)))
        before = forecast[0, 0]
    expected = pd.Series(errors).ewm(span=ROLLING_SPAN).mean().iloc[-1]
    assert Pending.decode(pending).rolling_mae()[0] == pytest.approx(expected, rel=1e-9)


def test_smape_is_nixtlas():
    from utilsforecast.losses import smape

    rng = np.random.default_rng(2)
    y = np.concatenate([[0.0], rng.normal(size=30)]).astype(np.float32)
    f = np.concatenate([[0.0], rng.normal(size=30)]).astype(np.float32)
    pending, total, count = b"", 0.0, 0
    previous = np.zeros((0, 1), np.float32)
    for value, forecast in zip(y, f, strict=True):
        pending, scores = advance(pending, previous, np.array([[forecast]], np.float32),
                                  steps=1)
        if scores is not None:
            total += scores.totals["smape"][0]
            count += scores.totals["count"][0]
        previous = np.array([[value]], np.float32)
    _, scores = advance(pending, previous, np.zeros((1, 1), np.float32), steps=1)
    total += scores.totals["smape"][0]
    count += scores.totals["count"][0]
    frame = pd.DataFrame({"unique_id": "a", "ds": range(len(y)), "y": y.astype(float),
                          "m": f.astype(float)})
    assert total / count == pytest.approx(float(smape(frame, ["m"])["m"].iloc[0]), rel=1e-5)


def test_online_calibration_is_conformal_on_the_newest_residuals_per_step():
    rng = np.random.default_rng(1)
    errors = np.abs(rng.normal(size=(150, 1))).astype(np.float32)
    steps = np.tile(np.array([1, 2, 2], np.int32), 50)  # step 2 scored twice as often
    chunks = [residual_chunk(Scores({}, errors[i:i + 30], steps[i:i + 30]))
              for i in range(0, 150, 30)]
    assert online_calibration(chunks, min_residuals=51) is None  # step 1 has 50
    calibration = online_calibration(chunks, min_residuals=50)
    assert calibration.scores.shape == (50, 2, 1)
    np.testing.assert_array_equal(calibration.scores[:, 0, 0], errors[steps == 1, 0])
    np.testing.assert_array_equal(calibration.scores[:, 1, 0], errors[steps == 2, 0][-50:])
    forecast = np.zeros((2, 1), np.float32)
    np.testing.assert_allclose(
        calibration.intervals(forecast, [80])["hi-80"],
        conformal_intervals(forecast, calibration.scores, [80])["hi-80"])
    # One write keeps its newest RESIDUALS_PER_WRITE errors per step.
    big = residual_chunk(Scores({}, errors, np.ones(150, np.int32)))
    assert online_calibration([big], 1).scores.shape == (RESIDUALS_PER_WRITE, 1, 1)


#: The fixture that gives an empty Redis of each kind.
REDIS = {"redis": "redis_url", "redis-cluster": "redis_cluster_url"}


@pytest.fixture(params=["memory", "sqlite", "redis", "redis-cluster"])
def store_url(request, tmp_path):
    if request.param == "memory":
        return "memory"
    if request.param == "sqlite":
        return f"sqlite:{tmp_path / 'state.db'}"
    return request.getfixturevalue(REDIS[request.param])


def make_app(tmp_path, store, **settings):
    return serving_app(Settings(registry=tmp_path / "registry", store=store,
                                access_log=False, **settings))


def served(client, stream, rows, start=None, **body):
    payload = {"window": [[float(v)] for v in rows], **body}
    if start is not None:
        payload["start"] = start
    response = client.post(URL.format(stream), json=payload)
    assert response.status_code == 200, response.json
    return response.json


def expected_totals(origins, forecasts, y, final_step, steps=12):
    """Per step: count and summed absolute error of the forecasts committed at
    ``origins`` (the step after each write) against ``y`` up to ``final_step``."""
    count, error = np.zeros(steps), np.zeros(steps)
    for origin in origins:
        for k in range(steps):
            if origin + k < final_step:
                count[k] += 1
                error[k] += abs(y[origin + k] - forecasts[origin][k])
    return count, error


def test_the_service_scores_each_committed_forecast_once(tmp_path, store_url):
    app = make_app(tmp_path, store_url)
    client = app.test_client()
    y = series()
    forecasts, origins = {}, []
    answer = served(client, "a", y[:30])
    forecasts[answer["step"]] = np.array(answer["forecast"])[:, 0]
    origins.append(answer["step"])
    step = 30
    for size in [1, 1, 3, 1, 2, 1, 1, 5, 1, 1, 1, 1, 14, 1, 1]:
        answer = served(client, "a", y[step:step + size])
        # A retry of the same call consumes nothing, commits nothing and scores nothing.
        again = served(client, "a", y[step:step + size], start=step)
        assert again["consumed"] == 0 and again["forecast"] == answer["forecast"]
        # A what-if is not kept.
        served(client, "a", y[step + size:step + size + 1], commit=False)
        step += size
        forecasts[step] = np.array(answer["forecast"])[:, 0]
        origins.append(step)
    count, error = expected_totals(origins, forecasts, y, step)
    accuracy = client.get("/v1/models/sunspots/accuracy").get_json()
    assert accuracy["version"] == "1" and accuracy["scored"] == count.sum()
    assert [s["count"] for s in accuracy["steps"]] == count.tolist()
    for reported, n, total in zip(accuracy["steps"], count, error, strict=True):
        assert reported["mae"] == pytest.approx(total / n, rel=1e-5)
        assert 0 <= reported["smape"] <= 1 and reported["coverage"] == {}
    assert accuracy["since"] is not None
    assert client.get("/v1/models/sunspots/accuracy?version=1").get_json() == accuracy
    described = client.get("/v1/models/sunspots/streams/a").get_json()
    assert described["accuracy"]["scored"] == count.sum()
    assert len(described["accuracy"]["rolling_mae"]) == 12
    # The metrics count the same scores.
    text = client.get("/metrics").get_data(as_text=True)
    exported = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("statecast_forecast_abs_error_count{"))
    assert exported == count.sum()
    app.extensions["statecast"].close()


def test_a_reset_forgets_the_streams_pending_forecasts(tmp_path):
    app = make_app(tmp_path, "memory")
    client = app.test_client()
    y = series()
    served(client, "a", y[:30])
    served(client, "a", y[:30], reset=True)
    assert client.get("/v1/models/sunspots/accuracy").get_json()["scored"] == 0
    served(client, "a", y[30:31])
    assert client.get("/v1/models/sunspots/accuracy").get_json()["scored"] == 1


def test_scores_and_pending_forecasts_survive_a_restart(tmp_path, store_url):
    if store_url == "memory":
        pytest.skip("the memory store keeps nothing across restarts, by design")
    y = series()
    app = make_app(tmp_path, store_url)
    client = app.test_client()
    served(client, "a", y[:30])
    for i in range(30, 40):
        served(client, "a", y[i:i + 1])
    before = client.get("/v1/models/sunspots/accuracy").get_json()
    app.extensions["statecast"].close()
    app = make_app(tmp_path, store_url)
    client = app.test_client()
    assert client.get("/v1/models/sunspots/accuracy").get_json() == before
    served(client, "a", y[40:41])
    after = client.get("/v1/models/sunspots/accuracy").get_json()
    # The next observation scores the 11 forecasts committed before the restart and the
    # one of the last call before it (steps 1 .. 11 of those, step 1 of the newest).
    assert after["scored"] == before["scored"] + 11
    app.extensions["statecast"].close()


def test_concurrent_calls_on_one_stream_score_each_forecast_once(tmp_path, store_url):
    app = make_app(tmp_path, store_url)
    y = series(260)
    served(app.test_client(), "a", y[:30])
    origins = {30}
    forecasts = {}
    lock = threading.Lock()
    errors = []

    def worker(seed):
        client = app.test_client()
        rng = np.random.default_rng(seed)
        for _ in range(25):
            end = int(rng.integers(31, 260))
            start = int(rng.integers(max(0, end - 40), end))
            response = client.post(URL.format("a"), json={
                "start": start, "window": [[float(v)] for v in y[start:end]]})
            if response.status_code == 409:  # a gap: another call has not caught up yet
                continue
            if response.status_code != 200:
                errors.append(response.get_json())
                continue
            body = response.get_json()
            if body["consumed"]:
                with lock:
                    origins.add(body["step"])
                    forecasts[body["step"]] = np.array(body["forecast"])[:, 0]

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    client = app.test_client()
    final = client.get("/v1/models/sunspots/streams/a").get_json()["step"]
    assert max(origins) == final
    accuracy = client.get("/v1/models/sunspots/accuracy").get_json()
    count = np.zeros(12)
    for origin in origins:
        for k in range(12):
            count[k] += origin + k < final
    assert [s["count"] for s in accuracy["steps"]] == count.tolist()
    app.extensions["statecast"].close()


def test_a_batch_scores_like_single_calls(tmp_path):
    y = series()
    singles = make_app(tmp_path / "one", "memory").test_client()
    batch_app = make_app(tmp_path / "many", "memory")
    batch = batch_app.test_client()
    for stream in ("a", "b"):
        served(singles, stream, y[:30])
    batch.post("/v1/models/sunspots/forecast", json={"items": [
        {"stream": s, "window": [[float(v)] for v in y[:30]]} for s in ("a", "b")]})
    for i in range(30, 50):
        for stream in ("a", "b"):
            served(singles, stream, y[i:i + 1])
        response = batch.post("/v1/models/sunspots/forecast", json={"items": [
            {"stream": s, "window": [[float(y[i])]]} for s in ("a", "b")]})
        assert all("error" not in item for item in response.get_json()["items"])
    one = singles.get("/v1/models/sunspots/accuracy").get_json()
    many = batch.get("/v1/models/sunspots/accuracy").get_json()
    assert [s["count"] for s in one["steps"]] == [s["count"] for s in many["steps"]]
    for a, b in zip(one["steps"], many["steps"], strict=True):
        assert a["mae"] == pytest.approx(b["mae"], rel=1e-5)


def test_online_intervals_come_once_enough_residuals_are_scored(tmp_path, store_url):
    app = make_app(tmp_path, store_url, online_min_residuals=20)
    client = app.test_client()
    y = series()
    served(client, "a", y[:30])
    refused = client.post(URL.format("a"), json={"window": [[float(y[30])]], "level": [80],
                                                  "horizon": 3})
    assert refused.status_code == 422
    assert refused.get_json()["error"]["code"] == "level_unavailable"
    assert "20 residuals" in refused.get_json()["error"]["message"]
    for i in range(31, 55):
        served(client, "a", y[i:i + 1])
    app.extensions["statecast"].service.online.refresh = 0.0
    chunks = app.extensions["statecast"].store.residuals("sunspots", "1")
    answer = served(client, "a", y[55:56], level=[80, 95], horizon=3)
    calibration = online_calibration(chunks, 20)
    forecast = np.array(answer["forecast"], np.float32)
    expected = conformal_intervals(forecast, calibration.scores[:, :3], [80, 95])
    for name, bound in expected.items():
        np.testing.assert_allclose(answer["intervals"][name], bound, rtol=1e-6)
    # Intervals served are checked against the observations that follow.
    for i in range(56, 60):
        served(client, "a", y[i:i + 1], level=[80], horizon=3)
    steps = client.get("/v1/models/sunspots/accuracy").get_json()["steps"]
    assert set(steps[0]["coverage"]) == {"80", "95"}
    text = client.get("/metrics").get_data(as_text=True)
    assert 'statecast_interval_checks_total{level="80",model="sunspots",version="1"}' in text
    app.extensions["statecast"].close()


def test_scoring_can_be_turned_off(tmp_path):
    app = make_app(tmp_path, "memory", scoring=False)
    client = app.test_client()
    y = series()
    served(client, "a", y[:30])
    served(client, "a", y[30:31])
    assert client.get("/v1/models/sunspots/accuracy").get_json()["scored"] == 0
    assert "accuracy" not in client.get("/v1/models/sunspots/streams/a").get_json()


@pytest.fixture(params=["memory", "sqlite", "redis", "redis-cluster"])
def store(request, tmp_path):
    opened = {"memory": lambda: MemoryStore(),
              "sqlite": lambda: SqliteStore(tmp_path / "s.db")}.get(request.param)
    opened = opened() if opened else open_store(request.getfixturevalue(REDIS[request.param]))
    yield opened
    opened.close()


def record(stream, revision=0):
    return StreamRecord(model="m", stream=stream, version="1", origin=0, step=1,
                        state=np.zeros(2, np.float32), tail=np.zeros((1, 1), np.float32),
                        revision=revision, pending=b"kept")


def write_scores(*errors):
    """What writes scored: each one absolute error at step 1 (None: nothing)."""
    sums = np.zeros((len(errors), 3, 2))
    owners, values = [], []
    for index, error in enumerate(errors):
        if error is not None:
            sums[index, :, 0] = [1.0, error, 0.5]
            owners.append(index)
            values.append([error])
    return WriteScores((), sums, np.array(values, np.float32).reshape(-1, 1),
                       np.ones(len(values), np.int32), np.array(owners, np.int64))


def test_a_failed_write_adds_no_scores(store):
    assert store.compare_and_set_many([(record("a"), None), (record("b"), None)],
                                      write_scores(1.0, 2.0)) == [True, True]
    # b's expected revision is stale: only a's write and score land.
    results = store.compare_and_set_many(
        [(record("a", 1), 0), (record("b", 1), 7), (record("c"), None)],
        write_scores(4.0, 100.0, None))
    assert results == [True, False, True]
    assert not store.compare_and_set(record("a", 2), 0, write_scores(1000.0))
    since, totals = store.accuracy("m", "1")
    assert since is not None
    np.testing.assert_array_equal(totals["count"], [3.0, 0.0])
    np.testing.assert_array_equal(totals["abs_error"], [7.0, 0.0])
    assert store.get("m", "a").pending == b"kept"
    kept = [decode_residual_chunk(chunk)[1] for chunk in store.residuals("m", "1")]
    assert sorted(np.concatenate(kept).ravel()) == [1.0, 2.0, 4.0]
    assert store.accuracy("m", "2") == (None, {})


def test_at_most_the_scored_steps_are_kept():
    assert MAX_SCORED_STEPS == 48
    pending, _ = advance(b"", np.zeros((0, 1), np.float32), np.ones((5, 1), np.float32),
                         steps=2)
    decoded = Pending.decode(pending)
    assert decoded.values.shape == (3, 1)
    np.testing.assert_array_equal(decoded.values[:2, 0], [1.0, 1.0])
    assert np.isnan(decoded.values[2, 0])


def test_a_level_never_covered_reports_zero_coverage(store):
    sums = np.zeros((1, 5, 2))
    sums[0, :, 0] = [1.0, 3.0, 0.2, 1.0, 0.0]  # count, error, smape, checks:80, covered:80
    scores = WriteScores(("80",), sums, np.array([[3.0]], np.float32),
                         np.array([1], np.int32), np.array([0], np.int64))
    assert store.compare_and_set(record("a"), None, scores)
    since, totals = store.accuracy("m", "1")
    report = accuracy_report("m", "1", since, totals)
    assert report["steps"][0]["coverage"] == {"80": 0.0}
    assert report["steps"][1] == {"step": 2, "count": 0, "mae": None, "smape": None,
                                  "coverage": {}}


def test_a_stream_written_twice_in_one_call_is_written_once(store):
    results = store.compare_and_set_many([(record("a"), None), (record("a"), None)],
                                         write_scores(1.0, 2.0))
    assert results == [True, False]
    np.testing.assert_array_equal(store.accuracy("m", "1")[1]["count"], [1.0, 0.0])


def test_a_forecast_that_is_not_finite_is_not_scored():
    forecast = np.array([[np.inf], [1.0]], np.float32)
    pending, _ = advance(b"", np.zeros((0, 1), np.float32), forecast, steps=2)
    pending, scores = advance(pending, np.ones((1, 1), np.float32),
                              np.ones((2, 1), np.float32), steps=2)
    assert scores is None
    pending, scores = advance(pending, np.ones((1, 1), np.float32),
                              np.ones((2, 1), np.float32), steps=2)
    np.testing.assert_array_equal(scores.totals["count"], [1.0, 1.0])  # 1.0 at step 2 too


def test_a_batch_keeps_residuals_from_all_its_streams():
    errors = np.arange(200, dtype=np.float32).reshape(-1, 1)
    _, kept = decode_residual_chunk(residual_chunk(
        Scores({}, errors, np.ones(200, np.int32))))
    assert len(kept) == RESIDUALS_PER_WRITE and kept[0, 0] == 0 and kept[-1, 0] == 199
