"""The forward pass for many streams: gate pre-activations by BLAS matrix products.

For a block of streams, one step of a layer is a matrix product ``[x_t, h] @ [W_ih; W_hh]``
(``streams x (inputs + hidden)`` by ``(inputs + hidden) x gates``) followed by the cell
update. The fused loops of :mod:`kernels.recurrent` reach 50-80 GFLOP/s on such products;
OpenBLAS's sgemm (``np.dot`` in Numba calls SciPy's) several times that. The cell update,
the projection of a projected LSTM and the head are shared with the fused path
(:mod:`kernels.cells`).

Threads: blocks of streams go to Numba's threads, and each block calls BLAS from its own
thread. Two thread pools spinning on the same cores slow each other ~100x, so
:func:`own_blas_threads` sets the BLAS Numba calls to one thread the first time this path
runs: the process's Numba threads do all the parallel work.
"""

from __future__ import annotations

import os
import threading

import numba
import numpy as np

from kernels import network as nw
from kernels.cells import (
    U,
    _gather_h,
    _gather_inputs,
    _gru_layer,
    _gru_update,
    _head,
    _lstm_update,
)
from kernels.config import JIT_OPTIONS, LEAF_OPTIONS, renamed


@numba.njit(**LEAF_OPTIONS)
def _add_bias(dst, params, b_off, b2_off, nb, n):
    """``dst[s, :n] += params[b_off:][:n] (+ params[b2_off:][:n] when b2_off >= 0)``.

    Unsigned indices, as in :mod:`kernels.cells`: with signed ones Numba's wraparound check
    keeps LLVM from vectorising (this loop cost a quarter of a step).
    """
    first = U(b_off)
    second = U(max(b2_off, 0))
    cols = U(n)
    for s in range(nb):
        if b2_off >= 0:
            for j in range(cols):
                dst[s, j] += params[first + j] + params[second + j]
        else:
            for j in range(cols):
                dst[s, j] += params[first + j]


#: Floats of input projections computed at once for a chunk of steps (1 MiB): enough
#: rows to make that product efficient, few enough that they are still in cache when read.
_PROJECTION_VALUES = 262144
#: Larger blocks keep the stacked product per step: their products are efficient anyway,
#: and the projections' extra pass over the gates cost 5-10% at 1024 streams (measured).
_CHUNKED_MAX_BLOCK = 64


@numba.njit(**JIT_OPTIONS)
def _lstm_layer_blas(inp, out, params, meta, row, arena, slots, s0, nb, scratch):
    """One LSTM layer over all steps of streams ``s0 .. s0+nb``; ``scratch`` is
    ``[4, >= nb * max(4H, inputs + P)]``.

    Several steps: the inputs of a chunk of steps in one product ``X @ W_ih`` first, then
    ``h @ W_hh`` per step. Besides reading ``W_ih`` once per chunk, this keeps the products'
    inner dimension at ``P``: for 32 streams at hidden 256 one ``[32, 512] @ [512, 1024]``
    product (OpenBLAS repacks its right operand each call) costs 1.7x the two halves with
    the inputs of 8 steps projected at once. One step, and blocks of more than
    ``_CHUNKED_MAX_BLOCK`` streams: one ``[x_t, h] @ [W_ih; W_hh]`` product per step.
    """
    n_in = meta[row + nw.L_IN]
    hidden = meta[row + nw.L_HIDDEN]
    n_out = meta[row + nw.L_OUT]
    n_gates = 4 * hidden
    n_u = n_in + n_out
    w_ih = meta[row + nw.L_W_IH]
    gates = scratch[0, :nb * n_gates].reshape((nb, n_gates))
    full = scratch[1, :nb * hidden].reshape((nb, hidden))
    u = scratch[2, :nb * n_u].reshape((nb, n_u))
    steps = inp.shape[1]
    chunk = min(steps, max(1, _PROJECTION_VALUES // (nb * n_gates)))
    if chunk < 2 or nb > _CHUNKED_MAX_BLOCK:
        # [w_ih; w_hh] are adjacent in params: one [inputs + P, 4H] matrix.
        weights = params[w_ih:w_ih + n_u * n_gates].reshape((n_u, n_gates))
        for t in range(steps):
            _gather_inputs(u, inp, s0, nb, t, n_in)
            _gather_h(u, n_in, arena, slots, s0, nb, meta[row + nw.L_H_OFF], n_out)
            np.dot(u, weights, gates)
            _add_bias(gates, params, meta[row + nw.L_B_IH], meta[row + nw.L_B_HH], nb,
                      n_gates)
            _lstm_update(out, params, meta, row, arena, slots, s0, nb, t, gates, full, u)
        return
    w_hh = meta[row + nw.L_W_HH]
    input_weights = params[w_ih:w_ih + n_in * n_gates].reshape((n_in, n_gates))
    hidden_weights = params[w_hh:w_hh + n_out * n_gates].reshape((n_out, n_gates))
    xs = np.empty((nb * chunk, n_in), np.float32)
    proj = np.empty((nb * chunk, n_gates), np.float32)
    h = scratch[3, :nb * n_out].reshape((nb, n_out))
    gu = U(n_gates)
    for t0 in range(0, steps, chunk):
        n = min(chunk, steps - t0)
        rows = n * nb
        for dt in range(n):
            for s in range(nb):
                for k in range(U(n_in)):
                    xs[dt * nb + s, k] = inp[s0 + s, t0 + dt, k]
        np.dot(xs[:rows], input_weights, proj[:rows])
        _add_bias(proj, params, meta[row + nw.L_B_IH], meta[row + nw.L_B_HH], rows, n_gates)
        for dt in range(n):
            _gather_h(h, 0, arena, slots, s0, nb, meta[row + nw.L_H_OFF], n_out)
            np.dot(h, hidden_weights, gates)
            for s in range(nb):
                r = dt * nb + s
                for j in range(gu):
                    gates[s, j] += proj[r, j]
            _lstm_update(out, params, meta, row, arena, slots, s0, nb, t0 + dt, gates, full,
                         u)


@numba.njit(**JIT_OPTIONS)
def _gru_layer_blas(inp, out, params, meta, row, arena, slots, s0, nb, scratch):
    """One GRU layer (reset after the product) over all steps of streams ``s0 .. s0+nb``;
    ``scratch`` is ``[5, >= nb * max(3H, inputs)]``."""
    n_in = meta[row + nw.L_IN]
    hidden = meta[row + nw.L_HIDDEN]
    n_gates = 3 * hidden
    w_ih = meta[row + nw.L_W_IH]
    w_hh = meta[row + nw.L_W_HH]
    input_weights = params[w_ih:w_ih + n_in * n_gates].reshape((n_in, n_gates))
    hidden_weights = params[w_hh:w_hh + hidden * n_gates].reshape((hidden, n_gates))
    gates = scratch[0, :nb * n_gates].reshape((nb, n_gates))
    extra = scratch[1, :nb * n_gates].reshape((nb, n_gates))
    full = scratch[2, :nb * hidden].reshape((nb, hidden))
    x = scratch[3, :nb * n_in].reshape((nb, n_in))
    h = scratch[4, :nb * hidden].reshape((nb, hidden))
    for t in range(inp.shape[1]):
        _gather_inputs(x, inp, s0, nb, t, n_in)
        np.dot(x, input_weights, gates)
        _add_bias(gates, params, meta[row + nw.L_B_IH], -1, nb, n_gates)
        _gather_h(h, 0, arena, slots, s0, nb, meta[row + nw.L_H_OFF], hidden)
        np.dot(h, hidden_weights, extra)
        _add_bias(extra, params, meta[row + nw.L_B_HH], -1, nb, n_gates)
        _gru_update(out, params, meta, row, arena, slots, s0, nb, t, gates, extra, full, h)


@numba.njit(**JIT_OPTIONS)
def _layer_blas(inp, out, params, meta, layer, arena, slots, s0, nb, scratch, plane):
    row = nw.HEADER + layer * nw.LAYER_FIELDS
    if meta[row + nw.L_CELL] == nw.LSTM:
        _lstm_layer_blas(inp, out, params, meta, row, arena, slots, s0, nb, scratch)
    elif (meta[row + nw.L_FLAGS] & nw.FLAG_RESET_AFTER) != 0:
        _gru_layer_blas(inp, out, params, meta, row, arena, slots, s0, nb, scratch)
    else:
        # Reset before the product: the n columns need r first; the fused loops do it.
        width = plane
        _gru_layer(inp, out, params, meta, row, arena, slots, s0, nb,
                   scratch[0, :nb * width].reshape((nb, width)),
                   scratch[1, :nb * width].reshape((nb, width)),
                   scratch[2, :nb * width].reshape((nb, width)),
                   scratch[3, :nb * width].reshape((nb, width)))


def _forward_blas_impl(x, params, meta, arena, slots, y, head_out, block):
    n_streams = x.shape[0]
    steps = x.shape[1]
    n_layers = meta[nw.N_LAYERS]
    width = meta[nw.MAX_WIDTH]
    n_features = x.shape[2]
    n_blocks = (n_streams + block - 1) // block
    plane = max(meta[nw.MAX_GATES], meta[nw.MAX_DENSE], width + max(width, n_features))
    seq_a = np.empty((n_streams if n_layers > 1 else 0, steps, width), np.float32)
    seq_b = np.empty((n_streams if n_layers > 2 else 0, steps, width), np.float32)
    for index in numba.prange(n_blocks):
        s0 = index * block
        nb = min(block, n_streams - s0)
        scratch = np.empty((5, nb * plane), np.float32)
        if n_layers == 1:
            _layer_blas(x, y, params, meta, 0, arena, slots, s0, nb, scratch, plane)
        else:
            _layer_blas(x, seq_a, params, meta, 0, arena, slots, s0, nb, scratch, plane)
            src, dst = seq_a, seq_b
            for layer in range(1, n_layers):
                target = y if layer == n_layers - 1 else dst
                _layer_blas(src, target, params, meta, layer, arena, slots, s0, nb, scratch,
                            plane)
                src, dst = dst, src
        _head(y, params, meta, s0, nb, head_out,
              scratch[0, :nb * plane].reshape((nb, plane)),
              scratch[1, :nb * plane].reshape((nb, plane)))


_forward_blas_serial = numba.njit(**JIT_OPTIONS)(_forward_blas_impl)
_forward_blas_parallel = numba.njit(parallel=True, **JIT_OPTIONS)(
    renamed(_forward_blas_impl, "_parallel"))

_owned = False
_owning = threading.Lock()


def own_blas_threads() -> None:
    """Limit the BLAS library Numba calls (SciPy's) to one thread, once per process.

    Only that library is limited when it can be told apart (SciPy wheels bundle their own
    OpenBLAS under ``scipy.libs``); otherwise every BLAS library in the process is.
    """
    global _owned
    if _owned:
        return
    with _owning:
        if _owned:
            return
        import scipy.linalg.cython_blas  # noqa: F401  (loads the library Numba calls)
        from threadpoolctl import ThreadpoolController

        controller = ThreadpoolController()
        marker = f"{os.sep}scipy.libs{os.sep}"
        scipy_blas = [lib for lib in controller.lib_controllers
                      if lib.user_api == "blas" and marker in lib.filepath]
        for lib in scipy_blas or [lib for lib in controller.lib_controllers
                                  if lib.user_api == "blas"]:
            lib.set_num_threads(1)
        _owned = True


#: From this many streams a call takes the BLAS path (measured: at 32 streams it is 1.2-1.9x
#: faster than the fused loops at hidden 64-256; below, packing the weights for each matrix
#: product costs more than it saves).
BLAS_MIN_STREAMS = 32
_MAX_BLOCK = 256


def blas_block(n_streams: int) -> int:
    """Streams per block on the BLAS path: half the call (one block per core on two cores),
    a multiple of 16, at most 256 (beyond, a block's gates no longer fit in L2).

    A function of the call's size only, never of the thread count, so that results do
    not depend on how many threads run.
    """
    half = (n_streams + 1) // 2
    return int(min(_MAX_BLOCK, max(16, (half + 15) // 16 * 16)))


def forward_blas(x: np.ndarray, params: np.ndarray, meta: np.ndarray, arena: np.ndarray,
                 slots: np.ndarray, y: np.ndarray, head_out: np.ndarray) -> None:
    """The BLAS path of :func:`kernels.recurrent.forward` (arguments already checked)."""
    own_blas_threads()
    block = blas_block(x.shape[0])
    run = _forward_blas_serial
    if x.shape[0] > block and numba.get_num_threads() > 1:
        run = _forward_blas_parallel
    run(x, params, meta, arena, slots, y, head_out, block)
