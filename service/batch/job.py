"""The file-to-file job behind ``statecast batch`` (:func:`run_job`): Parquet or CSV in
any row order, series read in chunks of ids so that memory stays bounded (each chunk
forecast by :func:`service.batch.chunks.forecast_chunk`), the output written to a temporary
file and renamed, optionally spread over a Dask cluster and handing every series' final
state to a store for the service to continue.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from statecast.models import Model
from statecast.models.conformal import interval_names
from statecast.service.batch.chunks import (
    ChunkResult,
    JobSpec,
    dataset,
    forecast_chunk,
    levels_checked,
    load_model,
    read_frame,
    with_input_names,
)
from statecast.service.batch.engine import backtest_horizon, horizon_of
from statecast.service.batch.frames import (
    BatchInputError,
    Columns,
    Series,
    frequency,
    series_of,
)
from statecast.service.requests import check_stream_id
from statecast.service.stores import StateStore, StreamRecord, open_store

# -- the file job -----------------------------------------------------------------------


def _id_chunks(dataset: Any, columns: Columns, chunk_size: int) -> list[list[Any]]:
    import pyarrow.compute as pc

    if columns.id not in dataset.schema.names:
        raise BatchInputError(f"missing column {columns.id!r}; the input has "
                              f"{dataset.schema.names}")
    ids = pc.unique(dataset.to_table(columns=[columns.id])[columns.id]).to_pylist()
    ids = sorted(ids, key=lambda value: (str(type(value)), value))
    return [ids[i:i + chunk_size] for i in range(0, len(ids), chunk_size)]


def _check_calibration_windows(dataset: Any, spec: JobSpec, h: int) -> None:
    """Refuse, before any chunk runs (and hands states off), a job whose shortest series
    cannot give each series' own calibration windows."""
    import pyarrow.compute as pc

    if spec.calibrate is None:
        return
    counts = pc.value_counts(dataset.to_table(columns=[spec.columns.id])[spec.columns.id])
    if not len(counts):
        return
    shortest = min(counts.to_pylist(), key=lambda entry: entry["counts"])
    windows, step = spec.calibrate.n_windows, spec.calibrate.step_size
    needed = h + (windows - 1) * step + 1
    if shortest["counts"] < needed:
        raise BatchInputError(f"series {shortest['values']!r} has {shortest['counts']} "
                              f"observations; {windows} calibration windows of {h} steps "
                              f"{step} apart need {needed}")


def _chunk_task(path: str, ids: list[Any], spec: JobSpec, freq: Any, keep_states: bool
                ) -> ChunkResult:
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
                    freq: Any, keep: bool) -> Iterator[ChunkResult]:
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
    (``sqlite:PATH``, ``redis://...``, ``redis+cluster://...``) receives every series' final
    state (forecasts only, not backtests).
    """
    input_path, output_path = Path(input_path), Path(output_path)
    if not input_path.exists():
        raise BatchInputError(f"no input file {input_path}")
    if to_store is not None and spec.backtest is not None:
        raise BatchInputError("--to-store hands off final states: not with --backtest")
    model = load_model(spec.registry, spec.model)
    h = (horizon_of(model, spec.h, spec.future is not None) if spec.backtest is None
         else backtest_horizon(model, spec.h))
    if spec.future is not None:
        if not Path(spec.future).exists():
            raise BatchInputError(f"no future file {spec.future}")
        spec = replace(spec, future=str(Path(spec.future).resolve()))
    spec = levels_checked(replace(spec, model=f"{model.name}@{model.version}", h=h), model, h)
    source = dataset(input_path)
    chunks = _id_chunks(source, spec.columns, max(1, chunk_size))
    _check_calibration_windows(source, spec, h)
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
            writer.write(with_input_names(output, spec.columns))
            if store is not None and series is not None and states is not None:
                hand_off(store, model, series, states)
            done = len(output) // (h * (spec.backtest.n_windows if spec.backtest else 1))
            counted += done
            rows += len(output)
            if progress is not None:
                progress(done)
        empty_columns = ["unique_id", "ds", model.name, *(
            f"{model.name}-{name}" for name in interval_names(spec.level))
        ] if spec.backtest is None else ["unique_id", "ds", "cutoff", "y", model.name]
        writer.commit(with_input_names(pd.DataFrame(columns=empty_columns), spec.columns))
    except BaseException:
        writer.abandon()
        raise
    finally:
        if store is not None:
            store.close()
    return {"model": model.name, "version": model.version, "series": counted, "rows": rows,
            "seconds": round(time.perf_counter() - started, 3), "output": str(output_path)}
