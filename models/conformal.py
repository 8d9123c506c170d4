"""Conformal intervals for point forecasts: Nixtla's ``conformal_distribution``.

A calibration holds the absolute errors of a model's own forecasts, ``scores [n, horizon,
targets]``: one row per backtest window (and series), per horizon step and target. For a
forecast ``m`` of one step and target and its ``n`` scores ``s``, the interval of level ``L``
spans the ``a / 2`` and ``1 - a / 2`` quantiles (``a = (100 - L) / 100``, NumPy's linear
interpolation) of the ``2n`` values ``m - s`` and ``m + s``: the method NeuralForecast and
MLForecast name ``conformal_distribution``, on the same numbers giving the same bounds. As
quantiles move with a shift, the bounds are ``m`` plus the quantiles of ``-s`` and ``s``,
computed once for any number of forecasts.

A calibration is stored beside its model version (``calibration.json`` naming a checksummed
``safetensors`` file of the scores), and can be replaced without publishing a new version.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from statecast.models.artifact import sha256_of
from statecast.models.errors import IntegrityError, InvalidLevel, LevelUnavailable, ModelError

CALIBRATION = "calibration.json"
#: Levels a call may ask for at once.
MAX_LEVELS = 8


def check_levels(levels: Iterable[float]) -> tuple[float, ...]:
    """Levels as floats, each in (0, 100), distinct, at most ``MAX_LEVELS``."""
    checked = tuple(float(level) for level in levels)
    if len(checked) > MAX_LEVELS:
        raise InvalidLevel(f"at most {MAX_LEVELS} levels per call, got {len(checked)}")
    for level in checked:
        if not (math.isfinite(level) and 0.0 < level < 100.0):
            raise InvalidLevel(f"a level is a percentage strictly between 0 and 100, got "
                               f"{level:g}")
    if len(set(checked)) != len(checked):
        raise InvalidLevel("levels must be distinct")
    return checked


def level_name(level: float) -> str:
    """``80`` for 80.0, ``99.5`` for 99.5: the suffix of ``lo-``/``hi-`` columns."""
    return f"{level:g}"


def conformal_intervals(forecast: np.ndarray, scores: np.ndarray, levels: Sequence[float]
                        ) -> dict[str, np.ndarray]:
    """``{"lo-80": [..., h, targets], "hi-80": ..., ...}`` around ``forecast [..., h,
    targets]`` (one forecast or many) from ``scores [n, >= h, targets]`` (float32 bounds,
    computed in float64)."""
    horizon = forecast.shape[-2]
    if scores.shape[1] < horizon:
        raise LevelUnavailable(f"the calibration covers {scores.shape[1]} steps; the "
                               f"forecast has {horizon}")
    errors = scores[:, :horizon].astype(np.float64)
    spread = np.concatenate([-errors, errors])
    mean = forecast.astype(np.float64)
    intervals = {}
    for level in levels:
        alpha = (100.0 - level) / 100.0
        low, high = np.quantile(spread, [alpha / 2, 1 - alpha / 2], axis=0)
        intervals[f"lo-{level_name(level)}"] = (mean + low).astype(np.float32)
        intervals[f"hi-{level_name(level)}"] = (mean + high).astype(np.float32)
    return intervals


@dataclass(frozen=True)
class Calibration:
    """Absolute errors of a model's backtest forecasts, ``float32 [n, horizon, targets]``,
    and how they were made (windows, step size, series, when)."""

    scores: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)

    def intervals(self, forecast: np.ndarray, levels: Sequence[float]
                  ) -> dict[str, np.ndarray]:
        """:func:`conformal_intervals` of one forecast ``[h, targets]``."""
        return conformal_intervals(forecast, self.scores, levels)


def write_calibration(folder: Path, calibration: Calibration) -> None:
    """Store ``calibration`` in a version's ``folder``, replacing any other atomically: the
    scores go to a new file named by their checksum, then ``calibration.json`` is renamed
    over the old one, so a reader sees the old calibration or the new, never a mix."""
    scores = np.ascontiguousarray(calibration.scores, dtype=np.float32)
    if scores.ndim != 3 or scores.shape[0] < 1 or not np.isfinite(scores).all() or (
            scores < 0).any():
        raise ModelError("calibration scores must be finite absolute errors "
                         "[n >= 1, horizon, targets]")
    staging = Path(tempfile.mkdtemp(prefix=".calibrating-", dir=folder))
    try:
        scores_path = staging / "scores.safetensors"
        save_file({"scores": scores}, str(scores_path))
        digest = sha256_of(scores_path)
        name = f"calibration-{digest[:16]}.safetensors"
        os.replace(scores_path, folder / name)
        manifest = {"file": name, "sha256": digest, "shape": list(scores.shape),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    **calibration.info}
        (staging / CALIBRATION).write_text(json.dumps(manifest, indent=2) + "\n")
        os.replace(staging / CALIBRATION, folder / CALIBRATION)
    finally:
        for leftover in staging.iterdir():
            leftover.unlink()
        staging.rmdir()
    for old in folder.glob("calibration-*.safetensors"):
        if old.name != name:
            old.unlink(missing_ok=True)


def read_calibration(folder: Path) -> Calibration | None:
    """The calibration stored in a version's ``folder`` (checksum verified), or None."""
    try:
        manifest = json.loads((folder / CALIBRATION).read_text())
    except FileNotFoundError:
        return None
    path = folder / Path(manifest["file"]).name
    if sha256_of(path) != manifest.get("sha256"):
        raise IntegrityError(f"{path}: checksum differs from {CALIBRATION}'s")
    scores = load_file(str(path))["scores"]
    info = {k: v for k, v in manifest.items() if k not in ("file", "sha256", "shape")}
    return Calibration(scores, info)
