"""Batch calls that append observations to live streams, computed as arrays: in place on
the store's own tables (the ``memory`` store, :meth:`service.stores.MemoryStore.in_place`),
or from the records a durable store read for the call, written back in one
compare-and-set of several.

A fleet keeps its streams current with batch calls whose items only append: a window of
new observations (``start`` absent or equal to the stream's next step), committed, no
reset, no levels, on a ``carry`` model with a direct head. Such items of one model version
and window length run as one kernel call, one head call and one scoring pass. The
semantics are those of the one-stream path (:mod:`service.forecasting`), which serves
every other item: a gap is refused, a resent or otherwise unusual item, an idle stream
past its TTL, a stream that does not exist yet or a version the call does not name goes
that way, and nothing but a committed append changes a stream.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from statecast.models import Model, StatecastError
from statecast.service.accuracy import Scores
from statecast.service.calls import StreamCall, StreamForecast
from statecast.service.errors import GapInStream
from statecast.service.metrics import Metrics
from statecast.service.model_cache import ModelCache
from statecast.service.requests import MAX_STREAM_ID, STREAM_ID
from statecast.service.scoring import Scorer, WriteScores
from statecast.service.stores import StreamRecord

#: Results of a batch call's items: an answer, an error, or None (not answered yet).
Results = list[StreamForecast | StatecastError | None]


def appendable(model: Model) -> bool:
    """Whether a model's calls can run as in-place appends: it continues its state
    (``carry``) and forecasts every step from the state at once (a direct head)."""
    spec = model.spec
    return (spec.window is None and spec.forecast_mode == "direct" and bool(spec.head)
            and not spec.forecasts_from_window)


def plain(call: StreamCall | StatecastError) -> bool:
    """Whether an item only appends: committed, no reset, no levels, no covariates."""
    return (type(call) is StreamCall and call.commit and not call.reset and not call.level
            and call.future is None)


@dataclass(frozen=True)
class Limits:
    """The server's limits an item must be within to be appended here."""

    max_window: int
    ttl: float | None
    max_stream_id: int = MAX_STREAM_ID


def _window_length(window: Any, features: int) -> int:
    """Rows of a window already checked to be numbers (:func:`service.calls.batch_calls`)
    when they hold ``features`` values each; 0 when they do not."""
    if type(window) is not list or not window:
        return 0
    if type(window[0]) is list:
        if len(window) == 1:  # the usual append: one row
            return 1 if len(window[0]) == features else 0
        return len(window) if all(len(row) == features for row in window) else 0
    return len(window) if features == 1 and all(type(v) is not list for v in window) else 0


class InPlaceAppends:
    """Runs the appending items of a batch call on a store's tables (see the module)."""

    def __init__(self, models: ModelCache, metrics: Metrics, scoring: bool,
                 limits: Limits) -> None:
        self.models = models
        self.metrics = metrics
        self.scoring = scoring
        self.limits = limits

    def run(self, tables: Any, name: str, named_version: str | None,
            calls: list[tuple[Any, StreamCall | StatecastError]], indices: list[int],
            results: Results) -> tuple[list[int], list[Callable[[], None]]]:
        """Answer the items of ``indices`` that append (``tables``: the store's
        :class:`~service.stores.memory.InPlace` view, its lock held); return the indices
        left for the one-stream path, and what to count once the lock is released."""
        limit, fullmatch = self.limits.max_stream_id, STREAM_ID.fullmatch
        candidates = [index for index in indices if plain(calls[index][1])
                      and len(calls[index][0]) <= limit and fullmatch(calls[index][0])]
        if not candidates:
            return indices, []
        places = tables.locate([calls[index][0] for index in candidates])
        # Items by table, window length and form (rows, or a flat list of one feature).
        groups: dict[tuple[int, int, bool], list[tuple[int, int]]] = {}
        chosen = set(candidates)
        left = [index for index in indices if index not in chosen]
        models: dict[int, Model | None] = {}
        number_of, row_of = tables.number, tables.row
        for index, place in zip(candidates, places, strict=True):
            if place < 0:
                left.append(index)
                continue
            number = number_of(place)
            if number not in models:
                models[number] = self._model(name, tables.table(number)[0], named_version)
            call = calls[index][1]
            length = self._length(models[number], call)  # type: ignore[arg-type]
            if not length:
                left.append(index)
                continue
            groups.setdefault((number, length, type(call.window[0]) is list),  # type: ignore[union-attr]
                              []).append((index, row_of(place)))
        after: list[Callable[[], None]] = []
        for (number, length, _), members in groups.items():
            model = models[number]
            assert model is not None
            version, table = tables.table(number)
            left += self._append(tables, model, version, table, length, calls, members,
                                 results, after)
        return sorted(left), after

    def _model(self, name: str, version: str, named_version: str | None) -> Model | None:
        """The model version a stream is bound to, if its items may append here (an
        appendable model, and the version the call names, if it names one)."""
        model = self.models.get(name, version)
        return model if appendable(model) and named_version in (None, version) else None

    def _length(self, model: Model | None, call: StreamCall) -> int:
        """Rows a plain call appends with ``model``; 0 when it cannot append here (no
        model, a window the model does not take or longer than the server's limit, a
        horizon beyond the model's)."""
        if model is None:
            return 0
        length = _window_length(call.window, model.spec.input_size)
        if not 0 < length <= self.limits.max_window or (
                call.horizon is not None and call.horizon > model.spec.horizon):
            return 0
        return length

    def _append(self, tables: Any, model: Model, version: str, table: Any, length: int,
                calls: list[tuple[Any, StreamCall | StatecastError]],
                members: list[tuple[int, int]], results: Results,
                after: list[Callable[[], None]]) -> list[int]:
        """Append ``length`` observations to each member's row (item index, row), all of
        one version; return the items it left for the one-stream path."""
        rows = np.fromiter((row for _, row in members), np.int64, len(members))
        now = time.time()
        keep, left = self.check(calls, members, table.step[rows], table.updated[rows], now,
                                results)
        if not keep.all():
            members = [member for member, kept in zip(members, keep, strict=True) if kept]
            rows = rows[keep]
        if not members:
            return left
        steps = table.step[rows]
        raw, horizons = self.windows(model, calls, members, length)
        block = self.advance(model, table.state, rows, raw, horizons)
        table.append_tails(rows, raw, model.spec.retain)
        table.step[rows] = steps + length
        table.revision[rows] += 1
        table.updated[rows] = now
        scores = self._score_rows(model, table, rows, raw, block, horizons)
        tables.add_scores(version, scores)
        if scores is not None:
            after.append(lambda: self.metrics.add_scores(model.name, version, scores))
        answer(results, model, version, calls, members, steps + length, length, block,
               horizons)
        return left

    def run_records(self, store: Any, name: str, named_version: str | None,
                    calls: list[tuple[Any, StreamCall | StatecastError]], indices: list[int],
                    fetched: dict[Any, StreamRecord | None], results: Results
                    ) -> tuple[list[int], list[int]]:
        """Answer the items of ``indices`` that append, from the records read for them
        (``fetched``), writing each group's new records in one compare-and-set of several
        (a store that does not run in place); return the indices left for the one-stream
        path, and those that lost a race (to retry: nothing of theirs was written)."""
        limit = self.limits.max_stream_id
        groups: dict[tuple[str, int, bool], list[tuple[int, StreamRecord]]] = {}
        left: list[int] = []
        models: dict[str, Model | None] = {}
        for index in indices:
            stream, call = calls[index]
            record = fetched.get(stream) if plain(call) and len(stream) <= limit else None
            if record is None or record.expired or not STREAM_ID.fullmatch(stream):
                left.append(index)
                continue
            version = record.version
            if version not in models:
                models[version] = self._model(name, version, named_version)
            model = models[version]
            assert isinstance(call, StreamCall)
            length = self._length(model, call)
            if not length or record.state.size != model.state_size:  # type: ignore[union-attr]
                left.append(index)
                continue
            groups.setdefault((version, length, type(call.window[0]) is list), []).append(
                (index, record))
        lost: list[int] = []
        for (version, length, _), members in groups.items():
            model = models[version]
            assert model is not None
            left_here, lost_here = self._write_records(store, model, version, length, calls,
                                                       members, results)
            left += left_here
            lost += lost_here
        return sorted(left), lost

    def _write_records(self, store: Any, model: Model, version: str, length: int,
                       calls: list[tuple[Any, StreamCall | StatecastError]],
                       members: list[tuple[int, StreamRecord]], results: Results
                       ) -> tuple[list[int], list[int]]:
        """Append ``length`` observations to each member's stream (item index, record),
        all of one version, and compare-and-set the new records at once."""
        now = time.time()
        keep, left = self.check(calls, members,
                                np.fromiter((r.step for _, r in members), np.int64),
                                np.fromiter((r.updated_at for _, r in members), np.float64),
                                now, results)
        if not keep.all():
            members = [member for member, kept in zip(members, keep, strict=True) if kept]
        if not members:
            return left, []
        records = [record for _, record in members]
        arena = np.stack([record.state for record in records]).astype(np.float32, copy=False)
        raw, horizons = self.windows(model, calls, members, length)
        block = self.advance(model, arena, np.arange(len(members), dtype=np.int64), raw,
                             horizons)
        tails = _appended_tails(model, records, raw)
        kept = self.score(model, [record.pending for record in records], raw, block,
                          horizons)
        pending = [record.pending for record in records] if kept is None else kept[0]
        # StreamRecord's fields in order: model, stream, version, origin, step, state, tail,
        # revision, created_at, updated_at, expired, pending.
        writes = [(StreamRecord(record.model, record.stream, version, record.origin,
                                record.step + length, state, tail, record.revision + 1,
                                record.created_at, now, False, data), record.revision)
                  for record, state, tail, data in zip(records, arena, tails, pending,
                                                       strict=True)]
        scores = None if kept is None else kept[1]
        outcomes = store.compare_and_set_many(writes, scores)
        added = None if scores is None else scores.select(outcomes)
        if added is not None:
            self.metrics.add_scores(model.name, version, added)
        steps = np.array([record.step for record in records], np.int64) + length
        answer(results, model, version, calls, members, steps, length, block, horizons)
        lost = [index for (index, _), ok in zip(members, outcomes, strict=True) if not ok]
        for index in lost:
            results[index] = None
            self.metrics.conflicts.labels(model.name).inc()
        return left, lost

    def _score_rows(self, model: Model, table: Any, rows: np.ndarray, raw: np.ndarray,
                    block: np.ndarray, horizons: list[int]) -> Scores | None:
        """Score the table rows' pending forecasts and keep their new ones: in place in the
        table's column when every row's record has its usual layout, else through copies
        (:meth:`score`). What they scored, added up."""
        scorer = self._scorer(model, len(rows))
        if scorer is None:
            return None
        if (min(horizons) >= scorer.steps and (table.pending_kind[rows] == 1).all()
                and scorer.add_rows(table.pending, rows, raw, block)):
            scorer.run_in_place()
            written = scorer.scores(range(len(rows)))
        else:
            kept = self._scored(scorer, [table.read_pending(row) for row in rows.tolist()],
                                raw, block, horizons)
            for row, data in zip(rows.tolist(), kept[0], strict=True):
                table.write_pending(row, data)
            written = kept[1]
        return None if written is None else written.select([True] * len(rows))

    def check(self, calls: list[tuple[Any, StreamCall | StatecastError]],
              members: Sequence[tuple[int, Any]], steps: np.ndarray, updated: np.ndarray,
              now: float, results: Results) -> tuple[np.ndarray, list[int]]:
        """Which members append here (a mask): a ``start`` other than the stream's next
        step is a gap (its error answered) or a resend (left for the one-stream path, as
        is a stream idle past the TTL). Also returns the items left."""
        keep = np.ones(len(members), bool)
        left: list[int] = []
        starts = [calls[index][1].start for index, _ in members]  # type: ignore[union-attr]
        for member in [m for m, start in enumerate(starts) if start is not None]:
            index, start = members[member][0], starts[member]
            if start != steps[member]:
                keep[member] = False
                if start > steps[member]:
                    step = int(steps[member])
                    results[index] = GapInStream(
                        f"stream {calls[index][0]!r} expects its next observation at {step}; "
                        f"this window starts at {start}", expected_start=step)
                else:
                    left.append(index)
        if self.limits.ttl is not None:
            idle = keep & (now - updated > self.limits.ttl)
            left += [members[member][0] for member in np.flatnonzero(idle).tolist()]
            keep &= ~idle
        return keep, left

    @staticmethod
    def windows(model: Model, calls: list[tuple[Any, StreamCall | StatecastError]],
                members: Sequence[tuple[int, Any]], length: int
                ) -> tuple[np.ndarray, list[int]]:
        """The members' windows ``float32 [members, length, features]`` (raw) and
        horizons."""
        spec = model.spec
        calls_of = [calls[index][1] for index, _ in members]
        raw = np.array([call.window for call in calls_of],  # type: ignore[union-attr]
                       np.float32).reshape(len(members), length, spec.input_size)
        horizons = [spec.horizon if call.horizon is None else call.horizon  # type: ignore[union-attr]
                    for call in calls_of]
        return raw, horizons

    def advance(self, model: Model, arena: np.ndarray, slots: np.ndarray, raw: np.ndarray,
                horizons: list[int]) -> np.ndarray:
        """Run the windows on the arena's rows ``slots`` in place; the forecasts from the
        new states ``float32 [members, max(horizons), targets]``."""
        net = model.network
        count, length = raw.shape[:2]
        x = np.ascontiguousarray(model.scale_inputs(raw), np.float32)
        y = np.empty((count, length, net.output_size), np.float32)
        head = np.empty((count * length if net.head_every_step else count, net.head_size),
                        np.float32)
        with self.metrics.timing_kernel(model.name):
            model.forward_into(x, arena, slots, y, head, check=False)
            return model.predict(arena[slots], max(horizons))

    def _scorer(self, model: Model, count: int) -> Scorer | None:
        """A scorer for ``count`` streams of ``model``; None when nothing is scored
        (scoring off, or the model's observations do not hold its targets)."""
        if not self.scoring:
            return None
        scorer = Scorer(model, count)
        return scorer if scorer.steps else None

    def score(self, model: Model, records: list[bytes], raw: np.ndarray, block: np.ndarray,
              horizons: list[int]) -> tuple[list[bytes], WriteScores | None] | None:
        """The members' pending forecasts (``records``) scored against their new
        observations, each keeping its new forecast (:class:`service.scoring.Scorer`):
        their new records and what each scored; None when nothing is scored."""
        scorer = self._scorer(model, len(records))
        return None if scorer is None else self._scored(scorer, records, raw, block,
                                                        horizons)

    @staticmethod
    def _scored(scorer: Scorer, records: list[bytes], raw: np.ndarray, block: np.ndarray,
                horizons: list[int]) -> tuple[list[bytes], WriteScores | None]:
        """:meth:`score` with a scorer nothing was added to."""
        # Forecasts shorter than the scored steps are padded one by one (Scorer.add).
        if not (min(horizons) >= scorer.steps and scorer.add_block(records, raw, block)):
            for member, data in enumerate(records):
                scorer.add(member, data, raw[member], block[member, :horizons[member]], None,
                           ())
        kept = scorer.run()
        return [kept[member] for member in range(len(records))], scorer.scores(
            range(len(records)))


def _appended_tails(model: Model, records: list[StreamRecord], raw: np.ndarray
                    ) -> list[np.ndarray]:
    """Each record's tail with its new observations, the last ``retain`` kept: one array
    operation when every tail is as long (a fleet's usual case)."""
    retain, features = model.spec.retain, model.spec.input_size
    tails = [record.tail.reshape(-1, features) for record in records]
    if len({len(tail) for tail in tails}) == 1:
        joined = np.concatenate([np.stack(tails), raw], axis=1)
        return list(np.ascontiguousarray(joined[:, max(0, joined.shape[1] - retain):]))
    return [np.ascontiguousarray(np.concatenate([tail, new])[-retain:])
            for tail, new in zip(tails, raw, strict=True)]


def answer(results: Results, model: Model, version: str,
           calls: list[tuple[Any, StreamCall | StatecastError]],
           members: Sequence[tuple[int, Any]], steps: np.ndarray, length: int,
           block: np.ndarray, horizons: list[int]) -> None:
    """Each member's answer: its forecast (as float64, for the JSON: one conversion for
    the call) and new step."""
    wide = block.astype(np.float64)
    name = model.name
    for member, ((index, _), step, horizon) in enumerate(
            zip(members, steps.tolist(), horizons, strict=True)):
        results[index] = StreamForecast(name, version, calls[index][0], step, length, 0,
                                        False, True, wide[member, :horizon])
