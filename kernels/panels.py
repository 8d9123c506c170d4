"""Gate products against weights packed once into column panels.

A step of a layer over a block of streams is a matrix product ``[streams, K] @ [K, gates]``
with small ``streams`` and weights that never change. OpenBLAS (what ``np.dot`` calls in
Numba) copies its right operand into its own panel layout on every call and is tuned for
large products: on one Zen 5 core it reached 67-130 GFLOP/s on such shapes (``[32, 256] @
[256, 1024]``: 95). Here the weights are copied into panels once per network
(:func:`pack_panels`), and a register-tiled kernel, emitted as LLVM IR because Numba has no
vector type, keeps a tile of ``TILE_ROWS x PANEL`` sums in vector registers while it walks
down a panel: 190-223 GFLOP/s on the same shapes (measured). Tiles of
fewer rows span several panels, so that one stream (a matrix-vector product) also keeps 16
sums in flight; the split path (:mod:`kernels.split`) packs each thread's columns the same
way. The tile's width follows the target Numba compiles for (:mod:`kernels.target`).

Each output is one multiply-add chain over ``k`` in order (fused where the target has FMA),
started from its ``src`` value (a bias or the input projection): a stream's result does not
depend on which other streams share the tile, the block or the call.

Panel layout, per recurrent layer (``panel_offsets[layer]`` is where it starts): three rows
of ``padded`` floats (``b_ih``, ``b_hh`` or zeros, and their sum), then one panel per
``PANEL`` gate columns, ``[inputs + R, PANEL]`` each: the rows of ``[w_ih; w_hh]`` (``R``
= P or H), zero beyond the last gate column. ``padded`` is the gate count rounded up to a
whole panel; buffers the kernels write gates into have rows that wide.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from statecast.kernels import network as nw
from statecast.kernels.config import JIT_DISABLED, LEAF_OPTIONS
from statecast.kernels.operands import Panels, Strided
from statecast.kernels.target import GEOMETRY

LANES, VECTORS = GEOMETRY.lanes, GEOMETRY.vectors
#: Gate columns per panel, and output rows per tile.
PANEL = GEOMETRY.panel
TILE_ROWS = 4


@numba.njit(**LEAF_OPTIONS)
def padded_width(columns):
    """``columns`` rounded up to whole panels (from Python and from kernels)."""
    return (columns + PANEL - 1) // PANEL * PANEL


def _tile(typingctx: Any, rows: Any, group: Any, a: Any, w: Any, src: Any, dst: Any) -> Any:
    """``dst[r, c] = src[r, c] + a[r, :k] @ W[:k, c]`` for ``r < rows`` and the ``group *
    PANEL`` columns ``c`` of ``group`` adjacent panels (``rows`` and ``group`` literals,
    ``rows * group <= TILE_ROWS``: at most 16 vector sums). ``a``, ``src`` and ``dst`` are
    :class:`~kernels.operands.Strided`, ``w`` :class:`~kernels.operands.Panels` (``k`` its
    depth; its ``n_panels`` is ignored: ``group`` panels are read)."""
    if not (isinstance(rows, types.IntegerLiteral) and isinstance(group, types.IntegerLiteral)):
        return None
    n_rows, n_panels = rows.literal_value, group.literal_value
    signature = types.void(rows, group, a, w, src, dst)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        def unpack(index: int, fields: int) -> Any:
            return cgutils.unpack_tuple(builder, args[index], fields)

        (a_array, a_off, lda), (s_array, s_off, lds), (d_array, d_off, ldd) = (
            unpack(2, 3), unpack(4, 3), unpack(5, 3))
        w_array, w_off, w_stride, k_len, _ = unpack(3, 5)

        def base(index: int, array: Any, offset: Any) -> Any:
            array_type = sig.args[index].types[0]
            data = context.make_array(array_type)(context, builder, array).data
            return builder.gep(data, [offset])

        def const(value: int) -> Any:
            return ir.Constant(ir.IntType(64), value)

        vector = ir.VectorType(ir.FloatType(), LANES)
        pointer = vector.as_pointer()
        # fmuladd, not fma: fused where the target has FMA, a multiply then an add where it
        # has not, exactly as the contracted ``a * b + c`` of the scalar loops.
        fma = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vector, [vector] * 3), f"llvm.fmuladd.v{LANES}f32")
        width = VECTORS * n_panels

        def vector_at(row_base: Any, v: int) -> Any:
            return builder.bitcast(builder.gep(row_base, [const(v * LANES)]), pointer)

        a_base = base(2, a_array, a_off)
        w_bases = [base(3, w_array, builder.add(w_off, builder.mul(w_stride, const(g))))
                   for g in range(n_panels)]
        s_base, d_base = base(4, s_array, s_off), base(5, d_array, d_off)
        # Accumulators live in allocas that LLVM promotes to registers.
        sums = []
        for r in range(n_rows):
            s_row = builder.gep(s_base, [builder.mul(lds, const(r))])
            for v in range(width):
                slot = cgutils.alloca_once(builder, vector)
                builder.store(builder.load(vector_at(s_row, v), align=4), slot)
                sums.append(slot)
        a_rows = [builder.gep(a_base, [builder.mul(lda, const(r))]) for r in range(n_rows)]
        undefined = ir.Constant(vector, ir.Undefined)
        splat = ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES)
        with cgutils.for_range(builder, k_len) as loop:
            offset = builder.mul(loop.index, const(PANEL))
            weights = []
            for g in range(n_panels):
                w_row = builder.gep(w_bases[g], [offset])
                weights += [builder.load(vector_at(w_row, v), align=4) for v in range(VECTORS)]
            for r in range(n_rows):
                value = builder.load(builder.gep(a_rows[r], [loop.index]))
                broadcast = builder.shuffle_vector(
                    builder.insert_element(undefined, value, ir.Constant(ir.IntType(32), 0)),
                    undefined, splat)
                for v in range(width):
                    slot = sums[r * width + v]
                    builder.store(builder.call(fma, [broadcast, weights[v], builder.load(slot)]),
                                  slot)
        for r in range(n_rows):
            d_row = builder.gep(d_base, [builder.mul(ldd, const(r))])
            for v in range(width):
                builder.store(builder.load(sums[r * width + v]), vector_at(d_row, v), align=4)
        return context.get_dummy_value()

    return signature, codegen


#: Callable from kernels only.
tile: Any = intrinsic(_tile)


# The helpers below return bundles: callable from ``LEAF_OPTIONS`` kernels only.


@numba.njit(**LEAF_OPTIONS)
def _down(m, rows):
    """The :class:`~kernels.operands.Strided` matrix ``m`` from its row ``rows`` on."""
    return Strided(m.array, m.offset + rows * m.stride, m.stride)


@numba.njit(**LEAF_OPTIONS)
def _right(m, panels):
    """``m`` from its column ``panels * PANEL`` on."""
    return Strided(m.array, m.offset + panels * PANEL, m.stride)


@numba.njit(**LEAF_OPTIONS)
def _skip(w, first):
    """The panels of ``w`` from its panel ``first`` on."""
    return Panels(w.array, w.offset + first * w.stride, w.stride, w.depth, w.n_panels - first)


@numba.njit(**LEAF_OPTIONS)
def panel_rows(w, first, depth):
    """Rows ``first .. first+depth`` of the panels ``w`` (e.g. a layer's ``w_hh`` rows after
    its ``w_ih`` rows)."""
    return Panels(w.array, w.offset + first * PANEL, w.stride, depth, w.n_panels)


@numba.njit(**LEAF_OPTIONS)
def _row_panels(rows, a, w, src, dst):
    """:func:`panel_product` for 1 to 3 rows: tiles span several panels (1 row: four, 2
    rows: two), so that every tile keeps 8-16 independent sums in flight (one row of one
    panel is four chains of dependent multiply-adds, which the FMA latency would bound)."""
    p = 0
    if rows == 1:
        while p + 4 <= w.n_panels:
            tile(1, 4, a, _skip(w, p), _right(src, p), _right(dst, p))
            p += 4
        if p + 2 <= w.n_panels:
            tile(1, 2, a, _skip(w, p), _right(src, p), _right(dst, p))
            p += 2
    elif rows == 2:
        while p + 2 <= w.n_panels:
            tile(2, 2, a, _skip(w, p), _right(src, p), _right(dst, p))
            p += 2
    while p < w.n_panels:
        panel, s, d = _skip(w, p), _right(src, p), _right(dst, p)
        if rows == 1:
            tile(1, 1, a, panel, s, d)
        elif rows == 2:
            tile(2, 1, a, panel, s, d)
        else:
            tile(3, 1, a, panel, s, d)
        p += 1


@numba.njit(**LEAF_OPTIONS)
def panel_product(rows, a, w, src, dst):
    """``dst[r, c] = src[r, c] + sum_k a[r, k] * W[k, c]`` for ``r < rows`` and ``c <
    w.n_panels * PANEL``: ``a``, ``src`` and ``dst`` :class:`~kernels.operands.Strided`, ``W``
    the :class:`~kernels.operands.Panels` ``w``."""
    whole = rows - rows % TILE_ROWS
    if whole > 0:
        for p in range(w.n_panels):
            panel, s, d = _skip(w, p), _right(src, p), _right(dst, p)
            for r in range(0, whole, TILE_ROWS):
                tile(TILE_ROWS, 1, _down(a, r), panel, _down(s, r), _down(d, r))
    if whole < rows:
        _row_panels(rows - whole, _down(a, whole), w, _down(src, whole), _down(dst, whole))


def _panel_product_numpy(rows, a, w, src, dst):
    """:func:`panel_product` in NumPy for ``NUMBA_DISABLE_JIT=1`` (the tile is LLVM IR and
    cannot run in Python): the same chain per output, a float32 multiply then an add per
    term, as the Python fallback of every other loop computes it."""
    assert dst.array.flags.c_contiguous, "panel products write into contiguous buffers"
    flat_a, flat_w = a.array.reshape(-1), w.array.reshape(-1)
    flat_s, flat_d = src.array.reshape(-1), dst.array.reshape(-1)
    width = w.n_panels * PANEL
    weights = np.concatenate([
        flat_w[w.offset + p * w.stride:][:w.depth * PANEL].reshape(w.depth, PANEL)
        for p in range(w.n_panels)], axis=1)
    for r in range(rows):
        row = flat_a[a.offset + r * a.stride:][:w.depth]
        total = flat_s[src.offset + r * src.stride:][:width].copy()
        for k in range(w.depth):
            total = total + row[k] * weights[k]
        flat_d[dst.offset + r * dst.stride:][:width] = total


if JIT_DISABLED:
    panel_product = _panel_product_numpy


def aligned(values: np.ndarray) -> np.ndarray:
    """A float32 copy of ``values`` starting on a 64-byte boundary (a vector load then never
    straddles two cache lines)."""
    raw = np.empty(values.size + 16, np.float32)
    skip = (-raw.ctypes.data % 64) // 4
    copy = raw[skip:skip + values.size]
    copy[:] = values
    return copy


def as_panels(matrix: np.ndarray) -> np.ndarray:
    """``matrix [K, N]`` as flat panels: ``[padded N / PANEL, K, PANEL]``, zero-padded."""
    k, n = matrix.shape
    wide = np.zeros((k, padded_width(n)), np.float32)
    wide[:, :n] = matrix
    return wide.reshape(k, -1, PANEL).transpose(1, 0, 2).reshape(-1)


def with_bias_rows(biases: list[np.ndarray], matrix: np.ndarray) -> np.ndarray:
    """A block of the panel layout: each of ``biases`` (``[N]``) zero-padded to whole
    panels, then ``matrix [K, N]`` as panels (:func:`as_panels`)."""
    rows = np.zeros((len(biases), padded_width(matrix.shape[1])), np.float32)
    for row, bias in zip(rows, biases, strict=True):
        row[:bias.size] = bias
    return np.concatenate([rows.reshape(-1), as_panels(matrix)])


def pack_panels(net: nw.PackedNetwork) -> tuple[np.ndarray, np.ndarray]:
    """Every recurrent layer's biases and ``[w_ih; w_hh]`` in the panel layout (module
    docstring). Returns ``(weights, offsets)``, ``offsets[layer]`` being where the layer's
    block starts in ``weights``."""
    n_layers = int(net.meta[nw.N_LAYERS])
    offsets = np.zeros(n_layers, np.int64)
    blocks: list[np.ndarray] = []
    for layer in range(n_layers):
        b_ih, b_hh, stacked = layer_matrices(net, nw.HEADER + layer * nw.LAYER_FIELDS)
        offsets[layer] = sum(block.size for block in blocks)
        blocks.append(with_bias_rows([b_ih, b_hh, b_ih + b_hh], stacked))
    return aligned(np.concatenate(blocks)), offsets


def layer_matrices(net: nw.PackedNetwork, row: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(b_ih, b_hh, [w_ih; w_hh])`` of the recurrent layer at ``row`` of ``net.meta``
    (``b_hh`` zeros where the layer has none)."""
    meta, params = net.meta, net.params
    gates = int(meta[row + nw.L_HIDDEN]) * (4 if meta[row + nw.L_CELL] == nw.LSTM else 3)
    n_in, n_out = int(meta[row + nw.L_IN]), int(meta[row + nw.L_OUT])
    b_ih = params[meta[row + nw.L_B_IH]:][:gates]
    b_hh = (params[meta[row + nw.L_B_HH]:][:gates] if meta[row + nw.L_B_HH] >= 0
            else np.zeros(gates, np.float32))
    return b_ih, b_hh, np.concatenate([
        params[meta[row + nw.L_W_IH]:][:n_in * gates].reshape(n_in, gates),
        params[meta[row + nw.L_W_HH]:][:n_out * gates].reshape(n_out, gates)])
