"""Compile (or load from ``NUMBA_CACHE_DIR``) every kernel once: ``python -m kernels.warm``.

Run it in each server worker after the fork, or once before the test suite, so that no
request or test pays the first compilation.
"""

from __future__ import annotations

import time

import numpy as np

from kernels.batched import _forward_panels_parallel, _forward_panels_serial
from kernels.network import DenseLayer, RecurrentLayer, pack_network
from kernels.panels import pack_panels
from kernels.recurrent import _forward_parallel, _forward_serial, head_from_outputs
from kernels.split import _forward_split, pack_split


def warm() -> float:
    """Compile every kernel variant on a tiny network; return the seconds it took."""
    started = time.perf_counter()
    rng = np.random.default_rng(0)

    def weights(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32)

    net = pack_network(
        [RecurrentLayer("lstm", weights(2, 8), weights(2, 8), weights(8), weights(8)),
         RecurrentLayer("gru", weights(2, 6), weights(2, 6), weights(6), weights(6))],
        [DenseLayer(weights(2, 1), weights(1))])
    x = weights(1, 1, 2)
    arena = np.zeros((1, net.state_size), np.float32)
    slots = np.zeros(1, np.int64)
    y = np.empty((1, 1, net.output_size), np.float32)
    head = np.empty((1, net.head_size), np.float32)
    for kernel in (_forward_serial, _forward_parallel):
        kernel(x, net.params, net.meta, arena, slots, y, head)
    split, offsets = pack_split(net, 2, 1)
    _forward_split(x, net.params, net.meta, arena, slots, y, head, split, offsets, 1)
    panels, panel_at = pack_panels(net)
    for panel_kernel in (_forward_panels_serial, _forward_panels_parallel):
        panel_kernel(x, net.params, net.meta, arena, slots, y, head, 16, panels, panel_at)
    head_from_outputs(net, y[:, -1].copy())
    return time.perf_counter() - started


if __name__ == "__main__":
    print(f"kernels ready in {warm():.1f} s")
