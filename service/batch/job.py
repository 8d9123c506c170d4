"""Batch forecasting: a long-format DataFrame in, a long-format DataFrame out
(:func:`forecast`), and the file-to-file job behind ``statecast batch`` (:func:`run_job`):
Parquet or CSV in any row order, series read in chunks of ids so that memory stays bounded,
the output written to a temporary file and renamed, optionally spread over a Dask cluster
and handing every series' final state to a store for the service to continue.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from statecast.models import Model, Registry
from statecast.models.conformal import check_levels
from statecast.models.distribution import gives_levels, head_intervals
from statecast.models.windowed import point_forecasts
from statecast.service.batch.calibration import Bounds, conformal_bounds, interval_columns
from statecast.service.batch.engine import (
    backtest,
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
from statecast.service.requests import check_stream_id
from statecast.service.stores import StateStore, StreamRecord, open_store


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
    h = horizon_of(model, spec.h, spec.future is not None or future is not None)
    series = series_of(frame, model, spec.columns, spec.fill)
    if spec.backtest is not None:
        if spec.level:
            raise BatchInputError("intervals are added to forecasts, not to backtests")
        if model.spec.forecasts_from_window:
            raise BatchInputError(f"backtests of {model.name} (a model that forecasts from "
                                  "its window) are not supported yet")
        return _backtest_series(model, series, h, spec.backtest), series, None
    if future is None and spec.future is not None:
        future = read_frame(spec.future, spec.columns.id, [one.id for one in series])
    levels = check_levels(spec.level)
    output, states, bounds = _forecast_series(
        model, series, h, frequency(series, freq if freq is not None else spec.freq), future,
        spec.columns, levels)
    if levels:
        if bounds is None:
            bounds = conformal_bounds(output, model, Registry(spec.registry).calibration(
                f"{model.name}@{model.version}"), levels, h)
        output = interval_columns(output, model, bounds, levels)
    return output, series, states


def _rename(output: pd.DataFrame, columns: Columns) -> pd.DataFrame:
    return output.rename(columns={"unique_id": columns.id, "ds": columns.time,
                                  "y": columns.target})


def forecast(df: pd.DataFrame, model: str, h: int | None = None, *,
             registry: str | Path = "./registry", freq: str | int | None = None,
             id_col: str = "unique_id", time_col: str = "ds", target_col: str = "y",
             fill: str | None = None, n_windows: int | None = None,
             step_size: int | None = None, X_df: pd.DataFrame | None = None,
             level: list[float] | None = None) -> pd.DataFrame:
    """Forecast every series of a long-format frame with a registry's model.

    Returns ``id_col``, ``time_col`` and a column named after the model (``h`` rows per
    series, times continuing each series at ``freq``, inferred when not given); with
    ``n_windows`` a backtest instead: also ``cutoff`` and the actual ``target_col``.
    ``X_df`` holds the future covariates of every forecast step (``id_col``, ``time_col``
    and the covariate columns), for models that read them. ``level`` adds conformal
    intervals from the version's calibration (``<model>-lo-80``, ``<model>-hi-80``, ...).
    """
    columns = Columns(id_col, time_col, target_col)
    plan = None
    if n_windows is not None:
        plan = Backtest(n_windows, step_size if step_size is not None else (h or 1))
    spec = JobSpec(model, str(registry), h, freq, columns, fill, plan,
                   level=tuple(level or ()))
    output, _, _ = forecast_chunk(df, spec, future=X_df)
    return _rename(output, columns)


# -- the file job -----------------------------------------------------------------------


def _dataset(path: Path) -> Any:
    import pyarrow.dataset as ds

    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return ds.dataset(str(path), format="parquet")
    if suffix == ".csv":
        return ds.dataset(str(path), format="csv")
    raise BatchInputError(f"{path.name}: read .parquet or .csv files")


def _id_chunks(dataset: Any, columns: Columns, chunk_size: int) -> list[list[Any]]:
    import pyarrow.compute as pc

    if columns.id not in dataset.schema.names:
        raise BatchInputError(f"missing column {columns.id!r}; the input has "
                              f"{dataset.schema.names}")
    ids = pc.unique(dataset.to_table(columns=[columns.id])[columns.id]).to_pylist()
    ids = sorted(ids, key=lambda value: (str(type(value)), value))
    return [ids[i:i + chunk_size] for i in range(0, len(ids), chunk_size)]


def read_frame(path: str | Path, id_column: str | None = None, ids: list[Any] | None = None
               ) -> pd.DataFrame:
    """A .parquet or .csv file as a frame (only the rows of ``ids`` in ``id_column``)."""
    import pyarrow.compute as pc

    where = None if id_column is None else pc.field(id_column).isin(ids)
    frame: pd.DataFrame = _dataset(Path(path)).to_table(filter=where).to_pandas()
    return frame


#: A chunk's output rows, and its series and their final states when they are kept.
_ChunkResult = tuple[pd.DataFrame, list[Series] | None, np.ndarray | None]


def _chunk_task(path: str, ids: list[Any], spec: JobSpec, freq: Any, keep_states: bool
                ) -> _ChunkResult:
    output, series, states = forecast_chunk(read_frame(path, spec.columns.id, ids), spec,
                                            freq)
    return output, (series if keep_states else None), states


class _Writer:
    """Appends chunks to a temporary file beside ``path``; :meth:`commit` renames it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        suffix = path.suffix.lower()
        if suffix not in (".parquet", ".pq", ".csv"):
            raise BatchInputError(f"{path.name}: write .parquet or .csv files")
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial",
                                             dir=path.parent)
        os.close(handle)
        self.temporary = Path(temporary)
        self.csv = suffix == ".csv"
        self._writer: Any = None
        self._schema: Any = None

    def write(self, frame: pd.DataFrame) -> None:
        import pyarrow as pa
        import pyarrow.csv as pcsv
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(frame, preserve_index=False)
        if self._writer is None:
            self._schema = table.schema
            self._writer = (pcsv.CSVWriter(str(self.temporary), table.schema) if self.csv
                            else pq.ParquetWriter(str(self.temporary), table.schema))
        self._writer.write_table(table.cast(self._schema))

    def commit(self, empty: pd.DataFrame) -> None:
        if self._writer is None:
            self.write(empty)
        self._writer.close()
        os.replace(self.temporary, self.path)

    def abandon(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self.temporary.unlink(missing_ok=True)


def hand_off(store: StateStore, model: Model, series: list[Series], states: np.ndarray
             ) -> int:
    """Write each series' final state as a stream of the model version (``step`` = its
    observations, the last ``retain`` of them kept), replacing any stream of that id."""
    streams = [check_stream_id(str(one.id)) for one in series]
    now = time.time()
    pending = list(range(len(series)))
    for _ in range(16):
        if not pending:
            return len(series)
        current = store.get_many(model.name, [streams[i] for i in pending])
        writes = []
        for index, record in zip(pending, current, strict=True):
            values = series[index].values
            writes.append((StreamRecord(
                model=model.name, stream=streams[index], version=model.version, origin=0,
                step=len(values), state=np.ascontiguousarray(states[index], np.float32),
                tail=np.ascontiguousarray(values[-model.spec.retain:], np.float32),
                revision=0 if record is None else record.revision + 1,
                created_at=now, updated_at=now), None if record is None else record.revision))
        results = store.compare_and_set_many(writes)
        pending = [index for index, ok in zip(pending, results, strict=True) if not ok]
    raise BatchInputError(f"{len(pending)} streams kept changing while being handed off")


def _chunks_on_dask(address: str, path: Path, chunks: list[list[Any]], spec: JobSpec,
                    freq: Any, keep: bool) -> Iterator[_ChunkResult]:
    """Chunks as Dask tasks (at most two per worker in flight), results in order."""
    from distributed import Client, LocalCluster

    cluster = None
    if address == "local":
        cluster = LocalCluster(n_workers=max(1, (os.cpu_count() or 1)), threads_per_worker=1,
                               processes=True, dashboard_address=None,
                               env={"NUMBA_NUM_THREADS": "1"})
        client = Client(cluster)
    else:
        client = Client(address)
    try:
        window = 2 * max(1, len(client.scheduler_info()["workers"]))
        futures = []
        for ids in chunks:
            futures.append(client.submit(_chunk_task, str(path.resolve()), ids, spec, freq,
                                         keep, pure=False))
            if len(futures) >= window:
                yield futures.pop(0).result()
        for future in futures:
            yield future.result()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def run_job(input_path: str | Path, output_path: str | Path, spec: JobSpec, *,
            chunk_size: int = 10_000, to_store: str | None = None, dask: str | None = None,
            progress: Callable[[int], None] | None = None,
            on_total: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Forecast (or backtest) every series of a file into another; returns a summary.

    ``on_total(series)`` is called once the series are counted, ``progress(done)`` after
    each chunk (a progress bar's total and updates).

    Nothing is written to ``output_path`` unless every chunk succeeds. ``to_store``
    (``sqlite:PATH``, ``redis://...``) receives every series' final state (forecasts
    only, not backtests).
    """
    input_path, output_path = Path(input_path), Path(output_path)
    if not input_path.exists():
        raise BatchInputError(f"no input file {input_path}")
    if to_store is not None and spec.backtest is not None:
        raise BatchInputError("--to-store hands off final states: not with --backtest")
    model = load_model(spec.registry, spec.model)
    h = horizon_of(model, spec.h, spec.future is not None)
    if spec.future is not None:
        if not Path(spec.future).exists():
            raise BatchInputError(f"no future file {spec.future}")
        spec = replace(spec, future=str(Path(spec.future).resolve()))
    spec = replace(spec, model=f"{model.name}@{model.version}", h=h)
    chunks = _id_chunks(_dataset(input_path), spec.columns, max(1, chunk_size))
    if on_total is not None:
        on_total(sum(len(chunk) for chunk in chunks))
    freq = spec.freq
    if chunks and spec.backtest is None:
        first = series_of(read_frame(str(input_path), spec.columns.id, chunks[0][:1000]),
                          model, spec.columns, spec.fill)
        freq = frequency(first, spec.freq)
    store = open_store(to_store) if to_store is not None else None
    writer = _Writer(output_path)
    keep = store is not None
    counted = rows = 0
    started = time.perf_counter()
    try:
        results = (_chunks_on_dask(dask, input_path, chunks, spec, freq, keep) if dask else
                   (_chunk_task(str(input_path), ids, spec, freq, keep) for ids in chunks))
        for output, series, states in results:
            writer.write(_rename(output, spec.columns))
            if store is not None and series is not None and states is not None:
                hand_off(store, model, series, states)
            done = len(output) // (h * (spec.backtest.n_windows if spec.backtest else 1))
            counted += done
            rows += len(output)
            if progress is not None:
                progress(done)
        empty_columns = ["unique_id", "ds", model.name] if spec.backtest is None else [
            "unique_id", "ds", "cutoff", "y", model.name]
        writer.commit(_rename(pd.DataFrame(columns=empty_columns), spec.columns))
    except BaseException:
        writer.abandon()
        raise
    finally:
        if store is not None:
            store.close()
    return {"model": model.name, "version": model.version, "series": counted, "rows": rows,
            "seconds": round(time.perf_counter() - started, 3), "output": str(output_path)}
