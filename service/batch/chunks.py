"""Forecasting whole series in memory: a long-format DataFrame in, a long-format DataFrame
out (:func:`forecast`), one chunk of a file job at a time (:func:`forecast_chunk`), with
intervals and backtests; and reading the rows of some series from a Parquet or CSV file.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from statecast.models import Model, Registry
from statecast.models.conformal import Calibration, check_levels, require_calibration
from statecast.models.distribution import check_head_levels, gives_levels, head_intervals
from statecast.models.windowed import point_forecasts
from statecast.service.batch.calibration import (
    Bounds,
    conformal_bounds,
    interval_columns,
    series_bounds,
)
from statecast.service.batch.engine import (
    backtest,
    backtest_horizon,
    final_states,
    horizon_of,
    window_outputs_of,
)
from statecast.service.batch.frames import (
    BatchInputError,
    Columns,
    Series,
    frequency,
    future_columns,
    future_times_of,
    series_of,
    with_times,
)


@dataclass(frozen=True)
class Backtest:
    """``n_windows`` forecasts of ``h`` steps per series, cutoffs ``step_size`` apart."""

    n_windows: int
    step_size: int


@dataclass(frozen=True)
class JobSpec:
    """What to forecast and how; everything a chunk needs (it travels to Dask workers)."""

    model: str
    registry: str = "./registry"
    h: int | None = None
    freq: Any = None
    columns: Columns = field(default_factory=Columns)
    fill: str | None = None
    backtest: Backtest | None = None
    #: Nixtla's ``X_df``: id, time and the future covariates of every forecast step.
    future: str | None = None
    #: Interval levels: columns ``<model>-lo-<level>`` and ``<model>-hi-<level>``.
    level: tuple[float, ...] = ()
    #: Conformal intervals from each series' own backtest (these windows) instead of the
    #: version's stored calibration.
    calibrate: Backtest | None = None
    #: The version's stored calibration, read once for the whole job (:func:`levels_checked`).
    calibration: Calibration | None = None


_MODELS: dict[tuple[str, str], Model] = {}


def load_model(registry: str, reference: str) -> Model:
    """The model version, loaded once per process (Dask workers keep theirs)."""
    key = (str(Path(registry).resolve()), reference)
    if key not in _MODELS:
        _MODELS[key] = Registry(registry).load(reference)
    return _MODELS[key]


def _future_values(model: Model, series: list[Series], times: np.ndarray,
                   future: pd.DataFrame, columns: Columns) -> np.ndarray:
    """``float32 [series, h, future features]`` from a future frame, row by row of the
    forecast times; a missing row or value is refused naming it."""
    names = future_columns(model, columns, list(future.columns))
    frame = with_times(future, columns.time)
    h = times.shape[1]
    wanted = pd.DataFrame({columns.id: np.repeat([one.id for one in series], h),
                           columns.time: times.ravel()})
    if frame.duplicated([columns.id, columns.time]).any():
        raise BatchInputError("the future frame has duplicate (id, time) rows")
    if len(wanted) and pd.api.types.is_datetime64_any_dtype(wanted[columns.time]):
        frame = frame.assign(**{columns.time: pd.to_datetime(frame[columns.time]).astype(
            wanted[columns.time].dtype)})
    merged = wanted.merge(frame[[columns.id, columns.time, *names]],
                          on=[columns.id, columns.time], how="left")
    missing = merged[names].isna().any(axis=1)
    if missing.any():
        first = merged.loc[missing, [columns.id, columns.time]].head(3).values.tolist()
        raise BatchInputError(f"the future frame lacks {int(missing.sum())} forecast step "
                              f"row(s) or values, e.g. {first}: it needs every series' next "
                              f"{h} times")
    return merged[names].to_numpy(np.float32).reshape(len(series), h, len(names))


def _forecast_series(model: Model, series: list[Series], h: int, freq: Any,
                     future: pd.DataFrame | None = None, columns: Columns | None = None,
                     levels: tuple[float, ...] = ()
                     ) -> tuple[pd.DataFrame, np.ndarray, Bounds | None]:
    """The forecast rows and final states of ``series``, and, for ``levels`` of a model
    whose distribution head gives them, its intervals."""
    bounds = None
    lasts = np.array([one.ds[-1] for one in series]) if series else np.empty(0, np.int64)
    times = future_times_of(lasts, h, freq)
    histories = [one.values for one in series]
    if model.spec.forecasts_from_window:
        # As in the service: the forecast comes from the window, the state stays initial.
        states = model.new_arena(len(series))
        values = (_future_values(model, series, times, future, columns or Columns())
                  if future is not None else None)
        outputs, scaling = window_outputs_of(model, histories, h, values)
        predictions = point_forecasts(model, outputs, scaling)[:, :, 0]
        if levels and gives_levels(model):
            bounds = head_intervals(model, outputs, scaling, levels)
    else:
        states = final_states(model, histories)
        predictions = model.predict(states, h)[:, :, 0]
    frame = pd.DataFrame({
        "unique_id": np.repeat([one.id for one in series], h),
        "ds": times.ravel(),
        model.name: predictions.ravel()})
    return frame, states, bounds


def _backtest_series(model: Model, series: list[Series], h: int, plan: Backtest
                     ) -> pd.DataFrame:
    by_length: dict[int, list[int]] = {}
    for index, one in enumerate(series):
        by_length.setdefault(len(one.values), []).append(index)
    parts = []
    for _length, members in by_length.items():
        values = np.stack([series[i].values for i in members])
        for cutoff, predictions in backtest(model, values, h, plan.n_windows, plan.step_size):
            for row, index in enumerate(members):
                one = series[index]
                parts.append(pd.DataFrame({
                    "unique_id": one.id, "ds": one.ds[cutoff + 1:cutoff + 1 + h],
                    "cutoff": one.ds[cutoff], "y": one.actual[cutoff + 1:cutoff + 1 + h],
                    model.name: predictions[row, :, 0]}))
    columns = ["unique_id", "ds", "cutoff", "y", model.name]
    if not parts:
        return pd.DataFrame(columns=columns)
    return pd.concat(parts, ignore_index=True).sort_values(
        ["unique_id", "cutoff", "ds"], kind="stable").reset_index(drop=True)


def forecast_chunk(frame: pd.DataFrame, spec: JobSpec, freq: Any = None,
                   future: pd.DataFrame | None = None
                   ) -> tuple[pd.DataFrame, list[Series], np.ndarray | None]:
    """One chunk of whole series: the output rows, the series and (for a forecast) their
    final states. ``freq`` overrides the spec's (the job infers it once); ``future``, the
    future covariates, else read from ``spec.future`` for the chunk's series."""
    model = load_model(spec.registry, spec.model)
    series = series_of(frame, model, spec.columns, spec.fill)
    if spec.backtest is not None:
        if spec.level:
            raise BatchInputError("intervals are added to forecasts, not to backtests")
        h = backtest_horizon(model, spec.h)
        return _backtest_series(model, series, h, spec.backtest), series, None
    h = horizon_of(model, spec.h, spec.future is not None or future is not None)
    if future is None and spec.future is not None:
        future = read_frame(spec.future, spec.columns.id, [one.id for one in series])
    spec = levels_checked(spec, model, h)
    levels = spec.level
    output, states, bounds = _forecast_series(
        model, series, h, frequency(series, freq if freq is not None else spec.freq), future,
        spec.columns, levels)
    if levels:
        if bounds is None and spec.calibrate is not None:
            bounds = series_bounds(output, model, series, spec.calibrate.n_windows,
                                   spec.calibrate.step_size, levels, h)
        elif bounds is None:
            assert spec.calibration is not None
            bounds = conformal_bounds(output, model, spec.calibration, levels, h)
        output = interval_columns(output, model, bounds, levels)
    return output, series, states


def levels_checked(spec: JobSpec, model: Model, h: int) -> JobSpec:
    """``spec`` with its levels checked (:func:`check_levels`) against the model before any
    work, and the stored calibration they use read once and pinned, so that every chunk
    uses the same one."""
    levels = check_levels(spec.level)
    spec = replace(spec, level=levels)
    if spec.calibrate is not None and not levels:
        raise BatchInputError("--calibrate-windows calibrates intervals: give --level too")
    if not levels:
        return spec
    if gives_levels(model):
        if spec.calibrate is not None:
            raise BatchInputError(f"{model.name}'s head gives its own intervals: drop "
                                  "--calibrate-windows")
        check_head_levels(model, levels)
        return spec
    if spec.calibrate is not None or spec.calibration is not None:
        return spec
    reference = f"{model.name}@{model.version}"
    calibration = require_calibration(Registry(spec.registry).calibration(reference),
                                      reference, h, "run statecast calibrate, or pass "
                                      "--calibrate-windows")
    return replace(spec, calibration=calibration)


def with_input_names(output: pd.DataFrame, columns: Columns) -> pd.DataFrame:
    """The output's id, time and target columns named as in the input."""
    return output.rename(columns={"unique_id": columns.id, "ds": columns.time,
                                  "y": columns.target})


def forecast(df: pd.DataFrame, model: str, h: int | None = None, *,
             registry: str | Path = "./registry", freq: str | int | None = None,
             id_col: str = "unique_id", time_col: str = "ds", target_col: str = "y",
             fill: str | None = None, n_windows: int | None = None,
             step_size: int | None = None, X_df: pd.DataFrame | None = None,
             level: list[float] | None = None, calibrate_windows: int | None = None,
             calibrate_step: int = 1) -> pd.DataFrame:
    """Forecast every series of a long-format frame with a registry's model.

    Returns ``id_col``, ``time_col`` and a column named after the model (``h`` rows per
    series, times continuing each series at ``freq``, inferred when not given); with
    ``n_windows`` a backtest instead: also ``cutoff`` and the actual ``target_col``.
    ``X_df`` holds the future covariates of every forecast step (``id_col``, ``time_col``
    and the covariate columns), for models that read them. ``level`` adds intervals
    (``<model>-lo-80``, ``<model>-hi-80``, ...): the head's for a distribution model, else
    conformal from the version's calibration or, with ``calibrate_windows``, from each
    series' own backtest errors (windows ``calibrate_step`` apart).
    """
    columns = Columns(id_col, time_col, target_col)
    plan = None
    if n_windows is not None:
        plan = Backtest(n_windows, step_size if step_size is not None else (h or 1))
    spec = JobSpec(model, str(registry), h, freq, columns, fill, plan,
                   level=tuple(level or ()), calibrate=None if calibrate_windows is None
                   else Backtest(calibrate_windows, calibrate_step))
    output, _, _ = forecast_chunk(df, spec, future=X_df)
    return with_input_names(output, columns)


#: A chunk's output rows, its series and their final states (None for a backtest).
ChunkResult = tuple[pd.DataFrame, list[Series] | None, np.ndarray | None]


# -- reading series from files ---------------------------------------------------------


def dataset(path: Path) -> Any:
    import pyarrow.dataset as ds

    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return ds.dataset(str(path), format="parquet")
    if suffix == ".csv":
        return ds.dataset(str(path), format="csv")
    raise BatchInputError(f"{path.name}: read .parquet or .csv files")


def read_frame(path: str | Path, id_column: str | None = None, ids: list[Any] | None = None
               ) -> pd.DataFrame:
    """A .parquet or .csv file as a frame (only the rows of ``ids`` in ``id_column``)."""
    import pyarrow.compute as pc

    where = None if id_column is None else pc.field(id_column).isin(ids)
    frame: pd.DataFrame = dataset(Path(path)).to_table(filter=where).to_pandas()
    return frame
