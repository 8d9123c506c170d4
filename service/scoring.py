"""Online scoring: every committed forecast is scored against the observations that arrive
for it later, per model version and horizon step.

A stream keeps its committed forecasts that are not fully observed yet (:class:`Pending`,
bounded: at most ``S (S + 1) / 2`` rows for ``S`` scored steps) and its own rolling error;
what a call's new observations score (:class:`Scores`) is written with the stream's record
in the same compare-and-set, so a score is never lost or counted twice. Stores add the
scores of a model version up (:data:`Totals`: counts, absolute errors, sMAPE, interval
checks per step) and keep its recent absolute errors, from which point models without a
calibration get conformal intervals once enough are seen.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from statecast.kernels.scoring import (
    ABS_ERROR,
    COUNT,
    SMAPE,
    TOTAL_ROWS,
    packed_rows,
    score_observations,
)
from statecast.models import Model
from statecast.models.conformal import Calibration, level_name

#: Horizon steps scored at most (a stream keeps ``S (S + 1) / 2`` forecast rows).
MAX_SCORED_STEPS = 48
#: Span of a stream's rolling error: an exponentially weighted mean with ``alpha = 2 /
#: (span + 1)``, as ``pandas``' ``ewm(span=50)``.
ROLLING_SPAN = 50
_DECAY = 1.0 - 2.0 / (ROLLING_SPAN + 1)
#: Absolute errors one write keeps per step for online intervals, and writes a model
#: version keeps (the newest).
RESIDUALS_PER_WRITE = 64
RESIDUAL_WRITES = 512
#: Residuals per step online intervals are computed from, at most (the newest).
MAX_ONLINE_RESIDUALS = 2000

#: Per model version, per named row (``count``, ``abs_error``, ``smape``,
#: ``checks:<level>``, ``covered:<level>``), a ``float64 [S]`` sum per step.
Totals = dict[str, np.ndarray]


class ResidualSource(Protocol):
    """What :class:`OnlineCalibrations` reads: a store's residual chunks."""

    def residuals(self, model: str, version: str) -> list[bytes]: ...


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
        return (header.astype("<f8").tobytes() + self.values.astype("<f4").tobytes()
                + self.bounds.astype("<f4").tobytes())

    @classmethod
    def decode(cls, data: bytes) -> Pending:
        steps, targets, levels, scored = (int(v) for v in np.frombuffer(data, "<f8", 4))
        header = np.frombuffer(data, "<f8", 4 + levels + 2 * steps)
        rows = packed_rows(steps)
        payload = np.frombuffer(data, "<f4", offset=header.nbytes).astype(np.float32)
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
class Scores:
    """What one write adds to its model version's accuracy: per step sums (rows named as
    :data:`Totals`), and the absolute errors it scored (``errors [n, targets]``, their
    1-based ``steps``)."""

    totals: Totals
    errors: np.ndarray
    steps: np.ndarray

    @property
    def scored(self) -> int:
        return int(self.totals["count"].sum()) if "count" in self.totals else 0


def score(model: Model, pending: Pending, observed: np.ndarray
          ) -> tuple[Pending, Scores | None]:
    """Score a stream's new observations (raw rows) against its pending forecasts: the
    pending forecasts after them, and the scores (None: nothing scored)."""
    steps = pending.steps
    if not len(observed) or np.isnan(pending.values[:, 0]).all():
        return pending, None  # nothing pending: ageing changes nothing
    targets = np.ascontiguousarray(observed[:, target_columns(model)], dtype=np.float32)
    values, bounds = pending.values.copy(), pending.bounds.copy()
    rolling = pending.rolling.copy()
    sums = np.zeros((TOTAL_ROWS + 2 * len(pending.levels), steps))
    # Each pending row is scored at most once.
    errors = np.empty((len(values), targets.shape[1]), np.float32)
    error_steps = np.empty(len(values), np.int32)
    written = score_observations(values, bounds, targets, rolling, _DECAY, sums, errors,
                                 error_steps)
    count = int(sums[COUNT].sum())
    after = Pending(pending.levels, pending.scored + count, rolling, values, bounds)
    if not count:
        return after, None
    names = {"count": COUNT, "abs_error": ABS_ERROR, "smape": SMAPE}
    totals = {name: sums[row] for name, row in names.items()}
    for slot, level in enumerate(pending.levels):
        checks = sums[TOTAL_ROWS + 2 * slot]
        if checks.any():
            totals[f"checks:{level_name(level)}"] = checks
            totals[f"covered:{level_name(level)}"] = sums[TOTAL_ROWS + 2 * slot + 1]
    return after, Scores(totals, errors[:written], error_steps[:written])


def commit_forecast(pending: Pending, forecast: np.ndarray,
                    intervals: dict[str, np.ndarray] | None, levels: tuple[float, ...]
                    ) -> Pending:
    """``pending`` with a call's committed forecast ``[horizon, targets]`` (and its bounds
    per level, when it has intervals) stored as the newest, to be scored later."""
    if intervals is not None and levels:
        pending = pending.with_levels(levels)
    steps = min(pending.steps, len(forecast))
    values, bounds = pending.values.copy(), pending.bounds.copy()
    values[:pending.steps] = np.nan
    values[:steps] = forecast[:steps]
    bounds[:pending.steps] = np.nan
    if intervals is not None:
        for slot, level in enumerate(pending.levels):
            name = level_name(level)
            if f"lo-{name}" in intervals:
                bounds[:steps, slot, 0] = intervals[f"lo-{name}"][:steps]
                bounds[:steps, slot, 1] = intervals[f"hi-{name}"][:steps]
    return Pending(pending.levels, pending.scored, pending.rolling, values, bounds)


def add_totals(into: Totals, totals: Totals) -> Totals:
    """``into`` plus ``totals`` row by row (rows missing on one side count as zeros)."""
    for name, row in totals.items():
        into[name] = into[name] + row if name in into else row.astype(np.float64).copy()
    return into


def sum_scores(scores: Iterable[Scores | None]) -> Scores | None:
    """The scores of several writes as one (None when there are none)."""
    present = [each for each in scores if each is not None]
    if not present:
        return None
    if len(present) == 1:
        return present[0]
    totals: Totals = {}
    for each in present:
        add_totals(totals, each.totals)
    return Scores(totals, np.concatenate([each.errors for each in present]),
                  np.concatenate([each.steps for each in present]))


def encode_totals(totals: Totals) -> tuple[str, bytes]:
    """Row names (joined by ``,``) and the float64 rows, for a store."""
    names = sorted(totals)
    return ",".join(names), np.stack([totals[name] for name in names]).astype("<f8").tobytes()


def decode_totals(names: str, data: bytes) -> Totals:
    rows = [name for name in names.split(",") if name]
    if not rows:
        return {}
    matrix = np.frombuffer(data, "<f8").reshape(len(rows), -1)
    return {name: matrix[i].copy() for i, name in enumerate(rows)}


def residual_chunk(scores: Scores) -> bytes:
    """The newest :data:`RESIDUALS_PER_WRITE` absolute errors per step of one write, as
    bytes for a store: the count and width, the steps (int32), the errors (float32)."""
    keep = np.ones(len(scores.steps), bool)
    for step in np.unique(scores.steps):
        where = np.flatnonzero(scores.steps == step)
        keep[where[:-RESIDUALS_PER_WRITE]] = False
    steps, errors = scores.steps[keep], scores.errors[keep]
    return (struct.pack("<ii", len(steps), errors.shape[1]) + steps.astype("<i4").tobytes()
            + errors.astype("<f4").tobytes())


def decode_residual_chunk(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    count, width = struct.unpack_from("<ii", data)
    steps = np.frombuffer(data, "<i4", count, offset=8)
    errors = np.frombuffer(data, "<f4", count * width, offset=8 + 4 * count)
    return steps, errors.reshape(count, width)


def online_calibration(chunks: Sequence[bytes], min_residuals: int) -> Calibration | None:
    """Conformal scores from the absolute errors a model version's forecasts made in
    service (``chunks`` oldest first): the newest ``n`` per step for as many steps from the
    first as have at least ``min_residuals`` (``n`` their smallest count, at most
    :data:`MAX_ONLINE_RESIDUALS`); None when step 1 has fewer."""
    if min_residuals <= 0 or not chunks:
        return None
    decoded = [decode_residual_chunk(chunk) for chunk in chunks]
    steps = np.concatenate([s for s, _ in decoded])
    errors = np.concatenate([e for _, e in decoded])
    columns = []
    for step in range(1, int(steps.max(initial=0)) + 1):
        mine = errors[steps == step]
        if len(mine) < min_residuals:
            break
        columns.append(mine[-MAX_ONLINE_RESIDUALS:])
    if not columns:
        return None
    n = min(len(column) for column in columns)
    scores = np.stack([column[-n:] for column in columns], axis=1)
    return Calibration(np.ascontiguousarray(scores, np.float32),
                       {"source": "online", "residuals": n})


class OnlineCalibrations:
    """Per model version, the calibration its scored residuals give
    (:func:`online_calibration`), read from the store at most every ``refresh`` seconds."""

    def __init__(self, store: ResidualSource, min_residuals: int, refresh: float = 5.0
                 ) -> None:
        self.store = store
        self.min_residuals = min_residuals
        self.refresh = refresh
        self._cache: dict[tuple[str, str], tuple[float, Calibration | None]] = {}

    def get(self, model: str, version: str) -> Calibration | None:
        if self.min_residuals <= 0:
            return None
        now = time.monotonic()
        cached = self._cache.get((model, version))
        if cached is not None and now - cached[0] < self.refresh:
            return cached[1]
        calibration = online_calibration(self.store.residuals(model, version),
                                         self.min_residuals)
        self._cache[(model, version)] = (now, calibration)
        return calibration


def accuracy_report(model: str, version: str, since: float | None, totals: Totals
                    ) -> dict[str, object]:
    """The body of ``GET /v1/models/{model}/accuracy``: per step the values scored, their
    mean absolute error, sMAPE and each level's empirical coverage."""
    count = totals.get("count", np.zeros(0))
    levels = sorted({name.split(":", 1)[1] for name in totals if name.startswith("checks:")},
                    key=float)
    steps = []
    for index, n in enumerate(count):
        coverage = {}
        for level in levels:
            checks = totals[f"checks:{level}"][index]
            if checks > 0:
                coverage[level] = float(totals[f"covered:{level}"][index] / checks)
        steps.append({"step": index + 1, "count": int(n),
                      "mae": float(totals["abs_error"][index] / n) if n else None,
                      "smape": float(totals["smape"][index] / n) if n else None,
                      "coverage": coverage})
    return {"model": model, "version": version, "since": since,
            "scored": int(count.sum()), "steps": steps}
