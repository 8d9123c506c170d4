"""gunicorn configuration, driven by the ``STATECAST_*`` environment (see ``Settings``).

Loaded by the gunicorn master, which must never import Numba or run a kernel: Numba's
``omp`` threading layer is not fork-safe. The app is not preloaded; each worker builds it
after the fork (``service.app:create_app()``), loading the models and compiling (or
loading from ``NUMBA_CACHE_DIR``) the kernels before it accepts requests.
"""

from __future__ import annotations

import os
from pathlib import Path

from service.settings import Settings, kernel_cache_dir

_settings = Settings()

bind = f"{_settings.host}:{_settings.port}"
workers = _settings.resolved_workers()
threads = _settings.resolved_threads()
worker_class = "gthread"
preload_app = False
timeout = 120  # a cold worker compiles kernels before it answers
graceful_timeout = 10
keepalive = 5
# gunicorn's control socket defaults to one path per user: two servers (or a killed one's
# leftover) would collide on it, and statecast does not use it.
control_socket_disable = True
accesslog = None
errorlog = "-"
loglevel = os.environ.get("STATECAST_LOG_LEVEL", "info")

# Kernel threads per worker: the cores shared out between the workers.
os.environ.setdefault("NUMBA_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))
os.environ.setdefault("NUMBA_THREADING_LAYER", "omp")
os.environ.setdefault("NUMBA_CACHE_DIR", str(kernel_cache_dir(
    _settings.numba_cache_dir or Path(".numba-cache").absolute())))
