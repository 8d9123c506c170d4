"""Online scoring: every committed forecast is scored against the observations that arrive
for it later, per model version and horizon step.

A stream keeps its committed forecasts that are not fully observed yet (:class:`Pending`,
bounded: at most ``S (S + 1) / 2`` rows for ``S`` scored steps) and its own rolling error;
what a call's new observations score (:class:`WriteScores`) is written with the stream's
record in the same compare-and-set, so a score is never lost or counted twice; stores add
it to the model version's accuracy (:mod:`service.accuracy`).
"""

from __future__ import annotations

import functools
import itertools
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from statecast.kernels.scoring import (
    ABS_ERROR,
    COUNT,
    HEADER,
    SMAPE,
    TOTAL_ROWS,
    packed_rows,
    score_streams,
)
from statecast.models import Model
from statecast.models.conformal import MAX_LEVELS, level_name
from statecast.service.accuracy import Scores

#: Horizon steps scored at most (a stream keeps ``S (S + 1) / 2`` forecast rows).
MAX_SCORED_STEPS = 48
#: Span of a stream's rolling error: an exponentially weighted mean with ``alpha = 2 /
#: (span + 1)``, as ``pandas``' ``ewm(span=50)``.
ROLLING_SPAN = 50
_DECAY = 1.0 - 2.0 / (ROLLING_SPAN + 1)


def scored_steps(model: Model) -> int:
    """Steps of a model's forecasts that are scored: its own horizon, at most
    :data:`MAX_SCORED_STEPS`; 0 when its observations do not carry its targets."""
    spec = model.spec
    if any(target not in spec.features for target in spec.targets):
        return 0
    return min(spec.horizon, MAX_SCORED_STEPS)


def target_columns(model: Model) -> list[int]:
    """Columns of the targets in a model's observations."""
    return [model.spec.features.index(target) for target in model.spec.targets]


@dataclass
class Pending:
    """A stream's committed forecasts awaiting observations (packed by age, see
    :mod:`kernels.scoring`) with the interval bounds of ``levels``, its values scored so
    far and its rolling error (``rolling [2, S]``, numerator and denominator)."""

    levels: tuple[float, ...]
    scored: int
    rolling: np.ndarray
    values: np.ndarray
    bounds: np.ndarray

    @property
    def steps(self) -> int:
        return int(self.rolling.shape[1])

    @classmethod
    def empty(cls, steps: int, targets: int, levels: Sequence[float] = ()) -> Pending:
        rows = packed_rows(steps)
        return cls(tuple(levels), 0, np.zeros((2, steps)),
                   np.full((rows, targets), np.nan, np.float32),
                   np.full((rows, len(levels), 2, targets), np.nan, np.float32))

    def encode(self) -> bytes:
        """Bytes for a store: a float64 header (steps, targets, levels, scored, the levels,
        the rolling sums) then the float32 forecasts and bounds."""
        header = np.concatenate([[self.steps, self.values.shape[1], len(self.levels),
                                  self.scored], self.levels, self.rolling.ravel()])
        data = (header.astype("<f8").tobytes() + self.values.astype("<f4").tobytes()
                + self.bounds.astype("<f4").tobytes())
        return data + bytes(-len(data) % 8)  # records are 8-byte aligned

    @classmethod
    def decode(cls, data: bytes) -> Pending:
        steps, targets, levels, scored = (int(v) for v in np.frombuffer(data, "<f8", 4))
        header = np.frombuffer(data, "<f8", 4 + levels + 2 * steps)
        rows = packed_rows(steps)
        payload = np.frombuffer(data, "<f4", rows * targets * (1 + 2 * levels),
                                offset=header.nbytes).astype(np.float32)
        values = payload[:rows * targets].reshape(rows, targets)
        bounds = payload[rows * targets:].reshape(rows, levels, 2, targets)
        return cls(tuple(float(v) for v in header[4:4 + levels]), scored,
                   header[4 + levels:].reshape(2, steps).copy(), values, bounds)

    def with_levels(self, levels: tuple[float, ...]) -> Pending:
        """The same forecasts keeping bounds for ``levels`` only (new ones empty)."""
        if levels == self.levels:
            return self
        bounds = np.full((self.values.shape[0], len(levels), 2, self.values.shape[1]),
                         np.nan, np.float32)
        for slot, level in enumerate(levels):
            if level in self.levels:
                bounds[:, slot] = self.bounds[:, self.levels.index(level)]
        return Pending(levels, self.scored, self.rolling, self.values, bounds)

    def rolling_mae(self) -> list[float | None]:
        """The stream's rolling mean absolute error per step (None: not scored yet)."""
        return [float(num / den) if den > 0 else None for num, den in self.rolling.T]


@dataclass(frozen=True)
class WriteScores:
    """What each of several writes scored, to add up for those that succeed: per write
    ``sums [writes, rows, S]`` (rows: count, absolute error, sMAPE, then checks and covered
    of each of ``levels``), and the absolute errors scored with the write (``owners``)
    that scored each."""

    levels: tuple[str, ...]
    sums: np.ndarray
    errors: np.ndarray
    steps: np.ndarray
    owners: np.ndarray
    _selected: tuple[tuple[bool, ...], Scores | None] | None = field(
        default=None, compare=False, repr=False)

    def only(self, index: int) -> WriteScores:
        """The scores of write ``index`` alone."""
        kept = self.owners == index
        return WriteScores(self.levels, self.sums[index:index + 1], self.errors[kept],
                           self.steps[kept], np.zeros(int(kept.sum()), np.int64))

    def select(self, written: Sequence[bool]) -> Scores | None:
        """The scores of the writes that succeeded, added up (None: they scored nothing).
        The last answer is kept: the store and the metrics ask the same."""
        key = tuple(written)
        if self._selected is not None and self._selected[0] == key:
            return self._selected[1]
        selected = self._select(np.asarray(key, bool))
        object.__setattr__(self, "_selected", (key, selected))
        return selected

    def _select(self, mask: np.ndarray) -> Scores | None:
        if not mask.any():
            return None
        if len(mask) == 1:
            sums = self.sums[0]
        else:
            sums = self.sums[mask].sum(axis=0) if not mask.all() else self.sums.sum(axis=0)
        if not sums[COUNT].any():
            return None
        totals = {"count": sums[COUNT], "abs_error": sums[ABS_ERROR], "smape": sums[SMAPE]}
        for slot, name in enumerate(self.levels):
            checks = sums[TOTAL_ROWS + 2 * slot]
            if checks.any():
                totals[f"checks:{name}"] = checks
                totals[f"covered:{name}"] = sums[TOTAL_ROWS + 2 * slot + 1]
        kept = mask[self.owners] if not mask.all() else slice(None)
        return Scores(totals, self.errors[kept], self.steps[kept])


@functools.cache
def _empty_pending(steps: int, targets: int) -> bytes:
    return Pending.empty(steps, targets).encode()


class Scorer:
    """Scores the writes of one call on a model version's streams: each stream's pending
    forecasts (its record's bytes) are scored against its new observations and given the
    call's forecast, every stream of the call in one kernel pass over their bytes
    (:mod:`kernels.scoring`), the sums kept per write."""

    def __init__(self, model: Model, writes: int) -> None:
        self.steps = scored_steps(model)
        self.targets = len(model.spec.targets)
        self.columns = target_columns(model) if self.steps else []
        #: The targets are the observations' only column: no copy of them to score.
        self._whole = self.columns == [0] and len(model.spec.features) == 1
        self.rows = packed_rows(self.steps)
        self.levels: list[str] = []
        self._empty = _empty_pending(self.steps, self.targets)
        self._level_rows: dict[tuple[float, ...], list[int]] = {}
        self._members: list[int] = []
        self._records: list[bytes] = []
        self._levels_of: list[list[int]] = []
        self._observed: list[np.ndarray] = []
        self._forecasts: list[np.ndarray] = []
        self._bounds: list[np.ndarray | None] = []
        #: Streams added at once by :meth:`add_rows`: the array of their records, their
        #: records' byte offsets in it, observations per stream, observations ``[streams *
        #: k, targets]`` and forecasts ``[streams, S, targets]``.
        self._block: tuple[np.ndarray, np.ndarray, int, np.ndarray, np.ndarray] | None = None
        self.sums = np.zeros((0, TOTAL_ROWS, self.steps))
        self.errors = np.zeros((0, self.targets), np.float32)
        self.error_steps = np.zeros(0, np.int32)
        self.owners = np.zeros(0, np.int64)

    def add(self, member: int, data: bytes, observed: np.ndarray, forecast: np.ndarray,
            intervals: dict[str, np.ndarray] | None, levels: Sequence[float]) -> None:
        """A stream's pending forecasts (``data``; empty: none), its new observations (raw
        rows) and the forecast its call commits (with the ``intervals`` of ``levels``, if
        any), as write ``member`` of the call."""
        stored_levels: tuple[float, ...] = ()
        if len(data) != len(self._empty) or data[:24] != self._empty[:24]:
            # Not the usual record of this model without levels: check it.
            if not data or struct.unpack_from("<dd", data) != (self.steps, self.targets):
                data = self._empty
            stored = int(struct.unpack_from("<d", data, 16)[0])
            stored_levels = struct.unpack_from(f"<{stored}d", data, 8 * HEADER)
        asked = tuple(levels) if intervals is not None else ()
        if stored_levels or asked:
            data, stored_levels = _relevel(data, stored_levels, asked)
        self._members.append(member)
        self._records.append(data)
        self._levels_of.append(self._rows_of(stored_levels))
        self._observed.append(observed if self._whole else observed[:, self.columns])
        self._forecasts.append(forecast)
        self._bounds.append(None if intervals is None or not stored_levels else
                            self._bounds_of(forecast, intervals, stored_levels))

    def add_block(self, records: Sequence[bytes], observed: np.ndarray,
                  forecasts: np.ndarray) -> bool:
        """Every write of the call at once, as members ``0 .. n-1``: the streams' pending
        forecasts (``records``), their new observations ``[n, k, features]`` (raw) and the
        forecasts the call commits ``[n, >= S, targets]``, no intervals. Only for records
        of this model's usual layout without levels (else False, nothing added: use
        :meth:`add`), on a scorer nothing was added to."""
        size = len(self._empty)
        if any(len(data) != size for data in records):
            return False
        joined = np.frombuffer(bytearray(b"".join(records)), np.uint8)
        return self.add_rows(joined.reshape(len(records), size),
                             np.arange(len(records), dtype=np.int64), observed, forecasts)

    def add_rows(self, records: np.ndarray, rows: np.ndarray, observed: np.ndarray,
                 forecasts: np.ndarray) -> bool:
        """:meth:`add_block` for records that are rows of an array ``uint8 [rows, size]``
        (``size``: this model's usual record, no levels): a store's own column, scored and
        updated in place by :meth:`run_in_place`. Rows ``rows`` are the members ``0 ..
        n-1``."""
        size = len(self._empty)
        if (self._records or self._block is not None or forecasts.shape[1] < self.steps
                or records.shape[1] != size or not records.flags.c_contiguous):
            return False
        headers = records[rows, :24].view("<f8")
        if not (headers == np.frombuffer(self._empty, "<f8", 3)).all():
            return False
        count, steps = observed.shape[:2]
        chosen = observed if self._whole else observed[:, :, self.columns]
        self._block = (records, rows * size, steps,
                       np.ascontiguousarray(chosen, np.float32).reshape(count * steps, -1),
                       np.ascontiguousarray(forecasts[:, :self.steps], np.float32))
        self._members = list(range(count))
        return True

    def _run_block(self) -> np.ndarray:
        """:meth:`run` for the streams of :meth:`add_rows`: their records updated in
        their array; the byte offsets of the members' records returned."""
        assert self._block is not None
        records, starts, steps, observed, forecasts = self._block
        count = len(forecasts)
        flat = records.reshape(-1)
        self._prepare_sums(count)
        scored = score_streams(
            flat.view(np.float64), flat.view(np.float32), starts, observed,
            np.arange(count + 1, dtype=np.int64) * steps, _DECAY, forecasts,
            np.zeros(0, np.float32), np.full(count, -1, np.int64),
            np.zeros((count, 1), np.int64), self.sums, self.errors, self.error_steps,
            self.owners)
        self._keep(scored)
        return starts

    def run_in_place(self) -> None:
        """Score the streams of :meth:`add_rows`, their records updated where they are."""
        self._run_block()

    def _prepare_sums(self, count: int) -> None:
        self.sums = np.zeros((count, TOTAL_ROWS + 2 * len(self.levels), self.steps))
        capacity = count * self.rows
        self.errors = np.empty((capacity, self.targets), np.float32)
        self.error_steps = np.empty(capacity, np.int32)
        self.owners = np.empty(capacity, np.int64)

    def _keep(self, scored: int) -> None:
        self.errors, self.error_steps = self.errors[:scored], self.error_steps[:scored]
        self.owners = self.owners[:scored]

    def _rows_of(self, levels: tuple[float, ...]) -> list[int]:
        """Rows of the sums where each of a stream's levels is counted."""
        known = self._level_rows.get(levels)
        if known is None:
            for name in map(level_name, levels):
                if name not in self.levels:
                    self.levels.append(name)
            known = self._level_rows[levels] = [
                TOTAL_ROWS + 2 * self.levels.index(level_name(level)) for level in levels]
        return known

    def _bounds_of(self, forecast: np.ndarray, intervals: dict[str, np.ndarray],
                   levels: tuple[float, ...]) -> np.ndarray:
        """A forecast's bounds ``[S, levels, 2, targets]``, flat (NaN for a level it was
        not given, and past its horizon)."""
        bounds = np.full((self.steps, len(levels), 2, self.targets), np.nan, np.float32)
        rows = min(self.steps, len(forecast))
        for slot, name in enumerate(map(level_name, levels)):
            if f"lo-{name}" in intervals:
                bounds[:rows, slot, 0] = intervals[f"lo-{name}"][:rows]
                bounds[:rows, slot, 1] = intervals[f"hi-{name}"][:rows]
        return bounds.ravel()

    def run(self) -> dict[int, bytes]:
        """Score every stream added; each member's new record."""
        if self._block is not None:
            starts = self._run_block()
            flat = self._block[0].reshape(-1)
            size = len(self._empty)
            return {member: flat[at:at + size].tobytes()
                    for member, at in enumerate(starts.tolist())}
        count = len(self._records)
        if not count:
            return {}
        offsets = list(itertools.accumulate(map(len, self._records), initial=0))
        starts = np.array(offsets, np.int64)
        buffer = bytearray(b"".join(self._records))
        f8 = np.frombuffer(buffer, "<f8")
        f4 = np.frombuffer(buffer, "<f4")
        observed_starts = np.array(list(itertools.accumulate(map(len, self._observed),
                                                             initial=0)), np.int64)
        observed = (self._observed[0] if count == 1 else np.concatenate(self._observed))
        observed = np.ascontiguousarray(observed, np.float32)
        if all(len(forecast) >= self.steps for forecast in self._forecasts):
            forecasts = np.stack([f[:self.steps] for f in self._forecasts]).astype(
                np.float32, copy=False)
        else:
            forecasts = np.full((count, self.steps, self.targets), np.nan, np.float32)
            for n, forecast in enumerate(self._forecasts):
                forecasts[n, :len(forecast)] = forecast[:self.steps]
        bounds_starts = np.full(count, -1, np.int64)
        given = [bounds for bounds in self._bounds if bounds is not None]
        flat_bounds = np.concatenate(given) if given else np.zeros(0, np.float32)
        at = 0
        for n, bounds in enumerate(self._bounds if given else ()):
            if bounds is not None:
                bounds_starts[n], at = at, at + len(bounds)
        widest = max(map(len, self._levels_of))
        level_rows = np.zeros((count, max(widest, 1)), np.int64)
        for n, rows in enumerate(self._levels_of if widest else ()):
            level_rows[n, :len(rows)] = rows
        self._prepare_sums(count)
        scored = score_streams(f8, f4, starts[:-1], observed,
                               observed_starts, _DECAY, forecasts, flat_bounds, bounds_starts,
                               level_rows, self.sums, self.errors, self.error_steps,
                               self.owners)
        self._keep(scored)
        view = memoryview(buffer)
        return {member: bytes(view[offsets[n]:offsets[n + 1]])
                for n, member in enumerate(self._members)}

    def scores(self, members: Sequence[int]) -> WriteScores | None:
        """What the writes of ``members`` (given to :meth:`add`, in the order they are
        written) scored, once :meth:`run`; None when nothing was."""
        if not len(self.owners):
            return None
        if list(members) == self._members:  # every stream added is written, in order
            return WriteScores(tuple(self.levels), self.sums, self.errors, self.error_steps,
                               self.owners)
        entry = {member: n for n, member in enumerate(self._members)}
        order = np.asarray([entry[member] for member in members], np.int64)
        position = np.full(len(self._members), -1, np.int64)
        position[order] = np.arange(len(order))
        owners = position[self.owners]
        assert (owners >= 0).all(), "scores of a stream that is not written"
        return WriteScores(tuple(self.levels), self.sums[order], self.errors,
                           self.error_steps, owners)


def _relevel(data: bytes, stored: tuple[float, ...], asked: tuple[float, ...]
             ) -> tuple[bytes, tuple[float, ...]]:
    """A stream's record holding bounds for the levels a call asks for and the stored levels
    some pending forecast still has bounds of (at most ``MAX_LEVELS``)."""
    if set(asked) <= set(stored) and asked:
        return data, stored  # the common case: the same levels again
    pending = Pending.decode(data)
    still = [level for slot, level in enumerate(pending.levels)
             if level not in asked and not np.isnan(pending.bounds[:, slot]).all()]
    wanted = (asked + tuple(still))[:MAX_LEVELS]
    if wanted == stored:
        return data, stored
    return pending.with_levels(wanted).encode(), wanted


