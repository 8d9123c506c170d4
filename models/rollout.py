"""The two verbs of a stateful model in original units: advance streams' states over new
observations, and predict from states. The service, the batch job and ``statecast run``
all call these (through :meth:`Model.advance` and :meth:`Model.predict`), so a stream
forecast by any of them gets the same numbers.

- ``carry`` models continue from the state; ``window:W`` models re-run their last W
  observations from the initial state (the caller passes the observations the stream
  retains plus the new ones).
- A direct head gives every forecast step at once; a recursive (one-step) head is rolled
  forward on a copy of the state, each prediction fed back as the next observation of its
  target features, the covariates taken from ``future``.
- Models that forecast from the window itself (statistics of each window, a head over the
  last steps) are :func:`models.windowed.forecast_windows`' job; their state stays the
  initial one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from statecast.models.errors import InvalidInput

if TYPE_CHECKING:
    from statecast.models.model import Model


def advance(model: Model, states: np.ndarray, observations: Sequence[np.ndarray]
            ) -> np.ndarray:
    """State rows ``float32 [streams, state_size]`` after each stream's observations.

    ``states`` are the rows before (left unchanged); ``observations[i]`` is stream i's
    ``[time, features]`` raw observations (none: the state is kept). Streams with the same
    number of observations run in one kernel call.
    """
    result = _state_rows(model, states)
    if len(observations) != len(result):
        raise InvalidInput(f"{len(observations)} observation arrays for {len(result)} states")
    for index, rows in enumerate(observations):
        if np.ndim(rows) != 2 or np.shape(rows)[1] != model.spec.input_size:
            raise InvalidInput(f"observations {index} must be [time, {model.spec.input_size}],"
                               f" got shape {np.shape(rows)}")
    if model.spec.forecasts_from_window:
        return result
    window = model.spec.window
    groups: dict[int, list[int]] = {}
    for index, rows in enumerate(observations):
        used = len(rows) if window is None else min(len(rows), window)
        if used:
            groups.setdefault(used, []).append(index)
    net = model.network
    for used, members in groups.items():
        # One group of every stream (a single call's usual case) runs in place.
        whole = window is None and len(members) == len(result)
        if whole:
            arena = result
        elif window is None:
            arena = result[members]
        else:
            arena = model.new_arena(len(members))
        raw = (observations[members[0]][len(observations[members[0]]) - used:][None]
               if len(members) == 1 else
               np.stack([observations[i][len(observations[i]) - used:] for i in members]))
        x = np.ascontiguousarray(model.scale_inputs(raw), np.float32)
        count = len(members)
        y = np.empty((count, used, net.output_size), np.float32)
        head = np.empty((count * used if net.head_every_step else count, net.head_size),
                        np.float32)
        model.forward_into(x, arena, np.arange(count, dtype=np.int64), y, head, check=False)
        if not whole:
            result[members] = arena
    return result


def _state_rows(model: Model, states: np.ndarray) -> np.ndarray:
    """A float32 copy of ``states``, refused unless it is ``[streams, state_size]``."""
    rows = np.array(states, np.float32, order="C", copy=True)
    if rows.ndim != 2 or rows.shape[1] != model.state_size:
        raise InvalidInput(f"states must be [streams, {model.state_size}], got shape "
                           f"{rows.shape}")
    return rows


def predict(model: Model, states: np.ndarray, horizon: int,
            future: np.ndarray | None = None) -> np.ndarray:
    """Forecasts ``float32 [streams, horizon, targets]`` in original units from state rows
    ``[streams, state_size]`` (left unchanged).

    ``future`` is ``[streams, >= horizon - 1, covariates]``: the raw covariates (features
    that are not targets, in feature order) observed with each forecast step's prediction,
    for a recursive model with covariates; row k goes with the prediction of step k.
    """
    spec = model.spec
    if spec.forecasts_from_window:
        raise InvalidInput(f"{model.name or 'this model'} forecasts from its window, not a "
                           "state: use models.windowed.forecast_windows")
    if horizon < 1:
        raise InvalidInput(f"horizon must be at least 1, got {horizon}")
    states = _state_rows(model, states)
    count, n_targets = len(states), len(spec.targets)
    if spec.forecast_mode == "direct":
        if not 1 <= horizon <= spec.horizon:
            raise InvalidInput(f"horizon must be 1-{spec.horizon} for this direct model")
        heads = model.head_from_state(states)
        return model.unscale_targets(heads.reshape(count, spec.horizon, n_targets)[:, :horizon])
    targets = [spec.features.index(name) for name in spec.targets]
    covariates = [i for i, name in enumerate(spec.features) if name not in spec.targets]
    if covariates and horizon > 1 and (
            future is None or np.ndim(future) != 3 or future.shape[0] != count
            or future.shape[1] < horizon - 1 or future.shape[2] != len(covariates)):
        raise InvalidInput(f"a recursive model with covariates needs future [streams, "
                           f"{horizon - 1}, {len(covariates)}]")
    arena = states
    net = model.network
    head = model.head_from_state(arena)
    out = np.empty((count, horizon, n_targets), np.float32)
    observation = np.empty((count, 1, spec.input_size), np.float32)
    y = np.empty((count, 1, net.output_size), np.float32)
    slots = np.arange(count, dtype=np.int64)
    for step in range(horizon):
        out[:, step] = model.unscale_targets(head)
        if step == horizon - 1:
            break
        observation[:, 0, targets] = out[:, step]
        if covariates:
            assert future is not None
            observation[:, 0, covariates] = future[:, step]
        x = np.ascontiguousarray(model.scale_inputs(observation), np.float32)
        model.forward_into(x, arena, slots, y, head, check=False)
    return out
