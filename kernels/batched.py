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
    _gather_h,
    _gather_inputs,
    _gather_steps,
    _gru_update,
    _head,
    _lstm_update,
    _sequences,
)
from statecast.kernels.config import JIT_OPTIONS, LEAF_OPTIONS, renamed
from statecast.kernels.fused import _gru_layer
from statecast.kernels.operands import Buffers, Layer, Panels, Streams, Strided
from statecast.kernels.panels import (
    PANEL,
    TILE_ROWS,
    padded_width,
    panel_product,
    panel_rows,
)

#: Floats of input projections computed at once for a chunk of steps (1 MiB).
_PROJECTION_VALUES = 262144


@numba.njit(**JIT_OPTIONS)
def _lstm_layer_panels(inp, out, layer, streams, scratch, panels, at):
    """One LSTM layer over all steps of the block's streams by panel products from the
    layer's block at ``panels[at:]``, then the cell update. ``scratch`` is ``[5, >= nb *
    max(padded 4H, inputs + P)]``.

    Several steps, when a chunk's projections fit ``_PROJECTION_VALUES``: the inputs of a
    chunk of steps first (``b + X @ w_ih``, one product), then ``h @ w_hh`` per step,
    continuing each output's multiply-add chain: ``w_ih`` is read once per chunk, not once
    per step (a third of a 2x256 model's weights, read from L3 by one stream's steps).
    Otherwise one product ``b + [x_t, h] @ [w_ih; w_hh]`` per step. Both give the same
    results.
    """
    meta, row = layer.meta, layer.row
    nb = streams.nb
    n_in = meta[row + nw.L_IN]
    hidden = meta[row + nw.L_HIDDEN]
    n_u = n_in + meta[row + nw.L_OUT]
    width = padded_width(4 * hidden)
    bufs = Buffers(scratch[0, :nb * width].reshape((nb, width)),
                   scratch[3, :nb * width].reshape((nb, width)),
                   scratch[1, :nb * hidden].reshape((nb, hidden)),
                   scratch[2, :nb * n_u].reshape((nb, n_u)))
    rows = Panels(panels, at + 3 * width, n_u * PANEL, n_u, width // PANEL)
    steps = inp.shape[1]
    chunk = min(steps, _PROJECTION_VALUES // (nb * width))
    if chunk < 2:
        _lstm_stacked_steps(inp, out, layer, streams, rows, Strided(panels, at + 2 * width, 0),
                            bufs)
        return
    w_ih = Panels(panels, rows.offset, rows.stride, n_in, rows.n_panels)
    xs = np.empty((nb * chunk, n_in), np.float32)
    proj = np.empty((nb * chunk, width), np.float32)
    for t0 in range(0, steps, chunk):
        n = min(chunk, steps - t0)
        _gather_steps(xs, inp, streams.s0, nb, t0, n, n_in)
        panel_product(nb * n, Strided(xs, 0, n_in), w_ih, Strided(panels, at + 2 * width, 0),
                      Strided(proj, 0, width))
        _lstm_projected_steps(out, layer, streams, t0, n, rows, proj, bufs)


@numba.njit(**LEAF_OPTIONS)
def _lstm_stacked_steps(inp, out, layer, streams, rows, bias, bufs):
    """Every step of an LSTM layer as one product ``bias + [x_t, h] @ rows`` (the stacked
    ``[w_ih; w_hh]``), then the cell update."""
    meta, row = layer.meta, layer.row
    n_in = meta[row + nw.L_IN]
    u, gates = bufs.u, bufs.gates
    for t in range(inp.shape[1]):
        _gather_inputs(u, inp, streams.s0, streams.nb, t, n_in)
        _gather_h(u, n_in, streams, meta[row + nw.L_H_OFF], meta[row + nw.L_OUT])
        panel_product(streams.nb, Strided(u, 0, u.shape[1]), rows, bias,
                      Strided(gates, 0, gates.shape[1]))
        _lstm_update(layer, streams, out, t, gates, bufs.full, u)


@numba.njit(**LEAF_OPTIONS)
def _lstm_projected_steps(out, layer, streams, t0, n, rows, proj, bufs):
    """Steps ``t0 .. t0+n`` of an LSTM layer whose input projections ``proj`` holds (row
    ``dt * nb + s``): ``h @ w_hh`` (the ``rows`` after the inputs') continues each one, then
    the cell update. ``h`` is gathered into ``bufs.u``."""
    meta, row = layer.meta, layer.row
    n_in = meta[row + nw.L_IN]
    nb = streams.nb
    u, gates = bufs.u, bufs.gates
    width = gates.shape[1]
    w_hh = panel_rows(rows, n_in, rows.depth - n_in)
    for dt in range(n):
        _gather_h(u, 0, streams, meta[row + nw.L_H_OFF], w_hh.depth)
        panel_product(nb, Strided(u, 0, u.shape[1]), w_hh, Strided(proj, dt * nb * width, width),
                      Strided(gates, 0, width))
        _lstm_update(layer, streams, out, t0 + dt, gates, bufs.full, u)


@numba.njit(**JIT_OPTIONS)
def _gru_layer_panels(inp, out, layer, streams, scratch, panels, at):
    """One GRU layer (reset after the product) over all steps of the block's streams:
    ``b_ih + x_t @ w_ih`` (for a chunk of steps at once when it fits, as for the LSTM) and
    per step ``b_hh + h @ w_hh`` by panel products, then the cell update. ``scratch`` is
    ``[5, >= nb * max(padded 3H, inputs)]``."""
    meta, row = layer.meta, layer.row
    nb = streams.nb
    n_in = meta[row + nw.L_IN]
    hidden = meta[row + nw.L_HIDDEN]
    width = padded_width(3 * hidden)
    rows = Panels(panels, at + 3 * width, (n_in + hidden) * PANEL, n_in + hidden,
                  width // PANEL)
    steps = inp.shape[1]
    chunk = max(1, min(steps, _PROJECTION_VALUES // (nb * width)))
    xs = np.empty((nb * chunk, n_in), np.float32)
    proj = np.empty((nb * chunk, width), np.float32)
    bufs = Buffers(proj, scratch[1, :nb * width].reshape((nb, width)),
                   scratch[2, :nb * hidden].reshape((nb, hidden)),
                   scratch[4, :nb * hidden].reshape((nb, hidden)))
    w_ih = Panels(panels, rows.offset, rows.stride, n_in, rows.n_panels)
    for t0 in range(0, steps, chunk):
        n = min(chunk, steps - t0)
        _gather_steps(xs, inp, streams.s0, nb, t0, n, n_in)
        panel_product(nb * n, Strided(xs, 0, n_in), w_ih, Strided(panels, at, 0),
                      Strided(proj, 0, width))
        _gru_projected_steps(out, layer, streams, t0, n, rows,
                             Strided(panels, at + width, 0), bufs)


@numba.njit(**LEAF_OPTIONS)
def _gru_projected_steps(out, layer, streams, t0, n, rows, bias_hh, bufs):
    """Steps ``t0 .. t0+n`` of a GRU layer whose input projections ``bufs.gates`` holds
    (row ``dt * nb + s``): per step ``bias_hh + h @ w_hh`` (the ``rows`` after the
    inputs') into ``bufs.extra``, then the cell update (``h`` gathered into ``bufs.u``)."""
    meta, row = layer.meta, layer.row
    n_in = meta[row + nw.L_IN]
    nb = streams.nb
    proj, extra, full, h = bufs
    w_hh = panel_rows(rows, n_in, rows.depth - n_in)
    for dt in range(n):
        _gather_h(h, 0, streams, meta[row + nw.L_H_OFF], w_hh.depth)
        panel_product(nb, Strided(h, 0, h.shape[1]), w_hh, bias_hh,
                      Strided(extra, 0, extra.shape[1]))
        _gru_update(layer, streams, out, t0 + dt,
                    Buffers(proj[dt * nb:(dt + 1) * nb], extra, full, h))


@numba.njit(**JIT_OPTIONS)
def _layer_panels(inp, out, layer, streams, scratch, plane, panels, at):
    """``layer`` over all steps of the block's streams, from its panels at ``panels[at:]``."""
    meta, row = layer.meta, layer.row
    if meta[row + nw.L_CELL] == nw.LSTM:
        _lstm_layer_panels(inp, out, layer, streams, scratch, panels, at)
    elif (meta[row + nw.L_FLAGS] & nw.FLAG_RESET_AFTER) != 0:
        _gru_layer_panels(inp, out, layer, streams, scratch, panels, at)
    else:
        # Reset before the product: the n columns need r first; the fused loops do it.
        nb = streams.nb
        _gru_layer(inp, out, layer, streams, Buffers(
            scratch[0, :nb * plane].reshape((nb, plane)),
            scratch[1, :nb * plane].reshape((nb, plane)),
            scratch[2, :nb * plane].reshape((nb, plane)),
            scratch[3, :nb * plane].reshape((nb, plane))))


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
        streams = Streams(arena, slots, s0, nb)
        scratch = np.empty((5, nb * plane), np.float32)
        for layer in range(n_layers):
            src, dst = _sequences(layer, n_layers, x, y, seq_a, seq_b)
            _layer_panels(src, dst, Layer(params, meta, nw.HEADER + layer * nw.LAYER_FIELDS),
                          streams, scratch, plane, panels, panel_at[layer])
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
