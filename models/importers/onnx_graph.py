"""What surrounds the recurrent nodes of an ONNX graph: the path from the graph's input to
the first layer, the links between layers, and what each graph output computes from the
recurrent layers (the recurrent state, or a forecast through a dense head).

A graph may return several outputs: the sequence output, ``h_n`` and ``c_n`` beside the
forecast, as exports meant for stateful serving do. Each output is traced back to the
recurrent outputs it is computed from. Outputs reached through pass-through nodes only are
the recurrent state, which statecast keeps per stream; exactly one output may apply dense
layers, and it becomes the forecast. Anything else after (or before) the recurrent layers
is refused, naming the node: an import never publishes a model that computes something
other than the graph.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from statecast.models.errors import ImportFailed
from statecast.models.layer_spec import ActivationSpec, DenseLayerSpec

#: Nodes that only move values around (Dropout is the identity at inference).
PASS_THROUGH = {"Squeeze", "Unsqueeze", "Transpose", "Reshape", "Flatten", "Identity",
                "Dropout"}
#: Nodes allowed between the graph input and the first recurrent layer.
INPUT_PATH = {"Transpose", "Identity", "Cast"}
HEAD_ACTIVATIONS = {"Relu": "relu", "Tanh": "tanh", "Sigmoid": "sigmoid",
                    "Softsign": "softsign", "Softplus": "softplus"}
_DENSE = {"Gemm", "MatMul"}
#: The recurrent outputs: Y (sequence), Y_h and Y_c (last step); and stacked over layers.
SEQUENCE, LAST_H, LAST_C, STACKED_H, STACKED_C = "Y", "Y_h", "Y_c", "h_n", "c_n"


def attributes(node: Any) -> dict[str, Any]:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def describe(node: Any) -> str:
    return f"node {node.name or node.output[0]!r} ({node.op_type})"


class Constants:
    """Values of tensors that depend only on initializers and constants."""

    def __init__(self, graph: Any) -> None:
        from onnx import numpy_helper

        self.values: dict[str, np.ndarray] = {
            init.name: numpy_helper.to_array(init) for init in graph.initializer}
        self.producers = {out: node for node in graph.node for out in node.output if out}
        self.inputs = {i.name for i in graph.input} - set(self.values)

    def get(self, name: str) -> np.ndarray | None:
        if not name:
            return None
        if name in self.values:
            return self.values[name]
        if name in self.inputs or name not in self.producers:
            return None
        node = self.producers[name]
        feeds = {}
        for source in node.input:
            if not source:
                continue
            value = self.get(source)
            if value is None:
                return None
            feeds[source] = value
        from onnx.reference import ReferenceEvaluator

        try:
            results = ReferenceEvaluator(node).run(None, feeds)
        except (ValueError, TypeError, RuntimeError, NotImplementedError, KeyError) as error:
            raise ImportFailed(f"cannot evaluate constant {describe(node)}: {error}") from None
        for output, value in zip(node.output, results, strict=False):
            if output:
                self.values[output] = np.asarray(value)
        return self.values.get(name)


@dataclass(frozen=True)
class Source:
    """Which recurrent output a traced tensor starts from: ``kind`` is one of ``Y``,
    ``Y_h``, ``Y_c`` (of ``layer``) or ``h_n``/``c_n`` (every layer's, stacked)."""

    kind: str
    layer: int


@dataclass
class Traced:
    """A graph output, the recurrent output it comes from and the nodes in between
    (in computing order)."""

    output: str
    source: Source
    nodes: list[Any] = field(default_factory=list)

    @property
    def applies_dense(self) -> bool:
        return any(node.op_type in _DENSE for node in self.nodes)


class _Untraceable(Exception):  # a signal inside the walk, never raised out of it
    """A tensor that does not come from a recurrent output through single-input nodes;
    ``node`` is where the walk stopped (None: at a graph input or initializer)."""

    def __init__(self, node: Any) -> None:
        super().__init__()
        self.node = node


class Graph:
    """An ONNX graph seen from its recurrent nodes (``recurrent``, in computing order)."""

    def __init__(self, graph: Any, recurrent: list[Any], constants: Constants) -> None:
        self.graph = graph
        self.recurrent = recurrent
        self.constants = constants
        self.producers = constants.producers
        self.outputs_of: dict[str, Source] = {}
        for layer, node in enumerate(recurrent):
            for position, kind in enumerate((SEQUENCE, LAST_H, LAST_C)):
                if position < len(node.output) and node.output[position]:
                    self.outputs_of[node.output[position]] = Source(kind, layer)

    def dynamic_inputs(self, node: Any) -> list[str]:
        """The node's inputs that are neither omitted (``''``) nor constants."""
        return [name for name in node.input if name and self.constants.get(name) is None]

    # -- into the recurrent layers ---------------------------------------------------

    def input_layout(self) -> tuple[str, bool]:
        """The graph input feeding the first layer, and whether it is batch-first.

        Only transposes, casts and identities may stand between them; a node that changes
        values (a scaler, say) is refused, naming it.
        """
        first = self.recurrent[0]
        batch_first = bool(attributes(first).get("layout", 0))
        name = first.input[0]
        inputs = {i.name for i in self.graph.input}
        while name not in inputs:
            node = self.producers.get(name)
            if node is None:
                raise ImportFailed(f"the first recurrent layer's input {name!r} is neither a "
                                   "graph input nor computed from one")
            dynamic = self.dynamic_inputs(node)
            if node.op_type not in INPUT_PATH or len(dynamic) != 1:
                raise ImportFailed(
                    f"{describe(node)} before the first recurrent layer is not supported: "
                    "statecast feeds a window's observations straight to the first layer "
                    "(give a scaler at import instead of scaling in the graph)")
            if node.op_type == "Transpose":
                perm = list(attributes(node).get("perm", []))
                if perm[:2] == [1, 0]:
                    batch_first = not batch_first
                elif perm[:2] != [0, 1]:
                    raise ImportFailed(f"{describe(node)}: permutation {perm} before the first "
                                       "recurrent layer is not supported")
            name = dynamic[0]
        return name, batch_first

    def check_links(self) -> None:
        """Each layer after the first must read the layer before's sequence output through
        pass-through nodes only."""
        for layer in range(1, len(self.recurrent)):
            name = self.recurrent[layer].input[0]
            while self.outputs_of.get(name) != Source(SEQUENCE, layer - 1):
                node = self.producers.get(name)
                if node is None or node.op_type not in PASS_THROUGH or len(
                        self.dynamic_inputs(node)) != 1:
                    what = describe(node) if node is not None else repr(name)
                    raise ImportFailed(
                        f"{what} between recurrent layers {layer - 1} and {layer} is not "
                        "supported: a layer must read the sequence output of the one before")
                name = self.dynamic_inputs(node)[0]

    # -- out of the recurrent layers -------------------------------------------------

    def _stacked(self, node: Any) -> Source | None:
        """A Concat of every layer's Y_h (or Y_c) in order, each through pass-through nodes:
        PyTorch's ``h_n``/``c_n``."""
        if node.op_type != "Concat" or int(attributes(node).get("axis", 0)) != 0:
            return None
        sources = []
        for name in self.dynamic_inputs(node):
            try:
                traced = self._trace(name, allow_stacked=False)
            except _Untraceable:
                return None
            if any(n.op_type not in PASS_THROUGH for n in traced.nodes):
                return None
            sources.append(traced.source)
        for kind, stacked in ((LAST_H, STACKED_H), (LAST_C, STACKED_C)):
            if sources == [Source(kind, layer) for layer in range(len(self.recurrent))]:
                return Source(stacked, len(self.recurrent) - 1)
        return None

    def _trace(self, name: str, allow_stacked: bool = True) -> Traced:
        """Follow ``name`` back to a recurrent output through single-input nodes (or to
        every layer's stacked ``h_n``/``c_n``); raise :class:`_Untraceable` otherwise."""
        nodes: list[Any] = []
        while name not in self.outputs_of:
            node = self.producers.get(name)
            if node is None or node in self.recurrent:
                raise _Untraceable(nodes[-1] if nodes else None)
            dynamic = self.dynamic_inputs(node)
            if len(dynamic) != 1:
                stacked = self._stacked(node) if allow_stacked else None
                if stacked is None:
                    raise _Untraceable(node)
                return Traced(name, stacked, [*reversed(nodes)])
            nodes.append(node)
            name = dynamic[0]
        return Traced(name, self.outputs_of[name], [*reversed(nodes)])

    def traced_outputs(self) -> list[Traced]:
        """Every graph output traced to the recurrent output it comes from; an output that
        does not come from one through nodes statecast understands is refused."""
        traced = []
        for output in self.graph.output:
            try:
                found = self._trace(output.name)
            except _Untraceable as stop:
                where = f" at {describe(stop.node)}" if stop.node is not None else ""
                raise ImportFailed(
                    f"graph output {output.name!r} is not computed from the last recurrent "
                    f"layer by nodes statecast reproduces{where}: it combines several "
                    "computed tensors (a skip connection, covariates joined after the "
                    "recurrent layers...)") from None
            found.output = output.name
            traced.append(found)
        return traced


def _picks_last(node: Any, constants: Constants) -> bool:
    """A Gather or Slice that selects index -1 along its axis (the last step or layer)."""
    if node.op_type == "Gather":
        index = constants.get(node.input[1])
        return index is not None and np.size(index) == 1 and int(np.ravel(index)[0]) == -1
    starts = constants.get(node.input[1]) if len(node.input) > 1 else None
    ends = constants.get(node.input[2]) if len(node.input) > 2 else None
    return (starts is not None and np.size(starts) == 1 and int(np.ravel(starts)[0]) == -1
            and (ends is None or int(np.ravel(ends)[0]) >= 2**31 - 1))


@dataclass
class Head:
    """Dense layers read from a traced output; ``last_step`` when they act on the last step
    only (else on every step)."""

    layers: list[DenseLayerSpec] = field(default_factory=list)
    weights: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    last_step: bool = False


def _dense(node: Any, constants: Constants) -> tuple[np.ndarray, np.ndarray]:
    attrs = attributes(node)
    matrix = constants.get(node.input[1])
    if matrix is None:
        raise ImportFailed(f"{describe(node)}: the head's weights must be constants")
    matrix = np.asarray(matrix, np.float32)
    if matrix.ndim != 2:
        raise ImportFailed(f"{describe(node)}: a {matrix.ndim}-D weight is not a dense layer")
    if node.op_type == "MatMul":
        return matrix, np.zeros(matrix.shape[1], np.float32)
    if attrs.get("transA", 0):
        raise ImportFailed(f"{describe(node)}: Gemm with transA is not supported")
    matrix = (matrix.T if attrs.get("transB", 0) else matrix) * float(attrs.get("alpha", 1.0))
    bias_value = constants.get(node.input[2]) if len(node.input) > 2 else None
    bias = (np.zeros(matrix.shape[1], np.float32) if bias_value is None else
            np.asarray(bias_value, np.float32).reshape(-1) * float(attrs.get("beta", 1.0)))
    return np.ascontiguousarray(matrix), np.broadcast_to(bias, (matrix.shape[1],)).astype(
        np.float32)


def parse_head(traced: Traced, constants: Constants, layers: int) -> Head:
    """The dense head of a traced output that applies dense layers.

    It must start from the last layer's sequence output (then a Gather/Slice of index -1
    picks the last step, or the head acts on every step) or its last hidden state (``Y_h``,
    or ``h_n`` with the last layer picked).
    """
    source = traced.source
    if source.kind in (LAST_C, STACKED_C):
        raise ImportFailed(f"output {traced.output!r} applies dense layers to the cell state; "
                           "statecast's heads read the hidden state")
    if source.layer != layers - 1:
        raise ImportFailed(f"output {traced.output!r} applies dense layers to recurrent layer "
                           f"{source.layer}, not the last one")
    head = Head(last_step=source.kind in (LAST_H, STACKED_H))
    needs_layer = source.kind == STACKED_H
    for node in traced.nodes:
        kind = node.op_type
        if kind in PASS_THROUGH:
            continue
        if kind in ("Gather", "Slice") and not head.layers and _picks_last(node, constants):
            if needs_layer:
                needs_layer = False  # h_n[-1]: the last layer's last hidden state
            else:
                head.last_step = True
            continue
        if needs_layer:
            raise ImportFailed(f"{describe(node)} reads h_n before picking its last layer")
        if kind in _DENSE:
            matrix, bias = _dense(node, constants)
            head.layers.append(DenseLayerSpec(int(matrix.shape[0]), int(matrix.shape[1])))
            head.weights.append((matrix, bias))
        elif kind == "Add" and head.layers:
            other = [name for name in node.input if constants.get(name) is not None]
            if len(other) != 1:
                raise ImportFailed(f"{describe(node)}: an Add in the head must add a constant")
            value = np.asarray(constants.get(other[0]), np.float32).reshape(-1)
            matrix, bias = head.weights[-1]
            head.weights[-1] = (matrix, bias + value)
        elif kind in HEAD_ACTIVATIONS and head.layers and (
                head.layers[-1].activation.name == "linear"):
            dense = head.layers[-1]
            head.layers[-1] = DenseLayerSpec(dense.in_features, dense.out_features,
                                             ActivationSpec.of(HEAD_ACTIVATIONS[kind]))
        else:
            raise ImportFailed(f"{describe(node)} after the recurrent layers is not supported "
                               f"in a head (output {traced.output!r})")
    if needs_layer:
        raise ImportFailed(f"output {traced.output!r} reads h_n without picking its last layer")
    return head


def state_output_check(traced: Traced) -> None:
    """An output without dense layers must be recurrent state moved around (y, h_n, c_n,
    or a step of them), nothing computed from it."""
    for node in traced.nodes:
        if node.op_type not in PASS_THROUGH | {"Gather", "Slice"}:
            raise ImportFailed(f"{describe(node)} computes graph output {traced.output!r} from "
                               "the recurrent state; statecast reproduces only the state "
                               "itself and one dense head")
