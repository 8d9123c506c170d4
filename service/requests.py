"""Parsing and validating forecast requests, before anything touches a stream."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.spec import ModelSpec
from service.errors import (
    HorizonTooLong,
    InvalidStreamId,
    MalformedJson,
    NonFiniteValue,
    RequestError,
    WindowTooLong,
    WrongFeatureCount,
)

STREAM_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,255}")


def _reject_constant(name: str) -> float:
    raise NonFiniteValue(f"{name} is not a number: send finite values only")


def parse_json(body: bytes) -> Any:
    """Parse a JSON body; ``NaN``/``Infinity`` are refused as ``non_finite_value``."""
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except NonFiniteValue:
        raise
    except (ValueError, UnicodeDecodeError) as error:
        raise MalformedJson(f"request body is not valid JSON: {error}") from None


def check_stream_id(stream: str) -> str:
    if not STREAM_ID.fullmatch(stream):
        raise InvalidStreamId(f"invalid stream id {stream!r}: 1-256 characters from A-Z a-z "
                              "0-9 . _ : -, starting with a letter or digit")
    return stream


@dataclass(frozen=True)
class ForecastRequest:
    """A validated forecast call: the window is ``float32 [time, features]`` raw units."""

    window: np.ndarray
    start: int | None
    horizon: int
    commit: bool
    reset: bool


def _flag(body: dict[str, Any], name: str, default: bool) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise RequestError(f"{name} must be true or false, got {value!r}")
    return value


def _window(raw: Any, spec: ModelSpec, max_window: int) -> np.ndarray:
    if not isinstance(raw, list) or not raw:
        raise RequestError("window must be a non-empty list of observations "
                           "([time][features]; a flat list for a one-feature model)")
    if len(raw) > max_window:
        raise WindowTooLong(f"window has {len(raw)} observations; at most {max_window} per "
                            "call", limit=max_window)
    features = spec.input_size
    rows = raw if isinstance(raw[0], list) else None
    if rows is None:
        if features != 1:
            raise WrongFeatureCount(f"a flat window suits one-feature models; this model "
                                    f"takes {features} features per observation",
                                    expected=features)
        rows = [[value] for value in raw]
    values = np.empty((len(rows), features), np.float64)
    for t, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != features:
            got = len(row) if isinstance(row, list) else "a scalar"
            raise WrongFeatureCount(f"observation {t} has {got} values; the model takes "
                                    f"{features} ({', '.join(spec.features)})",
                                    expected=features, index=t)
        for k, value in enumerate(row):
            if value is None:
                raise NonFiniteValue(f"observation {t}, feature {k} is null", index=t)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise RequestError(f"observation {t}, feature {k} is not a number: {value!r}",
                                   index=t)
            if not math.isfinite(value):
                raise NonFiniteValue(f"observation {t}, feature {k} is not finite", index=t)
            values[t, k] = value
    with np.errstate(over="ignore"):
        window = values.astype(np.float32)
    if not np.isfinite(window).all():
        raise NonFiniteValue("window holds values beyond float32's range")
    return window


def parse_forecast(body: Any, spec: ModelSpec, max_window: int) -> ForecastRequest:
    """Validate a forecast body against a model's spec; nothing is changed on failure."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    unknown = sorted(set(body) - {"start", "window", "horizon", "commit", "reset"})
    if unknown:
        raise RequestError(f"unknown fields {unknown}")
    start = body.get("start")
    if start is not None and (isinstance(start, bool) or not isinstance(start, int)
                              or start < 0):
        raise RequestError(f"start must be a non-negative integer, got {start!r}")
    horizon = body.get("horizon", spec.horizon)
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
        raise RequestError(f"horizon must be a positive integer, got {horizon!r}")
    if horizon > spec.horizon:
        raise HorizonTooLong(f"horizon {horizon} exceeds the model's {spec.horizon}",
                             limit=spec.horizon)
    return ForecastRequest(window=_window(body.get("window"), spec, max_window), start=start,
                           horizon=horizon, commit=_flag(body, "commit", True),
                           reset=_flag(body, "reset", False))
