"""Scoring streams' committed forecasts against the observations that arrive later.

A stream keeps the forecasts it has committed and not yet seen observed, packed by age: for
``S`` scored steps, block ``d`` (``d = 0 .. S-1``) holds the forecast committed ``d``
observations ago, from its step ``d + 1`` on (``S - d`` rows). The first row of every block
is therefore a forecast of the next observation, at step ``d + 1``. An observation scores
those rows and ages every block by one; block ``S - 1`` is then fully scored and drops out,
and block 0 is where the forecast of the call is stored.

A stream's pending forecasts are one record of bytes, 8-byte aligned: a float64 header
(``S``, targets ``T``, levels ``L``, values scored, the ``L`` levels, then per step the
numerator and denominator of its rolling error), then float32 ``values [K, T]`` and
``bounds [K, L, 2, T]`` (``K = S (S + 1) / 2``; NaN where nothing was forecast), then
padding. The kernel scores many streams' records in one call, in place, read through a
float64 and a float32 view of the same buffer.
"""

from __future__ import annotations

import numpy as np
from numba import njit

#: Header values before the levels: steps, targets, levels, values scored.
HEADER = 4
#: Rows of the sums a stream's scores add to, before two rows (checks, covered) per level.
COUNT, ABS_ERROR, SMAPE = 0, 1, 2
TOTAL_ROWS = 3


def packed_rows(steps: int) -> int:
    """``K``: rows of the packed forecasts of ``steps`` scored steps."""
    return steps * (steps + 1) // 2


def record_bytes(steps: int, targets: int, levels: int) -> int:
    """Bytes of one stream's record, padding included."""
    size = 8 * (HEADER + levels + 2 * steps) + 4 * packed_rows(steps) * targets * (
        1 + 2 * levels)
    return size + (-size) % 8


@njit(cache=True, nogil=True)
def _block(steps: int, age: int) -> int:
    """First packed row of the forecast committed ``age`` observations ago."""
    return age * steps - age * (age - 1) // 2


# Holds the GIL: a call takes microseconds, and handing the GIL to another thread and
# waiting to get it back cost a server's worker thread ~30 us a call (measured).
@njit(cache=True)
def score_streams(f8: np.ndarray, f4: np.ndarray, starts: np.ndarray, observed: np.ndarray,
                  observed_starts: np.ndarray, decay: float, forecasts: np.ndarray,
                  forecast_bounds: np.ndarray, bounds_starts: np.ndarray,
                  level_rows: np.ndarray, sums: np.ndarray, errors: np.ndarray,
                  error_steps: np.ndarray, owners: np.ndarray) -> int:
    """Score each stream's new observations against its pending forecasts, age them, and
    store its committed forecast as the newest, in place.

    Stream ``n``'s record starts at byte ``starts[n]`` of the buffer ``f8``/``f4`` view;
    its observations (targets only) are ``observed[observed_starts[n]:observed_starts[n +
    1]]``, oldest first; its forecast ``forecasts[n] [S, T]`` (NaN past its horizon), its
    bounds ``forecast_bounds[bounds_starts[n]:]`` as ``[S, L, 2, T]`` (``-1``: none);
    ``level_rows[n, l]`` is the row of ``sums[n]`` counting checks of its level ``l`` (the
    next row: covered).

    Adds to ``sums [N, rows, S]`` per step: values scored, absolute errors, sMAPE terms
    (``|y - f| / (|y| + |f|)``, 0 when both are 0), checks and covered per level; updates
    the rolling error (an exponentially weighted mean of the absolute error, mean over
    targets, weight ``decay`` per older score) and the count of values scored. Each scored
    forecast's absolute errors go to ``errors``, its 1-based step to ``error_steps`` and
    the stream to ``owners``; returns how many.
    """
    written = 0
    for n in range(starts.shape[0]):
        head = starts[n] // 8
        steps = int(f8[head])
        targets = int(f8[head + 1])
        levels = int(f8[head + 2])
        roll = head + HEADER + levels
        first = (starts[n] + 8 * (HEADER + levels + 2 * steps)) // 4
        rows = steps * (steps + 1) // 2
        bound_first = first + rows * targets
        width = levels * 2 * targets  # a bounds row
        for i in range(observed_starts[n], observed_starts[n + 1]):
            for age in range(steps):
                row = _block(steps, age)
                at = first + row * targets
                finite = True  # a forecast that is not finite is not scored
                for t in range(targets):
                    finite = finite and np.isfinite(f4[at + t])
                if not finite:
                    continue
                total = 0.0
                for t in range(targets):
                    y = np.float64(observed[i, t])
                    f = np.float64(f4[at + t])
                    error = abs(y - f)
                    scale = abs(y) + abs(f)
                    sums[n, COUNT, age] += 1.0
                    sums[n, ABS_ERROR, age] += error
                    if scale > 0.0:
                        sums[n, SMAPE, age] += error / scale
                    errors[written, t] = error
                    total += error
                    for level in range(levels):
                        lo_at = bound_first + row * width + level * 2 * targets + t
                        lo = f4[lo_at]
                        if np.isnan(lo):
                            continue
                        sums[n, level_rows[n, level], age] += 1.0
                        if lo <= observed[i, t] <= f4[lo_at + targets]:
                            sums[n, level_rows[n, level] + 1, age] += 1.0
                error_steps[written] = age + 1
                owners[written] = n
                written += 1
                f8[roll + age] = decay * f8[roll + age] + total / targets
                f8[roll + steps + age] = decay * f8[roll + steps + age] + 1.0
                f8[head + 3] += targets
            # Age every block by one (oldest first, so nothing is read after it moved);
            # block 0 is empty until the newest forecast is stored.
            for age in range(steps - 2, -1, -1):
                source = _block(steps, age) + 1
                target = _block(steps, age + 1)
                count = steps - age - 1
                f4[first + target * targets:first + (target + count) * targets] = f4[
                    first + source * targets:first + (source + count) * targets]
                f4[bound_first + target * width:bound_first + (target + count) * width] = f4[
                    bound_first + source * width:bound_first + (source + count) * width]
            f4[first:first + steps * targets] = np.nan
            f4[bound_first:bound_first + steps * width] = np.nan
        # The newest forecast, and its bounds.
        f4[first:first + steps * targets] = forecasts[n].ravel()
        f4[bound_first:bound_first + steps * width] = np.nan
        if bounds_starts[n] >= 0:
            f4[bound_first:bound_first + steps * width] = forecast_bounds[
                bounds_starts[n]:bounds_starts[n] + steps * width]
    return written
