"""Import ONNX graphs built around ``LSTM``/``GRU`` nodes (one per layer), as
``torch.onnx.export`` and hand-built graphs write them, with an optional dense head.

Weights are read as the graph computes them: initializers, ``Constant`` nodes, and any
subgraph over constants (exporters leave ``Slice``/``Concat`` over initializers) evaluated
with ONNX's reference evaluator. ONNX gate order is LSTM ``i, o, f, c`` and GRU ``z, r, h``;
``B`` holds ``[Wb; Rb]``. Constant initial states become the model's initial state;
initial states computed from the input (zeros shaped like it) are the zero state.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from statecast.models.errors import ImportFailed
from statecast.models.importers.common import ForecastOptions, Imported, build_spec
from statecast.models.importers.onnx_check import verify
from statecast.models.importers.onnx_graph import (
    Constants,
    Graph,
    Head,
    Traced,
    attributes,
    parse_head,
    state_output_check,
)
from statecast.models.layer_spec import ActivationSpec, RecurrentLayerSpec
from statecast.models.model import Model

#: ONNX activation -> (statecast name, default alpha, default beta, uses alpha, uses beta).
_ACTIVATIONS: dict[str, tuple[str, float | None, float | None]] = {
    "Sigmoid": ("sigmoid", None, None),
    "Tanh": ("tanh", None, None),
    "Relu": ("relu", None, None),
    "Softsign": ("softsign", None, None),
    "Softplus": ("softplus", None, None),
    "HardSigmoid": ("hard_sigmoid", 0.2, 0.5),
    "LeakyRelu": ("leaky_relu", 0.01, None),
    "ThresholdedRelu": ("thresholded_relu", 1.0, None),
    "Elu": ("elu", 1.0, None),
    "ScaledTanh": ("scaled_tanh", 1.0, 1.0),
    "Affine": ("affine", 1.0, 0.0),
}
_LSTM_ORDER = (0, 2, 3, 1)  # statecast i, f, g, o from ONNX i, o, f, c
_GRU_ORDER = (1, 0, 2)  # statecast r, z, n from ONNX z, r, h


def _activations(node: Any, attrs: dict[str, Any], count: int, defaults: list[str]
                 ) -> list[ActivationSpec]:
    names = [n.decode() if isinstance(n, bytes) else n for n in attrs.get("activations", [])]
    names = names or defaults
    if len(names) != count:
        raise ImportFailed(f"node {node.name!r}: {len(names)} activations for one direction; "
                           f"expected {count}")
    alphas = list(attrs.get("activation_alpha", []))
    betas = list(attrs.get("activation_beta", []))
    specs = []
    for name in names:
        if name not in _ACTIVATIONS:
            raise ImportFailed(f"node {node.name!r}: activation {name!r} is not supported")
        ours, default_alpha, default_beta = _ACTIVATIONS[name]
        alpha = alphas.pop(0) if default_alpha is not None and alphas else default_alpha
        beta = betas.pop(0) if default_beta is not None and betas else default_beta
        specs.append(ActivationSpec.of(ours, alpha, beta))
    return specs


def _blocks(matrix: np.ndarray, order: tuple[int, ...], hidden: int) -> np.ndarray:
    return np.concatenate([matrix[k * hidden:(k + 1) * hidden] for k in order])


def _recurrent(node: Any, constants: Constants, index: int
               ) -> tuple[RecurrentLayerSpec, dict[str, np.ndarray]]:
    attrs = attributes(node)
    where = f"node {node.name or node.op_type!r}"
    direction = attrs.get("direction", b"forward")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    if direction != "forward":
        raise ImportFailed(f"{where}: direction {direction!r} is refused: a stream is "
                           "consumed causally, forward")
    inputs = list(node.input) + [""] * 8
    if inputs[4]:
        lengths = constants.get(inputs[4])
        if lengths is None or len(set(np.ravel(lengths).tolist())) > 1:
            raise ImportFailed(f"{where}: varying sequence_lens are refused: every stream of "
                               "a call consumes the same number of steps")
        # One constant length for every row, as exporters write it: the whole window.
    weights = [constants.get(inputs[k]) for k in (1, 2)]
    if any(w is None for w in weights):
        raise ImportFailed(f"{where}: W and R must be constants (initializers)")
    w, r = (np.asarray(v, np.float32)[0] for v in weights)
    hidden = int(attrs.get("hidden_size", r.shape[1]))
    lstm = node.op_type == "LSTM"
    gates = (4 if lstm else 3) * hidden
    order = _LSTM_ORDER if lstm else _GRU_ORDER
    if w.shape[0] != gates or r.shape != (gates, hidden):
        raise ImportFailed(f"{where}: W {w.shape} / R {r.shape} do not fit hidden_size "
                           f"{hidden}")
    bias = constants.get(inputs[3])
    b = (np.zeros(2 * gates, np.float32) if bias is None
         else np.asarray(bias, np.float32).reshape(-1))
    tensors = {"w_ih": _blocks(w, order, hidden).T.copy(),
               "w_hh": _blocks(r, order, hidden).T.copy(),
               "b_ih": _blocks(b[:gates], order, hidden),
               "b_hh": _blocks(b[gates:], order, hidden)}
    clip = float(attrs.get("clip", 0.0) or 0.0)
    if lstm:
        f, g, h = _activations(node, attrs, 3, ["Sigmoid", "Tanh", "Tanh"])
        peep = constants.get(inputs[7])
        if peep is not None:
            p = np.asarray(peep, np.float32).reshape(-1)
            tensors["peephole"] = np.stack([p[:hidden], p[2 * hidden:], p[hidden:2 * hidden]])
        spec = RecurrentLayerSpec("lstm", int(w.shape[1]), hidden, gate_activation=f,
                                  cell_activation=g, hidden_activation=h,
                                  peepholes=peep is not None, clip=clip,
                                  input_forget=bool(attrs.get("input_forget", 0)))
    else:
        f, g = _activations(node, attrs, 2, ["Sigmoid", "Tanh"])
        spec = RecurrentLayerSpec("gru", int(w.shape[1]), hidden, gate_activation=f,
                                  cell_activation=g, clip=clip,
                                  reset_after=bool(attrs.get("linear_before_reset", 0)))
    initial = [constants.get(inputs[5]), constants.get(inputs[6]) if lstm else None]
    for part, value in zip(("h", "c"), initial, strict=True):
        if value is not None and np.any(value):
            state = np.asarray(value, np.float32).reshape(-1, hidden)
            if not np.all(state == state[0]):
                raise ImportFailed(f"{where}: initial_{part} differs between batch rows; a "
                                   "model's initial state is one vector per layer")
            tensors[f"initial.{part}"] = state[0]
    return spec, tensors


def _forecast_output(graph: Graph, traced: list[Traced]) -> Traced | None:
    """The one traced output that applies dense layers (the forecast), or None; every
    other output must be the recurrent state as it is."""
    heads = [one for one in traced if one.applies_dense]
    if len(heads) > 1:
        raise ImportFailed(f"graph outputs {[one.output for one in heads]} each apply dense "
                           "layers; statecast serves one forecast per model: export the "
                           "forecast and the recurrent state only")
    for one in traced:
        if not one.applies_dense:
            state_output_check(one)
    return heads[0] if heads else None


def _describe_outputs(traced: list[Traced], forecast: Traced | None) -> str:
    parts = []
    for one in traced:
        what = ("the forecast" if one is forecast else
                f"recurrent state ({one.source.kind} of layer {one.source.layer}), kept per "
                "stream")
        parts.append(f"{one.output!r}: {what}")
    if forecast is None:
        parts.append("no dense head: the model emits the last layer's hidden state, which "
                     "the service does not serve as a forecast")
    return "; ".join(parts)


def import_onnx(path: str | Path, options: ForecastOptions | None = None) -> Imported:
    """Import an ONNX model file (needs the ``onnx`` extra).

    ``source["forecast_output"]`` names the graph output that became the forecast and
    ``source["outputs"]`` says what every output is.
    """
    try:
        import onnx
    except ImportError:
        raise ImportFailed("reading ONNX files needs: pip install 'statecast[onnx]'") from None
    from google.protobuf.message import DecodeError

    path = Path(path)
    try:
        model_proto = onnx.load(str(path))
    except (DecodeError, OSError, ValueError) as error:
        raise ImportFailed(f"{path.name} is not an ONNX model: {error}") from None
    graph_proto = model_proto.graph
    refused = [n for n in graph_proto.node if n.op_type in ("RNN", "Scan", "Loop", "If")]
    if refused:
        raise ImportFailed(f"node {refused[0].name!r} ({refused[0].op_type}) is not supported: "
                           "statecast imports LSTM and GRU nodes")
    recurrent = [n for n in graph_proto.node if n.op_type in ("LSTM", "GRU")]
    if not recurrent:
        raise ImportFailed(f"{path.name} has no LSTM or GRU node")
    constants = Constants(graph_proto)
    specs, tensors, initial = [], {}, False
    for index, node in enumerate(recurrent):
        layer_spec, parts = _recurrent(node, constants, index)
        specs.append(layer_spec)
        for part, tensor in parts.items():
            if part.startswith("initial."):
                initial = True
                tensors[f"initial.{index}.{part.split('.')[1]}"] = tensor
            else:
                tensors[f"layers.{index}.{part}"] = tensor
    if initial:  # every layer then carries an initial state (zeros where none was given)
        for index, layer_spec in enumerate(specs):
            tensors.setdefault(f"initial.{index}.h",
                               np.zeros(layer_spec.output_size, np.float32))
            if layer_spec.cell == "lstm":
                tensors.setdefault(f"initial.{index}.c",
                                   np.zeros(layer_spec.hidden_size, np.float32))
    graph = Graph(graph_proto, recurrent, constants)
    x_name, batch_first = graph.input_layout()
    graph.check_links()
    traced = graph.traced_outputs()
    forecast = _forecast_output(graph, traced)
    head = parse_head(forecast, constants, len(recurrent)) if forecast else Head()
    for index, (matrix, bias) in enumerate(head.weights):
        tensors[f"head.{index}.weight"] = matrix
        tensors[f"head.{index}.bias"] = bias
    spec = build_spec(specs, head.layers, options or ForecastOptions(),
                      head_every_step=bool(head.layers) and not head.last_step,
                      initial_state=initial)
    verify(model_proto, graph, x_name, batch_first, traced, forecast, Model(spec, tensors))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return Imported(spec, tensors, {
        "framework": "onnx", "file": path.name, "sha256": digest,
        "opset": int(model_proto.opset_import[0].version),
        "forecast_output": forecast.output if forecast else None,
        "outputs": _describe_outputs(traced, forecast)})
