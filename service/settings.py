"""The service's one settings object: environment variables ``STATECAST_*``, overridden by
command-line flags. Read once, at start-up, in this one place."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """How a statecast server runs. Every field can be set as ``STATECAST_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="STATECAST_", extra="ignore")

    registry: Path = Field(Path("registry"), description=(
        "Model registry directory; seeded with the bundled model on first start."))
    store: str = Field("sqlite:statecast-state.db", description=(
        "Where stream states live: memory, sqlite:PATH (durable default), "
        "redis://host:port/db or redis+cluster://host:port (a Redis Cluster, any node); "
        "a redis address may add ?wait=N&wait_timeout_ms=T: each write waits for N "
        "replicas' acknowledgement (503 replication_unconfirmed when fewer answer)."))
    host: str = Field("127.0.0.1", description="Address the server listens on.")
    port: int = Field(8000, ge=0, le=65535, description="Port the server listens on.")
    workers: int = Field(0, ge=0, description=(
        "gunicorn worker processes; 0 picks one per core (one for the memory store, whose "
        "streams live in one process)."))
    threads: int = Field(0, ge=0, description=(
        "Threads per worker; 0 picks 1 for sync workers and for the memory store (its one "
        "gthread worker still keeps idle connections alive; its calls are Python work under"
        " one GIL: with 4 threads a 256-stream batch cost 37% more CPU), 4 for gthread "
        "workers of the other stores (a thread waits on the store while another computes)."
        " More than 1 makes gunicorn use gthread workers."))
    worker_class: str = Field("auto", pattern="^(auto|sync|gthread)$", description=(
        "gunicorn worker class. auto: sync workers (one request at a time each, no "
        "keep-alive: the fastest and steadiest here; put a buffering proxy such as nginx in"
        " front of slow clients) for sqlite and redis, gthread for the memory store (one "
        "process serving many threads)."))
    max_body_bytes: int = Field(1 << 20, ge=1024, description=(
        "Largest request body accepted (413 body_too_large)."))
    max_window: int = Field(10_000, ge=1, description=(
        "Most observations one forecast call may send (422 window_too_long)."))
    max_batch_items: int = Field(1000, ge=1, description=(
        "Most streams one batch forecast call may name (422 batch_too_large)."))
    max_horizon: int = Field(1000, ge=1, description=(
        "Longest recursive rollout one call may ask for (422 horizon_too_long); a direct "
        "model's horizon is its own."))
    max_stream_id_length: int = Field(256, ge=1, le=4096, description=(
        "Longest stream id; ids are letters, digits and . _ : - (422 invalid_stream_id)."))
    stream_ttl: float | None = Field(None, gt=0, description=(
        "Seconds a stream may stay idle before it expires (a tombstone: calls get 410 "
        "until a reset); none by default."))
    tombstone_ttl: float | None = Field(None, gt=0, description=(
        "With the redis store, which expires idle streams itself: seconds an expired "
        "stream keeps answering 410 before it is forgotten; none by default (as in the "
        "other stores, a tombstone stays until a reset)."))
    max_streams: int | None = Field(None, ge=1, description=(
        "Live streams per model; creating one more gets 503 capacity_exceeded. Unlimited "
        "by default."))
    scoring: bool = Field(True, description=(
        "Keep each stream's committed forecasts and score them when their observations "
        "arrive: accuracy per model version (GET /v1/models/{model}/accuracy, metrics) and "
        "per stream."))
    online_min_residuals: int = Field(50, ge=0, description=(
        "Residuals of a horizon step scored in service after which a point model without a "
        "calibration gives conformal intervals from them (0: never)."))
    admin_token: str | None = Field(None, description=(
        "Bearer token of the admin API; without one the admin routes answer 403."))
    access_log: bool = Field(True, description=(
        "Write one JSON line per request to standard output (route, status, latency, "
        "model, version, streams)."))
    graceful_timeout: int = Field(10, ge=1, description=(
        "Seconds a stopping server (SIGTERM) gives the calls in flight to finish before its "
        "workers are killed; keep it under the orchestrator's stop grace period."))
    numba_cache_dir: Path | None = Field(None, description=(
        "Where compiled kernels are cached (NUMBA_CACHE_DIR); default .numba-cache under "
        "the working directory."))

    def resolved_workers(self) -> int:
        """Worker processes to start: as set, else one per core (one for ``memory``)."""
        if self.workers:
            return self.workers
        return 1 if self.store == "memory" else max(1, os.cpu_count() or 1)

    def resolved_worker_class(self) -> str:
        if self.worker_class != "auto":
            return self.worker_class
        return "gthread" if self.store == "memory" else "sync"

    def resolved_threads(self) -> int:
        if self.threads:
            return self.threads
        return 4 if self.resolved_worker_class() == "gthread" and self.store != "memory" else 1


def serve_environment(settings: Settings, base: Mapping[str, str]) -> dict[str, str]:
    """The environment of a server process (gunicorn, exec'd by ``statecast serve``) that
    reads back exactly ``settings``: ``base`` (the caller's environment, not changed) with
    every field as its ``STATECAST_<FIELD>`` variable, and no variable for a field that is
    None."""
    prefix = str(settings.model_config.get("env_prefix", ""))
    environment = dict(base)
    for name, value in settings.model_dump().items():
        key = f"{prefix}{name}".upper()
        if value is None:
            environment.pop(key, None)
        elif isinstance(value, bool):
            environment[key] = "true" if value else "false"
        else:
            environment[key] = str(value)
    return environment
