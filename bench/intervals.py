"""Empirical coverage of the bundled sunspots model's conformal intervals on held-out years.

Calibrated on 1700-1972 (the backtest windows of ``statecast calibrate``), then forecast from
every year 1972-1996 with the state after that year, 12 steps each, scored against
1973-2008, the years the model never saw in training. Prints the share of actual values
inside the 80% and 95% intervals, per horizon step and pooled, with the standard error over
the forecast origins (neighbouring origins overlap, so the pooled count overstates the
evidence).

Then the same through the service, which scores its own committed forecasts: a stream is
sent 1700-1972 in one call, then one year a call to 2008 asking for both levels; the
model's ``GET /v1/models/sunspots/accuracy`` gives coverage and error per step (every
forecast whose years arrived: origins 1972-2007), and the same figures computed here from
the answers must agree. Last, a model version without any calibration, served year by
year from 1700: its intervals come from the residuals the service scored online (after
``STATECAST_ONLINE_MIN_RESIDUALS`` = 50 per step), and their coverage on 1973-2008 is
printed too. ``python -m bench.intervals [--windows K]``.
"""

from __future__ import annotations

import argparse
import tempfile
from typing import Any

import numpy as np
import pandas as pd

LEVELS = (80.0, 95.0)


def main() -> None:
    from statsmodels.datasets import sunspots

    from statecast.models import Registry
    from statecast.service.batch.calibration import calibrate
    from statecast.service.bundled import seed_registry

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=60, help="calibration windows")
    args = parser.parse_args()
    data = sunspots.load_pandas().data
    years = data["YEAR"].astype(int).to_numpy()
    values = data["SUNACTIVITY"].to_numpy(np.float32)
    with tempfile.TemporaryDirectory() as root:
        registry = Registry(root)
        seed_registry(registry)
        model = registry.load("sunspots")
    train = years <= 1972
    frame = pd.DataFrame({"unique_id": "s", "ds": years[train], "y": values[train]})
    calibration = calibrate(frame, model, args.windows)
    h = model.spec.horizon
    origins = [i for i, year in enumerate(years) if 1972 <= year and i + h < len(years)]
    states = model.advance(model.new_arena(len(origins)),
                           [values[:i + 1].reshape(-1, 1) for i in origins])
    forecasts = model.predict(states, h)
    covered = {level: np.zeros((len(origins), h)) for level in LEVELS}
    for row, origin in enumerate(origins):
        actual = values[origin + 1:origin + 1 + h]
        bounds = calibration.intervals(forecasts[row], LEVELS)
        for level in LEVELS:
            name = f"{level:g}"
            inside = (bounds[f"lo-{name}"][:, 0] <= actual) & (actual <= bounds[f"hi-{name}"][:, 0])
            covered[level][row] = inside
    print(f"sunspots, calibrated on 1700-1972 with {args.windows} windows "
          f"({calibration.scores.shape[0]} errors per step); {len(origins)} forecasts from "
          f"{years[origins[0]]}-{years[origins[-1]]}, {h} steps each, scored on 1973-2008")
    for level in LEVELS:
        per_origin = covered[level].mean(axis=1)
        error = per_origin.std(ddof=1) / np.sqrt(len(per_origin))
        steps = " ".join(f"{v:.2f}" for v in covered[level].mean(axis=0))
        print(f"  {level:g}% interval: coverage {covered[level].mean():.3f} +- {error:.3f} "
              f"(per step 1-{h}: {steps})")
    mae = np.abs(forecasts[:, :, 0] - np.stack(
        [values[o + 1:o + 1 + h] for o in origins])).mean(axis=0)
    print("  MAE per step: " + " ".join(f"{v:.1f}" for v in mae))
    served_with_calibration(years, values, calibration)
    served_with_online_intervals(years, values)


def _client(root: str, **settings: Any) -> tuple[Any, Any]:
    from statecast.service.settings import Settings
    from statecast.service.startup import serving_app

    app = serving_app(Settings(registry=f"{root}/registry", store="memory",
                               access_log=False, **settings))
    return app, app.test_client()


def _call(client: Any, rows: np.ndarray, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/models/sunspots/streams/s/forecast",
                           json={"window": [[float(v)] for v in rows], **body})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def _coverage(answers: list[dict[str, Any]], values: np.ndarray, first: int,
              levels: tuple[float, ...]) -> dict[float, tuple[float, int]]:
    """Per level, the share of later values inside the served intervals, and its count,
    from the answers of calls whose forecast starts at ``first + row``."""
    found = {}
    for level in levels:
        inside = checked = 0
        for row, answer in enumerate(answers):
            for step, (lo, hi) in enumerate(zip(answer["intervals"][f"lo-{level:g}"],
                                                answer["intervals"][f"hi-{level:g}"],
                                                strict=True)):
                at = first + row + step
                if at < len(values):
                    checked += 1
                    inside += lo[0] <= values[at] <= hi[0]
        found[level] = (inside / checked, checked)
    return found


def served_with_calibration(years: np.ndarray, values: np.ndarray, calibration: Any) -> None:
    from statecast.models import Registry
    from statecast.service.bundled import seed_registry

    with tempfile.TemporaryDirectory() as root:
        registry = Registry(f"{root}/registry")
        seed_registry(registry)
        registry.set_calibration("sunspots", calibration)
        app, client = _client(root)
        held_out = int(np.flatnonzero(years == 1973)[0])
        answers = [_call(client, values[:held_out], level=list(LEVELS))]
        for index in range(held_out, len(values)):
            answers.append(_call(client, values[index:index + 1], level=list(LEVELS)))
        accuracy = client.get("/v1/models/sunspots/accuracy").get_json()
        app.extensions["statecast"].close()
    mine = _coverage(answers, values, held_out, LEVELS)
    print(f"through the service (stored calibration; forecasts from {years[held_out - 1]}-"
          f"{years[-1]}, each step scored once its year arrived): {accuracy['scored']} "
          "values scored")
    for level in LEVELS:
        name = f"{level:g}"
        checks = sum(step["count"] for step in accuracy["steps"] if name in step["coverage"])
        covered = sum(step["coverage"][name] * step["count"] for step in accuracy["steps"]
                      if name in step["coverage"])
        steps = " ".join(f"{step['coverage'].get(name, float('nan')):.2f}"
                         for step in accuracy["steps"])
        print(f"  {name}% interval: coverage {covered / checks:.3f} of {checks} "
              f"(computed from the answers: {mine[level][0]:.3f} of {mine[level][1]}; "
              f"per step: {steps})")
    print("  MAE per step: " + " ".join(f"{step['mae']:.1f}" for step in accuracy["steps"]))


def served_with_online_intervals(years: np.ndarray, values: np.ndarray) -> None:
    with tempfile.TemporaryDirectory() as root:
        app, client = _client(root, online_min_residuals=50)
        app.extensions["statecast"].service.online.refresh = 0.0
        first_levels = None
        held_out = int(np.flatnonzero(years == 1973)[0])
        answers = []
        _call(client, values[:20])
        for index in range(20, len(values)):
            response = client.post("/v1/models/sunspots/streams/s/forecast", json={
                "window": [[float(values[index])]], "level": list(LEVELS)})
            if response.status_code == 422:  # not enough residuals yet
                _call(client, values[index:index + 1])
                continue
            assert response.status_code == 200, response.get_json()
            first_levels = first_levels or int(years[index])
            if index >= held_out - 1:
                answers.append(response.get_json())
        app.extensions["statecast"].close()
    found = _coverage(answers, values, held_out, LEVELS)
    print(f"online intervals (no calibration; served year by year from 1700, levels given "
          f"from {first_levels} on, from the residuals scored in service):")
    for level in LEVELS:
        print(f"  {level:g}% interval on 1973-2008: coverage {found[level][0]:.3f} of "
              f"{found[level][1]}")


if __name__ == "__main__":
    main()
