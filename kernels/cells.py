"""Building blocks shared by the forward paths: matrix-vector accumulation over a block of
streams, the LSTM and GRU cell updates once the gate pre-activations are known, and the
dense head.

The fused path (:mod:`kernels.recurrent`) computes gate pre-activations with
:func:`_accumulate`, the panel path (:mod:`kernels.batched`) with
:func:`kernels.panels.panel_product`; both compute each gate as the same chain of
multiply-adds and finish a step with the same cell update, so their results are identical.

The kernels index whole buffers (``buf[s, at + j]``, ``params[offset + j]``) instead of
taking slices: inside a kernel every slice costs an atomic reference-count update, and
those dominated the one-stream, one-step hot path. Column indices are unsigned (``U``):
for a signed index Numba emits a negative-index check that stops LLVM from vectorising.
"""

from __future__ import annotations

import numba
import numpy as np

from kernels import network as nw
from kernels.activations import _activate, clamp
from kernels.config import LEAF_OPTIONS

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
def _accumulate(dst, dst_col, params, w_off, w_stride, w_col, u, nb, n_rows, n_cols):
    """``dst[s, dst_col + j] += sum_k u[s, k] * W[k, w_col + j]`` for the block's streams,
    ``W`` being the ``[n_rows, w_stride]`` matrix stored at ``params[w_off:]``.

    Four weight rows at a time: each load and store of a ``dst`` vector serves four rows,
    and the rows stay in L1 while every stream of the block uses them. Each output is one
    multiply-add chain over ``k`` in order, as in :mod:`kernels.panels`: with FMA
    contraction every path computes a stream's gates bit for bit alike. (Reshaping a slice
    of ``params`` into a matrix view instead costs a runtime call per layer and call.)
    """
    whole = n_rows - n_rows % 4
    cols = U(n_cols)
    at = U(dst_col)
    stride = U(w_stride)
    if nb == 1:
        # One stream (the service's hot path): no stream loop between rows and columns.
        for k in range(0, whole, 4):
            r0 = U(w_off + k * w_stride + w_col)
            r1 = r0 + stride
            r2 = r1 + stride
            r3 = r2 + stride
            u0 = u[0, k]
            u1 = u[0, k + 1]
            u2 = u[0, k + 2]
            u3 = u[0, k + 3]
            for j in range(cols):
                dst[0, at + j] = (dst[0, at + j] + params[r0 + j] * u0
                                  + params[r1 + j] * u1 + params[r2 + j] * u2
                                  + params[r3 + j] * u3)
        for k in range(whole, n_rows):
            r0 = U(w_off + k * w_stride + w_col)
            u0 = u[0, k]
            for j in range(cols):
                dst[0, at + j] += params[r0 + j] * u0
        return
    for k in range(0, whole, 4):
        r0 = U(w_off + k * w_stride + w_col)
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
        r0 = U(w_off + k * w_stride + w_col)
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
def _gather_chunk(xbuf, inp, s0, nb, t0, n, n_in):
    """``xbuf[s * n + dt] = inp[s0 + s, t0 + dt]``: the inputs of steps ``t0 .. t0+n`` of
    the block's streams, stream by stream (the rows of a chunk's input projections)."""
    for s in range(nb):
        for dt in range(n):
            r = s * n + dt
            for k in range(U(n_in)):
                xbuf[r, k] = inp[s0 + s, t0 + dt, k]


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
def _gather_h(ubuf, col, arena, slots, s0, nb, h_off, n):
    """``ubuf[s, col:col + n] = h`` of the block's streams, from the arena."""
    at = U(h_off)
    to = U(col)
    for s in range(nb):
        slot = slots[s0 + s]
        for k in range(U(n)):
            ubuf[s, to + k] = arena[slot, at + k]


@numba.njit(**LEAF_OPTIONS)
def _lstm_update(out, params, meta, row, arena, slots, s0, nb, t, gates, full, ubuf):
    """Finish step ``t`` of an LSTM layer for the block's streams.

    ``gates [nb, 4H]`` holds the complete pre-activations (products and biases, gates
    i, f, g, o); the new ``c`` and ``h`` go to the arena and ``h`` to ``out[:, t]``.
    ``full [nb, H]`` and ``ubuf [nb, >= P]`` are scratch.
    """
    hidden = meta[row + nw.L_HIDDEN]
    n_out = meta[row + nw.L_OUT]
    w_hr = meta[row + nw.L_W_HR]
    peep = meta[row + nw.L_PEEP]
    h_off = meta[row + nw.L_H_OFF]
    c_off = meta[row + nw.L_C_OFF]
    input_forget = (meta[row + nw.L_FLAGS] & nw.FLAG_INPUT_FORGET) != 0
    act_gate = meta[row + nw.L_ACT_GATE]
    act_cell = meta[row + nw.L_ACT_CELL]
    act_hidden = meta[row + nw.L_ACT_HIDDEN]
    fl = meta[row + nw.L_FLOATS]
    gate_a, gate_b = params[fl], params[fl + 1]
    cell_a, cell_b = params[fl + 2], params[fl + 3]
    hid_a, hid_b = params[fl + 4], params[fl + 5]
    clip = params[fl + 6]
    i0, g0, o0 = 0, 2 * hidden, 3 * hidden
    hu = U(hidden)
    outs = U(n_out)
    fu, gu, ou = U(hidden), U(g0), U(o0)
    cu, hu_off = U(c_off), U(h_off)
    pu = U(max(peep, 0))
    for s in range(nb):
        slot = slots[s0 + s]
        if peep >= 0:
            for j in range(hu):
                c = arena[slot, cu + j]
                gates[s, j] += params[pu + j] * c
                gates[s, fu + j] += params[pu + hu + j] * c
        if clip > 0:
            _clip(gates, s, 0, 3 * hidden, clip)
        if input_forget:
            _activate(gates, s, i0, hidden, act_gate, gate_a, gate_b)
            for j in range(hu):
                gates[s, fu + j] = _ONE - gates[s, j]
        else:
            _activate(gates, s, i0, 2 * hidden, act_gate, gate_a, gate_b)
        _activate(gates, s, g0, hidden, act_cell, cell_a, cell_b)
        for j in range(hu):
            c = gates[s, fu + j] * arena[slot, cu + j] + gates[s, j] * gates[s, gu + j]
            arena[slot, cu + j] = c
            full[s, j] = c
        if peep >= 0:
            for j in range(hu):
                gates[s, ou + j] += params[pu + hu + hu + j] * full[s, j]
        if clip > 0:
            _clip(gates, s, o0, hidden, clip)
        _activate(gates, s, o0, hidden, act_gate, gate_a, gate_b)
        _activate(full, s, 0, hidden, act_hidden, hid_a, hid_b)
        for j in range(hu):
            full[s, j] *= gates[s, ou + j]
    if w_hr >= 0:
        for s in range(nb):
            for j in range(outs):
                ubuf[s, j] = _ZERO
        _accumulate(ubuf, 0, params, w_hr, n_out, 0, full, nb, hidden, n_out)
        for s in range(nb):
            slot = slots[s0 + s]
            for j in range(outs):
                arena[slot, hu_off + j] = ubuf[s, j]
                out[s0 + s, t, j] = ubuf[s, j]
    else:
        for s in range(nb):
            slot = slots[s0 + s]
            for j in range(hu):
                arena[slot, hu_off + j] = full[s, j]
                out[s0 + s, t, j] = full[s, j]


@numba.njit(**LEAF_OPTIONS)
def _gru_update(out, params, meta, row, arena, slots, s0, nb, t, gates, extra, full, hbuf):
    """Finish step ``t`` of a GRU layer for the block's streams.

    ``gates [nb, 3H]`` holds ``x W_ih + b_ih``; ``extra [nb, 3H]`` holds ``h W_hh + b_hh``
    in its r and z columns and, when the reset is applied after the product, in its n
    columns too; ``hbuf [nb, >= H]`` holds the previous ``h``. ``full`` is scratch.
    """
    hidden = meta[row + nw.L_HIDDEN]
    n_gates = 3 * hidden
    w_hh = meta[row + nw.L_W_HH]
    b_hh = meta[row + nw.L_B_HH]
    h_off = meta[row + nw.L_H_OFF]
    reset_after = (meta[row + nw.L_FLAGS] & nw.FLAG_RESET_AFTER) != 0
    act_gate = meta[row + nw.L_ACT_GATE]
    act_cell = meta[row + nw.L_ACT_CELL]
    fl = meta[row + nw.L_FLOATS]
    gate_a, gate_b = params[fl], params[fl + 1]
    cell_a, cell_b = params[fl + 2], params[fl + 3]
    clip = params[fl + 6]
    n0 = 2 * hidden
    hu = U(hidden)
    zu, nu = U(hidden), U(n0)
    hu_off = U(h_off)
    bu = U(b_hh)
    for s in range(nb):
        for j in range(hu + hu):
            gates[s, j] += extra[s, j]
        if clip > 0:
            _clip(gates, s, 0, 2 * hidden, clip)
        _activate(gates, s, 0, 2 * hidden, act_gate, gate_a, gate_b)
    if reset_after:
        for s in range(nb):
            for j in range(hu):
                gates[s, nu + j] += gates[s, j] * extra[s, nu + j]
    else:
        for s in range(nb):
            for j in range(hu):
                full[s, j] = gates[s, j] * hbuf[s, j]
                extra[s, nu + j] = params[bu + nu + j]
        _accumulate(extra, n0, params, w_hh, n_gates, n0, full, nb, hidden, hidden)
        for s in range(nb):
            for j in range(hu):
                gates[s, nu + j] += extra[s, nu + j]
    for s in range(nb):
        slot = slots[s0 + s]
        if clip > 0:
            _clip(gates, s, n0, hidden, clip)
        _activate(gates, s, n0, hidden, act_cell, cell_a, cell_b)
        for j in range(hu):
            z = gates[s, zu + j]
            h = (_ONE - z) * gates[s, nu + j] + z * hbuf[s, j]
            arena[slot, hu_off + j] = h
            out[s0 + s, t, j] = h


@numba.njit(**LEAF_OPTIONS)
def _lstm_layer(inp, out, params, meta, row, arena, slots, s0, nb, gates, full, ubuf, proj,
                xbuf):
    """One LSTM layer (gates i, f, g, o) over all steps of streams ``s0 .. s0+nb``.

    One step: one pass over the stacked ``[w_ih; w_hh]`` rows (``pack_network`` keeps them
    adjacent) with ``u = [x_t, h_prev]``. Several steps: the input part of a chunk of steps
    first, all rows at once (``proj [>= nb * chunk, 4H]``, ``xbuf [>= nb * chunk, inputs]``),
    so that ``w_ih`` is read once per chunk instead of once per step (one stream is bound
    by reading the weights from L2: this is a third less per step for a 2-layer model);
    then ``h @ w_hh`` per step.
    """
    n_in = meta[row + nw.L_IN]
    n_out = meta[row + nw.L_OUT]
    n_gates = 4 * meta[row + nw.L_HIDDEN]
    w_ih = meta[row + nw.L_W_IH]
    b_ih = meta[row + nw.L_B_IH]
    b_hh = meta[row + nw.L_B_HH]
    h_off = meta[row + nw.L_H_OFF]
    steps = inp.shape[1]
    chunk = min(steps, proj.shape[0] // nb)
    if steps == 1 or chunk < 2:
        for t in range(steps):
            _set_bias(gates, params, b_ih, b_hh, nb, n_gates)
            _gather_inputs(ubuf, inp, s0, nb, t, n_in)
            _gather_h(ubuf, n_in, arena, slots, s0, nb, h_off, n_out)
            _accumulate(gates, 0, params, w_ih, n_gates, 0, ubuf, nb, n_in + n_out, n_gates)
            _lstm_update(out, params, meta, row, arena, slots, s0, nb, t, gates, full, ubuf)
        return
    w_hh = meta[row + nw.L_W_HH]
    gu = U(n_gates)
    for t0 in range(0, steps, chunk):
        n = min(chunk, steps - t0)
        rows = nb * n
        _gather_chunk(xbuf, inp, s0, nb, t0, n, n_in)
        _set_bias(proj, params, b_ih, b_hh, rows, n_gates)
        _accumulate(proj, 0, params, w_ih, n_gates, 0, xbuf, rows, n_in, n_gates)
        for dt in range(n):
            for s in range(nb):
                r = s * n + dt
                for j in range(gu):
                    gates[s, j] = proj[r, j]
            _gather_h(ubuf, 0, arena, slots, s0, nb, h_off, n_out)
            _accumulate(gates, 0, params, w_hh, n_gates, 0, ubuf, nb, n_out, n_gates)
            _lstm_update(out, params, meta, row, arena, slots, s0, nb, t0 + dt, gates, full,
                         ubuf)


@numba.njit(**LEAF_OPTIONS)
def _gru_layer(inp, out, params, meta, row, arena, slots, s0, nb, gates, extra, full, ubuf):
    """One GRU layer (gates r, z, n) over all steps of streams ``s0 .. s0+nb``."""
    n_in = meta[row + nw.L_IN]
    hidden = meta[row + nw.L_HIDDEN]
    n_gates = 3 * hidden
    reset_after = (meta[row + nw.L_FLAGS] & nw.FLAG_RESET_AFTER) != 0
    # Recurrent columns computed before the reset gate is known: all three when the reset is
    # applied after the matmul, only r and z otherwise.
    early = n_gates if reset_after else 2 * hidden
    for t in range(inp.shape[1]):
        _set_bias(gates, params, meta[row + nw.L_B_IH], -1, nb, n_gates)
        _gather_inputs(ubuf, inp, s0, nb, t, n_in)
        _accumulate(gates, 0, params, meta[row + nw.L_W_IH], n_gates, 0, ubuf, nb, n_in,
                    n_gates)
        _set_bias(extra, params, meta[row + nw.L_B_HH], -1, nb, early)
        _gather_h(ubuf, 0, arena, slots, s0, nb, meta[row + nw.L_H_OFF], hidden)
        _accumulate(extra, 0, params, meta[row + nw.L_W_HH], n_gates, 0, ubuf, nb, hidden,
                    early)
        _gru_update(out, params, meta, row, arena, slots, s0, nb, t, gates, extra, full, ubuf)


@numba.njit(**LEAF_OPTIONS)
def _layer(inp, out, params, meta, layer, arena, slots, s0, nb, gates, extra, full, ubuf,
           proj, xbuf):
    row = nw.HEADER + layer * nw.LAYER_FIELDS
    if meta[row + nw.L_CELL] == nw.LSTM:
        _lstm_layer(inp, out, params, meta, row, arena, slots, s0, nb, gates, full, ubuf, proj,
                    xbuf)
    else:
        _gru_layer(inp, out, params, meta, row, arena, slots, s0, nb, gates, extra, full,
                   ubuf)


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
            _accumulate(b, 0, params, meta[row + nw.D_W], n_out, 0, a, nb, n_in, n_out)
            fl = meta[row + nw.D_FLOATS]
            for s in range(nb):
                _activate(b, s, 0, n_out, meta[row + nw.D_ACT], params[fl], params[fl + 1])
            a, b = b, a
        for s in range(nb):
            out_row = (s0 + s) * steps + t if every else s0 + s
            for j in range(head_out.shape[1]):
                head_out[out_row, j] = a[s, j]
