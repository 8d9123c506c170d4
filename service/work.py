"""One call's work on its streams, independent of the store: what each attempt plans from
the records it read, the streams' states after their new observations and their forecasts,
a group of streams of one model version at a time (:meth:`Model.advance` and
:meth:`Model.predict`, or :func:`models.windowed.forecast_windows` for models that forecast
from their window), and the answer and new record each stream's call leaves."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from statecast.models import Model
from statecast.models.conformal import Calibration
from statecast.models.distribution import gives_levels, head_intervals
from statecast.models.windowed import point_forecasts, window_outputs
from statecast.service.calls import StreamForecast
from statecast.service.errors import OverlapMismatch
from statecast.service.requests import ForecastRequest
from statecast.service.stores import StreamRecord


@dataclass(frozen=True)
class Plan:
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


@dataclass(frozen=True)
class Work:
    """One stream's part of a call: its plan, request, and the observations it consumes."""

    plan: Plan
    stream: str
    request: ForecastRequest
    origin: int
    step: int
    skipped: int
    new: np.ndarray
    #: The calibration that gives this call's conformal intervals, read once when the call
    #: was checked (None: no levels asked, or the model's head gives them).
    calibration: Calibration | None = None


def advance_works(model: Model, works: list[Work]) -> list[np.ndarray]:
    """The state of each work's stream after its new observations (:meth:`Model.advance`:
    a ``carry`` stream continues from its state, a ``window:W`` stream re-runs its last W
    observations). Streams with nothing new keep their state."""
    window = model.spec.window
    observations = [work.new if window is None or not len(work.new)
                    else np.concatenate([work.plan.tail, work.new]) for work in works]
    states = model.advance(np.stack([work.plan.state for work in works]), observations)
    return list(states)


def forecast_one(model: Model, state: np.ndarray, horizon: int, future: np.ndarray | None
                 ) -> np.ndarray:
    """``[horizon, targets]`` in original units from a stream's state
    (:meth:`Model.predict`; ``future`` row h: the covariates at forecast step h)."""
    return model.predict(state[None], horizon, None if future is None else future[None])[0]


#: Each work's forecast ``float32 [horizon, targets]``, and the intervals its model's
#: distribution head gives for the levels the work asks for (None: not asked, or a point
#: model, whose intervals are conformal).
Forecasts = tuple[list[np.ndarray], list[dict[str, np.ndarray] | None]]


def window_forecasts(model: Model, works: list[Work]) -> Forecasts:
    """For a model that forecasts from its window (:mod:`models.windowed`), every work's
    forecast from the last W raw observations of its stream after this call, one call per
    horizon."""
    window = model.spec.window or 0
    results: list[np.ndarray] = [np.empty(0, np.float32)] * len(works)
    bounds: list[dict[str, np.ndarray] | None] = [None] * len(works)
    by_horizon: dict[int, list[int]] = {}
    for index, work in enumerate(works):
        by_horizon.setdefault(work.request.horizon, []).append(index)
    for horizon, members in by_horizon.items():
        windows = np.stack([np.concatenate([works[i].plan.tail, works[i].new])[-window:]
                            for i in members])
        futures = [works[i].request.future for i in members]
        future = None if futures[0] is None else np.stack(futures)  # type: ignore[arg-type]
        outputs, scaling = window_outputs(model, windows, future, horizon)
        block = point_forecasts(model, outputs, scaling)
        for row, index in enumerate(members):
            results[index] = block[row]
            levels = works[index].request.level
            if levels and gives_levels(model):
                kind, shift, scale = scaling
                one = head_intervals(model, outputs[row:row + 1], (
                    kind, shift[row:row + 1], scale[row:row + 1]), levels)
                bounds[index] = {name: bound[0] for name, bound in one.items()}
    return results, bounds


def fresh_plan(model: Model, version: str, record: StreamRecord | None) -> Plan:
    """A plan that starts a stream over from the model's initial state."""
    return Plan(model, version, record, origin=0, step=0, state=model.new_arena(1)[0],
                tail=np.zeros((0, model.spec.input_size), np.float32),
                expected_revision=None if record is None else record.revision, fresh=True)


def group_forecasts(model: Model, works: list[Work], states: list[np.ndarray]
                    ) -> Forecasts:
    """Every work's forecast ``[horizon, targets]`` from its stream's new state (and its
    head's intervals, :data:`Forecasts`), computed for the group at once where the model
    allows (from the windows, or one head call over the states of a direct model), a
    recursive model rolled out one stream at a time."""
    if model.spec.forecasts_from_window:
        return window_forecasts(model, works)
    horizons = [work.request.horizon for work in works]
    none: list[dict[str, np.ndarray] | None] = [None] * len(works)
    if model.spec.forecast_mode != "direct":
        return [forecast_one(model, state, horizon, work.request.future)
                for work, state, horizon in zip(works, states, horizons, strict=True)], none
    block = model.predict(np.stack(states), max(horizons))
    return [row[:horizon] for row, horizon in zip(block, horizons, strict=True)], none


def by_version(works: list[tuple[int, Work]]) -> list[list[tuple[int, Work]]]:
    groups: dict[str, list[tuple[int, Work]]] = {}
    for index, work in works:
        groups.setdefault(work.plan.version, []).append((index, work))
    return list(groups.values())


def call_intervals(work: Work, forecast: np.ndarray,
                   head_bounds: dict[str, np.ndarray] | None) -> dict[str, np.ndarray] | None:
    """The intervals a call asked for: its model head's, else conformal from the
    calibration checked with the call (no second read: nothing can fail here)."""
    if work.calibration is None:
        return head_bounds
    return work.calibration.intervals(forecast, work.request.level)


def answer(work: Work, forecast: np.ndarray,
           head_bounds: dict[str, np.ndarray] | None) -> StreamForecast:
    """A call's answer: its forecast and the intervals it asked for."""
    plan = work.plan
    return StreamForecast(
        model=plan.model.name, version=plan.version, stream=work.stream,
        step=work.step + len(work.new), consumed=len(work.new), skipped=int(work.skipped),
        created=plan.record is None, committed=work.request.commit, forecast=forecast,
        intervals=call_intervals(work, forecast, head_bounds))


def new_record(work: Work, state: np.ndarray, pending: bytes) -> StreamRecord:
    """The stream's record after a call: its new state, step, tail, pending
    forecasts, next revision."""
    plan, new = work.plan, work.new
    tail = (np.concatenate([plan.tail, new])[-plan.model.spec.retain:] if len(new)
            else plan.tail)
    now = time.time()
    return StreamRecord(
        model=plan.model.name, stream=work.stream, version=plan.version,
        origin=work.origin, step=work.step + len(new), state=state,
        tail=np.ascontiguousarray(tail, dtype=np.float32),
        revision=0 if plan.expected_revision is None else plan.expected_revision + 1,
        created_at=now if plan.record is None or plan.fresh else plan.record.created_at,
        updated_at=now, pending=pending)


def check_overlap(tail: np.ndarray, step: int, start: int, resent: np.ndarray,
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
