"""Long-format series (Nixtla's convention: ``unique_id``, ``ds``, ``y`` plus covariate
columns) checked and turned into one array per series, and forecast times made from ``ds``.

Every check raises :class:`BatchInputError` naming the problem before anything is written.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from statecast.models import Model
from statecast.service.errors import ServiceError

#: How missing target or covariate values may be filled (``--fill``); none by default.
FILLS = ("ffill", "zero", "interpolate")


class BatchInputError(ServiceError):
    """Input a batch job refuses: missing columns, non-numeric or missing values,
    duplicate ``(unique_id, ds)`` rows, an unknown frequency."""

    code = "invalid_batch_input"
    status = 422


@dataclass(frozen=True)
class Columns:
    """Which input columns hold the series id, the time and the target."""

    id: str = "unique_id"
    time: str = "ds"
    target: str = "y"


@dataclass(frozen=True)
class Series:
    """One series: its id, times and raw observations ``float32 [time, features]`` in the
    model's feature order."""

    id: Any
    ds: np.ndarray
    values: np.ndarray
    #: The target column as given (float64), for outputs that show the actual values.
    actual: np.ndarray


def by_position(model: Model) -> bool:
    """True for models whose covariate names were not saved (Darts): their covariates are
    the input's columns after the id, time and target columns, in order."""
    return model.spec.extra.get("covariates") == "by_position"


def feature_columns(model: Model, columns: Columns, available: list[str] | None = None
                    ) -> list[str]:
    """The input column of each model feature: the target column for the model's (single)
    target, a column of the feature's own name for every covariate (or, for a model whose
    covariates go by position, the ``available`` columns after id, time and target)."""
    targets = model.spec.targets
    if len(targets) != 1:
        raise BatchInputError(f"batch jobs forecast one target; {model.name} has "
                              f"{len(targets)} ({', '.join(targets)})")
    covariates = [name for name in model.spec.features if name != targets[0]]
    if by_position(model) and covariates and available is not None:
        rest = [c for c in available if c not in (columns.id, columns.time, columns.target)]
        if len(rest) != len(covariates):
            raise BatchInputError(f"{model.name} takes {len(covariates)} covariate column(s) "
                                  f"after {columns.id}, {columns.time}, {columns.target} (by "
                                  f"position); the input has {len(rest)}: {rest}")
        named = dict(zip(covariates, rest, strict=True))
        return [columns.target if name == targets[0] else named[name]
                for name in model.spec.features]
    return [columns.target if name == targets[0] else name for name in model.spec.features]


def future_columns(model: Model, columns: Columns, available: list[str]) -> list[str]:
    """The column of each future feature in a future frame (Nixtla's ``X_df``): by name,
    or by position after id and time for a model whose covariates go by position."""
    wanted = list(model.spec.future_features)
    if by_position(model):
        rest = [c for c in available if c not in (columns.id, columns.time)]
        if len(rest) != len(wanted):
            raise BatchInputError(f"the future frame needs {len(wanted)} covariate column(s) "
                                  f"after {columns.id} and {columns.time} (by position); it "
                                  f"has {len(rest)}: {rest}")
        return rest
    missing = [name for name in wanted if name not in available]
    if missing:
        raise BatchInputError(f"the future frame lacks columns {missing} (it has {available})")
    return wanted


def _fill(frame: pd.DataFrame, names: list[str], fill: str | None, columns: Columns
          ) -> pd.DataFrame:
    missing = frame[names].isna().any(axis=1)
    if not missing.any():
        return frame
    if fill is None:
        ids = frame.loc[missing, columns.id].unique()[:5].tolist()
        raise BatchInputError(f"{int(missing.sum())} rows have missing values (series "
                              f"{ids}...): clean them or pass --fill {'|'.join(FILLS)}")
    if fill not in FILLS:
        raise BatchInputError(f"unknown fill {fill!r}: use one of {', '.join(FILLS)}")
    frame = frame.copy()
    groups = frame.groupby(columns.id, sort=False)[names]
    if fill == "zero":
        frame[names] = frame[names].fillna(0.0)
    elif fill == "ffill":
        frame[names] = groups.ffill()
        frame[names] = frame.groupby(columns.id, sort=False)[names].bfill()
    else:
        frame[names] = groups.transform(lambda s: s.interpolate(limit_direction="both"))
    if frame[names].isna().any(axis=None):
        raise BatchInputError("some series have no values at all to fill from")
    return frame


def with_times(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """``frame`` with its time ``column`` as integers or datetimes (dates read as objects,
    e.g. a CSV's date32 column, or text, are parsed), or refused."""
    time = frame[column]
    if pd.api.types.is_integer_dtype(time) or pd.api.types.is_datetime64_any_dtype(time):
        return frame
    try:
        return frame.assign(**{column: pd.to_datetime(time)})
    except (ValueError, TypeError):
        raise BatchInputError(f"column {column!r} must hold integers or datetimes, got "
                              f"{time.dtype}") from None


def series_of(frame: pd.DataFrame, model: Model, columns: Columns, fill: str | None = None
              ) -> list[Series]:
    """The series of a long frame (sorted by id and time here; any input order)."""
    names = feature_columns(model, columns, list(frame.columns))
    needed = [columns.id, columns.time, *dict.fromkeys(names)]
    absent = [name for name in needed if name not in frame.columns]
    if absent:
        raise BatchInputError(f"missing columns {absent}; the input has {list(frame.columns)}"
                              f" (model {model.name} needs {needed})")
    for name in dict.fromkeys(names):
        if not pd.api.types.is_numeric_dtype(frame[name]) or pd.api.types.is_bool_dtype(
                frame[name]):
            raise BatchInputError(f"column {name!r} must be numeric, got {frame[name].dtype}")
    frame = with_times(frame, columns.time)
    if frame[columns.time].isna().any() or frame[columns.id].isna().any():
        raise BatchInputError(f"{columns.id!r} and {columns.time!r} must not be empty")
    duplicated = frame.duplicated([columns.id, columns.time])
    if duplicated.any():
        first = frame.loc[duplicated, [columns.id, columns.time]].iloc[0].tolist()
        raise BatchInputError(f"{int(duplicated.sum())} duplicate ({columns.id}, "
                              f"{columns.time}) rows, e.g. {first}")
    frame = frame.sort_values([columns.id, columns.time], kind="stable")
    frame = _fill(frame, list(dict.fromkeys(names)), fill, columns)
    values = frame[names].to_numpy(np.float64)
    target = names.index(columns.target)
    if not np.isfinite(values).all():
        raise BatchInputError("values must be finite (no infinities)")
    ids = frame[columns.id].to_numpy()
    times = frame[columns.time].to_numpy()
    bounds = np.flatnonzero(ids[1:] != ids[:-1]) + 1
    starts = np.concatenate([[0], bounds])
    stops = np.concatenate([bounds, [len(ids)]])
    return [Series(ids[a], times[a:b], values[a:b].astype(np.float32), values[a:b, target])
            for a, b in zip(starts, stops, strict=True) if b > a]


def frequency(series: list[Series], given: str | int | None) -> Any:
    """The step between consecutive times: ``given`` (an integer, or a pandas offset alias
    for datetimes), else inferred from the data (the most common step)."""
    if not series:
        return given
    sample = series[0].ds
    datetimes = np.issubdtype(sample.dtype, np.datetime64)
    if given is not None:
        if datetimes:
            if isinstance(given, pd.offsets.BaseOffset):
                return given
            try:
                return pd.tseries.frequencies.to_offset(str(given))
            except ValueError:
                raise BatchInputError(f"unknown frequency {given!r}: use a pandas offset "
                                      "alias such as D, h, W, MS") from None
        try:
            return int(given)
        except ValueError:
            raise BatchInputError(f"integer times need an integer --freq, got {given!r}"
                                  ) from None
    if datetimes:
        for one in series:
            if len(one.ds) >= 3:
                with warnings.catch_warnings():  # pandas 3 announces an offset return
                    warnings.simplefilter("ignore")
                    inferred = pd.tseries.frequencies.to_offset(
                        pd.infer_freq(pd.DatetimeIndex(one.ds)))
                if inferred is not None:
                    return inferred
        raise BatchInputError("cannot infer the frequency of the datetimes: pass --freq")
    steps = np.concatenate([np.diff(one.ds) for one in series if len(one.ds) > 1] or
                           [np.array([], np.int64)])
    if not len(steps):
        raise BatchInputError("cannot infer the step of integer times: pass --freq")
    values, counts = np.unique(steps, return_counts=True)
    return int(values[np.argmax(counts)])


def future_times(last: Any, steps: int, freq: Any) -> np.ndarray:
    """The ``steps`` times after ``last``."""
    if isinstance(freq, int):
        return last + freq * np.arange(1, steps + 1)
    return pd.date_range(pd.Timestamp(last), periods=steps + 1, freq=freq)[1:].to_numpy()


def future_times_of(lasts: np.ndarray, steps: int, freq: Any) -> np.ndarray:
    """``[series, steps]``: the ``steps`` times after each of ``lasts``, in one array
    operation for integer steps and fixed-length offsets (days, hours, ...); calendar
    offsets (months, weeks anchored on a day, ...) one series at a time."""
    lasts = np.asarray(lasts)
    if isinstance(freq, int):
        return lasts[:, None] + freq * np.arange(1, steps + 1)
    if isinstance(freq, pd.offsets.Tick):
        step = np.timedelta64(pd.Timedelta(freq).value, "ns")
        return lasts.astype("datetime64[ns]")[:, None] + step * np.arange(1, steps + 1)
    return np.stack([future_times(last, steps, freq) for last in lasts]) if len(lasts) else (
        np.empty((0, steps), "datetime64[ns]"))
