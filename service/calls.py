"""The typed dataplane: what the HTTP codecs (``/v1`` JSON, ``/v2`` tensors, the batch
route) hand to :class:`service.forecasting.ForecastService` and get back. Windows and
forecasts are arrays (or, from JSON, rows of numbers, checked against the stream's model
by :func:`service.requests.validate_call`).

A batch call's body (``POST /v1/models/{model}/forecast``) has its options checked for the
whole call and its items one by one, so that a bad item fails alone with an error in the
response and the others are served.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from statecast.models import StatecastError
from statecast.service.errors import BatchTooLarge, RequestError
from statecast.service.schemas import (
    FLOAT32_MAX,
    BatchOptions,
    ForecastRequestBody,
    validated,
)

#: Options of a whole batch call that an item inherits unless it sets them itself.
INHERITED = ("horizon", "commit", "reset", "level")


@dataclass(slots=True)
class StreamCall:
    """One stream's forecast call, before it meets its model: ``window`` ``[time][features]``
    raw observations (an array, or rows of numbers; a flat list for one feature), ``future``
    the covariates of each forecast step the same way; ``horizon`` None for the model's."""

    window: Any
    start: int | None = None
    horizon: int | None = None
    future: Any = None
    commit: bool = True
    reset: bool = False
    #: Interval levels (percentages) to add to the forecast.
    level: tuple[float, ...] = ()

    @classmethod
    def from_json(cls, body: Any) -> StreamCall:
        """A JSON forecast body (:class:`service.schemas.ForecastRequestBody`), validated."""
        fields = validated(ForecastRequestBody, body)
        return cls(window=fields.window, start=fields.start, horizon=fields.horizon,
                   future=fields.future, commit=fields.commit, reset=fields.reset,
                   level=tuple(fields.level or ()))


@dataclass(slots=True)
class StreamForecast:
    """The answer to one stream's call: ``forecast`` ``[horizon, targets]`` in original
    units (float32 values; a batch gives them as float64, for its JSON), the version that
    computed it, the stream's new ``step``, and how many of the window's observations were
    consumed and skipped; ``intervals`` the bounds ``lo-<level>``/``hi-<level>`` of the
    levels asked for."""

    model: str
    version: str
    stream: str
    step: int
    consumed: int
    skipped: int
    created: bool
    committed: bool
    forecast: np.ndarray
    intervals: dict[str, np.ndarray] | None = None

    def to_json(self) -> dict[str, Any]:
        """The ``/v1`` response body, its keys in sorted order (as every response writes
        them, here with no sort to run), its arrays as float64 arrays (which the JSON
        encoder writes as it writes Python floats, at a fraction of the cost of lists)."""
        body = {"committed": self.committed, "consumed": self.consumed,
                "created": self.created,
                "forecast": self.forecast.astype(np.float64, copy=False)}
        if self.intervals is not None:
            body["intervals"] = {name: self.intervals[name].astype(np.float64)
                                 for name in sorted(self.intervals)}
        body.update(model=self.model, skipped=self.skipped, step=self.step,
                    stream=self.stream, version=self.version)
        return body


def _number(value: Any) -> bool:
    """An int or a float within float32's finite range (not a bool, not NaN)."""
    return (type(value) is float or type(value) is int) and (
        -FLOAT32_MAX <= value <= FLOAT32_MAX)


def _numbers(window: Any) -> bool:
    """Whether ``window`` is rows of numbers the schema accepts (a non-empty list of
    non-empty lists of :func:`_number`, or of numbers): the common case, checked without
    the schema."""
    if type(window) is not list or not window:
        return False
    if len(window) == 1 and type(window[0]) is list and len(window[0]) == 1:
        return _number(window[0][0])  # the usual append: one row of one value
    if type(window[0]) is list:
        return all(type(row) is list and row and all(map(_number, row)) for row in window)
    return all(map(_number, window))


def batch_calls(body: Any, max_items: int) -> list[tuple[Any, StreamCall | StatecastError]]:
    """``(stream, call)`` per item of a batch body, the call being the item's error where the
    item is not a valid forecast body of its own (no ``"stream"`` string, a stream named
    twice, a field the schema refuses): that item fails alone. A body that is not
    ``{"items": [...]}``, bad options (``BatchOptions``), no items or too many refuse the
    whole call."""
    if not isinstance(body, dict) or not isinstance(body.get("items"), list):
        raise RequestError('a batch body is {"items": [{"stream": ..., "window": ...}, ...]}')
    validated(BatchOptions, {key: value for key, value in body.items() if key != "items"})
    items = body["items"]
    if not items:
        raise RequestError("items must not be empty")
    if len(items) > max_items:
        raise BatchTooLarge(f"{len(items)} items; at most {max_items} per call",
                            limit=max_items)
    # A null option is an option not set (the schema allows it at the top level).
    inherited = {key: body[key] for key in INHERITED if body.get(key) is not None}
    # An item of a stream and a window of plain numbers needs no schema run of its own.
    options = StreamCall.from_json({**inherited, "window": [0.0]})
    horizon, commit, reset, level = (options.horizon, options.commit, options.reset,
                                     options.level)
    seen: set[str] = set()
    calls: list[tuple[Any, StreamCall | StatecastError]] = []
    for item in items:
        stream = item.get("stream") if isinstance(item, dict) else None
        if not isinstance(stream, str):
            calls.append((stream, RequestError("each item needs a \"stream\" string")))
            continue
        if stream in seen:
            calls.append((stream, RequestError("each item needs a distinct stream id")))
            continue
        seen.add(stream)
        if len(item) == 2 and _numbers(item.get("window")):
            # Fields in order: window, start, horizon, future, commit, reset, level.
            calls.append((stream, StreamCall(item["window"], None, horizon, None, commit,
                                             reset, level)))
            continue
        try:
            fields = {key: value for key, value in item.items() if key != "stream"}
            calls.append((stream, StreamCall.from_json({**inherited, **fields})))
        except StatecastError as error:
            calls.append((stream, error))
    return calls
