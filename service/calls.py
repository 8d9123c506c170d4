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
from statecast.service.schemas import BatchOptions, ForecastRequestBody, validated

#: Options of a whole batch call that an item inherits unless it sets them itself.
INHERITED = ("horizon", "commit", "reset", "level")


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class StreamForecast:
    """The answer to one stream's call: ``forecast`` ``float32 [horizon, targets]`` in
    original units, the version that computed it, the stream's new ``step``, and how many
    of the window's observations were consumed and skipped; ``intervals`` the bounds
    ``lo-<level>``/``hi-<level>`` of the levels asked for."""

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
        """The ``/v1`` response body."""
        body = {"model": self.model, "version": self.version, "stream": self.stream,
                "step": self.step, "consumed": self.consumed, "skipped": self.skipped,
                "created": self.created, "committed": self.committed,
                "forecast": self.forecast.astype(float).tolist()}
        if self.intervals is not None:
            body["intervals"] = {name: bound.astype(float).tolist()
                                 for name, bound in self.intervals.items()}
        return body


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
    inherited = {key: body[key] for key in INHERITED if key in body}
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
        try:
            fields = {key: value for key, value in item.items() if key != "stream"}
            calls.append((stream, StreamCall.from_json({**inherited, **fields})))
        except StatecastError as error:
            calls.append((stream, error))
    return calls
