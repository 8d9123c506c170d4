"""Building blocks shared by the forward paths: matrix-vector accumulation over a block of
streams, the one LSTM and one GRU cell update (for any range of hidden units, once the gate
pre-activations are known), and the dense head.

The fused loops (:mod:`kernels.fused`) compute gate pre-activations with
:func:`_accumulate`, the panel and spread paths (:mod:`kernels.batched`,
:mod:`kernels.split`) with :func:`kernels.panels.panel_product`; all compute
each gate as the same chain of multiply-adds and finish a step with the same cell update, so
their results are identical.

The kernels index whole buffers (``buf[s, at + j]``, ``params[offset + j]``) instead of
taking slices: inside a kernel every slice costs an atomic reference-count update, and
those dominated the one-stream, one-step hot path. Column indices are unsigned (``U``):
for a signed index Numba emits a negative-index check that stops LLVM from vectorising.
"""

from __future__ import annotations

import numba
import numpy as np

from statecast.kernels import network as nw
from statecast.kernels.activations import _activate, clamp
from statecast.kernels.config import JIT_OPTIONS, LEAF_OPTIONS
from statecast.kernels.operands import Strided

_ONE = np.float32(1.0)
_ZERO = np.float32(0.0)
U = np.uint64
#: Floats per scratch plane for the input projections of a chunk of steps (64 KiB).
_PROJECTION_VALUES = 16384


@numba.njit(**LEAF_OPTIONS)
def _clip(v, row, start, n, limit):
    for j in range(U(start), U(start) + U(n)):
        v[row, j] = clamp(v[row, j], -limit, limit)


@numba.njit(**LEAF_OPTIONS)
def _accumulate(dst, dst_col, w, u, nb, n_rows, n_cols):
    """``dst[s, dst_col + j] += sum_k u[s, k] * W[k, j]`` for the block's streams, ``j <
    n_cols``, ``W`` being the first ``n_rows`` rows of the
    :class:`~kernels.operands.Strided` matrix ``w``.

    Four weight rows at a time: each load and store of a ``dst`` vector serves four rows,
    and the rows stay in L1 while every stream of the block uses them. Each output is one
    multiply-add chain over ``k`` in order, as in :mod:`kernels.panels`: with FMA
    contraction every path computes a stream's gates bit for bit alike. (Reshaping a slice
    of ``params`` into a matrix view instead costs a runtime call per layer and call.)
    """
    whole = n_rows - n_rows % 4
    cols = U(n_cols)
    at = U(dst_col)
    params, w_off, w_stride = w
    stride = U(w_stride)
    for k in range(0, whole, 4):
        r0 = U(w_off + k * w_stride)
        r1 = r0 + stride
        r2 = r1 + stride
        r3 = r2 + stride
        for s in range(nb):
            u0 = u[s, k]
            u1 = u[s, k + 1]
            u2 = u[s, k + 2]
            u3 = u[s, k + 3]
            for j in range(cols):
                dst[s, at + j] = (dst[s, at + j] + params[r0 + j] * u0
                                  + params[r1 + j] * u1 + params[r2 + j] * u2
                                  + params[r3 + j] * u3)
    for k in range(whole, n_rows):
        r0 = U(w_off + k * w_stride)
        for s in range(nb):
            u0 = u[s, k]
            for j in range(cols):
                dst[s, at + j] += params[r0 + j] * u0


@numba.njit(**LEAF_OPTIONS)
def _set_bias(dst, params, b_off, b2_off, nb, n):
    """``dst[s, :n] = params[b_off:][:n] (+ params[b2_off:][:n] when b2_off >= 0)``."""
    first = U(b_off)
    second = U(max(b2_off, 0))
    for s in range(nb):
        if b2_off >= 0:
            for j in range(U(n)):
                dst[s, j] = params[first + j] + params[second + j]
        else:
            for j in range(U(n)):
                dst[s, j] = params[first + j]


@numba.njit(**LEAF_OPTIONS)
def _gather_inputs(ubuf, inp, s0, nb, t, n):
    step = U(t)
    for s in range(nb):
        row = U(s0 + s)
        for k in range(U(n)):
            ubuf[s, k] = inp[row, step, k]


@numba.njit(**LEAF_OPTIONS)
def _gather_steps(xs, inp, s0, nb, t0, n, n_in):
    """``xs[dt * nb + s] = inp[s0 + s, t0 + dt]``: a chunk's inputs, step by step."""
    for dt in range(n):
        for s in range(nb):
            for k in range(U(n_in)):
                xs[dt * nb + s, k] = inp[s0 + s, t0 + dt, k]


@numba.njit(**LEAF_OPTIONS)
def _scratch_shape(meta, nb, steps, n_features):
    """``(plane, chunk)`` for a block of ``nb`` streams: the width of each of its scratch
    planes, and how many steps' input projections a plane of ``nb * chunk`` rows holds
    (at most ``_PROJECTION_VALUES`` floats)."""
    width = meta[nw.MAX_WIDTH]
    plane = max(meta[nw.MAX_GATES], meta[nw.MAX_HIDDEN], meta[nw.MAX_DENSE],
                width + max(width, n_features))
    return plane, min(steps, max(1, _PROJECTION_VALUES // (nb * plane)))


@numba.njit(**LEAF_OPTIONS)
def _gather_h(ubuf, col, streams, h_off, n):
    """``ubuf[s, col:col + n] = h`` of the block's streams, from the arena."""
    arena, slots, s0, nb = streams
    at = U(h_off)
    to = U(col)
    for s in range(nb):
        slot = slots[s0 + s]
        for k in range(U(n)):
            ubuf[s, to + k] = arena[slot, at + k]


@numba.njit(**LEAF_OPTIONS)
def _lstm_cells(layer, streams, gates, full, j0, n):
    """The LSTM cell update of hidden units ``j0 .. j0+n`` of the block's streams.

    ``gates [nb, >= 4n]`` holds these units' complete pre-activations (products and
    biases), gate by gate: i, f, g, o, ``n`` columns each. The new ``c`` goes to the arena,
    the new ``h`` before any projection to ``full [nb, >= n]``.
    """
    params, meta, row = layer
    arena, slots, s0, nb = streams
    hidden = meta[row + nw.L_HIDDEN]
    peep = meta[row + nw.L_PEEP]
    input_forget = (meta[row + nw.L_FLAGS] & nw.FLAG_INPUT_FORGET) != 0
    act_gate = meta[row + nw.L_ACT_GATE]
    act_cell = meta[row + nw.L_ACT_CELL]
    act_hidden = meta[row + nw.L_ACT_HIDDEN]
    fl = meta[row + nw.L_FLOATS]
    gate_a, gate_b = params[fl], params[fl + 1]
    cell_a, cell_b = params[fl + 2], params[fl + 3]
    hid_a, hid_b = params[fl + 4], params[fl + 5]
    clip = params[fl + 6]
    nu = U(n)
    fu, gu, ou = nu, nu + nu, nu + nu + nu
    cu = U(meta[row + nw.L_C_OFF] + j0)
    hu = U(hidden)
    pu = U(max(peep, 0) + j0)
    for s in range(nb):
        slot = slots[s0 + s]
        if peep >= 0:
            for j in range(nu):
                c = arena[slot, cu + j]
                gates[s, j] += params[pu + j] * c
                gates[s, fu + j] += params[pu + hu + j] * c
        if clip > 0:
            _clip(gates, s, 0, 3 * n, clip)
        if input_forget:
            _activate(gates, s, 0, n, act_gate, gate_a, gate_b)
            for j in range(nu):
                gates[s, fu + j] = _ONE - gates[s, j]
        else:
            _activate(gates, s, 0, 2 * n, act_gate, gate_a, gate_b)
        _activate(gates, s, 2 * n, n, act_cell, cell_a, cell_b)
        for j in range(nu):
            c = gates[s, fu + j] * arena[slot, cu + j] + gates[s, j] * gates[s, gu + j]
            arena[slot, cu + j] = c
            full[s, j] = c
        if peep >= 0:
            for j in range(nu):
                gates[s, ou + j] += params[pu + hu + hu + j] * full[s, j]
        if clip > 0:
            _clip(gates, s, 3 * n, n, clip)
        _activate(gates, s, 3 * n, n, act_gate, gate_a, gate_b)
        _activate(full, s, 0, n, act_hidden, hid_a, hid_b)
        for j in range(nu):
            full[s, j] *= gates[s, ou + j]


@numba.njit(**LEAF_OPTIONS)
def _lstm_update(layer, streams, out, t, gates, full, u):
    """Finish step ``t`` of a whole LSTM layer for the block's streams: the cell update
    (``gates [nb, 4H]``, :func:`_lstm_cells`), the projection if any, then ``h`` to the
    arena and to ``out[:, t]``. ``full [nb, H]`` and ``u [nb, >= P]`` are scratch."""
    params, meta, row = layer
    nb = streams.nb
    hidden = meta[row + nw.L_HIDDEN]
    n_out = meta[row + nw.L_OUT]
    w_hr = meta[row + nw.L_W_HR]
    h_off = meta[row + nw.L_H_OFF]
    _lstm_cells(layer, streams, gates, full, 0, hidden)
    if w_hr >= 0:
        for s in range(nb):
            for j in range(U(n_out)):
                u[s, j] = _ZERO
        _accumulate(u, 0, Strided(params, w_hr, n_out), full, nb, hidden, n_out)
        _store_h(streams, out, t, h_off, u, n_out)
    else:
        _store_h(streams, out, t, h_off, full, n_out)


@numba.njit(**LEAF_OPTIONS)
def _store_h(streams, out, t, h_off, h, n):
    """``h [nb, >= n]`` of step ``t`` to the block's arena rows and to ``out[:, t]``."""
    arena, slots, s0, nb = streams
    at = U(h_off)
    for s in range(nb):
        slot = slots[s0 + s]
        for j in range(U(n)):
            arena[slot, at + j] = h[s, j]
            out[s0 + s, t, j] = h[s, j]


@numba.njit(**LEAF_OPTIONS)
def _gru_rz(layer, nb, gx, gh, n):
    """Reset and update gates of ``n`` units: ``gx[:, :2n] += gh[:, :2n]``, clipped and
    activated (``gx`` holds ``x W_ih + b_ih``, ``gh`` ``h W_hh + b_hh``, gate by gate)."""
    params, meta, row = layer
    fl = meta[row + nw.L_FLOATS]
    clip = params[fl + 6]
    for s in range(nb):
        for j in range(U(2 * n)):
            gx[s, j] += gh[s, j]
        if clip > 0:
            _clip(gx, s, 0, 2 * n, clip)
        _activate(gx, s, 0, 2 * n, meta[row + nw.L_ACT_GATE], params[fl], params[fl + 1])


@numba.njit(**LEAF_OPTIONS)
def _gru_reset_after(nb, gx, gh, n):
    """``n += r * (h W_hn + b_hn)``: the reset applied after the recurrent product."""
    nu = U(n)
    cu = nu + nu
    for s in range(nb):
        for j in range(nu):
            gx[s, cu + j] += gx[s, j] * gh[s, cu + j]


@numba.njit(**LEAF_OPTIONS)
def _gru_cells(layer, nb, gx, h_prev, j0, n, full):
    """The GRU cell update of hidden units ``j0 .. j0+n``, once ``gx [nb, >= 3n]`` holds
    the activated r and z and the complete n pre-activation: ``full[s, j]`` = the new ``h``
    (``h_prev [nb, H]`` holds the previous one, all units)."""
    params, meta, row = layer
    fl = meta[row + nw.L_FLOATS]
    clip = params[fl + 6]
    nu = U(n)
    zu, cu = nu, nu + nu
    ju = U(j0)
    for s in range(nb):
        if clip > 0:
            _clip(gx, s, 2 * n, n, clip)
        _activate(gx, s, 2 * n, n, meta[row + nw.L_ACT_CELL], params[fl + 2], params[fl + 3])
        for j in range(nu):
            z = gx[s, zu + j]
            full[s, j] = (_ONE - z) * gx[s, cu + j] + z * h_prev[s, ju + j]


@numba.njit(**LEAF_OPTIONS)
def _gru_update(layer, streams, out, t, bufs):
    """Finish step ``t`` of a whole GRU layer for the block's streams.

    ``bufs.gates [nb, 3H]`` holds ``x W_ih + b_ih``; ``bufs.extra [nb, 3H]`` holds ``h W_hh +
    b_hh`` in its r and z columns and, when the reset is applied after the product, in its
    n columns too; ``bufs.u [nb, >= H]`` holds the previous ``h``. ``bufs.full`` is scratch.
    """
    params, meta, row = layer
    nb = streams.nb
    gates, extra, full, hbuf = bufs
    hidden = meta[row + nw.L_HIDDEN]
    n0 = 2 * hidden
    hu = U(hidden)
    nu = U(n0)
    _gru_rz(layer, nb, gates, extra, hidden)
    if (meta[row + nw.L_FLAGS] & nw.FLAG_RESET_AFTER) != 0:
        _gru_reset_after(nb, gates, extra, hidden)
    else:
        bu = U(meta[row + nw.L_B_HH])
        for s in range(nb):
            for j in range(hu):
                full[s, j] = gates[s, j] * hbuf[s, j]
                extra[s, nu + j] = params[bu + nu + j]
        _accumulate(extra, n0, Strided(params, meta[row + nw.L_W_HH] + n0, 3 * hidden), full,
                    nb, hidden, hidden)
        for s in range(nb):
            for j in range(hu):
                gates[s, nu + j] += extra[s, nu + j]
    _gru_cells(layer, nb, gates, hbuf, 0, hidden, full)
    _store_h(streams, out, t, meta[row + nw.L_H_OFF], full, hidden)


@numba.njit(**JIT_OPTIONS)
def _sequences(layer, n_layers, x, y, seq_a, seq_b):
    """``(input, output)`` of ``layer``: the window ``x`` goes into the first layer, the
    layers between write ``seq_a`` and ``seq_b`` in turn, the last writes ``y``."""
    src = x if layer == 0 else (seq_a if layer % 2 == 1 else seq_b)
    dst = y if layer == n_layers - 1 else (seq_a if layer % 2 == 0 else seq_b)
    return src, dst


@numba.njit(**LEAF_OPTIONS)
def _head(y, params, meta, s0, nb, head_out, cur, nxt):
    """Dense head on the last step (or every step) of the block's streams."""
    n_dense = meta[nw.N_DENSE]
    if n_dense == 0:
        return
    first = nw.HEADER + meta[nw.N_LAYERS] * nw.LAYER_FIELDS
    steps = y.shape[1]
    every = meta[nw.EVERY_STEP] != 0
    for t in range(0 if every else steps - 1, steps):
        a, b = cur, nxt
        for s in range(nb):
            for j in range(y.shape[2]):
                a[s, j] = y[s0 + s, t, j]
        for d in range(n_dense):
            row = first + d * nw.DENSE_FIELDS
            n_in = meta[row + nw.D_IN]
            n_out = meta[row + nw.D_OUT]
            _set_bias(b, params, meta[row + nw.D_B], -1, nb, n_out)
            _accumulate(b, 0, Strided(params, meta[row + nw.D_W], n_out), a, nb, n_in, n_out)
            fl = meta[row + nw.D_FLOATS]
            for s in range(nb):
                _activate(b, s, 0, n_out, meta[row + nw.D_ACT], params[fl], params[fl + 1])
            a, b = b, a
        for s in range(nb):
            out_row = (s0 + s) * steps + t if every else s0 + s
            for j in range(head_out.shape[1]):
                head_out[out_row, j] = a[s, j]
