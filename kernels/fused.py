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
from statecast.kernels.cells import (
    _accumulate,
    _gather_h,
    _gather_inputs,
    _gru_update,
    _head,
    _lstm_update,
    _scratch_shape,
    _set_bias,
)
from statecast.kernels.config import JIT_OPTIONS, LEAF_OPTIONS, STREAM_BLOCK
from statecast.kernels.operands import Buffers, Layer, Streams, Strided


@numba.njit(**LEAF_OPTIONS)
def _lstm_layer(inp, out, layer, streams, bufs):
    """One LSTM layer (gates i, f, g, o) over all steps of the block's streams: per step one
    pass over the stacked ``[w_ih; w_hh]`` rows (``pack_network`` keeps them adjacent) with
    ``u = [x_t, h_prev]``."""
    params, meta, row = layer
    _, _, s0, nb = streams
    gates, u = bufs.gates, bufs.u
    n_in = meta[row + nw.L_IN]
    n_out = meta[row + nw.L_OUT]
    n_gates = 4 * meta[row + nw.L_HIDDEN]
    stacked = Strided(params, meta[row + nw.L_W_IH], n_gates)
    for t in range(inp.shape[1]):
        _set_bias(gates, params, meta[row + nw.L_B_IH], meta[row + nw.L_B_HH], nb, n_gates)
        _gather_inputs(u, inp, s0, nb, t, n_in)
        _gather_h(u, n_in, streams, meta[row + nw.L_H_OFF], n_out)
        _accumulate(gates, 0, stacked, u, nb, n_in + n_out, n_gates)
        _lstm_update(layer, streams, out, t, gates, bufs.full, u)


@numba.njit(**LEAF_OPTIONS)
def _gru_layer(inp, out, layer, streams, bufs):
    """One GRU layer (gates r, z, n) over all steps of the block's streams."""
    params, meta, row = layer
    _, _, s0, nb = streams
    gates, extra, u = bufs.gates, bufs.extra, bufs.u
    n_in = meta[row + nw.L_IN]
    hidden = meta[row + nw.L_HIDDEN]
    n_gates = 3 * hidden
    reset_after = (meta[row + nw.L_FLAGS] & nw.FLAG_RESET_AFTER) != 0
    # Recurrent columns computed before the reset gate is known: all three when the reset is
    # applied after the matmul, only r and z otherwise.
    early = n_gates if reset_after else 2 * hidden
    for t in range(inp.shape[1]):
        _set_bias(gates, params, meta[row + nw.L_B_IH], -1, nb, n_gates)
        _gather_inputs(u, inp, s0, nb, t, n_in)
        _accumulate(gates, 0, Strided(params, meta[row + nw.L_W_IH], n_gates), u, nb, n_in,
                    n_gates)
        _set_bias(extra, params, meta[row + nw.L_B_HH], -1, nb, early)
        _gather_h(u, 0, streams, meta[row + nw.L_H_OFF], hidden)
        _accumulate(extra, 0, Strided(params, meta[row + nw.L_W_HH], n_gates), u, nb, hidden,
                    early)
        _gru_update(layer, streams, out, t, bufs)


@numba.njit(**LEAF_OPTIONS)
def _layer(inp, out, layer, streams, bufs):
    """``layer`` over all steps of the block's streams, in the fused loops."""
    if layer.meta[layer.row + nw.L_CELL] == nw.LSTM:
        _lstm_layer(inp, out, layer, streams, bufs)
    else:
        _gru_layer(inp, out, layer, streams, bufs)


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
    bufs = Buffers(scratch[0], scratch[1], scratch[2], scratch[3])
    for s0 in range(0, n_streams, STREAM_BLOCK):
        nb = min(STREAM_BLOCK, n_streams - s0)
        streams = Streams(arena, slots, s0, nb)
        # The layers' sequences picked inline (kernels.cells._sequences returns arrays, whose
        # reference counting costs ~0.3 us of a 4 us step here).
        if n_layers == 1:
            _layer(x, y, Layer(params, meta, nw.HEADER), streams, bufs)
        else:
            _layer(x, seq_a, Layer(params, meta, nw.HEADER), streams, bufs)
            src, dst = seq_a, seq_b
            for index in range(1, n_layers):
                target = y if index == n_layers - 1 else dst
                _layer(src, target, Layer(params, meta, nw.HEADER + index * nw.LAYER_FIELDS),
                       streams, bufs)
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
