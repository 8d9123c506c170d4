"""Compile (or load from ``NUMBA_CACHE_DIR``) every kernel once:
``python -m statecast.kernels.warm``.

Run it in each server worker after the fork, or once before the test suite, so that no
request or test pays the first compilation.
"""

from __future__ import annotations

import time

import numpy as np

from statecast.kernels.engine import PATHS, Engine
from statecast.kernels.network import DenseLayer, RecurrentLayer, pack_network
from statecast.kernels.scoring import packed_rows, record_bytes, score_streams


def warm() -> float:
    """Compile every kernel variant on a tiny network; return the seconds it took."""
    started = time.perf_counter()
    rng = np.random.default_rng(0)

    def weights(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32)

    engine = Engine(pack_network(
        [RecurrentLayer("lstm", weights(2, 8), weights(2, 8), weights(8), weights(8)),
         RecurrentLayer("gru", weights(2, 6), weights(2, 6), weights(6), weights(6))],
        [DenseLayer(weights(2, 1), weights(1))]))
    net = engine.net
    # Every path on one stream; the panels also on more than one block (their parallel
    # variant, where Numba has threads).
    streams = 2 * 128 + 1
    x = weights(streams, 1, 2)
    arena = np.zeros((streams, net.state_size), np.float32)
    slots = np.arange(streams, dtype=np.int64)
    y = np.empty((streams, 1, net.output_size), np.float32)
    head = np.empty((streams, net.head_size), np.float32)
    for path in PATHS:
        engine.forward_on(path, x[:1], arena, slots[:1], y[:1], head[:1])
    engine.forward_on("panels", x, arena, slots, y, head)
    engine.head(y[:, -1].copy())
    # The scoring kernel on arrays typed as the service gives them (views of a bytearray
    # of stream records), so that no call compiles another specialisation.
    steps, size = 2, record_bytes(2, 1, 1)
    record = bytearray(size)
    np.frombuffer(record, "<f8", 3)[:] = (steps, 1, 1)
    score_streams(np.frombuffer(record, "<f8"), np.frombuffer(record, "<f4"),
                  np.zeros(1, np.int64), np.zeros((1, 1), np.float32),
                  np.array([0, 1], np.int64), 0.5, np.zeros((1, steps, 1), np.float32),
                  np.zeros(2 * steps, np.float32), np.zeros(1, np.int64),
                  np.full((1, 1), 3, np.int64), np.zeros((1, 5, steps)),
                  np.zeros((packed_rows(steps), 1), np.float32),
                  np.zeros(packed_rows(steps), np.int32), np.zeros(packed_rows(steps), np.int64))
    return time.perf_counter() - started


if __name__ == "__main__":
    print(f"kernels ready in {warm():.1f} s")
