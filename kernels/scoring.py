"""Scoring a stream's committed forecasts against the observations that arrive later.

A stream keeps the forecasts it has committed and not yet seen observed, packed by age: for
``S`` scored steps, block ``d`` (``d = 0 .. S-1``) holds the forecast committed ``d``
observations ago, from its step ``d + 1`` on (``S - d`` rows). The first row of every block
is therefore a forecast of the next observation, at step ``d + 1``. An observation scores
those rows and ages every block by one; block ``S - 1`` is then fully scored and drops out,
and block 0 stays empty until the caller stores the forecast of its call there.

``values [K, targets]`` and ``bounds [K, levels, 2, targets]`` (``K = S (S + 1) / 2``) hold
NaN where nothing was forecast (a shorter horizon, a level that forecast did not ask for).
"""

from __future__ import annotations

import numpy as np
from numba import njit

#: Rows of the totals a stream's scores add to, before two rows (checks, covered) per level.
COUNT, ABS_ERROR, SMAPE = 0, 1, 2
TOTAL_ROWS = 3


def packed_rows(steps: int) -> int:
    """``K``: rows of the packed forecasts of ``steps`` scored steps."""
    return steps * (steps + 1) // 2


@njit(cache=True, nogil=True)
def _block(steps: int, age: int) -> int:
    """First packed row of the forecast committed ``age`` observations ago."""
    return age * steps - age * (age - 1) // 2


@njit(cache=True, nogil=True)
def score_observations(values: np.ndarray, bounds: np.ndarray, observed: np.ndarray,
                       rolling: np.ndarray, decay: float, totals: np.ndarray,
                       level_rows: np.ndarray, errors: np.ndarray, error_steps: np.ndarray
                       ) -> int:
    """Score ``observed [m, targets]`` (oldest first) against the packed forecasts, ageing
    them in place.

    Adds to ``totals [rows, S]`` per step: values scored, absolute errors, sMAPE terms
    (``|y - f| / (|y| + |f|)``, 0 when both are 0), and for the stream's level ``l`` the
    values checked (row ``level_rows[l]``) and covered (the next row). ``rolling [2, S]``
    holds per step the numerator and denominator of an exponentially weighted mean of the
    absolute error (mean over targets) with weight ``decay`` per older score. Each scored
    forecast's absolute errors are written to ``errors [K, targets]`` with their 1-based
    step in ``error_steps``; returns how many.
    """
    steps = rolling.shape[1]
    targets = values.shape[1]
    levels = bounds.shape[1]
    written = 0
    for i in range(observed.shape[0]):
        for age in range(steps):
            row = _block(steps, age)
            if np.isnan(values[row, 0]):
                continue
            total = 0.0
            for t in range(targets):
                y = np.float64(observed[i, t])
                f = np.float64(values[row, t])
                error = abs(y - f)
                scale = abs(y) + abs(f)
                totals[COUNT, age] += 1.0
                totals[ABS_ERROR, age] += error
                if scale > 0.0:
                    totals[SMAPE, age] += error / scale
                errors[written, t] = error
                total += error
                for level in range(levels):
                    lo = bounds[row, level, 0, t]
                    if np.isnan(lo):
                        continue
                    totals[level_rows[level], age] += 1.0
                    if lo <= observed[i, t] <= bounds[row, level, 1, t]:
                        totals[level_rows[level] + 1, age] += 1.0
            error_steps[written] = age + 1
            written += 1
            rolling[0, age] = decay * rolling[0, age] + total / targets
            rolling[1, age] = decay * rolling[1, age] + 1.0
        # Age every block by one (oldest first, so nothing is read after it is moved).
        for age in range(steps - 2, -1, -1):
            source = _block(steps, age)
            target = _block(steps, age + 1)
            for k in range(steps - age - 1):
                values[target + k] = values[source + 1 + k]
                bounds[target + k] = bounds[source + 1 + k]
        values[:steps] = np.nan
        bounds[:steps] = np.nan
    return written


@njit(cache=True, nogil=True)
def commit_forecast(values: np.ndarray, bounds: np.ndarray, steps: int, forecast: np.ndarray,
                    forecast_bounds: np.ndarray) -> None:
    """Store a committed forecast ``[horizon, targets]`` as the newest (block 0, the first
    ``steps`` rows), its first ``steps`` steps, with its bounds ``[horizon, levels, 2,
    targets]`` (no rows: none)."""
    values[:steps] = np.nan
    bounds[:steps] = np.nan
    rows = min(steps, forecast.shape[0])
    values[:rows] = forecast[:rows]
    if forecast_bounds.shape[0]:
        bounds[:rows] = forecast_bounds[:rows]
