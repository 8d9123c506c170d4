"""ONNX's own backend node tests for LSTM and GRU, generated in the test run from the
generators the ``onnx`` package ships (``onnx/backend/test/case/node/lstm.py``, ``gru.py``):
each passes, or is refused with a clear error where it uses a feature statecast refuses
on purpose (reverse and bidirectional directions)."""

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from onnx.backend.test.case.node import gru as gru_cases
from onnx.backend.test.case.node import lstm as lstm_cases

from statecast.models import ImportFailed, Model
from statecast.models.importers.onnx import import_onnx

REFUSED = {"test_lstm_reverse": "direction 'reverse' is refused",
           "test_lstm_bidirectional": "direction 'bidirectional' is refused",
           "test_gru_reverse": "direction 'reverse' is refused",
           "test_gru_bidirectional": "direction 'bidirectional' is refused"}


def collect():
    cases = []

    def capture(node, inputs, outputs, name, **kwargs):
        cases.append((name, node, inputs, outputs))

    for module, kind in ((lstm_cases, lstm_cases.LSTM), (gru_cases, gru_cases.GRU)):
        original = module.expect
        module.expect = capture
        try:
            for attribute in sorted(dir(kind)):
                if attribute.startswith("export"):
                    getattr(kind, attribute)()
        finally:
            module.expect = original
    return cases


CASES = collect()


def without_defaults(node, inputs):
    """The node with every optional input that holds its default (``sequence_lens`` of the
    whole window, a zero initial state) omitted, ONNX's ``''``, as exporters write it."""
    x = np.asarray(inputs[0])
    layout = next((a.i for a in node.attribute if a.name == "layout"), 0)
    steps = x.shape[1] if layout else x.shape[0]
    names, kept = list(node.input), []
    for position, value in enumerate(inputs):
        default = ((position == 4 and np.all(np.asarray(value) == steps))
                   or (position in (5, 6) and not np.any(value)))
        if default:
            names[position] = ""
        else:
            kept.append(value)
    omitted = helper.make_node(node.op_type, names, list(node.output), name=node.name)
    omitted.attribute.extend(node.attribute)
    return omitted, kept


OMITTED = [(f"{name}-defaults-omitted", *without_defaults(node, inputs), outputs)
           for name, node, inputs, outputs in CASES
           if len(without_defaults(node, inputs)[1]) < len(inputs)]


def as_model(node, inputs, path):
    """X stays a graph input; every other input becomes an initializer (a weight)."""
    names = [name for name in node.input if name]
    initializers = [numpy_helper.from_array(np.asarray(value), name)
                    for name, value in zip(names[1:], inputs[1:], strict=True)]
    graph = helper.make_graph(
        [node], "case",
        [helper.make_tensor_value_info(names[0], onnx.TensorProto.FLOAT, inputs[0].shape)],
        [helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
         for name in node.output if name], initializers)
    onnx.save(helper.make_model(graph), path)


@pytest.mark.parametrize("name,node,inputs,outputs", CASES + OMITTED,
                         ids=[c[0] for c in CASES + OMITTED])
def test_onnx_backend_case(tmp_path, name, node, inputs, outputs):
    path = tmp_path / f"{name}.onnx"
    as_model(node, inputs, path)
    if name.removesuffix("-defaults-omitted") in REFUSED:
        with pytest.raises(ImportFailed, match=REFUSED[name.removesuffix("-defaults-omitted")]):
            import_onnx(path)
        return
    layout = next((a.i for a in node.attribute if a.name == "layout"), 0)
    x = np.asarray(inputs[0], np.float32)
    batch_first = x if layout else x.transpose(1, 0, 2)
    imported = import_onnx(path)
    y, state, _ = Model(imported.spec, imported.tensors).run(batch_first)
    present = [out for out in node.output if out]
    expected = dict(zip(present, outputs, strict=True))
    if present[0] in expected and len(node.output) > 0 and node.output[0]:
        reference = np.asarray(expected[node.output[0]])  # Y: [T, 1, B, H] or [B, T, 1, H]
        reference = reference[:, :, 0] if layout else reference[:, 0].transpose(1, 0, 2)
        np.testing.assert_allclose(y, reference, atol=1e-5, rtol=1e-5)
    if len(node.output) > 1 and node.output[1]:
        reference = np.asarray(expected[node.output[1]])  # Y_h: [1, B, H] or [B, 1, H]
        reference = reference[:, 0] if layout else reference[0]
        np.testing.assert_allclose(state.h[-1], reference, atol=1e-5, rtol=1e-5)
