"""The last check of an ONNX import: run the graph itself (onnxruntime, or ONNX's reference
evaluator where onnxruntime refuses the graph) and the imported model on the same probe
window, and refuse the import if they disagree on the forecast or on the last layer's
outputs. It catches whatever the structural reading missed (an axis, a layout, a node
that means something else), so that an import never publishes a model that computes
something other than the graph.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from statecast.models.errors import ImportFailed
from statecast.models.importers.onnx_graph import LAST_H, SEQUENCE, Graph, Traced, attributes
from statecast.models.model import Model

#: Far above float32 rounding, far below what a misread graph gives.
_ATOL, _RTOL = 1e-4, 1e-3
_PROBE_BATCH, _PROBE_STEPS = 2, 5


def _runner(model_proto: Any) -> Callable[[dict[str, np.ndarray]], list[np.ndarray]]:
    """onnxruntime when it is installed and takes the graph, else the reference evaluator."""
    try:
        import onnxruntime as ort

        session = ort.InferenceSession(model_proto.SerializeToString(),
                                       providers=["CPUExecutionProvider"])
        return lambda feeds: list(session.run(None, feeds))
    except ImportError:
        pass
    except Exception:  # onnxruntime raises its own exception types: try the reference
        pass
    from onnx.reference import ReferenceEvaluator

    evaluator = ReferenceEvaluator(model_proto)
    return lambda feeds: list(evaluator.run(None, feeds))


def _shape(value_info: Any, named: dict[str, int]) -> list[int]:
    dims = []
    for dim in value_info.type.tensor_type.shape.dim:
        if dim.HasField("dim_value") and dim.dim_value > 0:
            dims.append(int(dim.dim_value))
        elif dim.dim_param in named:
            dims.append(named[dim.dim_param])
        else:
            raise ImportFailed(f"graph input {value_info.name!r} has a free dimension "
                               f"{dim.dim_param or '?'!r}: cannot probe the graph to check "
                               "the import")
    return dims


def _feeds(graph: Graph, x_name: str, batch_first: bool, features: int
           ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Probe inputs: a random window for ``x_name`` and zeros (the zero state) for any
    other float input. Returns the feeds and the window as ``[batch, time, features]``."""
    x_info = next(i for i in graph.graph.input if i.name == x_name)
    dims = list(x_info.type.tensor_type.shape.dim)
    if len(dims) != 3:
        raise ImportFailed(f"graph input {x_name!r} must be 3-D, [batch, time, features]")
    batch_at, time_at = (0, 1) if batch_first else (1, 0)
    named: dict[str, int] = {}
    sizes = [_PROBE_BATCH, _PROBE_STEPS]
    for at, size in ((batch_at, sizes[0]), (time_at, sizes[1])):
        dim = dims[at]
        if dim.HasField("dim_value") and dim.dim_value > 0:
            sizes[0 if at == batch_at else 1] = int(dim.dim_value)
        elif dim.dim_param:
            named[dim.dim_param] = size
    batch, steps = sizes
    window = np.random.default_rng(7).standard_normal((batch, steps, features)).astype(
        np.float32)
    feeds = {x_name: window if batch_first else np.ascontiguousarray(
        window.transpose(1, 0, 2))}
    named.setdefault("batch", batch)
    initializers = {init.name for init in graph.graph.initializer}
    for info in graph.graph.input:
        if info.name == x_name or info.name in initializers:
            continue
        if info.type.tensor_type.elem_type != 1:  # FLOAT
            raise ImportFailed(f"graph input {info.name!r} is not float: cannot probe the "
                               "graph to check the import")
        feeds[info.name] = np.zeros(_shape(info, named), np.float32)
    return feeds, window


def _same(ours: np.ndarray, candidates: list[np.ndarray]) -> bool:
    for candidate in candidates:
        if candidate.shape == ours.shape and np.allclose(ours, candidate, rtol=_RTOL,
                                                         atol=_ATOL):
            return True
    return False


def verify(model_proto: Any, graph: Graph, x_name: str, batch_first: bool,
           traced: list[Traced], forecast: Traced | None, model: Model) -> None:
    """Refuse the import unless the imported ``model`` reproduces the graph's forecast
    output and the last layer's ``Y``/``Y_h`` where the graph returns them as they are."""
    feeds, window = _feeds(graph, x_name, batch_first, model.spec.input_size)
    try:
        results = _runner(model_proto)(feeds)
    except Exception as error:  # any evaluator failure means the import cannot be checked
        raise ImportFailed(f"cannot run the graph to check the import: "
                           f"{str(error).splitlines()[0] if str(error) else error!r}") from None
    by_name = {info.name: np.asarray(value) for info, value in zip(
        graph.graph.output, results, strict=True)}
    y, state, head = model.run(window)
    batch, steps = window.shape[:2]
    last = len(graph.recurrent) - 1
    layout = bool(attributes(graph.recurrent[last]).get("layout", 0))
    checks: list[tuple[str, np.ndarray, list[np.ndarray]]] = []
    for one in traced:
        theirs = by_name[one.output]
        if one is forecast and head is not None:
            flat = theirs.reshape(-1)
            candidates: list[np.ndarray] = [flat]  # a size that differs cannot match
            if flat.size == head.size and model.spec.head_every_step:
                width = head.shape[-1]  # batch-first or time-major, as the graph lays it out
                candidates = [flat.reshape(batch, steps, width),
                              flat.reshape(steps, batch, width).transpose(1, 0, 2)]
            elif flat.size == head.size:
                candidates = [flat.reshape(batch, -1)]
            checks.append((one.output, head, candidates))
        elif not one.nodes and one.source.layer == last and one.source.kind == SEQUENCE:
            seq = theirs[:, :, 0] if layout else theirs[:, 0].transpose(1, 0, 2)
            checks.append((one.output, y, [seq]))
        elif not one.nodes and one.source.layer == last and one.source.kind == LAST_H:
            checks.append((one.output, state.h[-1], [theirs[:, 0] if layout else theirs[0]]))
    for name, ours, candidates in checks:
        if not _same(ours, candidates):
            closest = min((float(np.max(np.abs(ours - c))) for c in candidates
                           if c.shape == ours.shape), default=float("inf"))
            raise ImportFailed(
                f"the imported model does not reproduce graph output {name!r} (largest "
                f"difference {closest:.3g} on a probe window): some node means more than "
                "statecast read from it; refusing to publish a model that computes "
                "something else")
