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

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load, save

from statecast.models.errors import (
    ArtifactError,
    IntegrityError,
    InvalidCalibration,
    InvalidLevel,
    LevelUnavailable,
)

CALIBRATION = "calibration.json"
#: Levels a call may ask for at once.
MAX_LEVELS = 8


def check_levels(levels: Iterable[float]) -> tuple[float, ...]:
    """Levels as floats, each in (0, 100), with distinct names, at most ``MAX_LEVELS``."""
    checked = tuple(float(level) for level in levels)
    if len(checked) > MAX_LEVELS:
        raise InvalidLevel(f"at most {MAX_LEVELS} levels per call, got {len(checked)}")
    for level in checked:
        if not (math.isfinite(level) and 0.0 < level < 100.0):
            raise InvalidLevel(f"a level is a percentage strictly between 0 and 100, got "
                               f"{level:g}")
    if len({level_name(level) for level in checked}) != len(checked):
        raise InvalidLevel("levels must be distinct")
    return checked


def level_name(level: float) -> str:
    """``80`` for 80.0, ``99.99999`` for 99.99999 (every digit, as Nixtla's columns): the
    suffix of ``lo-``/``hi-`` columns."""
    return str(int(level)) if float(level).is_integer() else repr(float(level))


def interval_names(levels: Sequence[float]) -> list[str]:
    """``lo-<level>`` from the widest level in, then ``hi-<level>`` from the narrowest out:
    the order of Nixtla's columns."""
    ordered = sorted(levels)
    return [f"lo-{level_name(v)}" for v in reversed(ordered)] + [
        f"hi-{level_name(v)}" for v in ordered]


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
        """:func:`conformal_intervals` of a forecast ``[..., h, targets]`` (levels checked:
        :func:`check_levels`)."""
        return conformal_intervals(forecast, self.scores, check_levels(levels))


def require_calibration(calibration: Calibration | None, reference: str, horizon: int,
                        remedy: str = "run statecast calibrate") -> Calibration:
    """``calibration`` if it gives intervals of ``horizon`` steps for the model version
    ``reference``; else ``LevelUnavailable`` saying why (and ``remedy``)."""
    if calibration is None:
        raise LevelUnavailable(f"{reference} has no calibration for intervals: {remedy}")
    if calibration.scores.shape[1] < horizon:
        raise LevelUnavailable(f"{reference} is calibrated for {calibration.scores.shape[1]} "
                               f"steps; {horizon} are asked for")
    return calibration


def _durable(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` and flush it to disk."""
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _sync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_calibration(folder: Path, calibration: Calibration) -> None:
    """Store ``calibration`` in a version's ``folder``, replacing any other atomically: the
    scores go to a new file named by their checksum, then ``calibration.json`` is renamed
    over the old one, so a reader sees the old calibration or the new, never a mix. The
    file the old manifest named is kept (a reader that has just read that manifest still
    finds it); older ones are removed. Everything is flushed to disk before returning."""
    scores = np.ascontiguousarray(calibration.scores, dtype=np.float32)
    if scores.ndim != 3 or scores.shape[0] < 1 or not np.isfinite(scores).all() or (
            scores < 0).any():
        raise InvalidCalibration("calibration scores must be finite absolute errors "
                                 "[n >= 1, horizon, targets]")
    previous = _manifest(folder)
    data = save({"scores": scores})
    digest = hashlib.sha256(data).hexdigest()
    name = f"calibration-{digest[:16]}.safetensors"
    manifest = {"file": name, "sha256": digest, "shape": list(scores.shape),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                **calibration.info}
    staging = Path(tempfile.mkdtemp(prefix=".calibrating-", dir=folder))
    try:
        _durable(staging / name, data)
        os.replace(staging / name, folder / name)
        _durable(staging / CALIBRATION, (json.dumps(manifest, indent=2) + "\n").encode())
        os.replace(staging / CALIBRATION, folder / CALIBRATION)
        _sync_folder(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    keep = {name, str((previous or {}).get("file"))}
    for old in folder.glob("calibration-*.safetensors"):
        if old.name not in keep:
            old.unlink(missing_ok=True)


def _manifest(folder: Path) -> dict[str, Any] | None:
    """The parsed ``calibration.json``, None when there is none."""
    try:
        text = (folder / CALIBRATION).read_text()
    except FileNotFoundError:
        return None
    try:
        manifest = json.loads(text)
        if not isinstance(manifest, dict) or not isinstance(manifest.get("file"), str):
            raise ValueError("no scores file named")
    except ValueError as error:
        raise ArtifactError(f"{folder / CALIBRATION} is not a calibration manifest: "
                            f"{error}") from None
    return manifest


def _scores_file(folder: Path) -> tuple[dict[str, Any], Path, bytes] | None:
    """The manifest, the path and the bytes of the scores it names (None: no calibration);
    a manifest replaced between reading it and its file is read again."""
    for _ in range(3):
        manifest = _manifest(folder)
        if manifest is None:
            return None
        path = folder / Path(manifest["file"]).name
        try:
            return manifest, path, path.read_bytes()
        except FileNotFoundError:
            continue
    raise ArtifactError(f"the scores file named by {folder / CALIBRATION} is missing")


def read_calibration(folder: Path) -> Calibration | None:
    """The calibration stored in a version's ``folder`` (checksum verified), or None. The
    scores are read once, then hashed and parsed from the same bytes; a manifest replaced
    while it was read is read again."""
    found = _scores_file(folder)
    if found is None:
        return None
    manifest, path, data = found
    if hashlib.sha256(data).hexdigest() != manifest.get("sha256"):
        raise IntegrityError(f"{path}: checksum differs from {CALIBRATION}'s")
    try:
        scores = load(data)["scores"]
    except Exception as error:  # any parse failure of a file that passed its checksum
        raise ArtifactError(f"{path}: unreadable scores: {error}") from None
    info = {k: v for k, v in manifest.items() if k not in ("file", "sha256", "shape")}
    return Calibration(scores, info)
