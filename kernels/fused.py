"""The fused loops: gate products as row axpys over a block of streams, no packed panels.

One stream, one step (the service's hot path) runs here: the fewest arguments and buffers
of any path (~0.5 us less than a panel call on a 3 us step, measured). Blocks of
``STREAM_BLOCK`` streams share each weight-row load; the engine sends larger calls to the
panel path, but every shape runs here, which the contract tests use to compare paths.
"""

from __future__ import annotations

import numba
import numpy as np

from statecast.kernels import network as nw
from statecast.kernels.cells import _head, _layer, _scratch_shape
from statecast.kernels.config import JIT_OPTIONS, STREAM_BLOCK


@numba.njit(**JIT_OPTIONS)
def forward_fused(x, params, meta, arena, slots, y, head_out):
    """The forward pass of :class:`kernels.engine.Engine` in the fused loops, block
    by block on the calling thread (arguments as for ``Engine.forward``)."""
    n_streams = x.shape[0]
    steps = x.shape[1]
    n_layers = meta[nw.N_LAYERS]
    width = meta[nw.MAX_WIDTH]
    seq_a = np.empty((n_streams if n_layers > 1 else 0, steps, width), np.float32)
    seq_b = np.empty((n_streams if n_layers > 2 else 0, steps, width), np.float32)
    plane, _ = _scratch_shape(meta, 1, 1, x.shape[2])
    # One allocation; its planes are the scratch buffers (integer-indexing a plane is
    # pointer arithmetic, where reshaping a slice is a runtime call).
    scratch = np.empty((6, min(STREAM_BLOCK, n_streams), plane), np.float32)
    for s0 in range(0, n_streams, STREAM_BLOCK):
        nb = min(STREAM_BLOCK, n_streams - s0)
        # The layers' sequences picked inline (kernels.cells._sequences returns arrays, whose
        # reference counting costs ~0.3 us of a 4 us step here).
        if n_layers == 1:
            _layer(x, y, params, meta, 0, arena, slots, s0, nb, scratch[0], scratch[1],
                   scratch[2], scratch[3])
        else:
            _layer(x, seq_a, params, meta, 0, arena, slots, s0, nb, scratch[0], scratch[1],
                   scratch[2], scratch[3])
            src, dst = seq_a, seq_b
            for layer in range(1, n_layers):
                target = y if layer == n_layers - 1 else dst
                _layer(src, target, params, meta, layer, arena, slots, s0, nb, scratch[0],
                       scratch[1], scratch[2], scratch[3])
                src, dst = dst, src
        _head(y, params, meta, s0, nb, head_out, scratch[4], scratch[5])


@numba.njit(**JIT_OPTIONS)
def head_only(y, params, meta, head_out):
    """The head on ``y [streams, 1, width]`` (last-layer outputs) into ``head_out``."""
    n_streams = y.shape[0]
    plane = max(meta[nw.MAX_DENSE], y.shape[2])
    for s0 in range(0, n_streams, STREAM_BLOCK):
        nb = min(STREAM_BLOCK, n_streams - s0)
        scratch = np.empty((2, nb, plane), np.float32)
        _head(y, params, meta, s0, nb, head_out, scratch[0], scratch[1])
