"""Conformal calibration of a point model from a history file: the absolute errors of its
own backtest forecasts (:mod:`models.conformal`), stored beside the model version."""

from __future__ import annotations

import numpy as np
import pandas as pd

from statecast.models import Model
from statecast.models.conformal import Calibration, interval_names
from statecast.service.batch.engine import backtest, backtest_horizon
from statecast.service.batch.frames import BatchInputError, Columns, Series, series_of

#: NeuralForecast's and MLForecast's minimum: one window's errors say nothing of spread.
MIN_WINDOWS = 2
#: ``{"lo-80": float32 [series, h, targets], "hi-80": ..., ...}``.
Bounds = dict[str, np.ndarray]


def calibrate(frame: pd.DataFrame, model: Model, n_windows: int, step_size: int = 1,
              h: int | None = None, columns: Columns | None = None, fill: str | None = None
              ) -> Calibration:
    """Backtest every series of a long ``frame`` from its last ``n_windows`` cutoffs,
    ``step_size`` apart (the windows of NeuralForecast's ``PredictionIntervals``; its
    default step is 1), and keep the absolute errors ``[series * windows, h, targets]``."""
    h = backtest_horizon(model, h)
    series = series_of(frame, model, columns or Columns(), fill)
    if not series:
        raise BatchInputError("the history holds no series")
    scores = np.concatenate(backtest_errors(model, series, n_windows, step_size, h))
    return Calibration(scores, {"version": model.version, "windows": n_windows,
                                "step_size": step_size, "horizon": h,
                                "series": len(series)})


def backtest_errors(model: Model, series: list[Series], n_windows: int, step_size: int,
                    h: int) -> list[np.ndarray]:
    """Each series' absolute errors ``float32 [n_windows, h, targets]`` of the model's
    forecasts from its last ``n_windows`` cutoffs, ``step_size`` apart."""
    if n_windows < MIN_WINDOWS:
        raise BatchInputError(f"calibration needs at least {MIN_WINDOWS} windows")
    if step_size < 1:
        raise BatchInputError("step size must be at least 1")
    targets = [model.spec.features.index(name) for name in model.spec.targets]
    by_length: dict[int, list[int]] = {}
    for index, one in enumerate(series):
        by_length.setdefault(len(one.values), []).append(index)
    errors: list[np.ndarray] = [np.empty(0, np.float32)] * len(series)
    for members in by_length.values():
        stacked = np.stack([series[i].values for i in members])
        windows = [np.abs(forecasts.astype(np.float64) - stacked[:, cutoff + 1:cutoff + 1 + h][
            :, :, targets]) for cutoff, forecasts in backtest(model, stacked, h, n_windows,
                                                               step_size)]
        for row, index in enumerate(members):
            errors[index] = np.stack([window[row] for window in windows]).astype(np.float32)
    return errors


def series_bounds(output: pd.DataFrame, model: Model, series: list[Series], n_windows: int,
                  step_size: int, levels: tuple[float, ...], h: int) -> Bounds:
    """Conformal intervals of each series from its own backtest errors (NeuralForecast's and
    MLForecast's ``PredictionIntervals``: scores per series), around the forecast column of
    a job's ``output``."""
    forecasts = output[model.name].to_numpy(np.float32).reshape(len(series), h, 1)
    per_series = [Calibration(scores).intervals(forecast, levels) for scores, forecast
                  in zip(backtest_errors(model, series, n_windows, step_size, h), forecasts,
                         strict=True)]
    return {name: np.stack([bounds[name] for bounds in per_series]) for name in
            (per_series[0] if per_series else {})}


def conformal_bounds(output: pd.DataFrame, model: Model, calibration: Calibration,
                     levels: tuple[float, ...], h: int) -> Bounds:
    """Conformal intervals around the forecast column of a job's ``output``."""
    return calibration.intervals(output[model.name].to_numpy(np.float32).reshape(-1, h, 1),
                                 levels)


def interval_columns(output: pd.DataFrame, model: Model, bounds: Bounds,
                     levels: tuple[float, ...]) -> pd.DataFrame:
    """Nixtla's interval columns after the forecast
    (:func:`models.conformal.interval_names`)."""
    return output.assign(**{f"{model.name}-{name}": bounds[name][:, :, 0].ravel()
                            for name in interval_names(levels)})
