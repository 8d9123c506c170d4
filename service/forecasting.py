"""Forecast calls on streams: the semantics of DESIGN.md §3, independent of HTTP.

A call reads the stream's record, consumes only the observations it has not consumed yet,
runs them through the stream's model version from its stored state, and compare-and-sets
the new record; a writer that lost the race re-reads and re-applies only what is still new.
A retried call consumes nothing and returns the same forecast (it is recomputed from the
stored state with the same code, bit for bit).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from models import Model
from service.errors import (
    Contention,
    GapInStream,
    ModelNotSupported,
    OverlapMismatch,
    StreamNotFound,
    VersionConflict,
)
from service.model_cache import ModelCache
from service.requests import ForecastRequest, check_stream_id, parse_forecast
from service.stores import StateStore, StreamRecord

MAX_ATTEMPTS = 64


@dataclass(frozen=True)
class _Plan:
    """What one attempt of a call will do, from the record it read."""

    model: Model
    version: str
    record: StreamRecord | None
    origin: int
    step: int
    state: np.ndarray
    tail: np.ndarray
    expected_revision: int | None
    fresh: bool


def check_servable(model: Model) -> None:
    """Refuse what the service does not run yet (recursive heads, windowed state)."""
    spec = model.spec
    if spec.forecast_mode != "direct" or spec.window is not None or not spec.head:
        raise ModelNotSupported(
            f"model {model.name}@{model.version} is {spec.forecast_mode} with state mode "
            f"{spec.state_mode}; this server runs carry models with a direct head")


class ForecastService:
    """Streams of every model in one registry, their state in one store."""

    def __init__(self, models: ModelCache, store: StateStore, max_window: int) -> None:
        self.models = models
        self.store = store
        self.max_window = max_window

    # -- planning ------------------------------------------------------------------------

    def _plan(self, reference: str, stream: str, reset: bool) -> _Plan:
        name, tag = ModelCache.split(reference)
        record = self.store.get(name, stream)
        if record is None or reset:
            _, version = self.models.resolve(reference)
            model = self.models.get(name, version)
            return _Plan(model, version, record, origin=0, step=0,
                         state=model.new_arena(1)[0], tail=np.zeros((0, model.spec.input_size),
                                                                    np.float32),
                         expected_revision=None if record is None else record.revision,
                         fresh=True)
        if tag is not None:
            _, named = self.models.resolve(reference)
            if named != record.version:
                raise VersionConflict(
                    f"stream {stream!r} is bound to version {record.version}; the call names "
                    f"{named}: reset the stream to move it", bound=record.version)
        model = self.models.get(name, record.version)
        return _Plan(model, record.version, record, origin=record.origin, step=record.step,
                     state=record.state, tail=record.tail, expected_revision=record.revision,
                     fresh=False)

    # -- the call ------------------------------------------------------------------------

    def forecast(self, reference: str, stream: str, body: Any) -> dict[str, Any]:
        """Run one forecast call and return its JSON response."""
        check_stream_id(stream)
        reset = isinstance(body, dict) and body.get("reset") is True
        for _ in range(MAX_ATTEMPTS):
            plan = self._plan(reference, stream, reset)
            check_servable(plan.model)
            request = parse_forecast(body, plan.model.spec, self.max_window)
            response, new_record = self._apply(plan, stream, request)
            if new_record is None or not request.commit:
                return response
            if self.store.compare_and_set(new_record, plan.expected_revision):
                return response
        raise Contention(f"stream {stream!r} kept changing under {MAX_ATTEMPTS} attempts; "
                         "retry the call")

    def _apply(self, plan: _Plan, stream: str, request: ForecastRequest
               ) -> tuple[dict[str, Any], StreamRecord | None]:
        model = plan.model
        spec = model.spec
        window = request.window
        origin, step = plan.origin, plan.step
        if plan.fresh:
            origin = step = request.start if request.start is not None else 0
        start = request.start if request.start is not None else step
        if start > step:
            raise GapInStream(f"stream {stream!r} expects its next observation at {step}; "
                              f"this window starts at {start}", expected_start=step)
        skipped = min(step - start, len(window))
        self._check_overlap(plan.tail, step, start, window[:skipped], stream)
        new = window[skipped:]
        state = plan.state
        if len(new):
            arena = state[None].copy()
            x = np.ascontiguousarray(model.scale_inputs(new)[None], dtype=np.float32)
            y = np.empty((1, len(new), model.network.output_size), np.float32)
            head = np.empty((1, model.network.head_size), np.float32)
            model.forward_into(x, arena, np.zeros(1, np.int64), y, head, check=False)
            state = arena[0]
        head = model.head_from_state(state[None])[0]
        forecast = model.unscale_targets(
            head.reshape(spec.horizon, len(spec.targets))[:request.horizon])
        new_step = step + len(new)
        response = {"model": model.name, "version": plan.version, "stream": stream,
                    "step": new_step, "consumed": len(new), "skipped": int(skipped),
                    "created": plan.record is None, "committed": request.commit,
                    "forecast": forecast.astype(float).tolist()}
        if not (len(new) or plan.fresh):
            return response, None
        tail = np.concatenate([plan.tail, new])[-spec.retain:] if len(new) else plan.tail
        now = time.time()
        kept = plan.record is not None and not plan.fresh
        record = StreamRecord(
            model=model.name, stream=stream, version=plan.version, origin=origin,
            step=new_step, state=state, tail=np.ascontiguousarray(tail, dtype=np.float32),
            revision=0 if plan.expected_revision is None else plan.expected_revision + 1,
            created_at=plan.record.created_at if kept and plan.record else now,
            updated_at=now)
        return response, record

    @staticmethod
    def _check_overlap(tail: np.ndarray, step: int, start: int, resent: np.ndarray,
                       stream: str) -> None:
        """Resent observations still in the retained tail must equal it."""
        tail_start = step - len(tail)
        for offset, observation in enumerate(resent):
            index = start + offset
            if index < tail_start:
                continue
            if not np.array_equal(observation, tail[index - tail_start]):
                raise OverlapMismatch(
                    f"observation {index} of stream {stream!r} differs from the one it "
                    "consumed; reset the stream to correct history", index=index)

    # -- stream administration -----------------------------------------------------------

    def describe(self, reference: str, stream: str) -> dict[str, Any]:
        check_stream_id(stream)
        name, _ = ModelCache.split(reference)
        record = self.store.get(name, stream)
        if record is None:
            raise StreamNotFound(f"no stream {stream!r} of model {name!r}")
        return {"stream": stream, "model": name, "version": record.version,
                "step": record.step, "origin": record.origin,
                "updated_at": record.updated_at}

    def delete(self, reference: str, stream: str) -> dict[str, Any]:
        check_stream_id(stream)
        name, _ = ModelCache.split(reference)
        if not self.store.delete(name, stream):
            raise StreamNotFound(f"no stream {stream!r} of model {name!r}")
        return {"stream": stream, "model": name, "deleted": True}
