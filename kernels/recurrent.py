"""Stateful multi-layer LSTM/GRU forward pass over a batch of streams, state kept in an arena.

``forward`` runs a window ``x [streams, time, features]`` through a packed network
(:mod:`kernels.network`). Stream ``b`` reads its state from ``arena[slots[b]]`` and leaves
its new state there, in place: the service keeps every stream of a model version in one
arena and runs any set of them without copies.

Below ``BLAS_MIN_STREAMS`` streams the fused loops run: work is split into blocks of
``STREAM_BLOCK`` streams; a block shares each weight-row load and is the unit handed to a
thread. From ``BLAS_MIN_STREAMS`` streams on, :mod:`kernels.batched` computes the gates by
BLAS matrix products. A stream's result never depends on the number of threads, and on
the other streams of its call only through the path taken (float32 rounding, relative
1e-6).
"""

from __future__ import annotations

import threading
import time

import numba
import numpy as np

from kernels import network as nw
from kernels.batched import BLAS_MIN_STREAMS, forward_blas
from kernels.cells import _head, _layer
from kernels.config import JIT_OPTIONS, STREAM_BLOCK, renamed
from kernels.split import _forward_split, split_weights

#: The narrowest LSTM or GRU layer whose steps a block of streams spreads over the threads
#: (:mod:`kernels.split`), by streams and steps of the call: the threads meet once per
#: step (~0.3 us) and enter a parallel region once per layer (1-2 us), which pays when a
#: step is long enough. Several steps: from hidden 128, or 64 with four streams or more;
#: one step (a parallel region per layer): from 256, or 128 with eight streams, or 64 with
#: sixteen. Measured on a 2-core Zen 5 (session 3 of issue 4).
SPLIT_MIN_HIDDEN = 64


def split_min_hidden(streams: int, steps: int) -> int:
    """The narrowest layer worth splitting for a call of this shape."""
    if steps > 1:
        return SPLIT_MIN_HIDDEN if streams >= 4 else 2 * SPLIT_MIN_HIDDEN
    if streams >= 16:
        return SPLIT_MIN_HIDDEN
    return 2 * SPLIT_MIN_HIDDEN if streams >= 8 else 4 * SPLIT_MIN_HIDDEN


#: Threads running a kernel call of a few streams of a model wide enough to split (set
#: operations are atomic under the GIL; the kernels run without it).
_running: set[int] = set()
#: When two such calls last overlapped (``time.monotonic()``).
_last_overlap = -1e9
#: Seconds without overlapping calls before a call splits again.
OVERLAP_QUIET = 1.0


#: Floats per scratch plane for the input projections of a chunk of steps (64 KiB).
_PROJECTION_VALUES = 16384


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
        # Input projections of several steps at once (LSTM): rows for a chunk of steps,
        # at most _PROJECTION_VALUES floats a plane.
        chunk = min(steps, max(1, _PROJECTION_VALUES // (nb * plane)))
        scratch = np.empty((8, nb * chunk, plane), np.float32)
        gates = scratch[0]
        extra = scratch[1]
        full = scratch[2]
        ubuf = scratch[3]
        cur = scratch[4]
        nxt = scratch[5]
        proj = scratch[6]
        xbuf = scratch[7]
        if n_layers == 1:
            _layer(x, y, params, meta, 0, arena, slots, s0, nb, gates, extra, full, ubuf,
                   proj, xbuf)
        else:
            _layer(x, seq_a, params, meta, 0, arena, slots, s0, nb, gates, extra, full, ubuf,
                   proj, xbuf)
            src, dst = seq_a, seq_b
            for layer in range(1, n_layers):
                target = y if layer == n_layers - 1 else dst
                _layer(src, target, params, meta, layer, arena, slots, s0, nb, gates, extra,
                       full, ubuf, proj, xbuf)
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
_forward_parallel = numba.njit(parallel=True, **JIT_OPTIONS)(renamed(_forward_impl, "_parallel"))


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
    if x.shape[0] >= BLAS_MIN_STREAMS:
        forward_blas(x, net.params, net.meta, arena, slots, y, head_out)
        return
    streams = x.shape[0]
    if streams <= STREAM_BLOCK:
        if net.widest_splittable < SPLIT_MIN_HIDDEN:
            _forward_serial(x, net.params, net.meta, arena, slots, y, head_out)
            return
        # Split only while calls do not overlap in this process: the split path spends every
        # core on one call, and calls running side by side (threaded workers) get more
        # done each on one core. One overlap turns splitting off for OVERLAP_QUIET seconds.
        global _last_overlap
        me = threading.get_ident()
        min_hidden = split_min_hidden(streams, x.shape[1])
        now = time.monotonic()
        if _running:
            _last_overlap = now
        alone = now - _last_overlap > OVERLAP_QUIET
        _running.add(me)
        try:
            if (alone and net.widest_splittable >= min_hidden
                    and (threads := numba.get_num_threads()) > 1):
                weights, offsets = split_weights(net, threads, SPLIT_MIN_HIDDEN)
                _forward_split(x, net.params, net.meta, arena, slots, y, head_out, weights,
                               offsets, min_hidden)
            else:
                _forward_serial(x, net.params, net.meta, arena, slots, y, head_out)
        finally:
            _running.discard(me)
        return
    run = _forward_serial
    if numba.get_num_threads() > 1:
        run = _forward_parallel
    run(x, net.params, net.meta, arena, slots, y, head_out)
