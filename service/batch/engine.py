"""The numbers of a batch job: states after each series' history, forecasts from states, and
backtest cutoffs. Many series of one length run in one kernel call.

A state is computed as the service computes it (DESIGN.md §3): a ``carry`` model runs the
whole history from its initial state, a ``window:W`` model its last W observations; a
forecast comes from the state the same way (the head on the state for a direct model, a
rollout on a copy of it for a recursive one). A series handed to the service therefore
continues exactly where the batch left it.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from statecast.models import Model
from statecast.models.windowed import forecast_windows
from statecast.service.batch.frames import BatchInputError
from statecast.service.requests import MAX_RECURSIVE_HORIZON, future_features_of


def check_horizon(model: Model, h: int, has_future: bool = False) -> None:
    """Refuse horizons the model cannot forecast, and models that need future covariates
    when no future frame is given (or that cannot take one)."""
    spec = model.spec
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


def window_forecasts(model: Model, histories: list[np.ndarray], h: int,
                     future: np.ndarray | None) -> np.ndarray:
    """``float32 [series, h, targets]`` of a model that forecasts from its window: each
    series' last W observations (a shorter series is left-padded with zeros, outside the
    window statistics, where the model normalises each window as NeuralForecast does)."""
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
    return forecast_windows(model, windows, future, h, observed)


def _advance(model: Model, arena: np.ndarray, raw: np.ndarray) -> None:
    """Run raw observations ``[n, time, features]`` from the states in ``arena`` (updated
    in place)."""
    n, steps, _ = raw.shape
    if steps == 0:
        return
    net = model.network
    x = np.ascontiguousarray(model.scale_inputs(raw), np.float32)
    y = np.empty((n, steps, net.output_size), np.float32)
    head = np.empty((n * steps if net.head_every_step else n, net.head_size), np.float32)
    model.forward_into(x, arena, np.arange(n, dtype=np.int64), y, head, check=False)


def final_states(model: Model, histories: list[np.ndarray]) -> np.ndarray:
    """``float32 [series, state]``: each series' state after its raw history."""
    window = model.spec.window
    states = model.new_arena(len(histories))
    groups: dict[int, list[int]] = defaultdict(list)
    for index, history in enumerate(histories):
        used = len(history) if window is None else min(len(history), window)
        groups[used].append(index)
    for used, members in groups.items():
        arena = model.new_arena(len(members))
        _advance(model, arena, np.stack([histories[i][len(histories[i]) - used:]
                                         for i in members]))
        states[members] = arena
    return states


def forecasts_from_states(model: Model, states: np.ndarray, h: int) -> np.ndarray:
    """``float32 [series, h, targets]`` in original units from states (left unchanged)."""
    spec = model.spec
    n, n_targets = len(states), len(spec.targets)
    if spec.forecast_mode == "direct":
        head = model.head_from_state(states)
        return model.unscale_targets(head.reshape(n, spec.horizon, n_targets)[:, :h])
    arena = np.array(states, np.float32)
    head = model.head_from_state(arena)
    targets = [spec.features.index(name) for name in spec.targets]
    out = np.empty((n, h, n_targets), np.float32)
    observation = np.empty((n, 1, spec.input_size), np.float32)
    for step in range(h):
        out[:, step] = model.unscale_targets(head)
        if step == h - 1:
            break
        observation[:, 0, targets] = out[:, step]
        net = model.network
        x = np.ascontiguousarray(model.scale_inputs(observation), np.float32)
        y = np.empty((n, 1, net.output_size), np.float32)
        model.forward_into(x, arena, np.arange(n, dtype=np.int64), y, head, check=False)
    return out


def cutoffs(length: int, h: int, n_windows: int, step: int) -> list[int]:
    """Index of the last observation before each backtest window (oldest first): the last
    window's h steps are the series' last h observations."""
    return [length - h - (n_windows - 1 - k) * step - 1 for k in range(n_windows)]


def backtest(model: Model, values: np.ndarray, h: int, n_windows: int, step: int
             ) -> list[tuple[int, np.ndarray]]:
    """For series of one length ``values [series, time, features]``: ``(cutoff index,
    forecasts [series, h, targets])`` per window. A ``carry`` model runs its history once,
    forecasting at each cutoff on the way."""
    positions = cutoffs(values.shape[1], h, n_windows, step)
    if positions[0] < 0:
        raise BatchInputError(f"series of {values.shape[1]} observations are too short for "
                              f"{n_windows} windows of {h} steps {step} apart")
    results = []
    if model.spec.window is not None:
        for cutoff in positions:
            histories = list(values[:, :cutoff + 1])
            results.append((cutoff, forecasts_from_states(
                model, final_states(model, histories), h)))
        return results
    arena = model.new_arena(len(values))
    consumed = 0
    for cutoff in positions:
        _advance(model, arena, values[:, consumed:cutoff + 1])
        consumed = cutoff + 1
        results.append((cutoff, forecasts_from_states(model, arena, h)))
    return results
