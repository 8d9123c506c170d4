"""Intervals from a distribution head: what a model trained with a likelihood says about its
own uncertainty, in original units.

- ``gaussian`` heads (Darts' ``GaussianLikelihood``: mu, then sigma before softplus, per
  target) give any level: ``mu -+ z * sigma``, ``z`` the standard normal quantile of
  ``1 - (100 - L) / 200``. Sigma scales with the target's scale (a window scaler whose
  inverse is not affine, ``invariant``, gives no Gaussian level).
- ``quantile`` heads (Darts' ``QuantileRegression``, NeuralForecast's ``MQLoss``) give the
  levels whose two quantiles they hold: level 80 needs 0.1 and 0.9. Each quantile maps back
  to original units like the point forecast. A head whose point value is the mean of its
  outputs (NeuralForecast's recurrent ``MQLoss``, which feeds the mean back and reports it
  in every column) gives none.

Recursive models roll forward on the mean path (the point value fed back, as
NeuralForecast does; Darts samples a path instead and gives the parameters of its first
``output_chunk_length`` steps only): each later step's distribution is conditional on the
earlier steps' point values, so it leaves out their uncertainty and its interval is too
narrow.
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import NormalDist

import numpy as np

from statecast.models.conformal import level_name
from statecast.models.errors import LevelUnavailable
from statecast.models.model import Model
from statecast.models.windowed import Scaling, original_units, parameters_of

#: Window scalers whose inverse is affine, and the factor by which it scales a spread
#: (``minmax1``'s inverse is ``(value + 1) / 2 * scale + shift``).
_SPREAD = {"identity": 1.0, "standard": 1.0, "robust": 1.0, "minmax": 1.0, "minmax1": 0.5}
#: Quantiles closer than this are the same quantile: a quantile stored as float32 lies
#: within 3e-8 of its decimal (0.1 is 0.10000000149), where level 80.0001 asks for 0.0999995.
_SAME_QUANTILE = 5e-8


def softplus(values: np.ndarray) -> np.ndarray:
    """PyTorch's ``softplus`` (linear above 20), as Darts applies it to sigma."""
    return np.where(values > 20.0, values, np.log1p(np.exp(np.minimum(values, 20.0))))


def gives_levels(model: Model) -> bool:
    """Whether the model's head is a distribution that gives intervals by itself."""
    return model.spec.output.kind in ("gaussian", "quantile")


def _quantile_pairs(model: Model, levels: Sequence[float]) -> list[tuple[int, int]]:
    """For each level, the indices of its two quantiles among the head's."""
    layout = model.spec.output
    if layout.kind != "quantile" or layout.point_index < 0:
        raise LevelUnavailable(f"{model.name}'s head gives no quantiles of its own")
    held = np.asarray(layout.quantiles)
    pairs = []
    for level in levels:
        low = (100.0 - level) / 200.0
        found = [np.flatnonzero(np.abs(held - q) < _SAME_QUANTILE) for q in (low, 1.0 - low)]
        if not all(len(indices) for indices in found):
            raise LevelUnavailable(f"{model.name}'s quantiles {list(layout.quantiles)} hold no "
                                   f"level {level_name(level)} (it needs {low:g} and "
                                   f"{1 - low:g})")
        pairs.append((int(found[0][0]), int(found[1][0])))
    return pairs


def check_head_levels(model: Model, levels: Sequence[float]) -> None:
    """Refuse (``LevelUnavailable``) levels the model's head cannot give, before any work."""
    if model.spec.output.kind == "gaussian":
        scaler = model.spec.window_scaler
        kind = scaler.kind if scaler is not None else "identity"
        if kind not in _SPREAD:
            raise LevelUnavailable(f"{model.name}'s {kind} window scaling is not affine: its "
                                   "Gaussian head gives no interval in original units")
    else:
        _quantile_pairs(model, levels)


def head_intervals(model: Model, outputs: np.ndarray, scaling: Scaling,
                   levels: Sequence[float]) -> dict[str, np.ndarray]:
    """``{"lo-80": [streams, horizon, targets], "hi-80": ..., ...}`` from a distribution
    head's scaled ``outputs [streams, horizon, targets * params]`` and the window
    ``scaling`` (:func:`models.windowed.window_outputs`)."""
    params = parameters_of(model.spec, outputs).astype(np.float64)
    intervals: dict[str, np.ndarray] = {}
    if model.spec.output.kind == "gaussian":
        check_head_levels(model, levels)
        kind, _, scale = scaling
        mu = original_units(model, params[..., 0], scaling).astype(np.float64)
        sigma = softplus(params[..., 1]) * np.abs(scale) * _SPREAD[kind]
        if model.spec.scaling is not None:
            sigma = sigma * np.abs(np.asarray(model.spec.scaling.target_scale))
        for level in levels:
            z = NormalDist().inv_cdf(1.0 - (100.0 - level) / 200.0)
            intervals[f"lo-{level_name(level)}"] = (mu - z * sigma).astype(np.float32)
            intervals[f"hi-{level_name(level)}"] = (mu + z * sigma).astype(np.float32)
        return intervals
    # A negative target scale (``spec.scaling``) turns a target's quantiles around; quantiles
    # that cross (a head trained little) stay as the head gives them, as the libraries do.
    flipped = np.zeros(len(model.spec.targets), bool)
    if model.spec.scaling is not None:
        flipped = np.asarray(model.spec.scaling.target_scale) < 0
    for level, (low, high) in zip(levels, _quantile_pairs(model, levels), strict=True):
        bounds = [original_units(model, params[..., index].astype(np.float32), scaling)
                  for index in (low, high)]
        intervals[f"lo-{level_name(level)}"] = np.where(flipped, bounds[1], bounds[0])
        intervals[f"hi-{level_name(level)}"] = np.where(flipped, bounds[0], bounds[1])
    return intervals
