"""Stateful multi-layer LSTM/GRU forward pass over a batch of streams, state kept in an arena.

``forward`` runs a window ``x [streams, time, features]`` through a packed network
(:mod:`kernels.network`). Stream ``b`` reads its state from ``arena[slots[b]]`` and leaves
its new state there, in place: the service keeps every stream of a model version in one
arena and runs any set of them without copies.

From ``PANEL_MIN_STREAMS`` (two) streams on, :mod:`kernels.batched` computes the gates by
matrix products against weights packed into panels (:mod:`kernels.panels`). One stream
takes the same path for several steps and the fused loops for one (:func:`_one_core`),
or spreads its steps over the threads (:mod:`kernels.split`) when a layer is wide enough
and that has been faster. The fused loops also take blocks of ``STREAM_BLOCK`` streams
(sharing each weight-row load); only tests send them more than one stream now. Every path
computes each gate as the same chain of multiply-adds, so a stream's results do not
depend on the path, the other streams of its call or the number of threads.
"""

from __future__ import annotations

import threading
import time

import numba
import numpy as np

from kernels import network as nw
from kernels.batched import PANEL_MIN_STREAMS, forward_panels
from kernels.cells import _head, _layer, _scratch_shape
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
#: Calls of a shape between tries of the path that has been slower (its time is followed
#: too, so that the choice turns when the machine's load does), at first and at most.
PROBE_EVERY = 16
PROBE_MOST = 1024
#: Weight of a call's time in the moving average of its path.
_TIMING_WEIGHT = 0.25
#: A call slower than this many times its path's average (the other's, for its first)
#: counts as that many times: a split call whose partner thread lost its core for a
#: scheduler tick took 2.5-3 ms among 100-300 us ones (measured), and taken whole it
#: turned the choice for hundreds of calls (a slow first call: for the whole benchmark).
_OUTLIER = 3.0


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
        # Input projections of several steps at once (LSTM): rows for a chunk of steps.
        plane, chunk = _scratch_shape(meta, nb, steps, n_features)
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


class _PathTimes:
    """Moving averages of the seconds per step of the fused loops and of the split path
    for one network and call shape, and when next to try the one that has been slower
    (after ``PROBE_EVERY`` calls, then less often each time a try confirms it, and in
    proportion to how much slower it was, down to one in ``PROBE_MOST``: under load a try
    of the split path can cost as much as 40 calls)."""

    __slots__ = ("calls", "interval", "next_probe", "seconds", "warm")

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0]  # fused, split
        self.warm = [False, False]
        self.calls = 0
        self.interval = PROBE_EVERY
        self.next_probe = PROBE_EVERY

    def choose(self) -> tuple[bool, bool]:
        """``(split, probe)`` for the next call: each path twice first, then the faster,
        the other when a try is due."""
        self.calls += 1
        fused, split = self.seconds
        if not fused:
            return False, False
        if not split:
            return True, False
        probe = self.calls >= self.next_probe
        return (split < fused) != probe, probe

    def record(self, split: bool, probe: bool, seconds: float) -> None:
        """A call's seconds per step; a try replaces its path's stale average. A path's
        first call is not counted: it packs that path's weights (and may compile), 1-400
        ms where later calls take 0.1 ms (measured)."""
        path = 1 if split else 0
        if not self.warm[path]:
            self.warm[path] = True
            return
        previous = self.seconds[path]
        # A path's first counted call is measured against the other path's average.
        usual = previous or self.seconds[1 - path]
        if usual:
            seconds = min(seconds, _OUTLIER * usual)
        self.seconds[path] = seconds if probe or not previous else previous + (
            _TIMING_WEIGHT * (seconds - previous))
        if probe:
            other = self.seconds[1 - path]
            if self.seconds[path] >= other:
                # Still slower: try it again later, the later the costlier the try was.
                ratio = self.seconds[path] / other
                self.interval = min(PROBE_MOST, max(2 * self.interval,
                                                    int(PROBE_EVERY * ratio)))
            else:
                self.interval = PROBE_EVERY
            self.next_probe = self.calls + self.interval


def _one_core(net: nw.PackedNetwork, x: np.ndarray, arena: np.ndarray, slots: np.ndarray,
              y: np.ndarray, head_out: np.ndarray) -> None:
    """A few streams on one core: several steps as panel products (one stream x 24 steps,
    2 layers of 32-128 units: 1.4-2x faster than the fused loops, measured), one step in the
    fused loops (fewer arguments and buffers: ~0.5 us less on a 3 us call)."""
    if x.shape[1] > 1:
        forward_panels(x, net, arena, slots, y, head_out)
    else:
        _forward_serial(x, net.params, net.meta, arena, slots, y, head_out)


def _forward_few(net: nw.PackedNetwork, x: np.ndarray, arena: np.ndarray, slots: np.ndarray,
                 y: np.ndarray, head_out: np.ndarray, min_hidden: int) -> None:
    """One block of streams of a network with a layer of ``min_hidden`` units or more (wide
    enough for the split path at this call's shape): one core (:func:`_one_core`) or the
    split path, whichever has been faster for calls of this shape. (Calls with no such
    layer do not come here, and so are not seen as overlapping others.)

    The split path spends every core on one call. It steps aside while calls overlap in
    this process (threaded workers get more done on one core each) and, through the
    timings, when other work keeps the cores busy (its threads then wait for each other:
    measured 3x slower on average, some calls 25x). Both paths give the same results bit
    for bit.
    """
    global _last_overlap
    streams, steps = x.shape[0], x.shape[1]
    me = threading.get_ident()
    now = time.monotonic()
    if _running:
        _last_overlap = now
    threads = numba.get_num_threads()
    eligible = now - _last_overlap > OVERLAP_QUIET and threads > 1
    _running.add(me)
    try:
        if not eligible:
            _one_core(net, x, arena, slots, y, head_out)
            return
        key = ("timing", streams, steps > 1)
        timing = net.derived.get(key)
        if timing is None:
            timing = net.derived[key] = _PathTimes()
        assert isinstance(timing, _PathTimes)
        split, probe = timing.choose()
        started = time.perf_counter()
        if split:
            weights, offsets = split_weights(net, threads, SPLIT_MIN_HIDDEN)
            _forward_split(x, net.params, net.meta, arena, slots, y, head_out, weights,
                           offsets, min_hidden)
        else:
            _one_core(net, x, arena, slots, y, head_out)
        timing.record(split, probe, (time.perf_counter() - started) / steps)
    finally:
        _running.discard(me)


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
    if x.shape[0] >= PANEL_MIN_STREAMS:
        forward_panels(x, net, arena, slots, y, head_out)
        return
    if x.shape[0] <= STREAM_BLOCK:
        min_hidden = split_min_hidden(x.shape[0], x.shape[1])
        if net.widest_splittable < min_hidden:
            # No layer this call could split: no timing or overlap bookkeeping (~1 us).
            _one_core(net, x, arena, slots, y, head_out)
        else:
            _forward_few(net, x, arena, slots, y, head_out, min_hidden)
        return
    run = _forward_serial
    if numba.get_num_threads() > 1:
        run = _forward_parallel
    run(x, net.params, net.meta, arena, slots, y, head_out)
