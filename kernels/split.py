"""One step on several cores: an LSTM or GRU layer's hidden units split between threads.

A few streams of a wide model are bound by reading the weights, not by arithmetic: at
hidden 256 a layer's ``w_hh`` is 1 MiB, more than one core's L2, so every step streams it
from L3. Split by hidden units, each thread reads only the gate columns of its own units
(half the matrix on two cores, which then stays in that core's L2 across the steps of a
window) and finishes the cell update of those units; the threads meet once per step,
because the next step needs every unit's ``h``.

Each part's weights are a contiguous copy in panels (:func:`pack_split`, products by
:func:`kernels.panels.panel_product`); the steps of a chunk run in one parallel region
whose threads claim parts and meet on atomic counters (:mod:`kernels.atomics`) rather than
one parallel loop per step. Each gate column is the same chain of multiply-adds as in the
other paths, so results are bit-identical to them; only which thread computes a column
changes. Threads share no column, and each step's ``h`` goes to the other of two buffers,
which the next step reads.
"""

from __future__ import annotations

from collections.abc import Iterator

import numba
import numpy as np

from statecast.kernels import network as nw
from statecast.kernels.atomics import atomic_add, atomic_cas, atomic_load, yield_cpu
from statecast.kernels.cells import (
    U,
    _gather_h,
    _gather_inputs,
    _gru_cells,
    _gru_reset_after,
    _gru_rz,
    _head,
    _layer,
    _lstm_cells,
    _scratch_shape,
    _sequences,
)
from statecast.kernels.config import JIT_OPTIONS, LEAF_OPTIONS
from statecast.kernels.panels import PANEL, aligned, padded_width, panel_product, with_bias_rows

#: A thread waiting for the others' parts of a step spins this many times (~0.1 ms: an
#: atomic load of an unchanged line is an L1 hit), then yields its core at each check:
#: with more runnable threads than cores (threaded workers, other processes) the thread it
#: waits for may be queued on that very core. (2,000 spins, ~2 us, yielded in ordinary
#: steps and made the split path slower than the fused loops.)
_SPINS_BEFORE_YIELD = 100_000


def part_size(hidden: int, parts: int) -> int:
    """Hidden units per thread: an even share, whole cache lines (16 floats) when wide."""
    size = -(-hidden // parts)
    if hidden >= 32 * parts:
        size = -(-size // 16) * 16
    return size


_part_size = numba.njit(**LEAF_OPTIONS)(part_size)


@numba.njit(**LEAF_OPTIONS)
def _lstm_units(out, params, meta, row, arena, slots, nb, t, gates, full, j0, n, h_next):
    """The cell update of hidden units ``j0 .. j0+n`` of a layer without projection
    (:func:`kernels.cells._lstm_cells`); the new ``h`` goes to the arena, ``out``
    and ``h_next [nb, H]``."""
    _lstm_cells(params, meta, row, arena, slots, 0, nb, gates, full, j0, n)
    _store_units(out, arena, slots, nb, t, meta[row + nw.L_H_OFF], full, j0, n, h_next)


@numba.njit(**LEAF_OPTIONS)
def _store_units(out, arena, slots, nb, t, h_off, full, j0, n, h_next):
    ju = U(j0)
    at = U(h_off + j0)
    for s in range(nb):
        slot = slots[s]
        for j in range(U(n)):
            h = full[s, j]
            arena[slot, at + j] = h
            out[s, t, ju + j] = h
            h_next[s, ju + j] = h


@numba.njit(**LEAF_OPTIONS)
def _gather_chunk(xbuf, inp, nb, t0, n, n_in):
    """``xbuf[s * n + dt] = inp[s, t0 + dt]``: the inputs of steps ``t0 .. t0+n``, stream
    by stream (the rows of a chunk's input projections)."""
    for s in range(nb):
        for dt in range(n):
            r = s * n + dt
            for k in range(U(n_in)):
                xbuf[r, k] = inp[s, t0 + dt, k]


def pack_split(net: nw.PackedNetwork, parts: int, min_hidden: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """Each thread's own copy of the weights it reads, for the LSTM layers without
    projection and the GRU layers with the reset gate after the product, of ``min_hidden``
    units or more.

    Returns ``(weights, offsets)``: ``offsets[layer, part]`` is where in ``weights`` the
    block of that part starts (-1 for a layer that is not split). A part's ``n`` units own
    ``c = 4n`` (LSTM: i, f, g, o) or ``3n`` (GRU: r, z, n) gate columns, gate by gate, and
    ``c'`` is ``c`` rounded up to whole panels. LSTM: the summed biases ``b_ih + b_hh``
    ``[c']``, then the rows of ``[w_ih; w_hh]`` ``[inputs + H, c]`` as panels
    (:func:`kernels.panels.with_bias_rows`). GRU: ``b_ih`` and ``b_hh`` ``[c']`` each, then the
    same panels. A block is contiguous: sliced out of the shared matrix, a part's columns
    are short pieces of rows a power of two apart, which fall into a fraction of the
    cache's sets and do not stay in L2.
    """
    meta, params = net.meta, net.params
    n_layers = int(meta[nw.N_LAYERS])
    offsets = np.full((n_layers, parts), -1, np.int64)
    blocks: list[np.ndarray] = []
    size_so_far = 0
    for layer in range(n_layers):
        row = nw.HEADER + layer * nw.LAYER_FIELDS
        hidden = int(meta[row + nw.L_HIDDEN])
        if hidden < min_hidden:
            continue
        if meta[row + nw.L_CELL] == nw.GRU:
            if meta[row + nw.L_FLAGS] & nw.FLAG_RESET_AFTER:
                size_so_far = _pack_gru(net, row, layer, parts, offsets, blocks, size_so_far)
            continue
        if meta[row + nw.L_W_HR] >= 0:
            continue
        n_in = int(meta[row + nw.L_IN])
        gates = 4 * hidden
        weights = params[meta[row + nw.L_W_IH]:][:(n_in + hidden) * gates].reshape(
            n_in + hidden, gates)
        bias = params[meta[row + nw.L_B_IH]:][:gates].copy()
        if meta[row + nw.L_B_HH] >= 0:
            bias = bias + params[meta[row + nw.L_B_HH]:][:gates]
        for part, columns in _parts_columns(hidden, 4, parts):
            block = with_bias_rows([bias[columns]], weights[:, columns])
            offsets[layer, part] = size_so_far
            blocks.append(block)
            size_so_far += block.size
    return aligned(np.concatenate(blocks) if blocks else np.zeros(0, np.float32)), offsets


@numba.njit(**LEAF_OPTIONS)
def _await_parts(claims, done, parts):
    """Wait until ``claims[done]`` counts every part of the step: spin, then, past
    ``_SPINS_BEFORE_YIELD`` checks, yield the core at each check."""
    spins = 0
    while atomic_load(claims, done) < parts:
        spins += 1
        if spins > _SPINS_BEFORE_YIELD:
            yield_cpu()


def _parts_columns(hidden: int, gates: int, parts: int) -> Iterator[tuple[int, np.ndarray]]:
    """``(part, columns)`` for each part with units: the weight columns of the part's units,
    gate by gate, in a layer of ``gates`` gate blocks of ``hidden`` columns."""
    size = part_size(hidden, parts)
    for part in range(parts):
        j0 = part * size
        n = min(size, hidden - j0)
        if n > 0:
            yield part, np.concatenate([np.arange(g * hidden + j0, g * hidden + j0 + n)
                                        for g in range(gates)])


def _pack_gru(net: nw.PackedNetwork, row: int, layer: int, parts: int, offsets: np.ndarray,
              blocks: list[np.ndarray], size_so_far: int) -> int:
    """The GRU blocks of :func:`pack_split` for one layer; returns the new total size."""
    meta, params = net.meta, net.params
    hidden = int(meta[row + nw.L_HIDDEN])
    n_in = int(meta[row + nw.L_IN])
    gates = 3 * hidden
    w_ih = params[meta[row + nw.L_W_IH]:][:n_in * gates].reshape(n_in, gates)
    w_hh = params[meta[row + nw.L_W_HH]:][:hidden * gates].reshape(hidden, gates)
    b_ih = params[meta[row + nw.L_B_IH]:][:gates]
    b_hh = (params[meta[row + nw.L_B_HH]:][:gates] if meta[row + nw.L_B_HH] >= 0
            else np.zeros(gates, np.float32))
    for part, columns in _parts_columns(hidden, 3, parts):
        block = with_bias_rows([b_ih[columns], b_hh[columns]],
                               np.concatenate([w_ih[:, columns], w_hh[:, columns]]))
        offsets[layer, part] = size_so_far
        blocks.append(block)
        size_so_far += block.size
    return size_so_far


@numba.njit(parallel=True, **JIT_OPTIONS)
def _gru_layer_split(inp, out, params, meta, row, arena, slots, parts, weights, w_offs,
                     part_gates, part_extra, part_full):
    """One GRU layer (reset after the product) over all steps of a few streams, each
    step's units split over ``parts`` threads, in one parallel region (the threads meet on
    atomic counters after each step, as in :func:`_lstm_region`)."""
    nb = inp.shape[0]
    steps = inp.shape[1]
    n_in = meta[row + nw.L_IN]
    hidden = meta[row + nw.L_HIDDEN]
    size = _part_size(hidden, parts)
    xs = np.empty((steps, nb, n_in), np.float32)
    for t in range(steps):
        for s in range(nb):
            for k in range(U(n_in)):
                xs[t, s, k] = inp[s, t, k]
    h_even = np.empty((nb, hidden), np.float32)
    h_odd = np.empty((nb, hidden), np.float32)
    _gather_h(h_even, 0, arena, slots, 0, nb, meta[row + nw.L_H_OFF], hidden)
    claims = np.zeros((steps, max(16, parts + 1)), np.int64)
    done = claims.shape[1] - 1
    for worker in numba.prange(parts):
        gx = part_gates[worker]
        gh = part_extra[worker]
        full = part_full[worker]
        for t in range(steps):
            h_prev = h_even if t % 2 == 0 else h_odd
            h_next = h_odd if t % 2 == 0 else h_even
            for k in range(parts):
                p = (worker + k) % parts
                if atomic_cas(claims[t], p, 0, 1) != 0:
                    continue
                j0 = p * size
                n = min(size, hidden - j0)
                if n > 0:
                    width = padded_width(3 * n)
                    at = w_offs[p]
                    stride = (n_in + hidden) * PANEL
                    panel_product(xs, t * nb * n_in, n_in, nb, weights, at + 2 * width, stride,
                                  n_in, width // PANEL, weights, at, 0, gx, 0, gx.shape[1])
                    panel_product(h_prev, 0, hidden, nb, weights,
                                  at + 2 * width + n_in * PANEL, stride, hidden,
                                  width // PANEL, weights, at + width, 0, gh, 0, gh.shape[1])
                    _gru_rz(params, meta, row, nb, gx, gh, n)
                    _gru_reset_after(nb, gx, gh, n)
                    _gru_cells(params, meta, row, nb, gx, h_prev, j0, n, full)
                    _store_units(out, arena, slots, nb, t, meta[row + nw.L_H_OFF], full, j0,
                                 n, h_next)
                atomic_add(claims[t], done, 1)
            _await_parts(claims[t], done, parts)


@numba.njit(**LEAF_OPTIONS)
def _units_step(out, params, meta, row, arena, slots, nb, t, gates, full, j0, n, ubuf,
                weights, w_off, proj, proj_row, proj_stride, proj_col, h_next):
    """One step of units ``j0 .. j0+n`` (the part whose block starts at ``w_off``): gate
    pre-activations, then the cell update.

    With ``proj_stride > 0`` the input part (and biases) is read from rows ``proj_row +
    s * proj_stride``, columns ``proj_col ..`` of ``proj`` and ``ubuf`` holds ``h``;
    otherwise ``ubuf`` holds ``[x_t, h]`` and every row of the block is used.
    """
    n_in = meta[row + nw.L_IN]
    hidden = meta[row + nw.L_HIDDEN]
    width = padded_width(4 * n)
    stride = (n_in + hidden) * PANEL
    if proj_stride > 0:
        columns = proj.shape[1]
        panel_product(ubuf, 0, ubuf.shape[1], nb, weights, w_off + width + n_in * PANEL,
                      stride, hidden, width // PANEL, proj, proj_row * columns + proj_col,
                      proj_stride * columns, gates, 0, gates.shape[1])
    else:
        panel_product(ubuf, 0, ubuf.shape[1], nb, weights, w_off + width, stride,
                      n_in + hidden, width // PANEL, weights, w_off, 0, gates, 0,
                      gates.shape[1])
    _lstm_units(out, params, meta, row, arena, slots, nb, t, gates, full, j0, n, h_next)


@numba.njit(**LEAF_OPTIONS)
def _project_part(proj, weights, w_off, col, cols, xbuf, rows, n_in, hidden):
    """``proj[:rows, col:col + cols'] = bias + xbuf[:rows] @ w_ih`` of the part whose block
    starts at ``w_off`` (``cols'``: ``cols`` rounded up to whole panels)."""
    width = padded_width(cols)
    panel_product(xbuf, 0, xbuf.shape[1], rows, weights, w_off + width,
                  (n_in + hidden) * PANEL, n_in, width // PANEL, weights, w_off, 0, proj, col,
                  proj.shape[1])


@numba.njit(parallel=True, **JIT_OPTIONS)
def _lstm_region(inp, out, params, meta, row, arena, slots, parts, weights, w_offs, t0,
                 n_steps, projected, proj, xbuf, h_even, h_odd, part_gates, part_full, part_u,
                 claims):
    """Steps ``t0 .. t0+n_steps`` of an LSTM layer in one parallel region: the threads meet
    after each step on atomic counters instead of leaving and re-entering a parallel loop
    (~2 us each on this class of machine).

    With ``projected``, the inputs of these steps (``xbuf``, row ``s * n_steps + dt``) are
    projected first, each part's columns of ``proj``; each step then adds ``h @ w_hh``.
    Without, each step is one product over ``[x_t, h]`` and the stacked rows (one step, or
    chunks too small to project). Step ``t`` reads ``h`` from ``h_even``/``h_odd`` by its
    parity and writes the other.

    Work is claimed (``claims [1 + n_steps, > parts]``, zeros: row 0 the projections, row
    ``1 + dt`` step ``dt``; a flag per part, the count done in the last column): a thread
    first claims the part of its own index (whose weights its cache holds), then any other
    not yet claimed, then waits until all are done. A thread that starts late, or never
    (one thread, a nested call), finds its parts done by the others: nobody waits on a
    thread that is not running.
    """
    nb = inp.shape[0]
    n_in = meta[row + nw.L_IN]
    hidden = meta[row + nw.L_HIDDEN]
    size = _part_size(hidden, parts)
    part_columns = padded_width(4 * size)  # of proj, per part
    done = claims.shape[1] - 1
    rows = nb * n_steps
    for worker in numba.prange(parts):
        gates = part_gates[worker]
        full = part_full[worker]
        u = part_u[worker]
        if projected:
            for k in range(parts):
                p = (worker + k) % parts
                if atomic_cas(claims[0], p, 0, 1) != 0:
                    continue
                n = min(size, hidden - p * size)
                if n > 0:
                    _project_part(proj, weights, w_offs[p], p * part_columns, 4 * n, xbuf,
                                  rows, n_in, hidden)
                atomic_add(claims[0], done, 1)
            _await_parts(claims[0], done, parts)
        for dt in range(n_steps):
            t = t0 + dt
            h_prev = h_even if t % 2 == 0 else h_odd
            h_next = h_odd if t % 2 == 0 else h_even
            step = claims[1 + dt]
            for k in range(parts):
                p = (worker + k) % parts
                if atomic_cas(step, p, 0, 1) != 0:
                    continue
                j0 = p * size
                n = min(size, hidden - j0)
                if n > 0 and projected:
                    _units_step(out, params, meta, row, arena, slots, nb, t, gates, full, j0, n,
                                h_prev, weights, w_offs[p], proj, dt, n_steps,
                                p * part_columns, h_next)
                elif n > 0:
                    _gather_inputs(u, inp, 0, nb, t, n_in)
                    for s in range(nb):
                        for j in range(U(hidden)):
                            u[s, U(n_in) + j] = h_prev[s, j]
                    _units_step(out, params, meta, row, arena, slots, nb, t, gates, full, j0, n,
                                u, weights, w_offs[p], proj, 0, 0, 0, h_next)
                atomic_add(step, done, 1)
            _await_parts(step, done, parts)


@numba.njit(**JIT_OPTIONS)
def _lstm_layer_split(inp, out, params, meta, row, arena, slots, parts, weights, w_offs,
                      proj, xbuf, part_gates, part_full, part_u):
    """One LSTM layer without projection over all steps of ``nb <= STREAM_BLOCK`` streams,
    each step's units split over ``parts`` threads (see the module docstring)."""
    nb = inp.shape[0]
    steps = inp.shape[1]
    n_in = meta[row + nw.L_IN]
    hidden = meta[row + nw.L_HIDDEN]
    chunk = min(steps, proj.shape[0] // nb)
    width = max(16, parts + 1)
    h_even = np.empty((nb, hidden), np.float32)
    h_odd = np.empty((nb, hidden), np.float32)
    _gather_h(h_even, 0, arena, slots, 0, nb, meta[row + nw.L_H_OFF], hidden)
    if steps == 1 or chunk < 2:
        _lstm_region(inp, out, params, meta, row, arena, slots, parts, weights, w_offs, 0,
                     steps, False, proj, xbuf, h_even, h_odd, part_gates, part_full, part_u,
                     np.zeros((1 + steps, width), np.int64))
        return
    for t0 in range(0, steps, chunk):
        n_steps = min(chunk, steps - t0)
        _gather_chunk(xbuf, inp, nb, t0, n_steps, n_in)
        _lstm_region(inp, out, params, meta, row, arena, slots, parts, weights, w_offs, t0,
                     n_steps, True, proj, xbuf, h_even, h_odd, part_gates, part_full, part_u,
                     np.zeros((1 + n_steps, width), np.int64))


@numba.njit(**JIT_OPTIONS)
def _any_layer(inp, out, params, meta, layer, arena, slots, parts, weights, offsets,
               min_hidden, scratch, proj, part_gates, part_full, part_extra, part_u):
    """Layer ``layer``: split when :func:`pack_split` made blocks for it and it has at least
    ``min_hidden`` units, the fused loops otherwise."""
    nb = inp.shape[0]
    row = nw.HEADER + layer * nw.LAYER_FIELDS
    if (offsets[layer, 0] >= 0 and meta[row + nw.L_HIDDEN] >= min_hidden
            and meta[row + nw.L_CELL] == nw.GRU):
        _gru_layer_split(inp, out, params, meta, row, arena, slots, parts, weights,
                         offsets[layer], part_gates, part_extra, part_full)
    elif offsets[layer, 0] >= 0 and meta[row + nw.L_HIDDEN] >= min_hidden:
        _lstm_layer_split(inp, out, params, meta, row, arena, slots, parts, weights,
                          offsets[layer], proj, scratch[7], part_gates, part_full, part_u)
    else:
        _layer(inp, out, params, meta, layer, arena, slots, 0, nb, scratch[0], scratch[1],
               scratch[2], scratch[3])


@numba.njit(**JIT_OPTIONS)
def _forward_split(x, params, meta, arena, slots, y, head_out, weights, offsets, min_hidden):
    """The forward pass of a few streams (one block): the layers :func:`pack_split` made
    blocks for and at least ``min_hidden`` wide split over ``offsets.shape[1]`` threads,
    the others as in the fused loops.
    """
    nb = x.shape[0]
    steps = x.shape[1]
    parts = offsets.shape[1]
    n_layers = meta[nw.N_LAYERS]
    width = meta[nw.MAX_WIDTH]
    n_features = x.shape[2]
    seq_a = np.empty((nb if n_layers > 1 else 0, steps, width), np.float32)
    seq_b = np.empty((nb if n_layers > 2 else 0, steps, width), np.float32)
    plane, chunk = _scratch_shape(meta, nb, steps, n_features)
    scratch = np.empty((8, nb * chunk, plane), np.float32)
    size = _part_size(meta[nw.MAX_HIDDEN], parts)
    proj = np.empty((nb * chunk, parts * padded_width(4 * size)), np.float32)
    part_gates = np.empty((parts, nb, padded_width(4 * size)), np.float32)
    part_full = np.empty((parts, nb, size), np.float32)
    part_extra = np.empty((parts, nb, padded_width(3 * size)), np.float32)
    part_u = np.empty((parts, nb, width + max(width, n_features)), np.float32)
    for layer in range(n_layers):
        src, dst = _sequences(layer, n_layers, x, y, seq_a, seq_b)
        _any_layer(src, dst, params, meta, layer, arena, slots, parts, weights, offsets,
                   min_hidden, scratch, proj, part_gates, part_full, part_extra, part_u)
    _head(y, params, meta, 0, nb, head_out, scratch[4], scratch[5])
