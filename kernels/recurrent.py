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
from kernels.activations import _activate
from kernels.config import JIT_OPTIONS, STREAM_BLOCK

_ONE = np.float32(1.0)
_ZERO = np.float32(0.0)


@numba.njit(**JIT_OPTIONS)
def _clip(v: np.ndarray, limit: float) -> None:
    for j in range(v.shape[0]):
        v[j] = min(max(v[j], -limit), limit)


@numba.njit(**JIT_OPTIONS)
def _lstm_layer(inp, out, params, meta, row, arena, slots, s0, nb, gates, full):  # noqa: ANN001
    """One LSTM layer over all steps of the block's streams ``s0 .. s0+nb``."""
    n_in = meta[row + nw.L_IN]
    hidden = meta[row + nw.L_HIDDEN]
    n_out = meta[row + nw.L_OUT]
    n_gates = 4 * hidden
    w_ih = params[meta[row + nw.L_W_IH]:meta[row + nw.L_W_IH] + n_in * n_gates]
    w_ih = w_ih.reshape((n_in, n_gates))
    w_hh = params[meta[row + nw.L_W_HH]:meta[row + nw.L_W_HH] + n_out * n_gates]
    w_hh = w_hh.reshape((n_out, n_gates))
    b_ih = params[meta[row + nw.L_B_IH]:meta[row + nw.L_B_IH] + n_gates]
    b_hh = params[meta[row + nw.L_B_HH]:meta[row + nw.L_B_HH] + n_gates]
    proj_at = meta[row + nw.L_W_HR]
    has_proj = proj_at >= 0
    w_hr = params[max(proj_at, 0):max(proj_at, 0) + (hidden * n_out if has_proj else 0)]
    w_hr = w_hr.reshape((hidden if has_proj else 0, n_out))
    peep_at = meta[row + nw.L_PEEP]
    has_peep = peep_at >= 0
    peep = params[max(peep_at, 0):max(peep_at, 0) + (3 * hidden if has_peep else 0)]
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
    for t in range(inp.shape[1]):
        for s in range(nb):
            g = gates[s]
            for j in range(n_gates):
                g[j] = b_ih[j] + b_hh[j]
        for k in range(n_in):
            w_row = w_ih[k]
            for s in range(nb):
                u = inp[s0 + s, t, k]
                g = gates[s]
                for j in range(n_gates):
                    g[j] += w_row[j] * u
        for k in range(n_out):
            w_row = w_hh[k]
            for s in range(nb):
                u = arena[slots[s0 + s], h_off + k]
                g = gates[s]
                for j in range(n_gates):
                    g[j] += w_row[j] * u
        for s in range(nb):
            slot = slots[s0 + s]
            g = gates[s]
            c = arena[slot, c_off:c_off + hidden]
            gi = g[0:hidden]
            gf = g[hidden:2 * hidden]
            gc = g[2 * hidden:3 * hidden]
            go = g[3 * hidden:4 * hidden]
            if has_peep:
                for j in range(hidden):
                    gi[j] += peep[j] * c[j]
                    gf[j] += peep[hidden + j] * c[j]
            if clip > 0:
                _clip(g[0:3 * hidden], clip)
            _activate(gi, act_gate, gate_a, gate_b)
            if input_forget:
                for j in range(hidden):
                    gf[j] = _ONE - gi[j]
            else:
                _activate(gf, act_gate, gate_a, gate_b)
            _activate(gc, act_cell, cell_a, cell_b)
            for j in range(hidden):
                c[j] = gf[j] * c[j] + gi[j] * gc[j]
            if has_peep:
                for j in range(hidden):
                    go[j] += peep[2 * hidden + j] * c[j]
            if clip > 0:
                _clip(go, clip)
            _activate(go, act_gate, gate_a, gate_b)
            h = arena[slot, h_off:h_off + n_out]
            if has_proj:
                hf = full[s, 0:hidden]
                for j in range(hidden):
                    hf[j] = c[j]
                _activate(hf, act_hidden, hid_a, hid_b)
                for j in range(n_out):
                    h[j] = _ZERO
                for k in range(hidden):
                    u = hf[k] * go[k]
                    w_row = w_hr[k]
                    for j in range(n_out):
                        h[j] += w_row[j] * u
            else:
                for j in range(hidden):
                    h[j] = c[j]
                _activate(h, act_hidden, hid_a, hid_b)
                for j in range(hidden):
                    h[j] *= go[j]
            o = out[s0 + s, t]
            for j in range(n_out):
                o[j] = h[j]


@numba.njit(**JIT_OPTIONS)
def _gru_layer(inp, out, params, meta, row, arena, slots, s0, nb, gates, extra, full):  # noqa: ANN001
    """One GRU layer (gates r, z, n) over all steps of the block's streams."""
    n_in = meta[row + nw.L_IN]
    hidden = meta[row + nw.L_HIDDEN]
    n_gates = 3 * hidden
    w_ih = params[meta[row + nw.L_W_IH]:meta[row + nw.L_W_IH] + n_in * n_gates]
    w_ih = w_ih.reshape((n_in, n_gates))
    w_hh = params[meta[row + nw.L_W_HH]:meta[row + nw.L_W_HH] + hidden * n_gates]
    w_hh = w_hh.reshape((hidden, n_gates))
    b_ih = params[meta[row + nw.L_B_IH]:meta[row + nw.L_B_IH] + n_gates]
    b_hh = params[meta[row + nw.L_B_HH]:meta[row + nw.L_B_HH] + n_gates]
    h_off = meta[row + nw.L_H_OFF]
    reset_after = (meta[row + nw.L_FLAGS] & nw.FLAG_RESET_AFTER) != 0
    act_gate = meta[row + nw.L_ACT_GATE]
    act_cell = meta[row + nw.L_ACT_CELL]
    fl = meta[row + nw.L_FLOATS]
    gate_a, gate_b = params[fl], params[fl + 1]
    cell_a, cell_b = params[fl + 2], params[fl + 3]
    clip = params[fl + 6]
    # Recurrent columns computed before the reset gate is known: all three when the reset is
    # applied after the matmul, only r and z otherwise.
    early = n_gates if reset_after else 2 * hidden
    for t in range(inp.shape[1]):
        for s in range(nb):
            gx = gates[s]
            gh = extra[s]
            for j in range(n_gates):
                gx[j] = b_ih[j]
            for j in range(early):
                gh[j] = b_hh[j]
        for k in range(n_in):
            w_row = w_ih[k]
            for s in range(nb):
                u = inp[s0 + s, t, k]
                gx = gates[s]
                for j in range(n_gates):
                    gx[j] += w_row[j] * u
        for k in range(hidden):
            w_row = w_hh[k, 0:early]
            for s in range(nb):
                u = arena[slots[s0 + s], h_off + k]
                gh = extra[s]
                for j in range(early):
                    gh[j] += w_row[j] * u
        for s in range(nb):
            slot = slots[s0 + s]
            gx = gates[s]
            gh = extra[s]
            h = arena[slot, h_off:h_off + hidden]
            rz = gx[0:2 * hidden]
            for j in range(2 * hidden):
                rz[j] += gh[j]
            if clip > 0:
                _clip(rz, clip)
            _activate(rz, act_gate, gate_a, gate_b)
            r = gx[0:hidden]
            z = gx[hidden:2 * hidden]
            n = gx[2 * hidden:3 * hidden]
            if reset_after:
                for j in range(hidden):
                    n[j] += r[j] * gh[2 * hidden + j]
            else:
                rh = full[s, 0:hidden]
                for j in range(hidden):
                    rh[j] = r[j] * h[j]
                gn = gh[2 * hidden:3 * hidden]
                for j in range(hidden):
                    gn[j] = b_hh[2 * hidden + j]
                for k in range(hidden):
                    u = rh[k]
                    w_row = w_hh[k, 2 * hidden:3 * hidden]
                    for j in range(hidden):
                        gn[j] += w_row[j] * u
                for j in range(hidden):
                    n[j] += gn[j]
            if clip > 0:
                _clip(n, clip)
            _activate(n, act_cell, cell_a, cell_b)
            o = out[s0 + s, t]
            for j in range(hidden):
                h[j] = (_ONE - z[j]) * n[j] + z[j] * h[j]
                o[j] = h[j]


@numba.njit(**JIT_OPTIONS)
def _layer(inp, out, params, meta, layer, arena, slots, s0, nb, gates, extra, full):  # noqa: ANN001
    row = nw.HEADER + layer * nw.LAYER_FIELDS
    if meta[row + nw.L_CELL] == nw.LSTM:
        _lstm_layer(inp, out, params, meta, row, arena, slots, s0, nb, gates, full)
    else:
        _gru_layer(inp, out, params, meta, row, arena, slots, s0, nb, gates, extra, full)


@numba.njit(**JIT_OPTIONS)
def _head(y, params, meta, s0, nb, head_out, cur, nxt):  # noqa: ANN001
    """Dense head on the last step (or every step) of the block's streams."""
    n_dense = meta[nw.N_DENSE]
    if n_dense == 0:
        return
    first = nw.HEADER + meta[nw.N_LAYERS] * nw.LAYER_FIELDS
    steps = y.shape[1]
    every = meta[nw.EVERY_STEP] != 0
    for s in range(nb):
        for t in range(steps - 1 if not every else 0, steps):
            width = y.shape[2]
            for j in range(width):
                cur[j] = y[s0 + s, t, j]
            a, b = cur, nxt
            for d in range(n_dense):
                row = first + d * nw.DENSE_FIELDS
                n_in = meta[row + nw.D_IN]
                n_out = meta[row + nw.D_OUT]
                w = params[meta[row + nw.D_W]:meta[row + nw.D_W] + n_in * n_out]
                w = w.reshape((n_in, n_out))
                bias = params[meta[row + nw.D_B]:meta[row + nw.D_B] + n_out]
                for j in range(n_out):
                    b[j] = bias[j]
                for k in range(n_in):
                    u = a[k]
                    w_row = w[k]
                    for j in range(n_out):
                        b[j] += w_row[j] * u
                fl = meta[row + nw.D_FLOATS]
                _activate(b[0:n_out], meta[row + nw.D_ACT], params[fl], params[fl + 1])
                a, b = b, a
                width = n_out
            target = head_out[s0 + s, t if every else 0]
            for j in range(width):
                target[j] = a[j]


def _forward_impl(x, params, meta, arena, slots, y, head_out):  # noqa: ANN001
    n_streams = x.shape[0]
    steps = x.shape[1]
    n_layers = meta[nw.N_LAYERS]
    width = meta[nw.MAX_WIDTH]
    n_blocks = (n_streams + STREAM_BLOCK - 1) // STREAM_BLOCK
    seq_a = np.empty((n_streams if n_layers > 1 else 0, steps, width), np.float32)
    seq_b = np.empty((n_streams if n_layers > 2 else 0, steps, width), np.float32)
    for block in numba.prange(n_blocks):
        s0 = block * STREAM_BLOCK
        nb = min(STREAM_BLOCK, n_streams - s0)
        gates = np.empty((nb, meta[nw.MAX_GATES]), np.float32)
        extra = np.empty((nb, meta[nw.MAX_GATES]), np.float32)
        full = np.empty((nb, meta[nw.MAX_HIDDEN]), np.float32)
        if n_layers == 1:
            _layer(x, y, params, meta, 0, arena, slots, s0, nb, gates, extra, full)
        else:
            _layer(x, seq_a, params, meta, 0, arena, slots, s0, nb, gates, extra, full)
            for layer in range(1, n_layers):
                src = seq_a if layer % 2 == 1 else seq_b
                if layer == n_layers - 1:
                    _layer(src, y, params, meta, layer, arena, slots, s0, nb, gates, extra,
                           full)
                else:
                    dst = seq_b if layer % 2 == 1 else seq_a
                    _layer(src, dst, params, meta, layer, arena, slots, s0, nb, gates, extra,
                           full)
        cur = np.empty(meta[nw.MAX_DENSE], np.float32)
        nxt = np.empty(meta[nw.MAX_DENSE], np.float32)
        _head(y, params, meta, s0, nb, head_out, cur, nxt)


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
    _require(head_out, "head_out", np.float32, 3)
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
    head_steps = steps if net.head_every_step else 1
    expected = (streams, head_steps, net.head_size)
    if head_out.shape != expected:
        raise ValueError(f"head_out must have shape {expected}, got {head_out.shape}")


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
        ``float32 [streams, 1 or time, net.head_size]``, written: the head's outputs at the
        last step (or every step for a head applied at every step).
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
