"""Stateful multi-layer LSTM/GRU forward pass over a batch of streams, state kept in an arena.

``forward`` runs a window ``x [streams, time, features]`` through a packed network
(:mod:`kernels.network`). Stream ``b`` reads its state from ``arena[slots[b]]`` and leaves
its new state there, in place: the service keeps every stream of a model version in one
arena and runs any set of them without copies.

Work is split into blocks of ``STREAM_BLOCK`` streams; a block shares each weight-row load
and is the unit handed to a thread. A stream's arithmetic never depends on the other
streams of its call or on the number of threads.
"""

from __future__ import annotations

import numba
import numpy as np

from kernels import network as nw
from kernels.activations import _activate, clamp
from kernels.config import JIT_OPTIONS, LEAF_OPTIONS, STREAM_BLOCK

_ONE = np.float32(1.0)
_ZERO = np.float32(0.0)

# The kernels index whole buffers (``buf[s, at + j]``, ``params[offset + j]``) instead of
# taking slices: inside a kernel every slice costs an atomic reference-count update, and
# those dominated the one-stream, one-step hot path. Column indices are unsigned (``U``):
# for a signed index Numba emits a negative-index check that stops LLVM from vectorising.
U = np.uint64


@numba.njit(**LEAF_OPTIONS)
def _clip(v, row, start, n, limit):
    for j in range(U(start), U(start) + U(n)):
        v[row, j] = clamp(v[row, j], -limit, limit)


@numba.njit(**LEAF_OPTIONS)
def _accumulate(dst, dst_col, params, w_off, w_stride, w_col, u, nb, n_rows, n_cols):
    """``dst[s, dst_col + j] += sum_k u[s, k] * W[k, w_col + j]`` for the block's streams,
    ``W`` being the ``[n_rows, w_stride]`` matrix stored at ``params[w_off:]``.

    Four weight rows at a time: each load and store of a ``dst`` vector serves four rows,
    and the rows stay in L1 while every stream of the block uses them. (Reshaping a slice
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
                dst[0, at + j] += (params[r0 + j] * u0 + params[r1 + j] * u1
                                   + params[r2 + j] * u2 + params[r3 + j] * u3)
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
                dst[s, at + j] += (params[r0 + j] * u0 + params[r1 + j] * u1
                                   + params[r2 + j] * u2 + params[r3 + j] * u3)
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
    for s in range(nb):
        for k in range(n):
            ubuf[s, k] = inp[s0 + s, t, k]


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
def _lstm_layer(inp, out, params, meta, row, arena, slots, s0, nb, gates, full, ubuf):
    """One LSTM layer (gates i, f, g, o) over all steps of streams ``s0 .. s0+nb``."""
    n_in = meta[row + nw.L_IN]
    hidden = meta[row + nw.L_HIDDEN]
    n_out = meta[row + nw.L_OUT]
    n_gates = 4 * hidden
    w_ih = meta[row + nw.L_W_IH]
    b_ih = meta[row + nw.L_B_IH]
    b_hh = meta[row + nw.L_B_HH]
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
    i0, f0, g0, o0 = 0, hidden, 2 * hidden, 3 * hidden
    hu = U(hidden)
    outs = U(n_out)
    fu, gu, ou = U(f0), U(g0), U(o0)
    cu, hu_off = U(c_off), U(h_off)
    pu = U(max(peep, 0))
    for t in range(inp.shape[1]):
        # w_hh follows w_ih in params (pack_network keeps them adjacent): one pass over
        # the stacked [w_ih; w_hh] rows with u = [x_t, h_prev].
        _set_bias(gates, params, b_ih, b_hh, nb, n_gates)
        _gather_inputs(ubuf, inp, s0, nb, t, n_in)
        _gather_h(ubuf, n_in, arena, slots, s0, nb, h_off, n_out)
        _accumulate(gates, 0, params, w_ih, n_gates, 0, ubuf, nb, n_in + n_out, n_gates)
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
def _gru_layer(inp, out, params, meta, row, arena, slots, s0, nb, gates, extra, full, ubuf):
    """One GRU layer (gates r, z, n) over all steps of streams ``s0 .. s0+nb``."""
    n_in = meta[row + nw.L_IN]
    hidden = meta[row + nw.L_HIDDEN]
    n_gates = 3 * hidden
    w_ih = meta[row + nw.L_W_IH]
    w_hh = meta[row + nw.L_W_HH]
    b_ih = meta[row + nw.L_B_IH]
    b_hh = meta[row + nw.L_B_HH]
    h_off = meta[row + nw.L_H_OFF]
    reset_after = (meta[row + nw.L_FLAGS] & nw.FLAG_RESET_AFTER) != 0
    act_gate = meta[row + nw.L_ACT_GATE]
    act_cell = meta[row + nw.L_ACT_CELL]
    fl = meta[row + nw.L_FLOATS]
    gate_a, gate_b = params[fl], params[fl + 1]
    cell_a, cell_b = params[fl + 2], params[fl + 3]
    clip = params[fl + 6]
    z0, n0 = hidden, 2 * hidden
    hu = U(hidden)
    zu, nu = U(z0), U(n0)
    hu_off = U(h_off)
    bu = U(b_hh)
    # Recurrent columns computed before the reset gate is known: all three when the reset is
    # applied after the matmul, only r and z otherwise.
    early = n_gates if reset_after else 2 * hidden
    for t in range(inp.shape[1]):
        _set_bias(gates, params, b_ih, -1, nb, n_gates)
        _gather_inputs(ubuf, inp, s0, nb, t, n_in)
        _accumulate(gates, 0, params, w_ih, n_gates, 0, ubuf, nb, n_in, n_gates)
        _set_bias(extra, params, b_hh, -1, nb, early)
        _gather_h(ubuf, 0, arena, slots, s0, nb, h_off, hidden)
        _accumulate(extra, 0, params, w_hh, n_gates, 0, ubuf, nb, hidden, early)
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
                    full[s, j] = gates[s, j] * ubuf[s, j]
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
                h = (_ONE - z) * gates[s, nu + j] + z * ubuf[s, j]
                arena[slot, hu_off + j] = h
                out[s0 + s, t, j] = h


@numba.njit(**LEAF_OPTIONS)
def _layer(inp, out, params, meta, layer, arena, slots, s0, nb, gates, extra, full, ubuf):
    row = nw.HEADER + layer * nw.LAYER_FIELDS
    if meta[row + nw.L_CELL] == nw.LSTM:
        _lstm_layer(inp, out, params, meta, row, arena, slots, s0, nb, gates, full, ubuf)
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


def _forward_impl(x, params, meta, arena, slots, y, head_out):
    n_streams = x.shape[0]
    steps = x.shape[1]
    n_layers = meta[nw.N_LAYERS]
    width = meta[nw.MAX_WIDTH]
    n_blocks = (n_streams + STREAM_BLOCK - 1) // STREAM_BLOCK
    # Layers between the first and the last read from and write to these in turn.
    n_features = x.shape[2]
    seq_a = np.empty((n_streams if n_layers > 1 else 0, steps, width), np.float32)
    seq_b = np.empty((n_streams if n_layers > 2 else 0, steps, width), np.float32)
    for block in numba.prange(n_blocks):
        s0 = block * STREAM_BLOCK
        nb = min(STREAM_BLOCK, n_streams - s0)
        # One allocation per block; its planes are the scratch buffers. (Integer-indexing
        # a plane is pointer arithmetic, where reshaping a slice is a runtime call.)
        plane = max(meta[nw.MAX_GATES], meta[nw.MAX_HIDDEN], meta[nw.MAX_DENSE],
                    width + max(width, n_features))
        scratch = np.empty((6, nb, plane), np.float32)
        gates = scratch[0]
        extra = scratch[1]
        full = scratch[2]
        ubuf = scratch[3]
        cur = scratch[4]
        nxt = scratch[5]
        if n_layers == 1:
            _layer(x, y, params, meta, 0, arena, slots, s0, nb, gates, extra, full, ubuf)
        else:
            _layer(x, seq_a, params, meta, 0, arena, slots, s0, nb, gates, extra, full, ubuf)
            src, dst = seq_a, seq_b
            for layer in range(1, n_layers):
                target = y if layer == n_layers - 1 else dst
                _layer(src, target, params, meta, layer, arena, slots, s0, nb, gates, extra,
                       full, ubuf)
                src, dst = dst, src
        _head(y, params, meta, s0, nb, head_out, cur, nxt)


@numba.njit(**JIT_OPTIONS)
def _head_only(y, params, meta, head_out):
    """The head on ``y [streams, 1, width]`` (last-layer outputs) into ``head_out``."""
    n_streams = y.shape[0]
    plane = max(meta[nw.MAX_DENSE], y.shape[2])
    for s0 in range(0, n_streams, STREAM_BLOCK):
        nb = min(STREAM_BLOCK, n_streams - s0)
        scratch = np.empty((2, nb, plane), np.float32)
        _head(y, params, meta, s0, nb, head_out, scratch[0], scratch[1])


_forward_serial = numba.njit(**JIT_OPTIONS)(_forward_impl)
_forward_parallel = numba.njit(parallel=True, **JIT_OPTIONS)(_forward_impl)


def _require(array: np.ndarray, name: str, dtype: type, ndim: int) -> None:
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(array).__name__}")
    if array.dtype != dtype:
        raise TypeError(f"{name} must be {np.dtype(dtype).name}, got {array.dtype}: "
                        f"convert it with .astype(np.{np.dtype(dtype).name})")
    if array.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {array.shape}")
    if not array.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous: pass np.ascontiguousarray({name})")


def check_forward_args(net: nw.PackedNetwork, x: np.ndarray, arena: np.ndarray,
                       slots: np.ndarray, y: np.ndarray, head_out: np.ndarray) -> None:
    """Raise ``TypeError``/``ValueError`` naming the fix if any argument of :func:`forward`
    does not fit ``net``; nothing is computed."""
    _require(x, "x", np.float32, 3)
    _require(arena, "arena", np.float32, 2)
    _require(slots, "slots", np.int64, 1)
    _require(y, "y", np.float32, 3)
    _require(head_out, "head_out", np.float32, 2)
    if not y.flags.writeable or not head_out.flags.writeable or not arena.flags.writeable:
        raise ValueError("y, head_out and arena must be writeable")
    streams, steps, features = x.shape
    if steps < 1 or streams < 1:
        raise ValueError(f"x must hold at least one stream and one step, got shape {x.shape}")
    if features != net.input_size:
        raise ValueError(f"x has {features} features per step, the model takes {net.input_size}")
    if arena.shape[1] != net.state_size:
        raise ValueError(f"arena rows must hold {net.state_size} values, got {arena.shape[1]}")
    if slots.shape[0] != streams:
        raise ValueError(f"slots must name one arena row per stream ({streams}), "
                         f"got {slots.shape[0]}")
    if streams and (slots.min() < 0 or slots.max() >= arena.shape[0]):
        raise ValueError(f"slots must lie in [0, {arena.shape[0]}) (the arena's rows)")
    if streams > 1 and np.unique(slots).size != streams:
        raise ValueError("slots must be distinct: one stream, one arena row")
    if y.shape != (streams, steps, net.output_size):
        raise ValueError(f"y must have shape {(streams, steps, net.output_size)}, got {y.shape}")
    head_rows = streams * steps if net.head_every_step else streams
    expected = (head_rows, net.head_size)
    if head_out.shape != expected:
        raise ValueError(f"head_out must have shape {expected}, got {head_out.shape}")


def head_from_outputs(net: nw.PackedNetwork, outputs: np.ndarray) -> np.ndarray:
    """The head applied to last-layer outputs ``float32 [streams, width]``.

    The forward pass computes its head with this same code from ``y[:, -1]``, which equals
    the last layer's ``h``: a forecast recomputed from a stored state is bit-identical to
    the one computed when the state was made.
    """
    _require(outputs, "outputs", np.float32, 2)
    if outputs.shape[1] != net.output_size:
        raise ValueError(f"outputs must have {net.output_size} columns, got {outputs.shape[1]}")
    head_out = np.empty((outputs.shape[0], net.head_size), np.float32)
    if net.head_size:
        _head_only(outputs.reshape(outputs.shape[0], 1, outputs.shape[1]), net.params,
                   net.meta, head_out)
    return head_out


def forward(net: nw.PackedNetwork, x: np.ndarray, arena: np.ndarray, slots: np.ndarray,
            y: np.ndarray, head_out: np.ndarray, *, check: bool = True) -> None:
    """Run a window through ``net``, updating the streams' states in the arena in place.

    Parameters
    ----------
    net : PackedNetwork
        The model, from :func:`kernels.network.pack_network`.
    x : np.ndarray
        ``float32 [streams, time, features]``, C-contiguous: the window.
    arena : np.ndarray
        ``float32 [rows, net.state_size]``: one state row per stream; rows named by ``slots``
        are read and overwritten with the state after the window.
    slots : np.ndarray
        ``int64 [streams]``, distinct: the arena row of each stream.
    y : np.ndarray
        ``float32 [streams, time, net.output_size]``, written: the last layer's outputs.
    head_out : np.ndarray
        ``float32 [streams, net.head_size]``, written: the head's outputs at the last step;
        ``[streams * time, net.head_size]`` (row ``stream * time + step``) for a head applied
        at every step.
    check : bool
        Validate every argument first (default). Callers that built the arrays themselves
        may skip it; a wrong shape then reads out of bounds.
    """
    if check:
        check_forward_args(net, x, arena, slots, y, head_out)
    run = _forward_serial
    if x.shape[0] > STREAM_BLOCK and numba.get_num_threads() > 1:
        run = _forward_parallel
    run(x, net.params, net.meta, arena, slots, y, head_out)
