"""Compile policy for every Numba kernel, read once in this one place.

Numba freezes globals at compile time, so numeric thresholds are passed to kernels as
arguments; only the compile flags live here.
"""

from __future__ import annotations

from collections.abc import Callable
from types import FunctionType
from typing import Any

import numba

#: Numba's settings as read from the environment (set at run time, so typed loosely).
NUMBA_CONFIG: Any = numba.config
#: ``NUMBA_DISABLE_JIT=1``: every kernel runs as plain Python (and NumPy where a kernel is
#: LLVM IR), so that any path can be stepped through in a debugger.
JIT_DISABLED = bool(NUMBA_CONFIG.DISABLE_JIT)

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

#: Flags for kernels that allocate nothing (every kernel but the entry points). Numba
#: otherwise updates the reference counts of each array argument, atomically, on every
#: call: ~10% of a one-step call. ``_nrt`` is Numba's (private, long-standing) switch for
#: its runtime; these functions never create or free arrays, so they need none of it.
LEAF_OPTIONS: dict[str, Any] = {**JIT_OPTIONS, "_nrt": False}

#: Streams per block: a block shares each weight-row load across its streams, and the
#: parallel kernel hands whole blocks to threads.
STREAM_BLOCK = 16


def renamed(function: Callable[..., Any], suffix: str) -> FunctionType:
    """A copy of ``function`` named ``<name><suffix>``.

    Numba's on-disk cache keys a compiled function by module, name and line, not by its
    compile flags: a serial and a ``parallel=True`` dispatcher made from one function
    would share one cache entry, and whichever compiled first would be loaded for both.
    Compile each variant from its own renamed copy.
    """
    assert isinstance(function, FunctionType)
    copy = FunctionType(function.__code__, function.__globals__, function.__name__ + suffix,
                        function.__defaults__, function.__closure__)
    copy.__qualname__ = function.__qualname__ + suffix
    copy.__doc__ = function.__doc__
    return copy
