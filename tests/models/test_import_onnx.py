"""ONNX graphs with LSTM/GRU nodes give onnxruntime's (and PyTorch's) outputs."""

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from statecast.models import ImportFailed, Model
from statecast.models.importers import ForecastOptions
from statecast.models.importers.onnx import import_onnx

TOL = {"atol": 1e-5, "rtol": 1e-5}


def run_ort(path, feeds):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


class Stacked(torch.nn.Module):
    def __init__(self, cell):
        super().__init__()
        self.rnn = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(3, 8, num_layers=2,
                                                                      batch_first=True)
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x):
        y, _ = self.rnn(x)
        return self.fc(y[:, -1])


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_torch_exports_match_torch_and_onnxruntime(tmp_path, cell, dynamo):
    torch.manual_seed(0)
    net = Stacked(cell)
    path = tmp_path / "model.onnx"
    x = np.random.default_rng(0).standard_normal((3, 7, 3)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:  # the default exporter since torch 2.9; shapes fixed at export
            torch.onnx.export(net, (torch.from_numpy(x),), str(path), dynamo=True,
                              input_names=["x"], output_names=["y"], verbose=False)
        else:
            torch.onnx.export(net, (torch.zeros(2, 5, 3),), str(path), dynamo=False,
                              input_names=["x"], output_names=["y"], opset_version=17,
                              dynamic_axes={"x": {0: "b", 1: "t"}})
    imported = import_onnx(path, ForecastOptions(horizon=4))
    assert [layer.cell for layer in imported.spec.layers] == [cell, cell]
    assert not imported.spec.head_every_step and imported.spec.head[0].out_features == 4
    _, _, head = Model(imported.spec, imported.tensors).run(x)
    np.testing.assert_allclose(head, run_ort(path, {"x": x})[0], **TOL)
    with torch.no_grad():
        np.testing.assert_allclose(head, net(torch.from_numpy(x)).numpy(), **TOL)


def lstm_graph(path, hidden=5, inputs=3, *, attrs=None, peepholes=False, initial=False,
               seed=0, op="LSTM"):
    """A one-node graph X -> LSTM/GRU -> Y_h, weights as initializers."""
    rng = np.random.default_rng(seed)
    gates = (4 if op == "LSTM" else 3) * hidden
    inits = [numpy_helper.from_array((rng.standard_normal((1, gates, inputs)) * 0.5)
                                     .astype(np.float32), "W"),
             numpy_helper.from_array((rng.standard_normal((1, gates, hidden)) * 0.5)
                                     .astype(np.float32), "R"),
             numpy_helper.from_array((rng.standard_normal((1, 2 * gates)) * 0.3)
                                     .astype(np.float32), "B")]
    node_inputs = ["X", "W", "R", "B", ""]
    if initial:
        inits.append(numpy_helper.from_array(np.tile(rng.standard_normal(hidden), (1, 2, 1))
                                             .astype(np.float32), "H0"))
        node_inputs.append("H0")
        if op == "LSTM":
            inits.append(numpy_helper.from_array(np.tile(rng.standard_normal(hidden),
                                                         (1, 2, 1)).astype(np.float32), "C0"))
            node_inputs.append("C0")
    if peepholes:
        node_inputs += [""] * (7 - len(node_inputs)) + ["P"]
        inits.append(numpy_helper.from_array((rng.standard_normal((1, 3 * hidden)) * 0.5)
                                             .astype(np.float32), "P"))
    node = helper.make_node(op, node_inputs, ["Y", "Y_h"], hidden_size=hidden, **(attrs or {}))
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", 2, inputs])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    onnx.save(model, path)


def compare_with_ort(path, inputs=3):
    x = (np.random.default_rng(1).standard_normal((6, 2, inputs)) * 2).astype(np.float32)
    expected_y = run_ort(path, {"X": x})[0]  # [T, 1, B, H]
    imported = import_onnx(path)
    outputs, _, _ = Model(imported.spec, imported.tensors).run(x.transpose(1, 0, 2))
    np.testing.assert_allclose(outputs, expected_y[:, 0].transpose(1, 0, 2), **TOL)
    return imported


@pytest.mark.parametrize("attrs,peepholes", [
    ({}, False),
    ({}, True),
    ({"clip": 1.5}, True),
    ({"input_forget": 1}, False),
    ({"activations": ["HardSigmoid", "Tanh", "Relu"], "activation_alpha": [0.3],
      "activation_beta": [0.45]}, False),
    ({"activations": ["Sigmoid", "LeakyRelu", "Softsign"], "activation_alpha": [0.1]},
     False),
])
def test_hand_built_lstm_nodes_match_onnxruntime(tmp_path, attrs, peepholes):
    lstm_graph(tmp_path / "lstm.onnx", attrs=attrs, peepholes=peepholes)
    compare_with_ort(tmp_path / "lstm.onnx")


@pytest.mark.parametrize("linear_before_reset", [0, 1])
def test_hand_built_gru_nodes_match_onnxruntime(tmp_path, linear_before_reset):
    lstm_graph(tmp_path / "gru.onnx", op="GRU",
               attrs={"linear_before_reset": linear_before_reset})
    imported = compare_with_ort(tmp_path / "gru.onnx")
    assert imported.spec.layers[0].reset_after == bool(linear_before_reset)


@pytest.mark.parametrize("op", ["LSTM", "GRU"])
def test_constant_initial_states_become_the_model_s_initial_state(tmp_path, op):
    lstm_graph(tmp_path / "init.onnx", op=op, initial=True)
    imported = compare_with_ort(tmp_path / "init.onnx")
    assert imported.spec.initial_state


@pytest.mark.parametrize("attrs,match", [
    ({"direction": "bidirectional"}, "direction 'bidirectional' is refused"),
    ({"direction": "reverse"}, "direction 'reverse' is refused"),
])
def test_non_causal_nodes_are_refused_naming_them(tmp_path, attrs, match):
    lstm_graph(tmp_path / "bad.onnx", attrs=attrs)
    with pytest.raises(ImportFailed, match=match):
        import_onnx(tmp_path / "bad.onnx")


def test_files_without_recurrent_nodes_or_not_onnx(tmp_path):
    (tmp_path / "x.onnx").write_bytes(b"garbage")
    with pytest.raises(ImportFailed, match="is not an ONNX model"):
        import_onnx(tmp_path / "x.onnx")
    graph = helper.make_graph([helper.make_node("Relu", ["X"], ["Y"])], "g",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), tmp_path / "relu.onnx")
    with pytest.raises(ImportFailed, match="has no LSTM or GRU node"):
        import_onnx(tmp_path / "relu.onnx")


def test_varying_sequence_lengths_are_refused(tmp_path):
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(rng.standard_normal((1, 8, 2)).astype(np.float32), "W"),
             numpy_helper.from_array(rng.standard_normal((1, 8, 2)).astype(np.float32), "R"),
             numpy_helper.from_array(np.array([3, 2], np.int32), "L")]
    node = helper.make_node("LSTM", ["X", "W", "R", "", "L"], ["Y"], hidden_size=2)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [3, 2, 2])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], inits)
    onnx.save(helper.make_model(graph), tmp_path / "lens.onnx")
    with pytest.raises(ImportFailed, match="varying sequence_lens are refused"):
        import_onnx(tmp_path / "lens.onnx")


def test_a_matmul_add_relu_gemm_head_on_the_last_step(tmp_path):
    rng = np.random.default_rng(5)

    def const(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.5).astype(np.float32),
                                       name)

    inits = [const("W", 1, 16, 3), const("R", 1, 16, 4), const("B", 1, 32),
             const("W1", 4, 6), const("b1", 6), const("W2", 2, 6), const("b2", 2),
             numpy_helper.from_array(np.array([1], np.int64), "axes"),
             numpy_helper.from_array(np.array(-1, np.int64), "last")]
    nodes = [helper.make_node("LSTM", ["X", "W", "R", "B"], ["Y"], hidden_size=4),
             helper.make_node("Squeeze", ["Y", "axes"], ["Ys"]),
             helper.make_node("Gather", ["Ys", "last"], ["h"], axis=0),
             helper.make_node("MatMul", ["h", "W1"], ["m"]),
             helper.make_node("Add", ["m", "b1"], ["a"]),
             helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("Gemm", ["r", "W2", "b2"], ["out"], transB=1)]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "B", 3])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]),
              tmp_path / "head.onnx")
    imported = import_onnx(tmp_path / "head.onnx", ForecastOptions(horizon=2))
    assert [d.activation.name for d in imported.spec.head] == ["relu", "linear"]
    x = rng.standard_normal((5, 3, 3)).astype(np.float32)
    _, _, head = Model(imported.spec, imported.tensors).run(x.transpose(1, 0, 2))
    np.testing.assert_allclose(head, run_ort(tmp_path / "head.onnx", {"X": x})[0], **TOL)


def test_weights_reordered_by_constant_slice_concat_subgraphs(tmp_path):
    """The dynamo exporter may leave PyTorch-order weights behind Slice/Concat nodes."""
    hidden, inputs = 3, 2
    rng = np.random.default_rng(6)
    torch_order = {"Wt": rng.standard_normal((1, 4 * hidden, inputs)),
                   "Rt": rng.standard_normal((1, 4 * hidden, hidden)),
                   "Bt": rng.standard_normal((1, 8 * hidden))}
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in torch_order.items()]
    nodes = []
    for name, axis, blocks in (("W", 1, 4), ("R", 1, 4), ("B", 1, 8)):
        parts = []
        # PyTorch i, f, g, o -> ONNX i, o, f, c (biases: both halves)
        order = [0, 3, 1, 2] if blocks == 4 else [0, 3, 1, 2, 4, 7, 5, 6]
        for position, block in enumerate(order):
            for bound, value in (("s", block * hidden), ("e", (block + 1) * hidden)):
                inits.append(numpy_helper.from_array(np.array([value], np.int64),
                                                     f"{name}{bound}{position}"))
            inits.append(numpy_helper.from_array(np.array([axis], np.int64),
                                                 f"{name}a{position}"))
            nodes.append(helper.make_node(
                "Slice", [f"{name}t", f"{name}s{position}", f"{name}e{position}",
                          f"{name}a{position}"], [f"{name}p{position}"]))
            parts.append(f"{name}p{position}")
        nodes.append(helper.make_node("Concat", parts, [name], axis=axis))
    nodes.append(helper.make_node("LSTM", ["X", "W", "R", "B"], ["Y"], hidden_size=hidden))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", 2, inputs])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
              tmp_path / "sliced.onnx")
    compare_with_ort(tmp_path / "sliced.onnx", inputs=inputs)
