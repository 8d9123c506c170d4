"""Empirical coverage of the bundled sunspots model's conformal intervals on held-out years.

Calibrated on 1700-1972 (the backtest windows of ``statecast calibrate``), then forecast from
every year 1972-1996 with the state after that year, 12 steps each, scored against
1973-2008, the years the model never saw in training. Prints the share of actual values
inside the 80% and 95% intervals, per horizon step and pooled, with the standard error over
the forecast origins (neighbouring origins overlap, so the pooled count overstates the
evidence). ``python -m bench.intervals [--windows K]``.
"""

from __future__ import annotations

import argparse
import tempfile

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


if __name__ == "__main__":
    main()
