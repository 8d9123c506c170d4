"""A loaded model version: ``Model.run`` for arrays as the training framework computes them,
``Model.advance``/``Model.predict`` for streams in original units, ``Model.forward_into``
for the service's arenas.

``Model.run`` computes what the framework that trained the model computes: inputs are
already scaled (see :meth:`Model.scale_inputs`), outputs are the last layer's sequence, the
new state, and the head's output.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from statecast.kernels import (
    DenseLayer,
    Engine,
    PackedNetwork,
    RecurrentLayer,
    activation,
    pack_network,
)
from statecast.models import rollout
from statecast.models.errors import InvalidInput
from statecast.models.layer_spec import ActivationSpec
from statecast.models.spec import ModelSpec

_REAL_KINDS = "fiu"
_FLOAT32 = np.dtype(np.float32)


def _as_float32(array: Any, name: str) -> np.ndarray:
    """Cast once at the edge: float64/float16/int inputs become a float32 C-contiguous array.

    Non-numeric or complex input is refused. NaN and infinity propagate as in the
    frameworks (the service rejects them at its edge, before any state exists).
    """
    if type(array) is np.ndarray and array.dtype is _FLOAT32 and array.flags.c_contiguous:
        return array
    values = np.asarray(array)
    if values.dtype.kind not in _REAL_KINDS:
        raise InvalidInput(f"{name} must hold real numbers, got dtype {values.dtype}")
    return np.ascontiguousarray(values, dtype=np.float32)


def _kernel_activation(spec: ActivationSpec) -> tuple[str, float, float]:
    return activation(spec.name, spec.alpha, spec.beta)


class State:
    """Recurrent state of a batch of streams: one arena row per stream.

    ``arena`` is ``float32 [batch, state_size]``; ``h[l]`` is ``float32 [batch, h width of
    layer l]`` and ``c[l]`` is ``float32 [batch, hidden of layer l]`` (None for GRU layers),
    both views into ``arena``. A plain slotted class: ``Model.run`` builds one per call.
    """

    __slots__ = ("arena", "offsets")

    def __init__(self, arena: np.ndarray, offsets: tuple[tuple[int, int, int, int], ...]
                 ) -> None:
        self.arena = arena
        self.offsets = offsets

    def __repr__(self) -> str:
        return f"State({self.arena.shape[0]} streams, {len(self.offsets)} layers)"

    @property
    def h(self) -> list[np.ndarray]:
        return [self.arena[:, at:at + width] for at, width, _, _ in self.offsets]

    @property
    def c(self) -> list[np.ndarray | None]:
        return [self.arena[:, at:at + width] if at >= 0 else None
                for _, _, at, width in self.offsets]

    def stacked(self) -> tuple[np.ndarray, np.ndarray | None]:
        """PyTorch's ``(h_n, c_n)`` layout ``[layers, batch, size]`` (uniform widths only)."""
        h = np.stack(self.h)
        cs = self.c
        c = np.stack(cs) if all(v is not None for v in cs) else None  # type: ignore[arg-type]
        return h, c


StateLike = State | Sequence[Any] | np.ndarray | None


class Model:
    """One model version, ready to run.

    Parameters
    ----------
    spec : ModelSpec
        Architecture and forecast contract.
    tensors : dict[str, np.ndarray]
        Weights in the canonical layout, as :meth:`ModelSpec.tensor_shapes` names them.
    name, version : str, optional
        Where the registry found it.
    manifest : dict, optional
        The artifact's manifest (source, checksums, created time).
    """

    def __init__(self, spec: ModelSpec, tensors: dict[str, np.ndarray], name: str = "",
                 version: str = "", manifest: dict[str, Any] | None = None) -> None:
        self.spec = spec
        self.tensors = tensors
        self.name = name
        self.version = version
        self.manifest = manifest or {}
        self.network: PackedNetwork = self._pack()
        #: Runs every window of this model; ``spread`` on for a process that runs one call
        #: at a time (the server turns it off, see :mod:`kernels.engine`).
        self.engine = Engine(self.network, spread=True)
        self._run = self.engine.run
        # The network's fields that Model.run reads on every call, as plain attributes.
        net = self.network
        self._input_size, self._output_size = net.input_size, net.output_size
        self._head_size, self._head_every_step = net.head_size, net.head_every_step
        self._state_size, self._offsets = net.state_size, net.state_offsets
        self._initial_row = self._initial_state_row()
        self._slots = np.arange(1024, dtype=np.int64)
        self._one_slot = self._slots[:1]

    def __repr__(self) -> str:
        return f"Model({self.name or '?'}@{self.version or '?'}, {len(self.spec.layers)} layers)"

    def _pack(self) -> PackedNetwork:
        layers = []
        for index, layer in enumerate(self.spec.layers):
            t = self.tensors
            prefix = f"layers.{index}."
            layers.append(RecurrentLayer(
                cell=layer.cell, w_ih=t[prefix + "w_ih"], w_hh=t[prefix + "w_hh"],
                b_ih=t[prefix + "b_ih"], b_hh=t[prefix + "b_hh"],
                w_hr=t.get(prefix + "w_hr"), peephole=t.get(prefix + "peephole"),
                gate_activation=_kernel_activation(layer.gate_activation),
                cell_activation=_kernel_activation(layer.cell_activation),
                hidden_activation=_kernel_activation(layer.hidden_activation),
                reset_after=layer.reset_after, input_forget=layer.input_forget,
                clip=layer.clip))
        # A head over the last steps also reads future covariates: models.windowed runs it.
        head = [] if self.spec.head_steps else [
            DenseLayer(self.tensors[f"head.{i}.weight"], self.tensors[f"head.{i}.bias"],
                       _kernel_activation(d.activation))
            for i, d in enumerate(self.spec.head)]
        return pack_network(layers, head, self.spec.head_every_step)

    def _initial_state_row(self) -> np.ndarray:
        row = np.zeros(self.network.state_size, np.float32)
        if self.spec.initial_state:
            for index, (h_at, h_width, c_at, c_width) in enumerate(self.network.state_offsets):
                row[h_at:h_at + h_width] = self.tensors[f"initial.{index}.h"]
                if c_at >= 0:
                    row[c_at:c_at + c_width] = self.tensors[f"initial.{index}.c"]
        return row

    # -- state ---------------------------------------------------------------------------

    @property
    def state_size(self) -> int:
        """Length of one stream's state row in an arena."""
        return self.network.state_size

    def new_arena(self, rows: int) -> np.ndarray:
        """``float32 [rows, state_size]``, every row the initial state (zeros by default)."""
        if not self.spec.initial_state:
            return np.zeros((rows, self.network.state_size), np.float32)
        arena = np.empty((rows, self.network.state_size), np.float32)
        arena[:] = self._initial_row
        return arena

    def to_state(self, state: StateLike, batch: int) -> State:
        """A :class:`State` for ``batch`` streams from any form :meth:`run` accepts."""
        return State(self._state_arena(state, batch), self.network.state_offsets)

    def _state_arena(self, state: StateLike, batch: int) -> np.ndarray:
        """A fresh arena holding ``state`` (never the caller's own array)."""
        if state is None:
            return self.new_arena(batch)
        if isinstance(state, State):
            arena = state.arena
            if arena.shape != (batch, self.network.state_size):
                raise InvalidInput(f"state holds {arena.shape[0]} streams of "
                                   f"{arena.shape[1]} values; expected {batch} of "
                                   f"{self.network.state_size}")
            if arena.dtype is _FLOAT32 and arena.flags.c_contiguous:
                return arena.copy()
            return np.array(arena, dtype=np.float32, order="C", copy=True)
        return self._arena_from_arrays(state, batch)

    def _arena_from_arrays(self, state: Sequence[Any] | np.ndarray, batch: int) -> np.ndarray:
        """Accept PyTorch's ``(h0, c0)`` / ``h0`` stacked ``[layers, batch, size]`` or a list
        of per-layer ``(h, c)`` / ``h`` arrays."""
        layers = len(self.spec.layers)
        if isinstance(state, np.ndarray):
            state = (state,)
        parts = list(state)
        per_layer: list[tuple[Any, Any]]
        if len(parts) == layers and all(isinstance(p, (tuple, list)) for p in parts):
            per_layer = [(p[0], p[1] if len(p) > 1 else None) for p in parts]
        elif 1 <= len(parts) <= 2 and np.ndim(parts[0]) == 3:
            h_stack = parts[0]
            c_stack = parts[1] if len(parts) == 2 else None
            if len(h_stack) != layers or (c_stack is not None and len(c_stack) != layers):
                raise InvalidInput(f"stacked state must have {layers} layers first")
            per_layer = [(h_stack[i], None if c_stack is None else c_stack[i])
                         for i in range(layers)]
        else:
            raise InvalidInput("state must be a State, (h0, c0) stacked as [layers, batch, "
                               "size], or one (h, c) pair per layer")
        arena = np.zeros((batch, self.network.state_size), np.float32)
        for index, ((h, c), (h_at, h_width, c_at, c_width)) in enumerate(
                zip(per_layer, self.network.state_offsets, strict=True)):
            h = _as_float32(h, f"h of layer {index}")
            if h.shape != (batch, h_width):
                raise InvalidInput(f"h of layer {index} must have shape {(batch, h_width)}, "
                                   f"got {h.shape}")
            arena[:, h_at:h_at + h_width] = h
            if c_at >= 0:
                if c is None:
                    raise InvalidInput(f"layer {index} is an LSTM: its c is required")
                c = _as_float32(c, f"c of layer {index}")
                if c.shape != (batch, c_width):
                    raise InvalidInput(f"c of layer {index} must have shape "
                                       f"{(batch, c_width)}, got {c.shape}")
                arena[:, c_at:c_at + c_width] = c
            elif c is not None:
                raise InvalidInput(f"layer {index} is a GRU: it has no c")
        return arena

    # -- running -------------------------------------------------------------------------

    def run(self, x: Any, state: StateLike = None
            ) -> tuple[np.ndarray, State, np.ndarray | None]:
        """Run a window of (scaled) inputs from a state; nothing is stored.

        Parameters
        ----------
        x : array-like
            ``[batch, time, features]``; any real dtype, cast once to float32.
        state : State, (h0, c0), or per-layer pairs, optional
            The state before the window (None: the model's initial state, zeros unless
            imported with one).

        Returns
        -------
        outputs : np.ndarray
            ``float32 [batch, time, h width]``: the last recurrent layer's output sequence.
        state : State
            The state after the window.
        head : np.ndarray or None
            ``float32 [batch, head outputs]`` from the last step (``[batch, time, head
            outputs]`` for a head applied at every step); None without a head.
        """
        if type(x) is not np.ndarray or x.dtype is not _FLOAT32 or not x.flags.c_contiguous:
            x = _as_float32(x, "x")
        shape = x.shape
        if len(shape) != 3:
            raise InvalidInput(self._explain_shape(shape))
        batch, steps, features = shape
        if features != self._input_size or batch < 1 or steps < 1:
            raise InvalidInput(self._explain_shape(shape))
        arena_in = state.arena if type(state) is State else None
        if (arena_in is not None and arena_in.dtype is _FLOAT32
                and arena_in.shape == (batch, self._state_size)
                and arena_in.flags.c_contiguous):
            arena = arena_in.copy()
        else:
            arena = self._state_arena(state, batch)
        y = np.empty((batch, steps, self._output_size), _FLOAT32)
        every = self._head_every_step
        head = np.empty((batch * steps if every else batch, self._head_size), _FLOAT32)
        if batch == 1:
            slots = self._one_slot
        elif batch <= self._slots.size:
            slots = self._slots[:batch]
        else:
            slots = np.arange(batch, dtype=np.int64)
        self._run(x, arena, slots, y, head)
        new_state = State(arena, self._offsets)
        if not self._head_size:
            return y, new_state, None
        return y, new_state, head.reshape(batch, steps, self._head_size) if every else head

    def _explain_shape(self, shape: tuple[int, ...]) -> str:
        if len(shape) != 3:
            return f"x must be [batch, time, features], got shape {shape}"
        if shape[0] < 1 or shape[1] < 1:
            return f"x needs at least one stream and one step, got {shape}"
        return (f"x has {shape[2]} features per step; the model takes "
                f"{self.network.input_size}")

    def forward_into(self, x: np.ndarray, arena: np.ndarray, slots: np.ndarray,
                     y: np.ndarray, head_out: np.ndarray, *, check: bool = True) -> None:
        """The service's in-place entry point: :meth:`kernels.Engine.forward` on this model.

        ``x`` float32 ``[streams, time, features]`` (scaled), ``arena`` float32 ``[rows,
        state_size]`` (states of ``slots`` updated in place), ``slots`` int64 ``[streams]``,
        ``y`` float32 ``[streams, time, h width]`` and ``head_out`` float32 ``[streams, head
        outputs]`` (``[streams * time, ...]`` for a head at every step) preallocated and
        written.
        """
        if check:
            self.engine.check(x, arena, slots, y, head_out)
        self._run(x, arena, slots, y, head_out)

    def head_from_state(self, rows: np.ndarray) -> np.ndarray:
        """Head outputs ``float32 [streams, head outputs]`` from state rows ``float32
        [streams, state_size]``: the forecast a stream's stored state implies, identical to
        the one :meth:`forward_into` computed when the state was made."""
        h_at, h_width, _, _ = self.network.state_offsets[-1]
        last_h = np.ascontiguousarray(rows[:, h_at:h_at + h_width], dtype=np.float32)
        return self.engine.head(last_h)

    # -- verbs in original units -----------------------------------------------------------

    def advance(self, states: np.ndarray, observations: Sequence[np.ndarray]) -> np.ndarray:
        """State rows after each stream's raw observations (:func:`models.rollout.advance`):
        ``carry`` continues, ``window:W`` re-runs the last W; ``states`` left unchanged."""
        return rollout.advance(self, states, observations)

    def predict(self, states: np.ndarray, horizon: int, future: np.ndarray | None = None
                ) -> np.ndarray:
        """Forecasts ``float32 [streams, horizon, targets]`` in original units from state
        rows (:func:`models.rollout.predict`): the head, or a recursive rollout fed with
        ``future`` covariates; ``states`` left unchanged."""
        return rollout.predict(self, states, horizon, future)

    # -- scaling -------------------------------------------------------------------------

    def scale_inputs(self, x: np.ndarray) -> np.ndarray:
        """Raw observations ``[..., features]`` -> what the network takes (float32)."""
        x = np.asarray(x, dtype=np.float32)
        scaling = self.spec.scaling
        if scaling is None:
            return x
        return ((x - np.asarray(scaling.input_shift, np.float32))
                / np.asarray(scaling.input_scale, np.float32))

    def unscale_targets(self, y: np.ndarray) -> np.ndarray:
        """Network outputs ``[..., targets]`` -> original units (float32)."""
        y = np.asarray(y, dtype=np.float32)
        scaling = self.spec.scaling
        if scaling is None:
            return y
        return (y * np.asarray(scaling.target_scale, np.float32)
                + np.asarray(scaling.target_shift, np.float32))
