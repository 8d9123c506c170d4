"""What every importer shares: the forecast options a user adds, scaler files, the result."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from statecast.models.errors import ImportFailed, InvalidSpec
from statecast.models.layer_spec import ActivationSpec, DenseLayerSpec, RecurrentLayerSpec
from statecast.models.spec import OUTPUT_KINDS, POINT, ModelSpec, OutputSpec, ScalingSpec

#: ``torch.nn`` activation class names -> (statecast's name, alpha), for libraries' heads.
TORCH_ACTIVATIONS = {"ReLU": ("relu", None), "Sigmoid": ("sigmoid", None),
                     "Tanh": ("tanh", None), "LeakyReLU": ("leaky_relu", 0.01),
                     "ELU": ("elu", 1.0), "Softplus": ("softplus", None),
                     "Softsign": ("softsign", None)}


def torch_activation(name: str, what: str) -> ActivationSpec:
    """A ``torch.nn`` activation class name as a spec, or refused naming ``what``."""
    if name not in TORCH_ACTIVATIONS:
        raise ImportFailed(f"{what} {name!r} is not supported; supported: "
                           f"{sorted(TORCH_ACTIVATIONS)}")
    ours, alpha = TORCH_ACTIVATIONS[name]
    return ActivationSpec.of(ours, alpha)


def linear_stack(state: dict[str, np.ndarray], modules: list[str], between: ActivationSpec
                 ) -> tuple[list[DenseLayerSpec], dict[str, np.ndarray]]:
    """Torch ``Linear`` modules (``<module>.weight [out, in]``, ``.bias``) applied in order,
    ``between`` after each but the last: head layers and their canonical tensors."""
    layers, tensors = [], {}
    for index, module in enumerate(modules):
        weight = state[f"{module}.weight"]
        bias = state.get(f"{module}.bias", np.zeros(weight.shape[0], np.float32))
        last = index == len(modules) - 1
        layers.append(DenseLayerSpec(int(weight.shape[1]), int(weight.shape[0]),
                                     ActivationSpec.of("linear") if last else between))
        tensors[f"head.{index}.weight"] = np.ascontiguousarray(weight.T)
        tensors[f"head.{index}.bias"] = bias
    return layers, tensors


@dataclass(frozen=True)
class ForecastOptions:
    """The forecast contract a framework file does not record; None means the default."""

    mode: str = "direct"
    horizon: int | None = None
    targets: tuple[str, ...] | None = None
    features: tuple[str, ...] | None = None
    state_mode: str = "carry"
    scaler: dict[str, Any] | None = None
    output: OutputSpec = POINT


def output_from_flags(head_output: str | None, quantiles: str | None) -> OutputSpec:
    """What the head emits per step and target, from the import's ``head_output``
    (``point``, ``gaussian`` or ``quantile``) and comma-separated ``quantiles``.

    ``gaussian``: mu, then sigma before softplus (Darts' ``GaussianLikelihood``); the
    forecast is mu. ``quantile``: one value per quantile, in the order given; the forecast
    is the 0.5 quantile, so the quantiles must hold it. Quantiles alone mean a quantile head.
    """
    kind = head_output or ("quantile" if quantiles else "point")
    if kind not in OUTPUT_KINDS:
        raise ImportFailed(f"head output must be one of {list(OUTPUT_KINDS)}, got {kind!r}")
    if kind != "quantile":
        if quantiles:
            raise ImportFailed(f"quantiles are for a quantile head, not a {kind} one")
        return POINT if kind == "point" else OutputSpec("gaussian", 2, 0)
    if not quantiles:
        raise ImportFailed("a quantile head needs its quantiles, in the head's order, "
                           "e.g. 0.1,0.5,0.9")
    try:
        values = tuple(float(part) for part in quantiles.split(","))
    except ValueError:
        raise ImportFailed(f"quantiles must be comma-separated numbers, got "
                           f"{quantiles!r}") from None
    if not all(0.0 < q < 1.0 for q in values):
        raise ImportFailed(f"quantiles must lie strictly between 0 and 1, got {list(values)}")
    if any(later <= earlier for earlier, later in itertools.pairwise(values)):
        raise ImportFailed(f"quantiles must be strictly increasing, got {list(values)}")
    if 0.5 not in values:
        raise ImportFailed(f"quantiles {list(values)} must hold 0.5: the median is the "
                           "point forecast")
    return OutputSpec("quantile", len(values), values.index(0.5), values)


@dataclass(frozen=True)
class Imported:
    """An imported model: its spec, canonical tensors and where it came from."""

    spec: ModelSpec
    tensors: dict[str, np.ndarray]
    source: dict[str, Any] = field(default_factory=dict)


def load_scaler(path: str | Path) -> dict[str, Any]:
    """Read a scaler JSON file (never a pickle): see :func:`scaling_from_json`."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, json.JSONDecodeError) as error:
        raise ImportFailed(f"cannot read scaler {path}: {error}") from None
    if not isinstance(data, dict):
        raise ImportFailed(f"scaler {path} must hold a JSON object")
    return data


def _floats(data: dict[str, Any], *keys: str) -> list[float] | None:
    for key in keys:
        if key in data:
            values = data[key]
            values = [values] if isinstance(values, (int, float)) else values
            try:
                return [float(v) for v in values]
            except (TypeError, ValueError):
                raise ImportFailed(f"scaler field {key!r} must be a list of numbers") from None
    return None


def _affine(data: dict[str, Any], method: str) -> tuple[list[float], list[float]] | None:
    """``(shift, scale)`` from StandardScaler- or MinMaxScaler-like fields, or None."""
    if method == "standard":
        mean = _floats(data, "mean", "mean_")
        std = _floats(data, "std", "scale_", "scale")
        if mean is None or std is None:
            return None
        if len(mean) != len(std):
            raise ImportFailed("scaler mean and std differ in length")
        return mean, std
    low = _floats(data, "min", "data_min_")
    high = _floats(data, "max", "data_max_")
    if low is None or high is None:
        return None
    if len(low) != len(high):
        raise ImportFailed("scaler min and max differ in length")
    range_low, range_high = (_floats(data, "feature_range") or [0.0, 1.0])[:2]
    if range_high == range_low:
        raise ImportFailed("scaler feature_range must not be empty")
    span = (range_high - range_low)
    scale = [(h - lo) / span if h != lo else 1.0 for lo, h in zip(low, high, strict=True)]
    shift = [lo - range_low * s for lo, s in zip(low, scale, strict=True)]
    return shift, scale


def scaling_from_json(data: dict[str, Any], features: tuple[str, ...],
                      targets: tuple[str, ...]) -> ScalingSpec:
    """Build the scaling from a scaler JSON object.

    ``{"method": "standard", "mean": [...], "std": [...]}`` per feature (sklearn's
    ``mean_``/``scale_`` also accepted) or ``{"method": "minmax", "min": [...], "max": [...],
    "feature_range": [0, 1]}`` (``data_min_``/``data_max_``). Targets use an optional
    ``"targets": {...}`` of the same form, else the scaling of the feature of the same name.
    """
    method = str(data.get("method", "minmax" if ("min" in data or "data_min_" in data)
                          else "standard"))
    if method not in ("standard", "minmax"):
        raise ImportFailed(f"scaler method must be 'standard' or 'minmax', got {method!r}")
    inputs = _affine(data, method)
    if inputs is None:
        raise ImportFailed("scaler needs mean/std (standard) or min/max (minmax) per feature")
    if len(inputs[0]) != len(features):
        raise ImportFailed(f"scaler has {len(inputs[0])} values, the model has "
                           f"{len(features)} features")
    if "targets" in data:
        target_part = _affine(data["targets"], method)
        if target_part is None:
            raise ImportFailed("scaler 'targets' needs the same fields as the features")
    else:
        missing = [t for t in targets if t not in features]
        if missing:
            raise ImportFailed(f"targets {missing} are not features: give the scaler a "
                               f"'targets' entry for them")
        where = [features.index(t) for t in targets]
        target_part = ([inputs[0][i] for i in where], [inputs[1][i] for i in where])
    for value in inputs[1] + target_part[1]:
        if not math.isfinite(value) or value == 0:
            raise ImportFailed("scaler scales must be finite and non-zero")
    return ScalingSpec(method, tuple(inputs[0]), tuple(inputs[1]), tuple(target_part[0]),
                       tuple(target_part[1]))


def build_spec(layers: list[RecurrentLayerSpec], head: list[DenseLayerSpec],
               options: ForecastOptions, *, head_every_step: bool = False,
               initial_state: bool = False) -> ModelSpec:
    """Combine an imported network with the user's forecast options into a valid spec."""
    input_size = layers[0].input_size
    output_size = head[-1].out_features if head else layers[-1].output_size
    features = options.features or (
        ("y",) if input_size == 1 else tuple(f"x{i}" for i in range(input_size)))
    if len(features) != input_size:
        raise ImportFailed(f"{len(features)} feature names given; the model takes "
                           f"{input_size} features")
    targets = options.targets or (features[0],)
    output = options.output
    if output.kind != "point" and options.state_mode == "carry":
        raise ImportFailed(f"a {output.kind} head needs a window model: give --state-mode "
                           "window:W (W the length of the windows it was trained on); each "
                           "forecast re-runs the last W observations through it")
    horizon = options.horizon
    if horizon is None:
        if options.mode == "direct":
            per_step = len(targets) * output.params
            if output_size % per_step:
                params = (f" x {output.params} {output.kind} parameters"
                          if output.params > 1 else "")
                raise ImportFailed(f"the model emits {output_size} values, not a multiple of "
                                   f"{len(targets)} target(s){params}: give --targets"
                                   + (" or check the head output" if params else ""))
            horizon = output_size // per_step
        else:
            horizon = 1
    scaling = (scaling_from_json(options.scaler, features, targets)
               if options.scaler is not None else None)
    try:
        return ModelSpec(input_size=input_size, layers=tuple(layers), head=tuple(head),
                         head_every_step=head_every_step, features=tuple(features),
                         targets=tuple(targets), forecast_mode=options.mode, horizon=horizon,
                         state_mode=options.state_mode, scaling=scaling,
                         initial_state=initial_state, output=output)
    except InvalidSpec as error:
        raise ImportFailed(str(error)) from None
