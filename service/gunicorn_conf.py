"""gunicorn configuration, driven by the ``STATECAST_*`` environment (see ``Settings``).

Loaded by the gunicorn master, which must never import Numba or run a kernel: Numba's
``omp`` threading layer is not fork-safe. The app is not preloaded; each worker builds it
after the fork (``service.app:create_app()``, which has no side effects) and then runs its
start-up hooks (:func:`post_worker_init`: seed the registry, load the models and compile,
or load from ``NUMBA_CACHE_DIR``, the kernels, start the expiry sweep) before it accepts
requests.
"""

from __future__ import annotations

import gc
import logging
import logging.config
import os
import tempfile
from pathlib import Path
from typing import Any

from gunicorn import glogging

from statecast.service.json_logs import json_log_config
from statecast.service.kernel_cache import kernel_cache_dir, writable_kernel_cache
from statecast.service.settings import Settings

_settings = Settings()

bind = f"{_settings.host}:{_settings.port}"
workers = _settings.resolved_workers()
threads = _settings.resolved_threads()
worker_class = "gthread" if threads > 1 else _settings.resolved_worker_class()
preload_app = False
timeout = 120  # a cold worker compiles kernels before it answers
# On SIGTERM (docker/podman stop, Kubernetes) workers stop accepting and finish the calls
# in flight for up to this long: less than the stop grace period the image's compose file
# gives (15 s) and Kubernetes' default (30 s), so that no call is cut off by SIGKILL.
graceful_timeout = _settings.graceful_timeout
keepalive = 5
# gunicorn's control socket defaults to one path per user: two servers (or a killed one's
# leftover) would collide on it, and statecast does not use it.
control_socket_disable = True
accesslog = None
errorlog = "-"
loglevel = os.environ.get("STATECAST_LOG_LEVEL", "info")
logging.captureWarnings(True)  # warnings become log lines too


class JsonLogger(glogging.Logger):
    """gunicorn's logger, every line of it JSON on standard output as the access log's
    are (:mod:`statecast.service.json_logs`). Configured after gunicorn's own set-up, not
    through ``logconfig_dict``, which would switch on gunicorn's access log machinery for
    every request (statecast writes its own access log)."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        logging.config.dictConfig(json_log_config(self.loglevel))  # as gunicorn resolved it


logger_class = JsonLogger

# Kernel threads per worker: the cores shared out between the workers.
os.environ.setdefault("NUMBA_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))
os.environ.setdefault("NUMBA_THREADING_LAYER", "omp")
# A cache the workers cannot write (a read-only image) is served from a writable copy.
os.environ["NUMBA_CACHE_DIR"] = str(writable_kernel_cache(Path(
    os.environ.get("NUMBA_CACHE_DIR")
    or kernel_cache_dir(_settings.numba_cache_dir or Path(".numba-cache").absolute()))))

# Metrics: every worker writes its values to files in one directory and /metrics adds them
# up (prometheus_client's multiprocess mode). A fresh directory per server unless one is
# given; a given one is emptied at start (values of a previous run would otherwise count).
_metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if not _metrics_dir:
    _metrics_dir = tempfile.mkdtemp(prefix="statecast-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir


def on_starting(server: Any) -> None:
    """Empty the metrics directory before the first worker starts."""
    assert _metrics_dir is not None
    Path(_metrics_dir).mkdir(parents=True, exist_ok=True)
    for leftover in Path(_metrics_dir).glob("*.db"):
        leftover.unlink()


def child_exit(server: Any, worker: Any) -> None:
    """Drop a dead worker's live gauges (its counters and histograms keep counting)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def post_worker_init(worker: Any) -> None:
    """Once the worker has built the app: run its start-up hooks (:mod:`service.startup`),
    then move every object alive now (models, kernels, libraries) out of the garbage
    collector's sight. Those hundreds of thousands of long-lived objects would be traversed
    by every full collection, which a batch call's few thousand response lists set off (a
    256-stream call cost 17 instead of 11 ms with them in sight)."""
    from statecast.service.startup import prepare, start  # in the worker: Numba may load

    prepare(worker.wsgi)
    start(worker.wsgi)
    gc.collect()
    gc.freeze()
