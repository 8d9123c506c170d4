"""This machine's measured FMA peak: the register tile of the panel products
(:mod:`kernels.panels`) on data that stays in L1, on one core, times the cores.

The tile keeps ``TILE_ROWS x PANEL`` sums in registers and issues one vector FMA per weight
vector and row, so on L1-resident data it runs at the cores' FMA throughput: the ceiling
the grid's GFLOP/s are a fraction of. ``python -m bench.peak`` prints it.
"""

from __future__ import annotations

import time

import numba
import numpy as np

from statecast.kernels.config import JIT_OPTIONS
from statecast.kernels.operands import Panels, Strided
from statecast.kernels.panels import PANEL, TILE_ROWS, panel_product

#: Weight rows per product: 128 x PANEL floats (32 KiB at 64 columns) and the rows of its
#: ``_TILES`` tiles (16 KiB) stay in L1; many tiles per call make a call's set-up noise.
_K = 128
_TILES = 8
_REPEATS = 4_000


@numba.njit(**JIT_OPTIONS)
def _products(a, w, src, dst, repeats):
    for _ in range(repeats):
        panel_product(a.shape[0], Strided(a, 0, _K), Panels(w, 0, _K * PANEL, _K, 1),
                      Strided(src, 0, 0), Strided(dst, 0, PANEL))


def fma_peak(rounds: int = 5) -> float:
    """GFLOP/s of the tile on one core, best of ``rounds``, times the Numba threads: the
    machine's ceiling. (Measured on every thread at once, the figure was bimodal on a
    2-vCPU VM, 215 or 450 GFLOP/s from one process to the next, as if both threads shared
    a core now and then.)"""
    rng = np.random.default_rng(0)
    rows = _TILES * TILE_ROWS
    a = rng.standard_normal((rows, _K)).astype(np.float32) * 1e-3
    w = rng.standard_normal(_K * PANEL).astype(np.float32)
    src = np.zeros(PANEL, np.float32)
    dst = np.empty((rows, PANEL), np.float32)
    _products(a, w, src, dst, 1)
    flops = 2.0 * _REPEATS * rows * PANEL * _K
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        _products(a, w, src, dst, _REPEATS)
        best = min(best, time.perf_counter() - started)
    return numba.get_num_threads() * flops / best / 1e9


if __name__ == "__main__":
    print(f"FMA peak {fma_peak():.0f} GFLOP/s on {numba.get_num_threads()} thread(s)")
