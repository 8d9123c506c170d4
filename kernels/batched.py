"""The forward pass by matrix products: every call but one stream's single step.

For a block of streams, one step of a layer is a matrix product ``[x_t, h] @ [W_ih; W_hh]``
(``streams x (inputs + hidden)`` by ``(inputs + hidden) x gates``) followed by the cell
update. :mod:`kernels.panels` computes it against weights packed once per network, at
190-220 GFLOP/s per core where the fused loops of :mod:`kernels.fused` reach 50-80
and OpenBLAS (repacking the weights each call) 70-130. The cell update, the projection of a
projected LSTM and the head are shared with the fused loops (:mod:`kernels.cells`).

Threads: blocks of streams go to Numba's threads (one block per core).
"""

from __future__ import annotations

import numba
import numpy as np

from statecast.kernels import network as nw
from statecast.kernels.cells import (
    U,
    _gather_h,
    _gather_inputs,
    _gru_layer,
    _gru_update,
    _head,
    _lstm_update,
    _sequences,
)
from statecast.kernels.config import JIT_OPTIONS, LEAF_OPTIONS, renamed
from statecast.kernels.panels import PANEL, TILE_ROWS, padded_width, panel_product

#: Floats of input projections computed at once for a chunk of steps (1 MiB).
_PROJECTION_VALUES = 262144


@numba.njit(**LEAF_OPTIONS)
def _gather_steps(xs, inp, s0, nb, t0, n, n_in):
    """``xs[dt * nb + s] = inp[s0 + s, t0 + dt]``: a chunk's inputs, step by step."""
    for dt in range(n):
        for s in range(nb):
            for k in range(U(n_in)):
                xs[dt * nb + s, k] = inp[s0 + s, t0 + dt, k]


@numba.njit(**JIT_OPTIONS)
def _lstm_layer_panels(inp, out, params, meta, row, arena, slots, s0, nb, scratch, panels,
                       at):
    """One LSTM layer over all steps of streams ``s0 .. s0+nb`` by panel products from the
    layer's block at ``at``, then the cell update. ``scratch`` is ``[4, >= nb *
    max(padded 4H, inputs + P)]``.

    Several steps, when a chunk's projections fit ``_PROJECTION_VALUES``: the inputs of a
    chunk of steps first (``b + X @ w_ih``, one product), then ``h @ w_hh`` per step,
    continuing each output's multiply-add chain: ``w_ih`` is read once per chunk, not once
    per step (a third of a 2x256 model's weights, read from L3 by one stream's steps).
    Otherwise one product ``b + [x_t, h] @ [w_ih; w_hh]`` per step. Both give the same
    results.
    """
    n_in = meta[row + nw.L_IN]
    hidden = meta[row + nw.L_HIDDEN]
    n_out = meta[row + nw.L_OUT]
    n_u = n_in + n_out
    width = padded_width(4 * hidden)
    n_panels = width // PANEL
    stride = n_u * PANEL
    first = at + 3 * width
    gates = scratch[0, :nb * width].reshape((nb, width))
    full = scratch[1, :nb * hidden].reshape((nb, hidden))
    u = scratch[2, :nb * n_u].reshape((nb, n_u))
    steps = inp.shape[1]
    chunk = min(steps, _PROJECTION_VALUES // (nb * width))
    if chunk < 2:
        for t in range(steps):
            _gather_inputs(u, inp, s0, nb, t, n_in)
            _gather_h(u, n_in, arena, slots, s0, nb, meta[row + nw.L_H_OFF], n_out)
            panel_product(u, 0, n_u, nb, panels, first, stride, n_u, n_panels, panels,
                          at + 2 * width, 0, gates, 0, width)
            _lstm_update(out, params, meta, row, arena, slots, s0, nb, t, gates, full, u)
        return
    xs = np.empty((nb * chunk, n_in), np.float32)
    proj = np.empty((nb * chunk, width), np.float32)
    h = scratch[3, :nb * n_out].reshape((nb, n_out))
    for t0 in range(0, steps, chunk):
        n = min(chunk, steps - t0)
        _gather_steps(xs, inp, s0, nb, t0, n, n_in)
        panel_product(xs, 0, n_in, nb * n, panels, first, stride, n_in, n_panels, panels,
                      at + 2 * width, 0, proj, 0, width)
        for dt in range(n):
            _gather_h(h, 0, arena, slots, s0, nb, meta[row + nw.L_H_OFF], n_out)
            panel_product(h, 0, n_out, nb, panels, first + n_in * PANEL, stride, n_out,
                          n_panels, proj, dt * nb * width, width, gates, 0, width)
            _lstm_update(out, params, meta, row, arena, slots, s0, nb, t0 + dt, gates, full,
                         u)


@numba.njit(**JIT_OPTIONS)
def _gru_layer_panels(inp, out, params, meta, row, arena, slots, s0, nb, scratch, panels, at):
    """One GRU layer (reset after the product) over all steps of streams ``s0 .. s0+nb``:
    ``b_ih + x_t @ w_ih`` (for a chunk of steps at once when it fits, as for the LSTM) and
    per step ``b_hh + h @ w_hh`` by panel products, then the cell update. ``scratch`` is
    ``[5, >= nb * max(padded 3H, inputs)]``."""
    n_in = meta[row + nw.L_IN]
    hidden = meta[row + nw.L_HIDDEN]
    width = padded_width(3 * hidden)
    n_panels = width // PANEL
    stride = (n_in + hidden) * PANEL
    first = at + 3 * width
    extra = scratch[1, :nb * width].reshape((nb, width))
    full = scratch[2, :nb * hidden].reshape((nb, hidden))
    h = scratch[4, :nb * hidden].reshape((nb, hidden))
    steps = inp.shape[1]
    chunk = max(1, min(steps, _PROJECTION_VALUES // (nb * width)))
    xs = np.empty((nb * chunk, n_in), np.float32)
    proj = np.empty((nb * chunk, width), np.float32)
    for t0 in range(0, steps, chunk):
        n = min(chunk, steps - t0)
        _gather_steps(xs, inp, s0, nb, t0, n, n_in)
        panel_product(xs, 0, n_in, nb * n, panels, first, stride, n_in, n_panels, panels, at,
                      0, proj, 0, width)
        for dt in range(n):
            _gather_h(h, 0, arena, slots, s0, nb, meta[row + nw.L_H_OFF], hidden)
            panel_product(h, 0, hidden, nb, panels, first + n_in * PANEL, stride, hidden,
                          n_panels, panels, at + width, 0, extra, 0, width)
            _gru_update(out, params, meta, row, arena, slots, s0, nb, t0 + dt,
                        proj[dt * nb:(dt + 1) * nb], extra, full, h)


@numba.njit(**JIT_OPTIONS)
def _layer_panels(inp, out, params, meta, layer, arena, slots, s0, nb, scratch, plane,
                  panels, panel_at):
    row = nw.HEADER + layer * nw.LAYER_FIELDS
    if meta[row + nw.L_CELL] == nw.LSTM:
        _lstm_layer_panels(inp, out, params, meta, row, arena, slots, s0, nb, scratch, panels,
                         panel_at[layer])
    elif (meta[row + nw.L_FLAGS] & nw.FLAG_RESET_AFTER) != 0:
        _gru_layer_panels(inp, out, params, meta, row, arena, slots, s0, nb, scratch, panels,
                        panel_at[layer])
    else:
        # Reset before the product: the n columns need r first; the fused loops do it.
        width = plane
        _gru_layer(inp, out, params, meta, row, arena, slots, s0, nb,
                   scratch[0, :nb * width].reshape((nb, width)),
                   scratch[1, :nb * width].reshape((nb, width)),
                   scratch[2, :nb * width].reshape((nb, width)),
                   scratch[3, :nb * width].reshape((nb, width)))


def _forward_panels_impl(x, params, meta, arena, slots, y, head_out, block, panels, panel_at):
    n_streams = x.shape[0]
    steps = x.shape[1]
    n_layers = meta[nw.N_LAYERS]
    width = meta[nw.MAX_WIDTH]
    n_features = x.shape[2]
    n_blocks = (n_streams + block - 1) // block
    plane = max(padded_width(meta[nw.MAX_GATES]), meta[nw.MAX_DENSE],
                width + max(width, n_features))
    seq_a = np.empty((n_streams if n_layers > 1 else 0, steps, width), np.float32)
    seq_b = np.empty((n_streams if n_layers > 2 else 0, steps, width), np.float32)
    for index in numba.prange(n_blocks):
        s0 = index * block
        nb = min(block, n_streams - s0)
        scratch = np.empty((5, nb * plane), np.float32)
        for layer in range(n_layers):
            src, dst = _sequences(layer, n_layers, x, y, seq_a, seq_b)
            _layer_panels(src, dst, params, meta, layer, arena, slots, s0, nb, scratch, plane,
                          panels, panel_at)
        _head(y, params, meta, s0, nb, head_out,
              scratch[0, :nb * plane].reshape((nb, plane)),
              scratch[1, :nb * plane].reshape((nb, plane)))


_forward_panels_serial = numba.njit(**JIT_OPTIONS)(_forward_panels_impl)
_forward_panels_parallel = numba.njit(parallel=True, **JIT_OPTIONS)(
    renamed(_forward_panels_impl, "_parallel"))

_MAX_BLOCK = 256
#: Blocks of a network whose widest layer has at most this many gate columns hold at most
#: half as many streams: at 1024 x 24 blocks of 128 streams ran 2x32 in 3.2 ms where blocks
#: of 256 took 4.1 (1x32 1.39 vs 1.42, 2x64 equal; 1x256 5% slower with 128: measured).
_NARROW_GATES = 256


def panel_block(n_streams: int, gates: int) -> int:
    """Streams per block: half the call (one block per core on two cores), a multiple of
    the tile's rows, at most 256 (128 for networks of at most ``_NARROW_GATES`` gate
    columns; beyond, a block's gates no longer fit in L2).

    Blocks only divide the work: each output is the same multiply-add chain whichever block
    and tile its stream is in, so results do not depend on the blocking or the threads.
    """
    most = _MAX_BLOCK // 2 if gates <= _NARROW_GATES else _MAX_BLOCK
    half = (n_streams + 1) // 2
    return int(min(most, -(-half // TILE_ROWS) * TILE_ROWS))
