"""ONNX graphs that return the recurrent state beside the forecast (stateful exports): the
head is found through its consumers and becomes the forecast; graphs with parts statecast
does not reproduce are refused, naming the node."""

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


class Stateful(torch.nn.Module):
    """``return y, (h, c), head``: what an export for stateful serving writes."""

    def __init__(self, cell, layers, head_on):
        super().__init__()
        kind = torch.nn.LSTM if cell == "lstm" else torch.nn.GRU
        self.rnn = kind(3, 8, num_layers=layers, batch_first=True)
        self.fc = torch.nn.Linear(8, 4)
        self.cell, self.head_on = cell, head_on

    def forward(self, x, h0=None, c0=None):
        state = None if h0 is None else (h0 if self.cell == "gru" else (h0, c0))
        y, new_state = self.rnn(x, state)
        h = new_state[0] if self.cell == "lstm" else new_state
        head = self.fc(y[:, -1] if self.head_on == "y" else h[-1])
        if self.cell == "lstm":
            return y, new_state[0], new_state[1], head
        return y, new_state, head


def export(net, path, x, dynamo, with_state):
    layers = net.rnn.num_layers
    args = [torch.from_numpy(x)]
    names = ["x"]
    if with_state:
        args.append(torch.zeros(layers, x.shape[0], 8))
        names.append("h0")
        if net.cell == "lstm":
            args.append(torch.zeros(layers, x.shape[0], 8))
            names.append("c0")
    outputs = ["y", "h_n", "c_n", "forecast"] if net.cell == "lstm" else ["y", "h_n",
                                                                          "forecast"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(net, tuple(args), str(path), dynamo=True, input_names=names,
                              output_names=outputs, verbose=False)
        else:
            torch.onnx.export(net, tuple(args), str(path), dynamo=False, input_names=names,
                              output_names=outputs, opset_version=17)


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
@pytest.mark.parametrize("cell,layers,head_on,with_state", [
    ("lstm", 2, "y", False), ("lstm", 1, "h", False), ("lstm", 2, "h", True),
    ("gru", 2, "y", False), ("gru", 2, "h", True)])
def test_stateful_exports_publish_their_head(tmp_path, dynamo, cell, layers, head_on,
                                             with_state):
    torch.manual_seed(1)
    net = Stateful(cell, layers, head_on).eval()
    x = np.random.default_rng(2).standard_normal((2, 6, 3)).astype(np.float32)
    path = tmp_path / "stateful.onnx"
    export(net, path, x, dynamo, with_state)
    imported = import_onnx(path, ForecastOptions(horizon=4))
    assert imported.source["forecast_output"] == "forecast"
    assert "'h_n': recurrent state" in imported.source["outputs"]
    assert imported.spec.horizon == 4 and imported.spec.head[0].out_features == 4
    assert not imported.spec.head_every_step
    y, state, head = Model(imported.spec, imported.tensors).run(x)
    with torch.no_grad():
        expected = net(torch.from_numpy(x))
    np.testing.assert_allclose(head, expected[-1].numpy(), **TOL)
    np.testing.assert_allclose(y, expected[0].numpy(), **TOL)
    np.testing.assert_allclose(np.stack(state.h), expected[1].numpy(), **TOL)


def const(rng, name, *shape):
    return numpy_helper.from_array((rng.standard_normal(shape) * 0.5).astype(np.float32),
                                   name)


def graph_around_lstm(path, extra_nodes, outputs, extra_inits=(), inputs=("X",)):
    """X [T, B, 3] -> LSTM(4) -> Y, Y_h, Y_c, then ``extra_nodes``."""
    rng = np.random.default_rng(5)
    inits = [const(rng, "W", 1, 16, 3), const(rng, "R", 1, 16, 4), const(rng, "B", 1, 32),
             const(rng, "W1", 4, 2), const(rng, "b1", 2), const(rng, "W2", 4, 2),
             numpy_helper.from_array(np.array([1], np.int64), "axes1"),
             numpy_helper.from_array(np.array([0], np.int64), "axes0"),
             numpy_helper.from_array(np.array(-1, np.int64), "last"), *extra_inits]
    nodes = [helper.make_node("LSTM", ["X", "W", "R", "B"], ["Y", "Y_h", "Y_c"],
                              hidden_size=4), *extra_nodes]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["T", "N", 3])
                     for name in inputs],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs],
        inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


HEAD_ON_Y = [helper.make_node("Squeeze", ["Y", "axes1"], ["Ys"]),
             helper.make_node("Gather", ["Ys", "last"], ["h"], axis=0),
             helper.make_node("Gemm", ["h", "W1", "b1"], ["out"])]


def test_hand_built_graph_returning_y_h_c_and_a_head(tmp_path):
    path = tmp_path / "g.onnx"
    graph_around_lstm(path, HEAD_ON_Y, ["Y", "Y_h", "Y_c", "out"])
    imported = import_onnx(path, ForecastOptions(horizon=2))
    assert imported.source["forecast_output"] == "out"
    x = np.random.default_rng(0).standard_normal((5, 3, 3)).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    y, _, y_c, out = session.run(None, {"X": x})
    ours_y, state, head = Model(imported.spec, imported.tensors).run(x.transpose(1, 0, 2))
    np.testing.assert_allclose(head, out, **TOL)
    np.testing.assert_allclose(ours_y, y[:, 0].transpose(1, 0, 2), **TOL)
    np.testing.assert_allclose(state.c[0], y_c[0], **TOL)


@pytest.mark.parametrize("nodes,outputs,match", [
    ([*HEAD_ON_Y, helper.make_node("Gemm", ["h", "W2"], ["other"])], ["out", "other"],
     r"graph outputs \['out', 'other'\] each apply dense layers"),
    ([*HEAD_ON_Y, helper.make_node("Mul", ["Y_h", "Y_h"], ["sq"])], ["out", "sq"],
     r"graph output 'sq' is not computed .* at node 'sq' \(Mul\)"),
    ([*HEAD_ON_Y, helper.make_node("Relu", ["Y_h"], ["r"])], ["out", "r"],
     r"node 'r' \(Relu\) computes graph output 'r'"),
    ([helper.make_node("Squeeze", ["Y_c", "axes0"], ["c"]),
      helper.make_node("Gemm", ["c", "W1", "b1"], ["out"])], ["out"],
     "applies dense layers to the cell state"),
    ([*HEAD_ON_Y[:2], helper.make_node("Add", ["h", "h"], ["hh"]),
      helper.make_node("Gemm", ["hh", "W1", "b1"], ["out"])], ["out"],
     r"at node 'hh' \(Add\)"),
    ([*HEAD_ON_Y[:2], helper.make_node("Gemm", ["h", "W1", "b1"], ["g"]),
      helper.make_node("Exp", ["g"], ["out"])], ["out"],
     r"node 'out' \(Exp\) after the recurrent layers is not supported"),
])
def test_parts_after_the_recurrent_layers_that_are_not_reproduced_are_refused(
        tmp_path, nodes, outputs, match):
    graph_around_lstm(tmp_path / "bad.onnx", nodes, outputs)
    with pytest.raises(ImportFailed, match=match):
        import_onnx(tmp_path / "bad.onnx")


def test_a_node_before_the_first_layer_is_refused(tmp_path):
    scale = numpy_helper.from_array(np.array([2.0], np.float32), "two")
    graph_around_lstm(tmp_path / "pre.onnx",
                      [helper.make_node("Div", ["raw", "two"], ["X"]), *HEAD_ON_Y], ["out"],
                      extra_inits=[scale], inputs=("raw",))
    with pytest.raises(ImportFailed, match=r"node 'X' \(Div\) before the first recurrent"):
        import_onnx(tmp_path / "pre.onnx")


def test_a_gather_on_the_wrong_axis_is_caught_by_the_probe(tmp_path):
    """Gather(index -1) on the batch axis reads like 'the last step' structurally; running
    both on a probe window shows it is not."""
    nodes = [helper.make_node("Squeeze", ["Y", "axes1"], ["Ys"]),
             helper.make_node("Gather", ["Ys", "last"], ["h"], axis=1),
             helper.make_node("Gemm", ["h", "W1", "b1"], ["out"])]
    graph_around_lstm(tmp_path / "axis.onnx", nodes, ["out"])
    with pytest.raises(ImportFailed, match="does not reproduce graph output 'out'"):
        import_onnx(tmp_path / "axis.onnx")
