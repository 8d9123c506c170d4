"""The numbers of a batch job: states after each series' history, forecasts from states, and
backtest cutoffs. Many series of one length run in one kernel call.

States and forecasts come from :meth:`Model.advance` and :meth:`Model.predict`, the code
the service runs: a ``carry`` model runs the whole history from its initial state, a
``window:W`` model its last W observations. A series handed to the service therefore
continues exactly where the batch left it.
"""

from __future__ import annotations

import numpy as np

from statecast.models import Model
from statecast.models.windowed import Scaling, point_forecasts, window_outputs
from statecast.service.batch.frames import BatchInputError
from statecast.service.requests import MAX_RECURSIVE_HORIZON, future_features_of


def horizon_of(model: Model, h: int | None, has_future: bool = False) -> int:
    """``h`` (None: the model's horizon), refused when the model cannot forecast it; models
    that need future covariates are refused when no future frame is given, and the others
    when one is."""
    spec = model.spec
    h = spec.horizon if h is None else h
    limit = spec.horizon if spec.forecast_mode == "direct" else MAX_RECURSIVE_HORIZON
    if not 1 <= h <= limit:
        raise BatchInputError(f"horizon {h} must be 1-{limit} for {model.name}")
    needed = future_features_of(spec)
    if needed and not has_future:
        raise BatchInputError(f"{model.name} needs the future values of {list(needed)} for "
                              "each forecast step: pass --future FILE (unique_id, ds and "
                              "those columns)")
    if needed and not spec.forecasts_from_window:
        raise BatchInputError(f"{model.name} needs future covariates; batch jobs feed them "
                              "to window models only: use the /v1 API")
    if has_future and not needed:
        raise BatchInputError(f"{model.name} takes no future covariates: drop --future")
    return h


def window_outputs_of(model: Model, histories: list[np.ndarray], h: int,
                      future: np.ndarray | None) -> tuple[np.ndarray, Scaling]:
    """:func:`models.windowed.window_outputs` of a model that forecasts from its window,
    on each series' last W observations (a shorter series is left-padded with zeros,
    outside the window statistics, where the model normalises each window as
    NeuralForecast does)."""
    spec = model.spec
    window = spec.window or 0
    windows = np.zeros((len(histories), window, spec.input_size), np.float32)
    observed = np.empty(len(histories), np.int64)
    for index, history in enumerate(histories):
        used = min(len(history), window)
        if used < window and spec.window_scaler is None:
            raise BatchInputError(f"{model.name} reads the last {window} observations; a "
                                  f"series has {len(history)}")
        windows[index, window - used:] = history[len(history) - used:]
        observed[index] = used
    return window_outputs(model, windows, future, h, observed)


def window_forecasts(model: Model, histories: list[np.ndarray], h: int,
                     future: np.ndarray | None) -> np.ndarray:
    """``float32 [series, h, targets]`` of a model that forecasts from its window
    (:func:`window_outputs_of`)."""
    return point_forecasts(model, *window_outputs_of(model, histories, h, future))


def backtest_horizon(model: Model, h: int | None) -> int:
    """:func:`horizon_of` for a backtest, whose future covariates come from the history."""
    return horizon_of(model, h, bool(model.spec.forecasts_from_window
                                     and model.spec.future_features))


def final_states(model: Model, histories: list[np.ndarray]) -> np.ndarray:
    """``float32 [series, state]``: each series' state after its raw history."""
    return model.advance(model.new_arena(len(histories)), histories)


def cutoffs(length: int, h: int, n_windows: int, step: int) -> list[int]:
    """Index of the last observation before each backtest window (oldest first): the last
    window's h steps are the series' last h observations."""
    return [length - h - (n_windows - 1 - k) * step - 1 for k in range(n_windows)]


def backtest(model: Model, values: np.ndarray, h: int, n_windows: int, step: int
             ) -> list[tuple[int, np.ndarray]]:
    """For series of one length ``values [series, time, features]``: ``(cutoff index,
    forecasts [series, h, targets])`` per window. A ``carry`` model runs its history once,
    forecasting at each cutoff on the way; a model that forecasts from its window reads
    the last W observations before each cutoff, and its future covariates from the
    history after it (as Nixtla's cross-validation does)."""
    positions = cutoffs(values.shape[1], h, n_windows, step)
    if positions[0] < 0:
        raise BatchInputError(f"series of {values.shape[1]} observations are too short for "
                              f"{n_windows} windows of {h} steps {step} apart")
    if model.spec.forecasts_from_window:
        ahead = [model.spec.features.index(name) for name in model.spec.future_features]
        return [(cutoff, window_forecasts(
            model, list(values[:, :cutoff + 1]), h,
            values[:, cutoff + 1:cutoff + 1 + h][:, :, ahead] if ahead else None))
            for cutoff in positions]
    if model.spec.window is not None:
        return [(cutoff, model.predict(final_states(model, list(values[:, :cutoff + 1])), h))
                for cutoff in positions]
    states = model.new_arena(len(values))
    consumed = 0
    results = []
    for cutoff in positions:
        states = model.advance(states, list(values[:, consumed:cutoff + 1]))
        consumed = cutoff + 1
        results.append((cutoff, model.predict(states, h)))
    return results
