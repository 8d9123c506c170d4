"""Forecasts of ``window:W`` models that need the window itself, as forecasting libraries
predict: every forecast re-runs the last W observations from the initial state, with

- statistics recomputed from the window (:class:`models.spec.WindowScalerSpec`): each
  scaled feature by its own statistics over the window's observed rows (left padding is
  not observed), forecasts inverse-scaled with the target's;
- a head over the last K outputs of the last layer, each step's output joined with that
  forecast step's future covariates (Darts' ``BlockRNNModel``, NeuralForecast's direct
  models);
- covariates that lead the target by one step (Darts' ``RNNModel``, NeuralForecast's
  ``recurrent=True``): the input at t is the target at t and the covariates at t+1; the
  last row takes the first forecast step's covariates, and covariates that are not known
  in the future (historic ones) are 0 in scaled units there;
- distribution heads whose point value (mu, the median, or the mean of the outputs) is the
  forecast, and, in a recursive model, what is fed back (the mean path).
"""

from __future__ import annotations

import numpy as np

from statecast.models.errors import InvalidInput
from statecast.models.model import Model, State
from statecast.models.spec import ModelSpec, WindowScalerSpec

_MAD_FROM_STD = 0.6744897501960817


def _lower_median(values: np.ndarray) -> np.ndarray:
    """Median along axis 1 that takes the lower middle value for an even count (torch's
    ``nanmedian``)."""
    return np.sort(values, axis=1)[:, (values.shape[1] - 1) // 2]


def _population_std(values: np.ndarray) -> np.ndarray:
    mean = values.mean(axis=1, keepdims=True)
    return np.sqrt(((values - mean) ** 2).mean(axis=1))


def _statistics(kind: str, eps: float, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(shift, scale)`` ``[windows, columns]`` of ``rows [windows, n, columns]``
    (float64), over axis 1."""
    count, n, columns = rows.shape
    if kind == "identity" or n == 0:
        return np.zeros((count, columns)), np.ones((count, columns))
    if kind == "standard":
        std = _population_std(rows)
        std[std == 0] = 1.0
        return rows.mean(axis=1), std + eps
    if kind in ("robust", "invariant"):
        median = _lower_median(rows)
        mad = _lower_median(np.abs(rows - median[:, None]))
        mad = np.where(mad == 0, _MAD_FROM_STD * _population_std(rows), mad)
        mad[mad == 0] = 1.0
        return median, mad + eps
    low, high = rows.min(axis=1), rows.max(axis=1)  # minmax, minmax1
    span = high - low
    span[span == 0] = 1.0
    return low, span + eps


def window_statistics(scaler: WindowScalerSpec, windows: np.ndarray, observed: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """``(shift, scale)``, each ``float64 [windows, features]``, of the scaled features
    (identity elsewhere), over each window's last ``observed[b]`` rows: one computation
    per distinct count of observed rows (usually one for all)."""
    count, steps, features = windows.shape
    shift, scale = np.zeros((count, features)), np.ones((count, features))
    columns = np.asarray(scaler.features, np.intp)
    for used in np.unique(observed):
        members = np.flatnonzero(observed == used)
        rows = windows[members, steps - int(used):][:, :, columns].astype(np.float64)
        part_shift, part_scale = _statistics(scaler.kind, scaler.eps, rows)
        shift[np.ix_(members, columns)] = part_shift
        scale[np.ix_(members, columns)] = part_scale
    return shift, scale


def _forward(kind: str, values: np.ndarray, shift: np.ndarray, scale: np.ndarray
             ) -> np.ndarray:
    z = (values - shift) / scale
    if kind == "minmax1":
        return 2.0 * z - 1.0
    if kind == "invariant":
        return np.arcsinh(z)
    return z


def _inverse(kind: str, values: np.ndarray, shift: np.ndarray, scale: np.ndarray
             ) -> np.ndarray:
    if kind == "minmax1":
        values = (values + 1.0) / 2.0
    elif kind == "invariant":
        values = np.sinh(values)
    return values * scale + shift


#: Every name of :data:`models.spec.STEP_HEAD_ACTIVATIONS`, in NumPy.
_NUMPY_ACTIVATIONS = {
    "linear": lambda x, a, b: x,
    "relu": lambda x, a, b: np.maximum(x, 0),
    "tanh": lambda x, a, b: np.tanh(x),
    "sigmoid": lambda x, a, b: 1 / (1 + np.exp(-np.clip(x, -80, 80))),
    "softplus": lambda x, a, b: np.logaddexp(0, x),
    "softsign": lambda x, a, b: x / (1 + np.abs(x)),
    "leaky_relu": lambda x, a, b: np.where(x >= 0, x, a * x),
    "elu": lambda x, a, b: np.where(x > 0, x, a * np.expm1(np.minimum(x, 0))),
}


def _dense_head(model: Model, inputs: np.ndarray) -> np.ndarray:
    """The head's dense layers on ``inputs [..., head_inputs]`` (float32)."""
    out = inputs.astype(np.float32)
    for index, dense in enumerate(model.spec.head):
        weight = model.tensors[f"head.{index}.weight"]
        bias = model.tensors[f"head.{index}.bias"]
        act = dense.activation
        out = _NUMPY_ACTIVATIONS[act.name](out @ weight + bias, np.float32(act.alpha),
                                           np.float32(act.beta)).astype(np.float32)
    return out


def parameters_of(spec: ModelSpec, outputs: np.ndarray) -> np.ndarray:
    """``[..., targets, params]`` from a head's ``[..., targets * params]`` outputs."""
    return outputs.reshape(*outputs.shape[:-1], len(spec.targets), spec.output.params)


def _point(spec: ModelSpec, outputs: np.ndarray) -> np.ndarray:
    """``[..., targets]`` point values from ``[..., targets * params]`` outputs."""
    layout = spec.output
    shaped = parameters_of(spec, outputs)
    if layout.point_index < 0:
        return shaped.mean(axis=-1, dtype=np.float32).astype(np.float32)
    return shaped[..., layout.point_index]


def check_window_inputs(spec: ModelSpec, windows: np.ndarray, future: np.ndarray | None,
                        horizon: int) -> None:
    """Shapes of :func:`forecast_windows`' arguments, refused with the fix named: ``future``
    holds at least ``horizon`` steps' covariates when the model reads any."""
    window = spec.window or 0
    if windows.ndim != 3 or windows.shape[1] != window or windows.shape[2] != spec.input_size:
        raise InvalidInput(f"windows must be [streams, {window}, {spec.input_size}], got "
                           f"{windows.shape}")
    width = len(spec.future_features)
    if width and (future is None or future.ndim != 3 or future.shape[0] != windows.shape[0]
                  or future.shape[2] != width or future.shape[1] < horizon):
        raise InvalidInput(f"future must be [streams, {horizon}, {width}] (covariates "
                           f"{list(spec.future_features)} of each forecast step)")


def forecast_windows(model: Model, windows: np.ndarray, future: np.ndarray | None,
                     horizon: int, observed: np.ndarray | None = None) -> np.ndarray:
    """Forecasts ``float32 [streams, horizon, targets]`` in original units (arguments as
    for :func:`window_outputs`)."""
    return point_forecasts(model, *window_outputs(model, windows, future, horizon, observed))


def point_forecasts(model: Model, outputs: np.ndarray, scaling: Scaling) -> np.ndarray:
    """The point forecasts ``float32 [streams, horizon, targets]`` of :func:`window_outputs`'
    results, in original units."""
    return original_units(model, _point(model.spec, outputs), scaling)


#: A window scaler's ``(kind, shift, scale)`` of the targets, ``[streams, 1, targets]``.
Scaling = tuple[str, np.ndarray, np.ndarray]


def original_units(model: Model, values: np.ndarray, scaling: Scaling) -> np.ndarray:
    """Scaled target values ``[streams, horizon, targets]`` in original units (float32)."""
    kind, shift, scale = scaling
    forecast = _inverse(kind, values.astype(np.float64), shift, scale).astype(np.float32)
    return model.unscale_targets(forecast) if model.spec.scaling is not None else forecast


def window_outputs(model: Model, windows: np.ndarray, future: np.ndarray | None,
                   horizon: int, observed: np.ndarray | None = None
                   ) -> tuple[np.ndarray, Scaling]:
    """The head's scaled outputs ``float32 [streams, horizon, targets * params]`` of each
    forecast step (a recursive model's along its mean path) and the window scaling that
    maps them back (:func:`original_units`).

    Parameters
    ----------
    windows : np.ndarray
        ``[streams, W, features]`` raw observations, the last W of each stream (rows
        ``[target, covariates...]`` in the model's feature order, as observed: a model
        whose covariates lead gets them paired with the next row's here).
    future : np.ndarray or None
        ``[streams, horizon, future features]``: the future covariates of each forecast
        step, raw units; None for models without any.
    horizon : int
        Forecast steps (at most ``spec.horizon`` for a direct model).
    observed : np.ndarray, optional
        ``int [streams]``: how many of each window's last rows are observations; the rows
        before are left padding (zeros), left out of the window statistics.
    """
    spec = model.spec
    windows = np.ascontiguousarray(windows, np.float32)
    count, steps, _ = windows.shape
    if spec.scaling is not None:
        windows = model.scale_inputs(windows)
    check_window_inputs(spec, windows, future, horizon)
    observed = np.full(count, steps) if observed is None else np.asarray(observed)
    scaler = spec.window_scaler
    kind = scaler.kind if scaler is not None else "identity"
    if scaler is not None:
        shift, scale = window_statistics(scaler, windows, observed)
    else:
        shift, scale = np.zeros((count, spec.input_size)), np.ones((count, spec.input_size))
    x = _forward(kind, windows.astype(np.float64), shift[:, None], scale[:, None])
    future_index = [spec.features.index(name) for name in spec.future_features]
    future_scaled = None
    if future_index and future is not None:
        future_scaled = _forward(kind, np.asarray(future, np.float64), shift[:, None,
                                 future_index], scale[:, None, future_index])
    targets = [spec.features.index(name) for name in spec.targets]
    covariates = [i for i in range(spec.input_size) if i not in targets]
    if spec.covariate_lead and covariates:
        x[:, :-1, covariates] = x[:, 1:, covariates]
        x[:, -1, covariates] = 0.0  # historic covariates are not known ahead: 0 scaled
        if future_scaled is not None:
            x[:, -1, future_index] = future_scaled[:, 0]
    x32 = np.ascontiguousarray(x, np.float32)
    outputs, state, head = model.run(x32)
    if spec.forecast_mode == "direct":
        if spec.head_steps:  # each step's head reads only that step: the first `horizon`
            first = steps - spec.head_steps
            last = outputs[:, first:first + horizon]
            if future_scaled is not None:
                last = np.concatenate([last, future_scaled[:, :horizon].astype(np.float32)],
                                      axis=-1)
            per_step = _dense_head(model, last)
        else:
            assert head is not None
            if head.ndim == 3:  # a head applied at every step forecasts from the last one
                head = head[:, -1]
            per_step = head.reshape(count, spec.horizon, -1)
        per_step = per_step[:, :horizon]
    else:
        per_step = _rollout(model, state, outputs, head, future_scaled, horizon, targets,
                            covariates, future_index)
    return per_step, (kind, shift[:, None, targets], scale[:, None, targets])


def _rollout(model: Model, state: State, outputs: np.ndarray, head: np.ndarray | None,
             future_scaled: np.ndarray | None, horizon: int, targets: list[int],
             covariates: list[int], future_index: list[int]) -> np.ndarray:
    """A recursive model's scaled outputs ``[streams, horizon, targets * params]``, each
    step's point value fed back as the next input with the carried state."""
    spec = model.spec
    count = outputs.shape[0]
    lead = 1 if spec.covariate_lead else 0

    def last_output(outputs: np.ndarray, head: np.ndarray | None) -> np.ndarray:
        if head is None:
            return outputs[:, -1]
        return head[:, -1] if head.ndim == 3 else head

    current = last_output(outputs, head)
    per_step = np.empty((count, horizon, current.shape[-1]), np.float32)
    step_input = np.zeros((count, 1, spec.input_size), np.float32)
    for k in range(horizon):
        per_step[:, k] = current
        if k == horizon - 1:
            break
        step_input[:] = 0.0
        step_input[:, 0, targets] = _point(spec, current)
        if future_scaled is not None and covariates:
            step_input[:, 0, future_index] = future_scaled[:, k + lead]
        outputs, state, head = model.run(step_input, state)
        current = last_output(outputs, head)
    return per_step
