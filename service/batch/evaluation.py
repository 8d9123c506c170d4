"""Forecast accuracy: MAE, RMSE, sMAPE and MASE per series (and cutoff) and per model
column, from a long frame holding the actual ``y`` beside forecast columns (what
``statecast batch --backtest`` writes).

- sMAPE is on the 0-200 scale: ``200 * mean(|y - f| / (|y| + |f|))`` (M4's definition; a
  step where both are 0 counts 0).
- MASE divides the MAE by the in-sample MAE of the seasonal naive forecast on the training
  series (``seasonality`` steps back), which must be given explicitly.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from statecast.service.batch.frames import BatchInputError, Columns

METRICS = ("mae", "rmse", "smape", "mase")


def _scales(train: pd.DataFrame, columns: Columns, seasonality: int) -> pd.Series:
    def scale(values: pd.Series) -> float:
        y = values.to_numpy(np.float64)
        if len(y) <= seasonality:
            return np.nan
        return float(np.mean(np.abs(y[seasonality:] - y[:-seasonality])))

    ordered = train.sort_values([columns.id, columns.time], kind="stable")
    return ordered.groupby(columns.id, sort=False)[columns.target].apply(scale)


def evaluate(forecasts: pd.DataFrame, metrics: tuple[str, ...] = ("mae", "rmse", "smape"),
             *, train: pd.DataFrame | None = None, seasonality: int | None = None,
             columns: Columns | None = None) -> pd.DataFrame:
    """One row per series (and cutoff) and metric, one column per model: the layout of
    ``utilsforecast.evaluation.evaluate``."""
    columns = columns or Columns()
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown:
        raise BatchInputError(f"unknown metrics {unknown}; known: {', '.join(METRICS)}")
    for needed in (columns.id, columns.target):
        if needed not in forecasts.columns:
            raise BatchInputError(f"the forecasts need column {needed!r} (the actual values:"
                                  " run statecast batch --backtest)")
    keys = [columns.id] + (["cutoff"] if "cutoff" in forecasts.columns else [])
    models = [c for c in forecasts.columns if c not in {*keys, columns.time, columns.target}]
    if not models:
        raise BatchInputError("the forecasts hold no model column")
    scales = None
    if "mase" in metrics:
        if train is None or seasonality is None or seasonality < 1:
            raise BatchInputError("MASE needs the training series (--train) and an explicit "
                                  "--seasonality >= 1")
        scales = _scales(train, columns, seasonality)
    rows = []
    actual = forecasts[columns.target].to_numpy(np.float64)
    for key, index in forecasts.groupby(keys, sort=True).indices.items():
        key = key if isinstance(key, tuple) else (key,)
        y = actual[index]
        for metric in metrics:
            row = dict(zip(keys, key, strict=True))
            row["metric"] = metric
            for model in models:
                f = forecasts[model].to_numpy(np.float64)[index]
                error = np.abs(y - f)
                if metric == "mae":
                    value = error.mean()
                elif metric == "rmse":
                    value = np.sqrt((error ** 2).mean())
                elif metric == "smape":
                    denominator = np.abs(y) + np.abs(f)
                    ratio = np.divide(error, denominator, out=np.zeros_like(error),
                                      where=denominator > 0)
                    value = 200.0 * ratio.mean()
                else:
                    assert scales is not None
                    scale = scales.get(key[0], np.nan)
                    value = error.mean() / scale if scale and np.isfinite(scale) else np.nan
                row[model] = float(value)
            rows.append(row)
    return pd.DataFrame(rows)
