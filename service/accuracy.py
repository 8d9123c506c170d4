"""A model version's accuracy as its streams' committed forecasts are scored: the totals
of its scores per horizon step, the absolute errors it keeps for online intervals, and the
``GET /v1/models/{model}/accuracy`` report. Stores add a write's :class:`Scores` to them in
the same atomic step as the write (:mod:`service.scoring` computes them).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from statecast.models.conformal import Calibration

#: Absolute errors one write keeps per step for online intervals, and writes a model
#: version keeps (the newest).
RESIDUALS_PER_WRITE = 64
RESIDUAL_WRITES = 512
#: Residuals per step online intervals are computed from, at most (the newest).
MAX_ONLINE_RESIDUALS = 2000

#: Per model version, per named row (``count``, ``abs_error``, ``smape``,
#: ``checks:<level>``, ``covered:<level>``), a ``float64 [S]`` sum per step.
Totals = dict[str, np.ndarray]


@dataclass(frozen=True)
class Scores:
    """What some writes of one model version added to its accuracy: per step sums (rows
    named as :data:`Totals`), and the absolute errors they scored (``errors [n, targets]``,
    their 1-based ``steps``)."""

    totals: Totals
    errors: np.ndarray
    steps: np.ndarray


class ResidualSource(Protocol):
    """What :class:`OnlineCalibrations` reads: a store's residual chunks."""

    def residuals(self, model: str, version: str) -> list[bytes]: ...


def add_totals(into: Totals, totals: Totals) -> Totals:
    """``into`` plus ``totals`` row by row (rows missing on one side count as zeros)."""
    for name, row in totals.items():
        into[name] = into[name] + row if name in into else row.astype(np.float64).copy()
    return into


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
    """At most :data:`RESIDUALS_PER_WRITE` absolute errors per step of one write, as bytes
    for a store: the count and width, the steps (int32), the errors (float32). Where a
    write scored more (a batch), they are spread evenly over its errors, so that every part
    of a batch is sampled, not only its last streams."""
    steps, errors = scores.steps, scores.errors
    counts = np.bincount(steps) if len(steps) > RESIDUALS_PER_WRITE else None
    if counts is not None and counts.max() > RESIDUALS_PER_WRITE:
        order = np.argsort(steps, kind="stable")  # each step's errors, in write order
        firsts = np.cumsum(counts) - counts
        big = np.flatnonzero(counts > RESIDUALS_PER_WRITE)
        # RESIDUALS_PER_WRITE evenly spaced positions in each big step's errors.
        spread = np.arange(RESIDUALS_PER_WRITE) * (
            (counts[big] - 1) / (RESIDUALS_PER_WRITE - 1))[:, None]
        keep = np.ones(len(steps), bool)
        keep[order[np.concatenate([np.arange(firsts[s], firsts[s] + counts[s])
                                   for s in big])]] = False
        keep[order[(firsts[big][:, None] + spread.round().astype(np.int64)).ravel()]] = True
        steps, errors = steps[keep], errors[keep]
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
    zeros = np.zeros(len(count))

    def row(name: str) -> np.ndarray:
        """A row of the totals; one a store never had a non-zero value for is zeros."""
        return totals.get(name, zeros)

    levels = sorted({name.split(":", 1)[1] for name in totals if name.startswith("checks:")},
                    key=float)
    steps = []
    for index, n in enumerate(count):
        coverage = {}
        for level in levels:
            checks = row(f"checks:{level}")[index]
            if checks > 0:
                coverage[level] = float(row(f"covered:{level}")[index] / checks)
        steps.append({"step": index + 1, "count": int(n),
                      "mae": float(row("abs_error")[index] / n) if n else None,
                      "smape": float(row("smape")[index] / n) if n else None,
                      "coverage": coverage})
    return {"model": model, "version": version, "since": since,
            "scored": int(count.sum()), "steps": steps}
