"""The engine: one object per packed network that owns the weights' derived copies and
chooses the kernel of every call. Nothing else in statecast decides which kernel runs.

=====================================  ==========================================  =========
call                                   path                                        module
=====================================  ==========================================  =========
one stream, one step                   fused loops: row axpys, fewest arguments    ``fused``
any other call                         panel products, blocks of streams on        ``batched``
                                       Numba's threads
one stream of a layer of >= 256       each step's hidden units over Numba's       ``split``
units, ``spread`` on, several Numba    threads, which meet on atomic counters
threads
=====================================  ==========================================  =========

``spread`` is a setting, not a guess: it pays when one process runs one call at a time
with several cores to itself (a notebook, a script: ``Model`` turns it on), and costs when
other work keeps the cores busy (measured: 2-3x slower while another library's thread pool
spins) or calls run side by side (the server turns it off: its workers split the cores
between them, and a threaded worker runs several calls at once). Set
``model.engine.spread = False`` where the cores are shared: blocks of streams then run on
several threads only for calls of :data:`PARALLEL_MIN_WORK` multiply-adds or more.

Every path computes each gate as the same chain of multiply-adds, so a stream's results do
not depend on the path, the other streams of its call or the threads.
"""

from __future__ import annotations

import numba
import numpy as np

from statecast.kernels import network as nw
from statecast.kernels.batched import (
    _forward_panels_parallel,
    _forward_panels_serial,
    panel_block,
)
from statecast.kernels.fused import forward_fused, head_only
from statecast.kernels.panels import pack_panels
from statecast.kernels.split import _forward_split, pack_split

#: The narrowest layer one stream spreads over the threads. Measured on a 2-core Zen 5 with
#: the cores otherwise idle, 2-layer LSTM: hidden 256 one step 36 us split vs 51 us fused,
#: 24 steps 359 vs 593 us panels; hidden 128 24 steps 143 vs 132 us (a parallel region per
#: layer costs 1-2 us, the threads' handshake per step ~0.3 us).
SPREAD_MIN_HIDDEN = 256
#: With ``spread`` off (the server), the fewest multiply-adds (streams x steps x weights) a
#: call needs before its blocks of streams run on several threads: below it a parallel
#: region saves tens of microseconds when the cores are idle, and costs milliseconds when
#: they are not (measured on 2 shared cores: a 256-stream step of a 32-unit LSTM took 40-50
#: us on one thread, 45 us to 8 ms on two while other processes ran).
PARALLEL_MIN_WORK = 10_000_000
#: Paths by name, for :meth:`Engine.forward_on` (tests and benchmarks compare them).
PATHS = ("fused", "panels", "split")


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


class Engine:
    """Runs windows through one packed network, states in place in an arena.

    Parameters
    ----------
    net : PackedNetwork
        From :func:`kernels.network.pack_network`.
    spread : bool
        Let one stream of a wide layer use every Numba thread (see the module docstring).
    """

    def __init__(self, net: nw.PackedNetwork, *, spread: bool = False) -> None:
        self.net = net
        self._params, self._meta = net.params, net.meta
        self._gates = int(net.meta[nw.MAX_GATES])
        self._panels, self._panel_at = pack_panels(net)
        self._split: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.spread = spread

    @property
    def spread(self) -> bool:
        """Whether one stream of a wide layer may use every Numba thread."""
        return self._spread

    @spread.setter
    def spread(self, value: bool) -> None:
        self._spread = bool(value)
        # One stream, one step goes straight to the fused loops unless it may spread.
        self._step_fused = not (self._spread
                                and self.net.widest_splittable >= SPREAD_MIN_HIDDEN)

    def __repr__(self) -> str:
        return f"Engine({int(self._meta[nw.N_LAYERS])} layers, spread={self.spread})"

    # -- choosing ------------------------------------------------------------------------

    def path(self, streams: int, steps: int) -> str:
        """The path a call of this shape takes now: ``fused``, ``panels`` or ``split``."""
        if self.spread and streams == 1 and numba.get_num_threads() > 1:
            if self.net.widest_splittable >= SPREAD_MIN_HIDDEN:
                return "split"
        return "fused" if streams == 1 and steps == 1 else "panels"

    # -- running -------------------------------------------------------------------------

    def forward(self, x: np.ndarray, arena: np.ndarray, slots: np.ndarray, y: np.ndarray,
                head_out: np.ndarray, *, check: bool = True) -> None:
        """Run a window, updating the streams' states in the arena in place.

        Parameters
        ----------
        x : np.ndarray
            ``float32 [streams, time, features]``, C-contiguous: the window.
        arena : np.ndarray
            ``float32 [rows, state_size]``: one state row per stream; rows named by
            ``slots`` are read and overwritten with the state after the window.
        slots : np.ndarray
            ``int64 [streams]``, distinct: the arena row of each stream.
        y : np.ndarray
            ``float32 [streams, time, output_size]``, written: the last layer's outputs.
        head_out : np.ndarray
            ``float32 [streams, head_size]``, written: the head at the last step;
            ``[streams * time, head_size]`` (row ``stream * time + step``) for a head at
            every step.
        check : bool
            Validate every argument first (default). Callers that built the arrays
            themselves may skip it; a wrong shape then reads out of bounds.
        """
        if check:
            self.check(x, arena, slots, y, head_out)
        self.run(x, arena, slots, y, head_out)

    def run(self, x: np.ndarray, arena: np.ndarray, slots: np.ndarray, y: np.ndarray,
            head_out: np.ndarray) -> None:
        """:meth:`forward` without the checks, for callers that built the arrays (every
        argument positional: this is the hot path's entry, ~0.1 us of Python counts)."""
        if x.shape[0] == 1 and x.shape[1] == 1 and self._step_fused:
            forward_fused(x, self._params, self._meta, arena, slots, y, head_out)
            return
        self.forward_on(self.path(x.shape[0], x.shape[1]), x, arena, slots, y, head_out)

    def forward_on(self, path: str, x: np.ndarray, arena: np.ndarray, slots: np.ndarray,
                   y: np.ndarray, head_out: np.ndarray) -> None:
        """:meth:`forward` on a named path, whatever the call's shape (arguments checked by
        the caller): tests and benchmarks compare the paths with it."""
        if path == "fused":
            forward_fused(x, self._params, self._meta, arena, slots, y, head_out)
        elif path == "panels":
            block = panel_block(x.shape[0], self._gates)
            run = _forward_panels_serial
            if x.shape[0] > block and numba.get_num_threads() > 1 and (
                    self._spread
                    or x.shape[0] * x.shape[1] * self._panels.size >= PARALLEL_MIN_WORK):
                run = _forward_panels_parallel
            run(x, self._params, self._meta, arena, slots, y, head_out, block, self._panels,
                self._panel_at)
        elif path == "split":
            weights, offsets = self._split_weights(numba.get_num_threads())
            _forward_split(x, self._params, self._meta, arena, slots, y, head_out, weights,
                           offsets)
        else:
            raise ValueError(f"unknown path {path!r}; known: {', '.join(PATHS)}")

    def _split_weights(self, parts: int) -> tuple[np.ndarray, np.ndarray]:
        found = self._split.get(parts)
        if found is None:
            found = self._split[parts] = pack_split(self.net, parts, SPREAD_MIN_HIDDEN)
        return found

    def head(self, outputs: np.ndarray) -> np.ndarray:
        """The head applied to last-layer outputs ``float32 [streams, width]``.

        Every path computes its head with this same code from ``y[:, -1]``, which equals the
        last layer's ``h``: a forecast recomputed from a stored state is bit-identical to
        the one computed when the state was made.
        """
        _require(outputs, "outputs", np.float32, 2)
        net = self.net
        if outputs.shape[1] != net.output_size:
            raise ValueError(f"outputs must have {net.output_size} columns, "
                             f"got {outputs.shape[1]}")
        head_out = np.empty((outputs.shape[0], net.head_size), np.float32)
        if net.head_size:
            head_only(outputs.reshape(outputs.shape[0], 1, outputs.shape[1]), self._params,
                      self._meta, head_out)
        return head_out

    def check(self, x: np.ndarray, arena: np.ndarray, slots: np.ndarray, y: np.ndarray,
              head_out: np.ndarray) -> None:
        """Raise ``TypeError``/``ValueError`` naming the fix if any argument of
        :meth:`forward` does not fit the network; nothing is computed."""
        net = self.net
        _require(x, "x", np.float32, 3)
        _require(arena, "arena", np.float32, 2)
        _require(slots, "slots", np.int64, 1)
        _require(y, "y", np.float32, 3)
        _require(head_out, "head_out", np.float32, 2)
        if not y.flags.writeable or not head_out.flags.writeable or not arena.flags.writeable:
            raise ValueError("y, head_out and arena must be writeable")
        streams, steps, features = x.shape
        if steps < 1 or streams < 1:
            raise ValueError(f"x must hold at least one stream and one step, got shape "
                             f"{x.shape}")
        if features != net.input_size:
            raise ValueError(f"x has {features} features per step, the model takes "
                             f"{net.input_size}")
        if arena.shape[1] != net.state_size:
            raise ValueError(f"arena rows must hold {net.state_size} values, "
                             f"got {arena.shape[1]}")
        if slots.shape[0] != streams:
            raise ValueError(f"slots must name one arena row per stream ({streams}), "
                             f"got {slots.shape[0]}")
        if slots.min() < 0 or slots.max() >= arena.shape[0]:
            raise ValueError(f"slots must lie in [0, {arena.shape[0]}) (the arena's rows)")
        if streams > 1 and np.unique(slots).size != streams:
            raise ValueError("slots must be distinct: one stream, one arena row")
        if y.shape != (streams, steps, net.output_size):
            raise ValueError(f"y must have shape {(streams, steps, net.output_size)}, "
                             f"got {y.shape}")
        head_rows = streams * steps if net.head_every_step else streams
        expected = (head_rows, net.head_size)
        if head_out.shape != expected:
            raise ValueError(f"head_out must have shape {expected}, got {head_out.shape}")
