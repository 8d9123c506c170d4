"""Compile policy for every Numba kernel, read once in this one place.

Numba freezes globals at compile time, so numeric thresholds are passed to kernels as
arguments; only the compile flags live here.
"""

from __future__ import annotations

from typing import Any

#: ``fastmath`` flags: only FMA contraction. Reassociation is not allowed, so a stream's
#: arithmetic is the same whatever batch it runs in and however many threads run it.
FASTMATH: frozenset[str] = frozenset({"contract"})

#: Flags shared by every kernel: cached on disk (``NUMBA_CACHE_DIR``), GIL released so that
#: gunicorn's threaded workers run kernels concurrently, NumPy's error model so that
#: divisions vectorise.
JIT_OPTIONS: dict[str, Any] = {
    "cache": True,
    "nogil": True,
    "fastmath": set(FASTMATH),
    "error_model": "numpy",
    "boundscheck": False,
}

#: Streams per block: a block shares each weight-row load across its streams, and the
#: parallel kernel hands whole blocks to threads.
STREAM_BLOCK = 16
