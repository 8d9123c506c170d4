"""The model spec: architecture, forecast contract and preprocessing, as stored in model.json.

Every field has a JSON form (:meth:`ModelSpec.to_json`,
:meth:`ModelSpec.from_json`); :meth:`ModelSpec.tensor_shapes` says which weight tensors a
model of this spec must carry, in the canonical layout of :mod:`kernels.network`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from statecast.models.errors import InvalidSpec
from statecast.models.layer_spec import (
    DenseLayerSpec,
    RecurrentLayerSpec,
)

FORECAST_MODES = ("direct", "recursive")
SCALING_METHODS = ("standard", "minmax")
DEFAULT_CARRY_RETAIN = 64
_WINDOW = re.compile(r"window:([1-9][0-9]*)")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise InvalidSpec(message)


@dataclass(frozen=True)
class ScalingSpec:
    """Per-feature affine preprocessing: ``scaled = (raw - shift) / scale``.

    Targets are scaled back with their own ``target_shift``/``target_scale``. ``method``
    records where the numbers came from (``standard``: mean/std, ``minmax``: min/max with a
    feature range); the arithmetic is the same.
    """

    method: str
    input_shift: tuple[float, ...]
    input_scale: tuple[float, ...]
    target_shift: tuple[float, ...]
    target_scale: tuple[float, ...]

    def validate(self, n_inputs: int, n_targets: int) -> None:
        _require(self.method in SCALING_METHODS, f"scaling method must be one of "
                 f"{SCALING_METHODS}, got {self.method!r}")
        _require(len(self.input_shift) == len(self.input_scale) == n_inputs,
                 f"scaling needs {n_inputs} input values, got {len(self.input_shift)}")
        _require(len(self.target_shift) == len(self.target_scale) == n_targets,
                 f"scaling needs {n_targets} target values, got {len(self.target_shift)}")
        values = self.input_shift + self.input_scale + self.target_shift + self.target_scale
        _require(all(math.isfinite(v) for v in values), "scaling values must be finite")
        _require(all(v != 0 for v in self.input_scale + self.target_scale),
                 "scaling scales must be non-zero (a constant feature has std 0: use 1)")

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "input_shift": list(self.input_shift),
                "input_scale": list(self.input_scale), "target_shift": list(self.target_shift),
                "target_scale": list(self.target_scale)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ScalingSpec:
        try:
            return cls(str(data["method"]),
                       *(tuple(float(v) for v in data[key]) for key in
                         ("input_shift", "input_scale", "target_shift", "target_scale")))
        except (KeyError, TypeError, ValueError) as error:
            raise InvalidSpec(f"bad scaling {data!r}: {error}") from None


WINDOW_SCALERS = ("identity", "standard", "robust", "minmax", "minmax1", "invariant")
OUTPUT_KINDS = ("point", "gaussian", "quantile")
#: Activations a head over the last steps may apply (models.windowed runs it in NumPy).
STEP_HEAD_ACTIVATIONS = ("linear", "relu", "tanh", "sigmoid", "softplus", "softsign",
                         "leaky_relu", "elu")


@dataclass(frozen=True)
class WindowScalerSpec:
    """Statistics recomputed from every input window, as forecasting libraries normalise
    each window (NeuralForecast's ``scaler_type``): each scaled feature by its own
    statistics over the window's observed rows; forecasts back with the target's.

    ``features`` are the indices of the scaled input features (the others, e.g. static
    ones, pass as they are); ``eps`` is added to every scale.
    """

    kind: str
    features: tuple[int, ...]
    eps: float = 1e-6

    def validate(self, n_inputs: int) -> None:
        _require(self.kind in WINDOW_SCALERS, f"window scaler must be one of "
                 f"{WINDOW_SCALERS}, got {self.kind!r}")
        _require(all(0 <= i < n_inputs for i in self.features) and 0 in self.features,
                 "window scaler features must be input indices including the target (0)")
        _require(math.isfinite(self.eps) and self.eps >= 0, "window scaler eps must be >= 0")

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "features": list(self.features), "eps": self.eps}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WindowScalerSpec:
        try:
            return cls(str(data["kind"]), tuple(int(i) for i in data["features"]),
                       float(data.get("eps", 1e-6)))
        except (KeyError, TypeError, ValueError) as error:
            raise InvalidSpec(f"bad window scaler {data!r}: {error}") from None


@dataclass(frozen=True)
class OutputSpec:
    """What the head emits per target and step: one point value (``point``), or the
    parameters of a distribution (``gaussian``: mu then sigma before softplus;
    ``quantile``: one value per quantile). ``point_index`` is the parameter that is the
    point forecast (mu, the median); -1 means the mean of all of them.
    """

    kind: str = "point"
    params: int = 1
    point_index: int = 0
    quantiles: tuple[float, ...] = ()

    def validate(self) -> None:
        _require(self.kind in OUTPUT_KINDS, f"output kind must be one of {OUTPUT_KINDS}")
        _require(self.params >= 1 and -1 <= self.point_index < self.params,
                 "output point_index must pick one of the parameters, or -1 (their mean)")
        _require(self.kind != "quantile" or len(self.quantiles) == self.params,
                 "a quantile output needs one quantile per parameter")
        _require(self.kind != "gaussian" or self.params == 2, "a gaussian output has 2 params")

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "params": self.params, "point_index": self.point_index,
                "quantiles": list(self.quantiles)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OutputSpec:
        try:
            return cls(str(data.get("kind", "point")), int(data.get("params", 1)),
                       int(data.get("point_index", 0)),
                       tuple(float(q) for q in data.get("quantiles", ())))
        except (TypeError, ValueError) as error:
            raise InvalidSpec(f"bad output spec {data!r}: {error}") from None


POINT = OutputSpec()


def parse_state_mode(value: str) -> int | None:
    """Return W for ``"window:W"``, None for ``"carry"``; raise InvalidSpec otherwise."""
    if value == "carry":
        return None
    match = _WINDOW.fullmatch(value)
    _require(match is not None, f"state_mode must be 'carry' or 'window:W', got {value!r}")
    assert match is not None
    return int(match.group(1))


@dataclass(frozen=True)
class ModelSpec:
    """Everything about a model but its weights."""

    input_size: int
    layers: tuple[RecurrentLayerSpec, ...]
    head: tuple[DenseLayerSpec, ...] = ()
    head_every_step: bool = False
    features: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()
    forecast_mode: str = "direct"
    horizon: int = 1
    state_mode: str = "carry"
    retain: int = 0
    scaling: ScalingSpec | None = None
    initial_state: bool = False
    head_steps: int = 0
    future_features: tuple[str, ...] = ()
    covariate_lead: bool = False
    window_scaler: WindowScalerSpec | None = None
    output: OutputSpec = POINT
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.features:
            names = ("y",) if self.input_size == 1 else tuple(
                f"x{i}" for i in range(self.input_size))
            object.__setattr__(self, "features", names)
        if not self.targets:
            object.__setattr__(self, "targets", (self.features[0],))
        if not self.retain:
            window = parse_state_mode(self.state_mode)
            object.__setattr__(self, "retain", window or DEFAULT_CARRY_RETAIN)
        self.validate()

    @property
    def output_size(self) -> int:
        """Width of what the model emits per step: the head's output, else the last h."""
        return self.head[-1].out_features if self.head else self.layers[-1].output_size

    @property
    def window(self) -> int | None:
        """W of a ``window:W`` model, None for ``carry``."""
        return parse_state_mode(self.state_mode)

    @property
    def forecasts_from_window(self) -> bool:
        """True for models whose forecast needs the window itself, not only the state after
        it (:mod:`models.windowed`): a head over the last steps, statistics of the window,
        covariates that lead the target, a distribution head."""
        return bool(self.head_steps or self.window_scaler is not None or self.covariate_lead
                    or self.output != POINT)

    @property
    def head_inputs(self) -> int:
        """Width of what the head reads per step: the last layer's output, then (for a head
        over the last steps) the future covariates of that forecast step."""
        extra = len(self.future_features) if self.head_steps else 0
        return self.layers[-1].output_size + extra

    def validate(self) -> None:
        """Raise :class:`InvalidSpec` naming the first inconsistency."""
        _require(self.input_size >= 1, "input_size must be >= 1")
        _require(len(self.layers) >= 1, "a model needs at least one recurrent layer")
        width = self.input_size
        for index, layer in enumerate(self.layers):
            layer.validate(index)
            _require(layer.input_size == width,
                     f"layer {index} takes {layer.input_size} inputs but receives {width}")
            width = layer.output_size
        if self.head:
            width = self.head_inputs
        for index, dense in enumerate(self.head):
            _require(dense.in_features == width, f"head layer {index} takes "
                     f"{dense.in_features} inputs but receives {width}")
            _require(dense.out_features >= 1, f"head layer {index} needs >= 1 output")
            width = dense.out_features
        _require(len(self.features) == self.input_size,
                 f"{len(self.features)} feature names for {self.input_size} features")
        _require(len(set(self.features)) == len(self.features), "feature names must be unique")
        _require(len(self.targets) >= 1 and len(set(self.targets)) == len(self.targets),
                 "targets must be one or more distinct names")
        _require(self.forecast_mode in FORECAST_MODES,
                 f"forecast_mode must be one of {FORECAST_MODES}, got {self.forecast_mode!r}")
        _require(self.horizon >= 1, "horizon must be >= 1")
        self.output.validate()
        per_target = self.output.params
        if self.forecast_mode == "direct" and self.head_steps:
            _require(self.horizon == self.head_steps and bool(self.head)
                     and not self.head_every_step,
                     "a head over the last steps has one step per horizon step")
            _require(self.output_size == len(self.targets) * per_target,
                     f"a head over the last steps emits targets x params values per step: "
                     f"{self.output_size} outputs for {len(self.targets)} target(s)")
        elif self.forecast_mode == "direct":
            _require(self.output_size == self.horizon * len(self.targets) * per_target,
                     f"a direct model emits horizon x targets values: {self.output_size} "
                     f"outputs but horizon {self.horizon} x {len(self.targets)} target(s)"
                     + (f" x {per_target} params" if per_target > 1 else ""))
        else:
            _require(self.output_size == len(self.targets) * per_target,
                     f"a recursive model emits one value per target: {self.output_size} "
                     f"outputs for {len(self.targets)} target(s)"
                     + (f" x {per_target} params" if per_target > 1 else ""))
            missing = [t for t in self.targets if t not in self.features]
            _require(not missing, f"a recursive model feeds its targets back as inputs, but "
                     f"{missing} are not among the features {list(self.features)}")
        window = parse_state_mode(self.state_mode)
        _require(self.retain >= (window or 1), f"retain must be >= {window or 1}")
        if self.scaling is not None:
            self.scaling.validate(self.input_size, len(self.targets))
        unknown = [name for name in self.future_features if name not in self.features
                   or name in self.targets]
        _require(not unknown, f"future features {unknown} must be covariates among the features")
        _require(not self.covariate_lead or self.forecast_mode == "recursive",
                 "covariates lead the target only in recursive models")
        if self.window_scaler is not None:
            self.window_scaler.validate(self.input_size)
        _require(not self.forecasts_from_window or window is not None,
                 "heads over the last steps, window scalers, leading covariates and "
                 "distribution heads need a window:W model")
        _require(self.head_steps <= (window or 0) or not self.head_steps,
                 "a head over the last steps reads at most the window's steps")
        unsupported = [d.activation.name for d in self.head
                       if d.activation.name not in STEP_HEAD_ACTIVATIONS]
        _require(not self.head_steps or not unsupported,
                 f"a head over the last steps applies {STEP_HEAD_ACTIVATIONS}, not "
                 f"{unsupported}")

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """Name -> shape of every weight tensor of this spec (canonical layout)."""
        shapes: dict[str, tuple[int, ...]] = {}
        for index, layer in enumerate(self.layers):
            gates = layer.gates * layer.hidden_size
            prefix = f"layers.{index}."
            shapes[prefix + "w_ih"] = (layer.input_size, gates)
            shapes[prefix + "w_hh"] = (layer.output_size, gates)
            shapes[prefix + "b_ih"] = (gates,)
            shapes[prefix + "b_hh"] = (gates,)
            if layer.proj_size:
                shapes[prefix + "w_hr"] = (layer.hidden_size, layer.proj_size)
            if layer.peepholes:
                shapes[prefix + "peephole"] = (3, layer.hidden_size)
            if self.initial_state:
                shapes[f"initial.{index}.h"] = (layer.output_size,)
                if layer.cell == "lstm":
                    shapes[f"initial.{index}.c"] = (layer.hidden_size,)
        for index, dense in enumerate(self.head):
            shapes[f"head.{index}.weight"] = (dense.in_features, dense.out_features)
            shapes[f"head.{index}.bias"] = (dense.out_features,)
        return shapes

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "input_size": self.input_size,
            "layers": [layer.to_json() for layer in self.layers],
            "head": [dense.to_json() for dense in self.head],
            "head_every_step": self.head_every_step,
            "features": list(self.features), "targets": list(self.targets),
            "forecast_mode": self.forecast_mode, "horizon": self.horizon,
            "state_mode": self.state_mode, "retain": self.retain,
            "scaling": self.scaling.to_json() if self.scaling else None,
            "initial_state": self.initial_state,
        }
        if self.forecasts_from_window:
            data.update(head_steps=self.head_steps, future_features=list(self.future_features),
                        covariate_lead=self.covariate_lead, output=self.output.to_json(),
                        window_scaler=self.window_scaler.to_json() if self.window_scaler
                        else None)
        if self.extra:
            data["extra"] = self.extra
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelSpec:
        if not isinstance(data, dict):
            raise InvalidSpec("a model spec must be a JSON object")
        try:
            scaling = data.get("scaling")
            return cls(
                input_size=int(data["input_size"]),
                layers=tuple(RecurrentLayerSpec.from_json(d) for d in data["layers"]),
                head=tuple(DenseLayerSpec.from_json(d) for d in data.get("head", [])),
                head_every_step=bool(data.get("head_every_step", False)),
                features=tuple(str(f) for f in data.get("features", ())),
                targets=tuple(str(t) for t in data.get("targets", ())),
                forecast_mode=str(data.get("forecast_mode", "direct")),
                horizon=int(data.get("horizon", 1)),
                state_mode=str(data.get("state_mode", "carry")),
                retain=int(data.get("retain", 0)),
                scaling=ScalingSpec.from_json(scaling) if scaling else None,
                initial_state=bool(data.get("initial_state", False)),
                head_steps=int(data.get("head_steps", 0)),
                future_features=tuple(str(f) for f in data.get("future_features", ())),
                covariate_lead=bool(data.get("covariate_lead", False)),
                window_scaler=(WindowScalerSpec.from_json(data["window_scaler"])
                               if data.get("window_scaler") else None),
                output=OutputSpec.from_json(data.get("output") or {}),
                extra=dict(data.get("extra", {})))
        except (KeyError, TypeError, ValueError) as error:
            if isinstance(error, InvalidSpec):
                raise
            raise InvalidSpec(f"bad model spec: {error!r}") from None
