"""The packed network: every weight of a model in one float32 buffer, described by an int table.

A kernel call costs ~0.2 us per array argument, so a model of any depth travels as two
arrays: ``params`` (weights, biases, activation parameters) and ``meta`` (sizes, offsets
into ``params`` and activation codes). :func:`pack_network` builds both from per-layer
arrays in the canonical layout below; the kernels read them back as views, never copies.

Canonical layout (weights are stored ``[in, out]`` so that a step is a sum of row axpys):

- LSTM, gates ``i, f, g, o``: ``w_ih [I, 4H]``, ``w_hh [R, 4H]`` (``R`` = P or H),
  ``b_ih``/``b_hh [4H]``, optional ``w_hr [H, P]`` (projection), optional peepholes
  ``[3, H]`` in the order ``i, f, o``.
- GRU, gates ``r, z, n``: ``w_ih [I, 3H]``, ``w_hh [H, 3H]``, ``b_ih``/``b_hh [3H]``;
  ``reset_after`` selects where the reset gate is applied.
- Dense head layer: ``weight [in, out]``, ``bias [out]``.

State of one stream is one row of an arena: per layer its ``h`` (width P or H) and, for
LSTM, its ``c`` (width H), at the offsets :attr:`PackedNetwork.state_offsets` gives.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from statecast.kernels.activations import ACTIVATIONS

LSTM = 0
GRU = 1
CELLS = {"lstm": LSTM, "gru": GRU}

HEADER = 8
LAYER_FIELDS = 17
DENSE_FIELDS = 6

# Header slots.
N_LAYERS, N_DENSE, EVERY_STEP, MAX_WIDTH, MAX_GATES, MAX_HIDDEN, MAX_DENSE, STATE_SIZE = range(8)
# Layer slots.
(L_CELL, L_IN, L_HIDDEN, L_OUT, L_W_IH, L_W_HH, L_B_IH, L_B_HH, L_W_HR, L_PEEP, L_H_OFF,
 L_C_OFF, L_FLAGS, L_ACT_GATE, L_ACT_CELL, L_ACT_HIDDEN, L_FLOATS) = range(17)
# Dense slots.
D_IN, D_OUT, D_W, D_B, D_ACT, D_FLOATS = range(6)
# Layer flags.
FLAG_RESET_AFTER = 1
FLAG_INPUT_FORGET = 2

Activation = tuple[str, float, float]


def activation(name: str, alpha: float | None = None, beta: float | None = None) -> Activation:
    """Return ``(name, alpha, beta)`` with the activation's defaults filled in."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(ACTIVATIONS)}")
    _, default_alpha, default_beta = ACTIVATIONS[name]
    return (name, default_alpha if alpha is None else float(alpha),
            default_beta if beta is None else float(beta))


@dataclass(frozen=True)
class RecurrentLayer:
    """One LSTM or GRU layer in the canonical layout (see the module docstring)."""

    cell: str
    w_ih: np.ndarray
    w_hh: np.ndarray
    b_ih: np.ndarray
    b_hh: np.ndarray
    w_hr: np.ndarray | None = None
    peephole: np.ndarray | None = None
    gate_activation: Activation = ("sigmoid", 0.0, 0.0)
    cell_activation: Activation = ("tanh", 0.0, 0.0)
    hidden_activation: Activation = ("tanh", 0.0, 0.0)
    reset_after: bool = True
    input_forget: bool = False
    clip: float = 0.0

    @property
    def gates(self) -> int:
        """Number of gate blocks: 4 for LSTM, 3 for GRU."""
        return 4 if self.cell == "lstm" else 3

    @property
    def input_size(self) -> int:
        return int(self.w_ih.shape[0])

    @property
    def hidden_size(self) -> int:
        return int(self.w_ih.shape[1]) // self.gates

    @property
    def output_size(self) -> int:
        """Width of ``h``: proj_size with a projection, else hidden_size."""
        return int(self.w_hr.shape[1]) if self.w_hr is not None else self.hidden_size


@dataclass(frozen=True)
class DenseLayer:
    """One dense head layer: ``weight [in, out]``, ``bias [out]``, an activation."""

    weight: np.ndarray
    bias: np.ndarray
    activation: Activation = ("linear", 1.0, 0.0)


@dataclass(frozen=True)
class PackedNetwork:
    """A model's weights as the kernels take them."""

    params: np.ndarray
    meta: np.ndarray
    input_size: int
    output_size: int
    head_size: int
    head_every_step: bool
    state_size: int
    #: Per layer ``(h_offset, h_width, c_offset, c_width)``; ``c_offset = -1`` for GRU.
    state_offsets: tuple[tuple[int, int, int, int], ...] = field(default=())
    #: Hidden units of the widest layer whose steps :mod:`kernels.split` can spread
    #: over several cores (LSTM without projection, GRU with the reset after the product), 0
    #: if none.
    widest_splittable: int = 0


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def pack_network(layers: list[RecurrentLayer], head: list[DenseLayer] | None = None,
                 head_every_step: bool = False) -> PackedNetwork:
    """Pack layers and head into one ``params`` buffer and one ``meta`` table.

    Checks that consecutive shapes agree and raises ``ValueError`` naming the layer that
    does not fit.
    """
    head = head or []
    _check(len(layers) > 0, "a network needs at least one recurrent layer")
    chunks: list[np.ndarray] = []
    size = 0

    def put(array: np.ndarray | list[float]) -> int:
        nonlocal size
        flat = np.ascontiguousarray(array, dtype=np.float32).reshape(-1)
        chunks.append(flat)
        offset = size
        size += flat.size
        return offset

    meta = np.zeros(HEADER + LAYER_FIELDS * len(layers) + DENSE_FIELDS * len(head), np.int64)
    offsets = []
    state = 0
    width = layers[0].input_size
    for index, layer in enumerate(layers):
        _check(layer.cell in CELLS, f"layer {index}: cell must be 'lstm' or 'gru'")
        hidden, out, gates = layer.hidden_size, layer.output_size, layer.gates * layer.hidden_size
        _check(layer.w_ih.ndim == 2 and layer.w_ih.shape[1] == gates and hidden > 0,
               f"layer {index}: w_ih must be [input, {layer.gates}*hidden]")
        _check(layer.input_size == width,
               f"layer {index}: takes {layer.input_size} inputs but receives {width}")
        _check(layer.w_hh.shape == (out, gates),
               f"layer {index}: w_hh has shape {layer.w_hh.shape}, expected {(out, gates)}")
        _check(layer.b_ih.shape == (gates,) and layer.b_hh.shape == (gates,),
               f"layer {index}: biases must have shape ({gates},)")
        if layer.w_hr is not None:
            _check(layer.cell == "lstm" and layer.w_hr.shape[0] == hidden,
                   f"layer {index}: a projection is LSTM only, with shape [hidden, proj]")
        if layer.peephole is not None:
            _check(layer.cell == "lstm" and layer.peephole.shape == (3, hidden),
                   f"layer {index}: peepholes are LSTM only, with shape [3, hidden]")
        _check(not (layer.input_forget and layer.cell != "lstm"),
               f"layer {index}: input_forget is LSTM only")
        row = HEADER + index * LAYER_FIELDS
        meta[row + L_CELL] = CELLS[layer.cell]
        meta[row + L_IN] = layer.input_size
        meta[row + L_HIDDEN] = hidden
        meta[row + L_OUT] = out
        # The LSTM kernel reads [w_ih; w_hh] as one stacked matrix: keep them adjacent.
        meta[row + L_W_IH] = put(layer.w_ih)
        meta[row + L_W_HH] = put(layer.w_hh)
        meta[row + L_B_IH] = put(layer.b_ih)
        meta[row + L_B_HH] = put(layer.b_hh)
        meta[row + L_W_HR] = put(layer.w_hr) if layer.w_hr is not None else -1
        meta[row + L_PEEP] = put(layer.peephole) if layer.peephole is not None else -1
        meta[row + L_H_OFF] = state
        h_offset = state
        state += out
        c_offset = -1
        if layer.cell == "lstm":
            c_offset = state
            state += hidden
        meta[row + L_C_OFF] = c_offset
        meta[row + L_FLAGS] = (FLAG_RESET_AFTER if layer.reset_after else 0) | (
            FLAG_INPUT_FORGET if layer.input_forget else 0)
        acts = (layer.gate_activation, layer.cell_activation, layer.hidden_activation)
        for slot, (name, _, _) in zip((L_ACT_GATE, L_ACT_CELL, L_ACT_HIDDEN), acts,
                                        strict=True):
            activation(name)
            meta[row + slot] = ACTIVATIONS[name][0]
        floats = [v for (_, alpha, beta) in acts for v in (alpha, beta)] + [layer.clip]
        meta[row + L_FLOATS] = put(floats)
        offsets.append((h_offset, out, c_offset, hidden if c_offset >= 0 else 0))
        width = out
    output_size = width
    for index, dense in enumerate(head):
        _check(dense.weight.ndim == 2 and dense.weight.shape[0] == width,
               f"head layer {index}: weight must be [{width}, out], got {dense.weight.shape}")
        _check(dense.bias.shape == (dense.weight.shape[1],),
               f"head layer {index}: bias must have shape ({dense.weight.shape[1]},)")
        name, alpha, beta = dense.activation
        activation(name)
        row = HEADER + LAYER_FIELDS * len(layers) + index * DENSE_FIELDS
        meta[row + D_IN] = width
        meta[row + D_OUT] = dense.weight.shape[1]
        meta[row + D_W] = put(dense.weight)
        meta[row + D_B] = put(dense.bias)
        meta[row + D_ACT] = ACTIVATIONS[name][0]
        meta[row + D_FLOATS] = put([alpha, beta])
        width = int(dense.weight.shape[1])
    meta[N_LAYERS] = len(layers)
    meta[N_DENSE] = len(head)
    meta[EVERY_STEP] = int(head_every_step)
    meta[MAX_WIDTH] = max(layer.output_size for layer in layers)
    meta[MAX_GATES] = max(layer.gates * layer.hidden_size for layer in layers)
    meta[MAX_HIDDEN] = max(layer.hidden_size for layer in layers)
    meta[MAX_DENSE] = max([output_size] + [int(d.weight.shape[1]) for d in head])
    meta[STATE_SIZE] = state
    params = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    return PackedNetwork(
        params=np.ascontiguousarray(params, dtype=np.float32), meta=meta,
        input_size=layers[0].input_size, output_size=output_size,
        head_size=width if head else 0, head_every_step=bool(head_every_step and head),
        state_size=state, state_offsets=tuple(offsets),
        widest_splittable=max([layer.hidden_size for layer in layers
                               if (layer.cell == "lstm" and layer.w_hr is None)
                               or (layer.cell == "gru" and layer.reset_after)] + [0]))
