"""Batch calls that append observations to live streams, computed as arrays on the store's
own tables (the ``memory`` store, :meth:`service.stores.MemoryStore.in_place`).

A fleet keeps its streams current with batch calls whose items only append: a window of
new observations (``start`` absent or equal to the stream's next step), committed, no
reset, no levels, on a ``carry`` model with a direct head. Such items of one model version
and window length run as one kernel call on the table rows of their streams, under the
store's lock: the rows are read, advanced and written in place, with no record per stream.
The semantics are those of the one-stream path (:mod:`service.forecasting`), which serves
every other item: a gap is refused, a resent or otherwise unusual item, an idle stream
past its TTL, a stream that does not exist yet or a version the call does not name goes
that way, and nothing but a committed append changes a row.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from statecast.models import Model, StatecastError
from statecast.service.calls import StreamCall, StreamForecast
from statecast.service.errors import GapInStream
from statecast.service.metrics import Metrics
from statecast.service.model_cache import ModelCache
from statecast.service.requests import MAX_STREAM_ID, STREAM_ID
from statecast.service.scoring import Scorer, WriteScores

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
        limit = self.limits.max_stream_id
        candidates = [index for index in indices if plain(calls[index][1])
                      and len(calls[index][0]) <= limit
                      and STREAM_ID.fullmatch(calls[index][0])]
        if not candidates:
            return indices, []
        places = tables.locate([calls[index][0] for index in candidates])
        # Items by table, window length and form (rows, or a flat list of one feature).
        groups: dict[tuple[int, int, bool], list[tuple[int, int]]] = {}
        chosen = set(candidates)
        left = [index for index in indices if index not in chosen]
        models: dict[int, Model | None] = {}
        for index, place in zip(candidates, places, strict=True):
            number = tables.number(place)
            if place >= 0 and number not in models:
                version, _ = tables.table(number)
                loaded = self.models.get(name, version)
                models[number] = loaded if appendable(loaded) and named_version in (
                    None, version) else None
            model = models.get(number) if place >= 0 else None
            call = calls[index][1]
            assert isinstance(call, StreamCall)
            length = 0 if model is None else _window_length(call.window,
                                                            model.spec.input_size)
            if model is None or not 0 < length <= self.limits.max_window or (
                    call.horizon is not None and call.horizon > model.spec.horizon):
                left.append(index)
                continue
            groups.setdefault((number, length, type(call.window[0]) is list), []).append(
                (index, tables.row(place)))
        after: list[Callable[[], None]] = []
        for (number, length, _), members in groups.items():
            model = models[number]
            assert model is not None
            version, table = tables.table(number)
            left += self._append(tables, model, version, table, length, calls, members,
                                 results, after)
        return sorted(left), after

    def _append(self, tables: Any, model: Model, version: str, table: Any, length: int,
                calls: list[tuple[Any, StreamCall | StatecastError]],
                members: list[tuple[int, int]], results: Results,
                after: list[Callable[[], None]]) -> list[int]:
        """Append ``length`` observations to each member's row (item index, row), all of
        one version; return the items it left for the one-stream path."""
        rows = np.fromiter((row for _, row in members), np.int64, len(members))
        steps = table.step[rows]
        now = time.time()
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
            idle = keep & (now - table.updated[rows] > self.limits.ttl)
            left += [members[member][0] for member in np.flatnonzero(idle)]
            keep &= ~idle
        if not keep.all():
            members = [member for member, kept in zip(members, keep, strict=True) if kept]
            rows = rows[keep]
            steps = steps[keep]
        if not members:
            return left
        spec, net = model.spec, model.network
        count = len(members)
        calls_of = [calls[index][1] for index, _ in members]
        raw = np.array([call.window for call in calls_of],  # type: ignore[union-attr]
                       np.float32).reshape(count, length, spec.input_size)
        x = np.ascontiguousarray(model.scale_inputs(raw), np.float32)
        y = np.empty((count, length, net.output_size), np.float32)
        head = np.empty((count * length if net.head_every_step else count, net.head_size),
                        np.float32)
        horizons = [spec.horizon if call.horizon is None else call.horizon  # type: ignore[union-attr]
                    for call in calls_of]
        with self.metrics.timing_kernel(model.name):
            model.forward_into(x, table.state, rows, y, head, check=False)
            block = model.predict(table.state[rows], max(horizons))
        table.append_tails(rows, raw, spec.retain)
        table.step[rows] = steps + length
        table.revision[rows] += 1
        table.updated[rows] = now
        forecasts = [block[member, :horizon] for member, horizon in enumerate(horizons)]
        # The answers' forecasts as float64 (the same values): one conversion for the call.
        wide = block.astype(np.float64)
        scores = self._score(model, table, rows, raw, block, forecasts)
        tables.add_scores(version, scores)
        if scores is not None:
            after.append(lambda: self.metrics.add_scores(model.name, version, scores))
        for member, (index, _) in enumerate(members):
            results[index] = StreamForecast(
                model=model.name, version=version, stream=calls[index][0],
                step=int(steps[member]) + length, consumed=length, skipped=0, created=False,
                committed=True, forecast=wide[member, :horizons[member]])
        return left

    def _score(self, model: Model, table: Any, rows: np.ndarray, raw: np.ndarray,
               block: np.ndarray, forecasts: list[np.ndarray]) -> Any:
        """Score the rows' pending forecasts against their new observations and keep the
        new forecasts (:class:`service.scoring.Scorer`); what they scored, added up."""
        if not self.scoring:
            return None
        scorer = Scorer(model, len(rows))
        if not scorer.steps:
            return None
        pending = table.pending
        records = [pending[row] for row in rows.tolist()]
        # Forecasts shorter than the scored steps are padded one by one (Scorer.add).
        if not (min(map(len, forecasts)) >= scorer.steps
                and scorer.add_block(records, raw, block)):
            for member, data in enumerate(records):
                scorer.add(member, data, raw[member], forecasts[member], None, ())
        for member, data in scorer.run().items():
            pending[int(rows[member])] = data
        written: WriteScores | None = scorer.scores(range(len(rows)))
        return None if written is None else written.select([True] * len(rows))
