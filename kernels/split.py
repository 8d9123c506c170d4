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
from typing import NamedTuple

import numba
import numpy as np

from statecast.kernels import network as nw
from statecast.kernels.atomics import atomic_add, atomic_cas, atomic_load, yield_cpu
from statecast.kernels.cells import (
    U,
    _gather_h,
    _gather_inputs,
    _gather_steps,
    _gru_cells,
    _gru_reset_after,
    _gru_rz,
    _head,
    _lstm_cells,
    _scratch_shape,
    _sequences,
)
from statecast.kernels.config import JIT_OPTIONS, LEAF_OPTIONS
from statecast.kernels.fused import _layer
from statecast.kernels.operands import Buffers, Layer, Panels, Streams, Strided
from statecast.kernels.panels import (
    PANEL,
    aligned,
    layer_matrices,
    padded_width,
    panel_product,
    with_bias_rows,
)

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


class Parts(NamedTuple):
    """A split layer's weights: ``offsets[part]`` is where the block of each part starts in
    ``weights`` (:func:`pack_split`; -1 everywhere for a layer that is not split)."""

    weights: np.ndarray
    offsets: np.ndarray


class SplitBuffers(NamedTuple):
    """A call's buffers: ``proj``, a chunk's input projections, each part's columns side by
    side; ``xbuf``, the chunk's inputs; ``h_even``/``h_odd``, ``h`` after the even and odd
    steps ``[nb, >= H]``; per part (``[parts, nb, width]``) its ``gates``, the GRU's
    recurrent product ``extra``, its new ``h`` ``full``, and ``u``, a step's ``[x_t, h]``."""

    proj: np.ndarray
    xbuf: np.ndarray
    h_even: np.ndarray
    h_odd: np.ndarray
    gates: np.ndarray
    full: np.ndarray
    extra: np.ndarray
    u: np.ndarray


@numba.njit(**LEAF_OPTIONS)
def _part(layer, parts, p, per_unit):
    """Part ``p`` of a split layer of ``per_unit`` gates per unit: ``(inputs, hidden,
    size, j0, n, width, block)``, the layer's widths, units per part, the part's first unit
    and unit count, its gate columns padded to whole panels, and its block as
    :class:`~kernels.operands.Panels` (``offset`` the block's start, depth all its rows)."""
    meta, row = layer.meta, layer.row
    n_in = meta[row + nw.L_IN]
    hidden = meta[row + nw.L_HIDDEN]
    size = _part_size(hidden, parts.offsets.shape[0])
    n = min(size, hidden - p * size)
    width = padded_width(per_unit * n)
    block = Panels(parts.weights, parts.offsets[p], (n_in + hidden) * PANEL, n_in + hidden,
                   width // PANEL)
    return n_in, hidden, size, p * size, n, width, block


@numba.njit(**LEAF_OPTIONS)
def _rows(block, skip, first, depth):
    """``depth`` rows from row ``first`` of a part's panels, which start ``skip`` floats
    (its bias rows) into its ``block``."""
    return Panels(block.array, block.offset + skip + first * PANEL, block.stride, depth,
                  block.n_panels)


@numba.njit(**LEAF_OPTIONS)
def _store_units(layer, streams, out, t, full, j0, n, h_next):
    """The new ``h`` of units ``j0 .. j0+n`` (``full``) to the arena, ``out[:, t]`` and
    ``h_next``."""
    arena, slots, _, nb = streams
    ju = U(j0)
    at = U(layer.meta[layer.row + nw.L_H_OFF] + j0)
    for s in range(nb):
        slot = slots[s]
        for j in range(U(n)):
            h = full[s, j]
            arena[slot, at + j] = h
            out[s, t, ju + j] = h
            h_next[s, ju + j] = h


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
    meta = net.meta
    n_layers = int(meta[nw.N_LAYERS])
    offsets = np.full((n_layers, parts), -1, np.int64)
    blocks: list[np.ndarray] = []
    for layer in range(n_layers):
        row = nw.HEADER + layer * nw.LAYER_FIELDS
        hidden = int(meta[row + nw.L_HIDDEN])
        lstm = meta[row + nw.L_CELL] == nw.LSTM
        if hidden < min_hidden or (meta[row + nw.L_W_HR] >= 0 if lstm
                                   else not meta[row + nw.L_FLAGS] & nw.FLAG_RESET_AFTER):
            continue
        b_ih, b_hh, stacked = layer_matrices(net, row)
        biases = [b_ih + b_hh] if lstm else [b_ih, b_hh]
        for part, columns in _parts_columns(hidden, 4 if lstm else 3, parts):
            offsets[layer, part] = sum(block.size for block in blocks)
            blocks.append(with_bias_rows([bias[columns] for bias in biases], stacked[:, columns]))
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



@numba.njit(parallel=True, **JIT_OPTIONS)
def _gru_layer_split(inp, out, layer, streams, parts, bufs):
    """One GRU layer (reset after the product) over all steps of a few streams, each
    step's units split over the parts' threads, in one parallel region (the threads meet on
    atomic counters after each step, as in :func:`_lstm_region`)."""
    nb = streams.nb
    steps = inp.shape[1]
    n_in = layer.meta[layer.row + nw.L_IN]
    count = parts.offsets.shape[0]
    xs = np.empty((steps * nb, n_in), np.float32)
    _gather_steps(xs, inp, 0, nb, 0, steps, n_in)
    _gather_h(bufs.h_even, 0, streams, layer.meta[layer.row + nw.L_H_OFF],
              layer.meta[layer.row + nw.L_HIDDEN])
    width = max(16, count + 1)
    claims = np.zeros(steps * width, np.int64)
    for worker in numba.prange(count):
        for t in range(steps):
            step = t * width
            for k in range(count):
                p = (worker + k) % count
                if atomic_cas(claims, step + p, 0, 1) == 0:
                    _gru_part_step(xs, out, layer, streams, parts, bufs, p, t)
                    atomic_add(claims, step + width - 1, 1)
            _await_parts(claims, step + width - 1, count)


@numba.njit(**LEAF_OPTIONS)
def _gru_part_step(xs, out, layer, streams, parts, bufs, p, t):
    """Step ``t`` of the units of part ``p`` of a GRU layer on the part's buffers, from the
    inputs ``xs`` (row ``t * nb + s``); ``h`` from ``bufs.h_even``/``h_odd`` by the
    step's parity, into the other."""
    nb = streams.nb
    n_in, hidden, _, j0, n, width, rows = _part(layer, parts, p, 3)
    if n <= 0:
        return
    h_prev = bufs.h_even if t % 2 == 0 else bufs.h_odd
    gx, gh, full = bufs.gates[p], bufs.extra[p], bufs.full[p]
    panel_product(nb, Strided(xs, t * nb * n_in, n_in), _rows(rows, 2 * width, 0, n_in),
                  Strided(parts.weights, rows.offset, 0), Strided(gx, 0, gx.shape[1]))
    panel_product(nb, Strided(h_prev, 0, h_prev.shape[1]), _rows(rows, 2 * width, n_in, hidden),
                  Strided(parts.weights, rows.offset + width, 0), Strided(gh, 0, gh.shape[1]))
    _gru_rz(layer, nb, gx, gh, n)
    _gru_reset_after(nb, gx, gh, n)
    _gru_cells(layer, nb, gx, h_prev, j0, n, full)
    _store_units(layer, streams, out, t, full, j0, n,
                 bufs.h_odd if t % 2 == 0 else bufs.h_even)


@numba.njit(parallel=True, **JIT_OPTIONS)
def _lstm_region(inp, out, layer, streams, parts, bufs, t0, n_steps, projected):
    """Steps ``t0 .. t0+n_steps`` of an LSTM layer in one parallel region: the threads meet
    after each step on atomic counters instead of leaving and re-entering a parallel loop
    (~2 us each on this class of machine).

    With ``projected``, the inputs of these steps (``bufs.xbuf``, row ``dt * nb + s``)
    are projected first, each part's columns of ``bufs.proj``; each step then adds ``h @
    w_hh``. Without, each step is one product over ``[x_t, h]`` and the stacked rows (one
    step, or chunks too small to project).

    Work is claimed (``claims``, rows of ``> parts`` zeros: row 0 the projections, row
    ``1 + dt`` step ``dt``; a flag per part, the count done in the last column): a thread
    first claims the part of its own index (whose weights its cache holds), then any other
    not yet claimed, then waits until all are done. A thread that starts late, or never
    (one thread, a nested call), finds its parts done by the others: nobody waits on a
    thread that is not running. Inside the region the threads only pass the bundles on to
    kernels without Numba's runtime: reading a bundle's array here would update its shared
    reference count from every thread.
    """
    count = parts.offsets.shape[0]
    rows = streams.nb * n_steps
    width = max(16, count + 1)
    claims = np.zeros((1 + n_steps) * width, np.int64)
    for worker in numba.prange(count):
        if projected:
            for k in range(count):
                p = (worker + k) % count
                if atomic_cas(claims, p, 0, 1) == 0:
                    _lstm_part_projection(layer, parts, bufs, p, rows)
                    atomic_add(claims, width - 1, 1)
            _await_parts(claims, width - 1, count)
        for dt in range(n_steps):
            step = (1 + dt) * width
            for k in range(count):
                p = (worker + k) % count
                if atomic_cas(claims, step + p, 0, 1) == 0:
                    _lstm_part_step(inp, out, layer, streams, parts, bufs, p, t0 + dt,
                                    dt if projected else -1)
                    atomic_add(claims, step + width - 1, 1)
            _await_parts(claims, step + width - 1, count)


@numba.njit(**LEAF_OPTIONS)
def _lstm_part_projection(layer, parts, bufs, p, rows):
    """``b + x @ w_ih`` of the first ``rows`` rows of ``bufs.xbuf``, part ``p``'s columns,
    into its columns of ``bufs.proj``."""
    n_in, _, size, _, n, width, block = _part(layer, parts, p, 4)
    if n <= 0:
        return
    xbuf, proj = bufs.xbuf, bufs.proj
    panel_product(rows, Strided(xbuf, 0, xbuf.shape[1]), _rows(block, width, 0, n_in),
                  Strided(parts.weights, block.offset, 0),
                  Strided(proj, p * padded_width(4 * size), proj.shape[1]))


@numba.njit(**LEAF_OPTIONS)
def _lstm_part_step(inp, out, layer, streams, parts, bufs, p, t, dt):
    """Step ``t`` of the units of part ``p`` of an LSTM layer on the part's buffers: the
    gates from step ``dt`` of the projected chunk plus ``h @ w_hh``, or, with ``dt < 0``,
    ``b + [x_t, h] @ [w_ih; w_hh]``; then the cell update. ``h`` from
    ``bufs.h_even``/``h_odd`` by the step's parity, into the other."""
    nb = streams.nb
    n_in, hidden, size, j0, n, width, block = _part(layer, parts, p, 4)
    if n <= 0:
        return
    h_prev = bufs.h_even if t % 2 == 0 else bufs.h_odd
    gates, u, proj = bufs.gates[p], bufs.u[p], bufs.proj
    if dt >= 0:
        columns = proj.shape[1]
        panel_product(nb, Strided(h_prev, 0, h_prev.shape[1]), _rows(block, width, n_in, hidden),
                      Strided(proj, dt * nb * columns + p * padded_width(4 * size), columns),
                      Strided(gates, 0, gates.shape[1]))
    else:
        _gather_inputs(u, inp, 0, nb, t, n_in)
        for s in range(nb):
            for j in range(U(hidden)):
                u[s, U(n_in) + j] = h_prev[s, j]
        panel_product(nb, Strided(u, 0, u.shape[1]), _rows(block, width, 0, n_in + hidden),
                      Strided(parts.weights, block.offset, 0), Strided(gates, 0, gates.shape[1]))
    _lstm_cells(layer, streams, gates, bufs.full[p], j0, n)
    _store_units(layer, streams, out, t, bufs.full[p], j0, n,
                 bufs.h_odd if t % 2 == 0 else bufs.h_even)


@numba.njit(**JIT_OPTIONS)
def _lstm_layer_split(inp, out, layer, streams, parts, bufs):
    """One LSTM layer without projection over all steps of a few streams, each step's units
    split over the parts' threads (see the module docstring)."""
    steps = inp.shape[1]
    meta, row = layer.meta, layer.row
    n_in = meta[row + nw.L_IN]
    chunk = min(steps, bufs.proj.shape[0] // streams.nb)
    _gather_h(bufs.h_even, 0, streams, meta[row + nw.L_H_OFF], meta[row + nw.L_HIDDEN])
    if steps == 1 or chunk < 2:
        _lstm_region(inp, out, layer, streams, parts, bufs, 0, steps, False)
        return
    for t0 in range(0, steps, chunk):
        n_steps = min(chunk, steps - t0)
        _gather_steps(bufs.xbuf, inp, 0, streams.nb, t0, n_steps, n_in)
        _lstm_region(inp, out, layer, streams, parts, bufs, t0, n_steps, True)


@numba.njit(**JIT_OPTIONS)
def _forward_split(x, params, meta, arena, slots, y, head_out, weights, offsets):
    """The forward pass of a few streams (one block): the layers :func:`pack_split` made
    blocks for split over ``offsets.shape[1]`` threads, the others in the fused loops.
    """
    nb = x.shape[0]
    steps = x.shape[1]
    count = offsets.shape[1]
    n_layers = meta[nw.N_LAYERS]
    width = meta[nw.MAX_WIDTH]
    n_features = x.shape[2]
    seq_a = np.empty((nb if n_layers > 1 else 0, steps, width), np.float32)
    seq_b = np.empty((nb if n_layers > 2 else 0, steps, width), np.float32)
    plane, chunk = _scratch_shape(meta, nb, steps, n_features)
    scratch = np.empty((6, nb * chunk, plane), np.float32)
    size = _part_size(meta[nw.MAX_HIDDEN], count)
    bufs = SplitBuffers(
        np.empty((nb * chunk, count * padded_width(4 * size)), np.float32),
        np.empty((nb * chunk, max(n_features, width)), np.float32),
        np.empty((nb, meta[nw.MAX_HIDDEN]), np.float32),
        np.empty((nb, meta[nw.MAX_HIDDEN]), np.float32),
        np.empty((count, nb, padded_width(4 * size)), np.float32),
        np.empty((count, nb, size), np.float32),
        np.empty((count, nb, padded_width(3 * size)), np.float32),
        np.empty((count, nb, width + max(width, n_features)), np.float32))
    fused = Buffers(scratch[0], scratch[1], scratch[2], scratch[3])
    streams = Streams(arena, slots, 0, nb)
    for index in range(n_layers):
        src, dst = _sequences(index, n_layers, x, y, seq_a, seq_b)
        layer = Layer(params, meta, nw.HEADER + index * nw.LAYER_FIELDS)
        parts = Parts(weights, offsets[index])
        if offsets[index, 0] < 0:
            _layer(src, dst, layer, streams, fused)
        elif meta[layer.row + nw.L_CELL] == nw.GRU:
            _gru_layer_split(src, dst, layer, streams, parts, bufs)
        else:
            _lstm_layer_split(src, dst, layer, streams, parts, bufs)
    _head(y, params, meta, 0, nb, head_out, scratch[4], scratch[5])
