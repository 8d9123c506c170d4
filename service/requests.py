"""Parsing and validating forecast requests, before anything touches a stream."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from statecast.models.conformal import check_levels
from statecast.models.spec import ModelSpec
from statecast.service.calls import StreamCall
from statecast.service.errors import (
    HorizonTooLong,
    InvalidStreamId,
    MissingFuture,
    NonFiniteValue,
    RequestError,
    UnexpectedFuture,
    WindowTooLong,
    WrongFeatureCount,
)
from statecast.service.schemas import FLOAT32_MAX, STREAM_ID

#: How far a recursive model may be rolled out in one call (default of ``max_horizon``).
MAX_RECURSIVE_HORIZON = 1000
MAX_STREAM_ID = 256


def check_stream_id(stream: str, max_length: int = MAX_STREAM_ID) -> str:
    """Refuse ids that are not 1..max_length characters of ``A-Z a-z 0-9 . _ : -``."""
    if len(stream) > max_length or not STREAM_ID.fullmatch(stream):
        raise InvalidStreamId(f"invalid stream id {stream[:64]!r}: 1-{max_length} characters "
                              "from A-Z a-z 0-9 . _ : -, starting with a letter or digit",
                              limit=max_length)
    return stream


@dataclass(frozen=True)
class ForecastRequest:
    """A validated forecast call: the window is ``float32 [time, features]`` raw units;
    ``future`` the covariates of the forecast steps (recursive models), raw units."""

    window: np.ndarray
    start: int | None
    horizon: int
    commit: bool
    reset: bool
    future: np.ndarray | None = None
    level: tuple[float, ...] = ()


def _check_row_count(rows: int, what: str, max_rows: int) -> None:
    if rows > max_rows:
        raise WindowTooLong(f"{what} has {rows} rows; at most {max_rows} per call",
                            limit=max_rows)


def _within_float32(values: np.ndarray, what: str) -> np.ndarray:
    """Finite float64 ``values`` as float32, refused when one lies beyond float32's range
    (checked before the cast: an np.errstate block costs more than the whole parse)."""
    if np.abs(values).max() > FLOAT32_MAX:
        raise NonFiniteValue(f"{what} holds values beyond float32's range")
    return values.astype(np.float32)


def _array_rows(raw: np.ndarray, names: tuple[str, ...], what: str, max_rows: int
                ) -> np.ndarray:
    """An array ``[time, len(names)]`` (``[time]`` for one column) checked as :func:`_rows`
    checks JSON rows, as float32."""
    columns = len(names)
    values = raw.reshape(-1, 1) if raw.ndim == 1 and columns == 1 else raw
    if values.ndim != 2 or values.shape[1] != columns:
        raise WrongFeatureCount(f"{what} has shape {list(raw.shape)}; the model takes "
                                f"{columns} ({', '.join(names)}) per row", expected=columns)
    if not len(values):
        raise RequestError(f"{what} must hold at least one row")
    _check_row_count(len(values), what, max_rows)
    values = values.astype(np.float64, copy=False)
    if not np.isfinite(values).all():
        raise NonFiniteValue(f"{what} holds NaN or infinite values")
    return _within_float32(values, what)


def _rows(raw: Any, names: tuple[str, ...], what: str, max_rows: int) -> np.ndarray:
    """``[time][len(names)]`` numbers (a flat list when there is one column) as float32."""
    if isinstance(raw, np.ndarray):
        return _array_rows(raw, names, what, max_rows)
    columns = len(names)
    if not isinstance(raw, list) or not raw:
        raise RequestError(f"{what} must be a non-empty list of rows ([time][{columns}]; a "
                           "flat list when there is one value per row)")
    _check_row_count(len(raw), what, max_rows)
    rows = raw if isinstance(raw[0], list) else None
    if rows is None:
        if columns != 1:
            raise WrongFeatureCount(f"a flat {what} suits one value per row; this model "
                                    f"takes {columns} ({', '.join(names)})", expected=columns)
        rows = [[value] for value in raw]
    values = np.empty((len(rows), columns), np.float64)
    for t, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != columns:
            got = len(row) if isinstance(row, list) else "a scalar"
            raise WrongFeatureCount(f"{what} row {t} has {got} values; the model takes "
                                    f"{columns} ({', '.join(names)})",
                                    expected=columns, index=t)
        for k, value in enumerate(row):
            if value is None:
                raise NonFiniteValue(f"{what} row {t}, value {k} is null", index=t)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise RequestError(f"{what} row {t}, value {k} is not a number: {value!r}",
                                   index=t)
            if not math.isfinite(value):
                raise NonFiniteValue(f"{what} row {t}, value {k} is not finite", index=t)
            values[t, k] = value
    return _within_float32(values, what)


def future_features_of(spec: ModelSpec) -> tuple[str, ...]:
    """The features whose values for each forecast step a call sends in ``future``: a
    window model's declared future covariates, every covariate (a feature it does not
    forecast) of another recursive model, none otherwise."""
    if spec.forecasts_from_window:
        return spec.future_features
    if spec.forecast_mode != "recursive":
        return ()
    return tuple(name for name in spec.features if name not in spec.targets)


def _future(raw: Any, spec: ModelSpec, horizon: int, max_horizon: int
            ) -> np.ndarray | None:
    covariates = future_features_of(spec)
    if not covariates:
        if raw is not None:
            raise UnexpectedFuture("this model takes no future covariates (drop \"future\")")
        return None
    if raw is None:
        raise MissingFuture(f"this model needs the future values of {list(covariates)} for "
                            f"each of the {horizon} forecast steps: send \"future\" as "
                            f"[{horizon}][{len(covariates)}]", covariates=list(covariates))
    future = _rows(raw, covariates, "future", max_horizon)
    if len(future) != horizon:
        raise MissingFuture(f"future has {len(future)} rows; the forecast has {horizon} steps",
                            covariates=list(covariates))
    return future


def validate_call(call: StreamCall, spec: ModelSpec, max_window: int,
                  max_horizon: int = MAX_RECURSIVE_HORIZON) -> ForecastRequest:
    """A call checked against the model of its stream: feature count, window length,
    horizon, finite values, future covariates; nothing is changed on failure."""
    horizon = spec.horizon if call.horizon is None else call.horizon
    limit = spec.horizon if spec.forecast_mode == "direct" else max_horizon
    if horizon > limit:
        raise HorizonTooLong(f"horizon {horizon} exceeds the model's {limit}", limit=limit)
    window = _rows(call.window, spec.features, "window", max_window)
    return ForecastRequest(window=window, start=call.start, horizon=horizon,
                           commit=call.commit, reset=call.reset,
                           future=_future(call.future, spec, horizon, max_horizon),
                           level=check_levels(call.level))

