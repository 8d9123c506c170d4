"""The typed dataplane: what the HTTP codecs (``/v1`` JSON, ``/v2`` tensors, the batch
route) hand to :class:`service.forecasting.ForecastService` and get back. No JSON here:
windows and forecasts are arrays (or, from JSON, rows of numbers, checked against the
stream's model by :func:`service.requests.validate_call`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from statecast.service.schemas import ForecastRequestBody, validated


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

    @classmethod
    def from_json(cls, body: Any) -> StreamCall:
        """A JSON forecast body (:class:`service.schemas.ForecastRequestBody`), validated."""
        fields = validated(ForecastRequestBody, body)
        return cls(window=fields.window, start=fields.start, horizon=fields.horizon,
                   future=fields.future, commit=fields.commit, reset=fields.reset)


@dataclass(frozen=True)
class StreamForecast:
    """The answer to one stream's call: ``forecast`` ``float32 [horizon, targets]`` in
    original units, the version that computed it, the stream's new ``step``, and how many
    of the window's observations were consumed and skipped."""

    model: str
    version: str
    stream: str
    step: int
    consumed: int
    skipped: int
    created: bool
    committed: bool
    forecast: np.ndarray

    def to_json(self) -> dict[str, Any]:
        """The ``/v1`` response body."""
        return {"model": self.model, "version": self.version, "stream": self.stream,
                "step": self.step, "consumed": self.consumed, "skipped": self.skipped,
                "created": self.created, "committed": self.committed,
                "forecast": self.forecast.astype(float).tolist()}
