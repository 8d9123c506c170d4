"""Prometheus metrics of a statecast server, names prefixed ``statecast_``.

Under gunicorn every worker is a process of its own: when ``PROMETHEUS_MULTIPROC_DIR`` is
set (``service/gunicorn_conf.py`` sets and empties it at start), the client library's
multiprocess mode keeps each worker's values in files there and ``/metrics``, whichever
worker answers it, adds them up. Without it (tests, a single process) each app has a
registry of its own.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, TypeVar

import numpy as np
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from statecast.service.accuracy import Scores, Totals
from statecast.service.scoring import WriteScores
from statecast.service.stores import StateStore, StreamRecord

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
T = TypeVar("T")
CONTENT_TYPE = CONTENT_TYPE_LATEST

#: Request latency buckets (seconds): the single-stream call takes ~1 ms, a batch tens.
_REQUEST_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                    2.5, 5.0, 10.0)
_FAST_BUCKETS = (0.00001, 0.00003, 0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0,
                 3.0)


#: Seconds scores may wait before a worker counts them in its metrics.
SCORES_FLUSH_SECONDS = 1.0
#: Absolute error buckets, in the target's own units (which the server does not know).
_ERROR_BUCKETS = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0,
                  1000.0, 3000.0, 10000.0)


class _BulkHistogram:
    """One labelled child of a histogram, observed many values at a time: each value adds
    one to its bucket and itself to the sum, as ``observe`` does, where
    the client library's child exposes those (else through ``observe``)."""

    def __init__(self, child: Any) -> None:
        self.child = child
        bounds = getattr(child, "_upper_bounds", None)
        buckets = getattr(child, "_buckets", None)
        total = getattr(child, "_sum", None)
        self.direct = None if bounds is None or buckets is None or total is None else (
            list(bounds), buckets, total)

    def observe(self, values: np.ndarray) -> None:
        values = values[~np.isnan(values)]
        if self.direct is None:
            for value in values.tolist():
                self.child.observe(value)
            return
        bounds, buckets, total = self.direct
        counts = np.bincount(np.searchsorted(bounds, values, side="left"),
                             minlength=len(bounds))
        for index in np.flatnonzero(counts).tolist():
            buckets[index].inc(int(counts[index]))
        total.inc(float(values.sum(dtype=np.float64)))


def multiprocess_mode() -> bool:
    """Whether values go to the shared directory of a multi-worker server."""
    return bool(os.environ.get(MULTIPROCESS_DIR))


class Metrics:
    """Every metric the server exports, registered in one registry per app."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.requests = Histogram(
            "statecast_request_duration_seconds", "HTTP request latency by route and status",
            ["route", "method", "status"], buckets=_REQUEST_BUCKETS, registry=registry)
        self.kernel = Histogram(
            "statecast_kernel_duration_seconds",
            "Time in the recurrent kernels per call (advancing states and forecasting)",
            ["model"], buckets=_FAST_BUCKETS, registry=registry)
        self.store = Histogram(
            "statecast_store_duration_seconds", "State store latency by operation",
            ["operation"], buckets=_FAST_BUCKETS, registry=registry)
        self.conflicts = Counter(
            "statecast_cas_conflicts_total",
            "Compare-and-set writes that lost to a concurrent writer (the call retried)",
            ["model"], registry=registry)
        self.active_streams = Gauge(
            "statecast_active_streams", "Live (not expired) streams per model, at scrape time",
            ["model"], multiprocess_mode="mostrecent", registry=registry)
        self.expiries = Counter(
            "statecast_stream_expiries_total",
            "Streams that expired after being idle, by where it was noticed (sweep, access)",
            ["reason"], registry=registry)
        self.evictions = Counter(
            "statecast_stream_evictions_total",
            "Streams removed by the server, by reason (deleted: DELETE of the stream)",
            ["reason"], registry=registry)
        self.abs_error = Histogram(
            "statecast_forecast_abs_error",
            "Absolute error of committed forecasts, in the target's units, scored when the "
            "observation arrives, by model version and horizon step",
            ["model", "version", "step"], buckets=_ERROR_BUCKETS, registry=registry)
        self.interval_checks = Counter(
            "statecast_interval_checks_total",
            "Observations checked against the interval of a committed forecast, by level",
            ["model", "version", "level"], registry=registry)
        self.interval_covered = Counter(
            "statecast_interval_covered_total",
            "Observations inside the interval of a committed forecast, by level",
            ["model", "version", "level"], registry=registry)
        self._error_children: dict[tuple[str, str, int], _BulkHistogram] = {}
        self._scores_lock = threading.Lock()
        self._pending_scores: list[tuple[str, str, Scores]] = []
        self._pending_values = 0
        self._flushed = time.monotonic()
        self.models_loaded = Gauge(
            "statecast_models_loaded", "Model versions loaded in a worker's memory",
            multiprocess_mode="livemax", registry=registry)

    @contextmanager
    def timing_kernel(self, model: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.kernel.labels(model).observe(time.perf_counter() - started)

    def add_scores(self, model: str, version: str, scores: Scores) -> None:
        """Count the scores of writes that succeeded. They are gathered and counted at most
        every :data:`SCORES_FLUSH_SECONDS` (and before every exposition): each increment
        of a multi-worker server's metric is a write to a shared file, and a call scores
        one value per horizon step."""
        with self._scores_lock:
            self._pending_scores.append((model, version, scores))
            self._pending_values += len(scores.steps)
            due = (time.monotonic() - self._flushed > SCORES_FLUSH_SECONDS
                   or self._pending_values > 100_000)
        if due:
            self.flush_scores()

    def flush_scores(self) -> None:
        """Count the scores gathered since the last flush."""
        with self._scores_lock:
            gathered, self._pending_scores = self._pending_scores, []
            self._pending_values, self._flushed = 0, time.monotonic()
            by_version: dict[tuple[str, str], list[Scores]] = {}
            for model, version, scores in gathered:
                by_version.setdefault((model, version), []).append(scores)
            counters = {"checks": self.interval_checks, "covered": self.interval_covered}
            for (model, version), members in by_version.items():
                steps = np.concatenate([each.steps for each in members])
                errors = np.concatenate([each.errors for each in members])
                for step in np.unique(steps).tolist():
                    self._error_child(model, version, step).observe(
                        errors[steps == step].ravel())
                checks: dict[str, float] = {}
                for each in members:
                    for name, row in each.totals.items():
                        if name.startswith(("checks:", "covered:")):
                            checks[name] = checks.get(name, 0.0) + float(row.sum())
                for name, amount in checks.items():
                    kind, _, level = name.partition(":")
                    counters[kind].labels(model, version, level).inc(amount)

    def _error_child(self, model: str, version: str, step: int) -> _BulkHistogram:
        child = self._error_children.get((model, version, step))
        if child is None:
            child = self._error_children[(model, version, step)] = _BulkHistogram(
                self.abs_error.labels(model, version, str(step)))
        return child

    def exposition(self, active: Callable[[], Iterable[tuple[str, int]]]) -> bytes:
        """The text exposition; ``active`` yields ``(model, live streams)`` now."""
        self.flush_scores()
        for model, count in active():
            self.active_streams.labels(model).set(count)
        if multiprocess_mode():
            combined = CollectorRegistry()
            multiprocess.MultiProcessCollector(combined)
            return generate_latest(combined)
        return generate_latest(self.registry)


class TimedStore(StateStore):
    """A store that times each operation of the one it wraps."""

    def __init__(self, inner: StateStore, metrics: Metrics) -> None:
        self.inner = inner
        self.expires_idle = inner.expires_idle
        self.runs_in_place = inner.runs_in_place
        self._histogram = metrics.store
        self._get = metrics.store.labels("get")
        self._get_many = metrics.store.labels("get_many")
        self._cas = metrics.store.labels("compare_and_set")
        self._cas_many = metrics.store.labels("compare_and_set_many")

    @staticmethod
    def _timed(timer: Any, function: Callable[..., T], *args: Any) -> T:
        started = time.perf_counter()
        try:
            return function(*args)
        finally:
            timer.observe(time.perf_counter() - started)

    def get(self, model: str, stream: str) -> StreamRecord | None:
        return self._timed(self._get, self.inner.get, model, stream)

    def get_many(self, model: str, streams: Sequence[str]) -> list[StreamRecord | None]:
        return self._timed(self._get_many, self.inner.get_many, model, streams)

    def compare_and_set(self, record: StreamRecord, expected_revision: int | None,
                        scores: WriteScores | None = None) -> bool:
        return self._timed(self._cas, self.inner.compare_and_set, record, expected_revision,
                           scores)

    def compare_and_set_many(self, writes: Sequence[tuple[StreamRecord, int | None]],
                             scores: WriteScores | None = None) -> list[bool]:
        return self._timed(self._cas_many, self.inner.compare_and_set_many, writes, scores)

    def in_place(self, model: str) -> AbstractContextManager[Any]:
        return self.inner.in_place(model)

    def accuracy(self, model: str, version: str) -> tuple[float | None, Totals]:
        return self.inner.accuracy(model, version)

    def residuals(self, model: str, version: str) -> list[bytes]:
        return self.inner.residuals(model, version)

    def delete(self, model: str, stream: str) -> bool:
        return self._timed(self._histogram.labels("delete"), self.inner.delete, model, stream)

    def scan(self, model: str | None = None) -> Iterator[StreamRecord]:
        return self.inner.scan(model)

    def count(self, model: str) -> int:
        return self._timed(self._histogram.labels("count"), self.inner.count, model)

    def close(self) -> None:
        self.inner.close()
