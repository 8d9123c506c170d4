"""Forecast calls on streams, independent of HTTP.

A call reads the stream's record, consumes only the observations it has not consumed yet,
runs them through the stream's model version from its stored state, and compare-and-sets
the new record; a writer that lost the race re-reads and re-applies only what is still new.
A retried call consumes nothing and returns the same forecast (it is recomputed from the
stored state with the same code, bit for bit). Writes retry under the one policy of
:mod:`service.retries`; stream expiry and capacity are :mod:`service.lifecycle`'s, the
states and forecasts of a group of streams :mod:`service.work`'s.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from statecast.models import Model, ModelError, StatecastError
from statecast.models.conformal import Calibration, require_calibration
from statecast.models.distribution import check_head_levels, gives_levels
from statecast.models.names import check_name, split_reference
from statecast.service.accuracy import OnlineCalibrations, accuracy_report
from statecast.service.bulk import InPlaceAppends, Limits
from statecast.service.calls import StreamCall, StreamForecast
from statecast.service.errors import (
    BatchTooLarge,
    GapInStream,
    InsufficientHistory,
    ModelNotSupported,
    RequestError,
    StreamNotFound,
    VersionConflict,
)
from statecast.service.lifecycle import StreamLifecycle
from statecast.service.metrics import Metrics
from statecast.service.model_cache import ModelCache
from statecast.service.requests import (
    MAX_RECURSIVE_HORIZON,
    MAX_STREAM_ID,
    ForecastRequest,
    check_stream_id,
    validate_call,
)
from statecast.service.retries import ATTEMPTS, contention, until_written
from statecast.service.scoring import Pending, Scorer, WriteScores
from statecast.service.stores import StateStore, StreamRecord
from statecast.service.work import (
    Plan,
    Work,
    advance_works,
    answer,
    by_version,
    call_intervals,
    check_overlap,
    fresh_plan,
    group_forecasts,
    new_record,
)


def check_servable(model: Model) -> None:
    """Refuse models that cannot forecast: without a head (a head applied at every step
    forecasts from the last step), unless they forecast from their window (a recursive
    model whose projected hidden state is the forecast)."""
    if not model.spec.head and not model.spec.forecasts_from_window:
        raise ModelNotSupported(
            f"model {model.name}@{model.version} has no head to forecast with")


class ForecastService:
    """Streams of every model in one registry, their state in one store."""

    def __init__(self, models: ModelCache, store: StateStore, max_window: int,
                 max_items: int = 1000, ttl: float | None = None,
                 max_streams: int | None = None, max_horizon: int = MAX_RECURSIVE_HORIZON,
                 max_stream_id: int = MAX_STREAM_ID, metrics: Metrics | None = None,
                 scoring: bool = True, online_min_residuals: int = 50) -> None:
        self.models = models
        self.store = store
        self.max_window = max_window
        self.max_items = max_items
        self.max_horizon = max_horizon
        self.max_stream_id = max_stream_id
        self.metrics = metrics or Metrics()
        self.lifecycle = StreamLifecycle(store, self.metrics, ttl, max_streams)
        #: Whether committed forecasts are kept and scored (:mod:`service.scoring`).
        self.scoring = scoring
        self.online = OnlineCalibrations(store, online_min_residuals)
        self.appends = InPlaceAppends(models, self.metrics, scoring,
                                      Limits(max_window, ttl, max_stream_id))

    def expire_idle(self) -> int:
        """Turn every stream idle past the TTL into a tombstone; return how many."""
        return self.lifecycle.expire_idle()

    # -- planning ------------------------------------------------------------------------

    def _plan(self, reference: str, stream: str, reset: bool,
              prefetched: tuple[StreamRecord | None] | None = None) -> Plan:
        name, tag = split_reference(reference)
        record = prefetched[0] if prefetched is not None else self.store.get(name, stream)
        if record is None or reset or record.expired:
            if not reset:
                self.lifecycle.live(record, stream)  # a tombstone without reset: 410
            if record is None or record.expired:
                self.lifecycle.check_capacity(name)
            _, version = self.models.resolve(reference)
            return fresh_plan(self.models.get(name, version), version, record)
        record = self.lifecycle.live(record, stream)
        assert record is not None
        if tag is not None:
            _, named = self.models.resolve(reference)
            if named != record.version:
                raise VersionConflict(
                    f"stream {stream!r} is bound to version {record.version}; the call names "
                    f"{named}: reset the stream to move it", bound=record.version)
        model = self.models.get(name, record.version)
        # An empty tail read back from bytes has lost its width: restore [0, features].
        tail = record.tail.reshape(-1, model.spec.input_size)
        return Plan(model, record.version, record, origin=record.origin, step=record.step,
                     state=record.state, tail=tail, expected_revision=record.revision,
                     fresh=False)

    # -- the call ------------------------------------------------------------------------

    def _work(self, reference: str, stream: str, call: StreamCall,
              prefetched: tuple[StreamRecord | None] | None = None) -> Work:
        """One attempt's work on a stream: its plan from the stream's record, the call
        checked against the stream's model, what is new."""
        plan = self._plan(reference, stream, call.reset, prefetched)
        check_servable(plan.model)
        request = validate_call(call, plan.model.spec, self.max_window, self.max_horizon)
        calibration = self._check_levels(plan.model, plan.version, request)
        return self._prepare(plan, stream, request, calibration)

    def _check_levels(self, model: Model, version: str, request: ForecastRequest
                      ) -> Calibration | None:
        """Refuse levels neither the model's head nor its calibration gives, before any
        work (422 ``level_unavailable``); the calibration that will give them, if any."""
        if request.level and gives_levels(model):
            check_head_levels(model, request.level)
        elif request.level:
            return self._calibration(model, version, request.horizon)
        return None

    def _calibration(self, model: Model, version: str, horizon: int) -> Calibration:
        """The calibration that gives a call's intervals (the version's own, else the
        residuals scored in service once there are enough), or 422 ``level_unavailable``."""
        calibration = self.models.calibration(model.name, version)
        if calibration is None:
            calibration = self.online.get(model.name, version)
        return require_calibration(
            calibration, f"{model.name}@{version}", horizon,
            f"run statecast calibrate, or serve it until {self.online.min_residuals} "
            "residuals of each step have been scored")

    def forecast(self, reference: str, stream: str, call: StreamCall) -> StreamForecast:
        """Run one stream's forecast call."""
        check_stream_id(stream, self.max_stream_id)

        def attempt() -> StreamForecast | None:
            work = self._work(reference, stream, call)
            model = work.plan.model
            with self.metrics.timing_kernel(model.name):
                state = advance_works(model, [work])[0]
                forecasts, bounds = group_forecasts(model, [work], [state])
                finished, scorer = self._finish_group(model, [work], [state], forecasts,
                                                      bounds)
                response, new_record = finished[0]
            if new_record is None:
                return response
            scores = None if scorer is None else scorer.scores([0])
            if self.store.compare_and_set(new_record, work.plan.expected_revision, scores):
                self._count_scores(model.name, work.plan.version, scores, [True])
                return response
            self.metrics.conflicts.labels(model.name).inc()
            return None

        return until_written(attempt, f"stream {stream!r}")

    def forecast_many(self, reference: str, calls: list[tuple[Any, StreamCall | StatecastError]]
                      ) -> list[StreamForecast | StatecastError]:
        """The batch form: ``(stream, call)`` pairs of one model, one kernel call per model
        version and window length; each answers alone (a pair whose call is already an
        error, or whose stream fails, fails only itself)."""
        self.models.resolve(reference)  # an unknown model fails the whole call
        if len(calls) > self.max_items:
            raise BatchTooLarge(f"{len(calls)} items; at most {self.max_items} per call",
                                limit=self.max_items)
        results: list[StreamForecast | StatecastError | None] = [
            call if isinstance(call, StatecastError) else None for _, call in calls]
        pending = [i for i, (_, call) in enumerate(calls) if isinstance(call, StreamCall)]
        name, tag = split_reference(reference)
        named = None if tag is None else self.models.resolve(reference)[1]
        if self.store.runs_in_place and pending:
            with self.store.in_place(name) as tables:
                pending, after = self.appends.run(tables, name, named, calls, pending,
                                                  results)
            for count in after:
                count()
        for _ in range(ATTEMPTS):
            if not pending:
                break
            works: list[tuple[int, Work]] = []
            # One store round trip for every pending stream's record (pipelined in Redis).
            streams = [calls[i][0] for i in pending]
            fetched = dict(zip(streams, self.store.get_many(name, streams), strict=True))
            retry: list[int] = []
            if not self.store.runs_in_place:
                pending, retry = self.appends.run_records(self.store, name, named, calls,
                                                          pending, fetched, results)
            for index in pending:
                stream, call = calls[index]
                assert isinstance(call, StreamCall)
                try:
                    check_stream_id(stream, self.max_stream_id)
                    works.append((index, self._work(reference, stream, call,
                                                    (fetched[stream],))))
                except (RequestError, ModelError) as error:
                    results[index] = error
            for model_works in by_version(works):
                group = [work for _, work in model_works]
                model = group[0].plan.model
                writes, written, members = [], [], []
                with self.metrics.timing_kernel(model.name):
                    states = advance_works(model, group)
                    forecasts, bounds = group_forecasts(model, group, states)
                    finished, scorer = self._finish_group(model, group, states, forecasts,
                                                          bounds)
                for member, ((index, work), (response, record)) in enumerate(
                        zip(model_works, finished, strict=True)):
                    results[index] = response
                    if record is not None:
                        writes.append((record, work.plan.expected_revision))
                        written.append(index)
                        members.append(member)
                # One round trip (sqlite: one transaction) for every write of the group.
                scores = None if scorer is None else scorer.scores(members)
                outcomes = self.store.compare_and_set_many(writes, scores)
                for index, ok in zip(written, outcomes, strict=True):
                    if not ok:
                        results[index] = None
                        retry.append(index)
                        self.metrics.conflicts.labels(model.name).inc()
                self._count_scores(model.name, group[0].plan.version, scores, outcomes)
            pending = retry
        for index in pending:
            results[index] = contention(f"stream {calls[index][0]!r}")
        answered = [result for result in results if result is not None]
        assert len(answered) == len(calls)
        return answered

    def forecast_stateless(self, reference: str, calls: list[StreamCall]
                           ) -> tuple[str, str, list[np.ndarray],
                                      list[dict[str, np.ndarray] | None]]:
        """Forecasts from the model's initial state for windows that belong to no stream
        (nothing is read or stored), the windows run in one kernel call per length.
        Returns the model's name, the version that answered, ``[horizon, targets]`` per
        call and the intervals each call asked for."""
        name, version = self.models.resolve(reference)
        model = self.models.get(name, version)
        check_servable(model)
        works = []
        for call in calls:
            request = validate_call(call, model.spec, self.max_window, self.max_horizon)
            if request.start not in (None, 0):
                raise RequestError("a call without a stream starts at 0")
            calibration = self._check_levels(model, version, request)
            works.append(self._prepare(fresh_plan(model, version, None), "", request,
                                       calibration))
        with self.metrics.timing_kernel(name):
            forecasts, bounds = group_forecasts(model, works, advance_works(model, works))
        intervals = [call_intervals(*each) for each in zip(works, forecasts, bounds,
                                                             strict=True)]
        return name, version, forecasts, intervals

    def _prepare(self, plan: Plan, stream: str, request: ForecastRequest,
                 calibration: Calibration | None = None) -> Work:
        """Check the window against the stream (gap, overlap) and pick what is new."""
        window = request.window
        origin, step = plan.origin, plan.step
        if plan.fresh:
            origin = step = request.start if request.start is not None else 0
        start = request.start if request.start is not None else step
        if start > step:
            raise GapInStream(f"stream {stream!r} expects its next observation at {step}; "
                              f"this window starts at {start}", expected_start=step)
        skipped = min(step - start, len(window))
        check_overlap(plan.tail, step, start, window[:skipped], stream)
        work = Work(plan, stream, request, origin, step, skipped, window[skipped:],
                    calibration)
        spec = plan.model.spec
        if spec.forecasts_from_window:
            have = len(plan.tail) + len(work.new)
            if have < (spec.window or 0):
                raise InsufficientHistory(
                    f"{plan.model.name} forecasts from its last {spec.window} observations; "
                    f"stream {stream!r} would have {have}: send at least {spec.window} rows "
                    "(nothing was stored)", needed=spec.window, have=have)
        return work

    def _finish_group(self, model: Model, works: list[Work], states: list[np.ndarray],
                      forecasts: list[np.ndarray],
                      bounds: list[dict[str, np.ndarray] | None]
                      ) -> tuple[list[tuple[StreamForecast, StreamRecord | None]],
                                 Scorer | None]:
        """Each work's answer and the record to write (None: nothing changed, or a what-if
        call), from its stream's new state, its forecast and the intervals its model's
        head gave; the records hold their streams' pending forecasts after this call,
        scored by the scorer returned (None: scoring is off, or the model's observations
        do not hold its targets)."""
        answers = [answer(*each) for each in zip(works, forecasts, bounds, strict=True)]
        writes = [bool(len(work.new) or work.plan.fresh) and work.request.commit
                  for work in works]
        pending: dict[int, bytes] = {}
        scorer = Scorer(model, len(works)) if self.scoring else None
        if scorer is not None and not scorer.steps:
            scorer = None
        if scorer is not None:
            for member, (work, write, reply) in enumerate(zip(works, writes, answers,
                                                              strict=True)):
                if write:
                    plan = work.plan
                    kept = plan.record.pending if plan.record and not plan.fresh else b""
                    scorer.add(member, kept, work.new, reply.forecast, reply.intervals,
                               work.request.level)
            pending = scorer.run()
        return [(reply, new_record(work, state, pending.get(member, b"")) if write
                 else None) for member, (work, state, reply, write)
                in enumerate(zip(works, states, answers, writes, strict=True))], scorer

    def _count_scores(self, model: str, version: str, scores: WriteScores | None,
                      outcomes: list[bool]) -> None:
        """Count in the metrics what the writes that succeeded scored."""
        added = None if scores is None else scores.select(outcomes)
        if added is not None:
            self.metrics.add_scores(model, version, added)

    # -- stream administration -----------------------------------------------------------

    def _model_name(self, reference: str, stream: str) -> str:
        """The model name of ``reference``, once ``stream`` is known to be a valid id."""
        check_stream_id(stream, self.max_stream_id)
        return split_reference(reference)[0]

    def exists(self, reference: str, stream: str) -> bool:
        """Whether the stream has a record (live or expired)."""
        return self.store.get(self._model_name(reference, stream), stream) is not None

    def describe(self, reference: str, stream: str) -> dict[str, Any]:
        name = self._model_name(reference, stream)
        record = self.store.get(name, stream)
        if record is None:
            raise StreamNotFound(f"no stream {stream!r} of model {name!r}")
        body = {"stream": stream, "model": name, "version": record.version,
                "step": record.step, "origin": record.origin,
                "updated_at": record.updated_at, "expired": record.expired}
        if record.pending:
            pending = Pending.decode(record.pending)
            body["accuracy"] = {"scored": pending.scored, "rolling_mae": pending.rolling_mae()}
        return body

    def accuracy(self, reference: str, version: str | None = None) -> dict[str, Any]:
        """How a model version's committed forecasts scored (``version`` None: the one a
        call naming ``reference`` would start a stream on)."""
        name = split_reference(reference)[0]
        if version is not None:
            check_name(version, "version")
        name, version = self.models.resolve(reference if version is None
                                             else f"{name}@{version}")
        since, totals = self.store.accuracy(name, version)
        return accuracy_report(name, version, since, totals)

    def state(self, reference: str, stream: str) -> dict[str, Any]:
        """The stream's h (and c) per layer (the ``/state`` route's body)."""
        name = self._model_name(reference, stream)
        record = self.lifecycle.live(self.store.get(name, stream), stream)
        if record is None:
            raise StreamNotFound(f"no stream {stream!r} of model {name!r}")
        model = self.models.get(name, record.version)
        layers = []
        for h_at, h_width, c_at, c_width in model.network.state_offsets:
            layer = {"h": record.state[h_at:h_at + h_width].astype(float).tolist()}
            if c_at >= 0:
                layer["c"] = record.state[c_at:c_at + c_width].astype(float).tolist()
            layers.append(layer)
        return {"stream": stream, "model": name, "version": record.version,
                "step": record.step, "layers": layers}

    def delete(self, reference: str, stream: str) -> dict[str, Any]:
        name = self._model_name(reference, stream)
        if not self.store.delete(name, stream):
            raise StreamNotFound(f"no stream {stream!r} of model {name!r}")
        self.metrics.evictions.labels("deleted").inc()
        return {"stream": stream, "model": name, "deleted": True}
