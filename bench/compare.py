"""One statecast-vs-peers comparison on one shape: the same weights and inputs through
statecast (``Model.run`` and the in-place ``forward_into``), PyTorch eager (1 and 2 threads)
and ONNX Runtime (TorchScript export, h0/c0 as inputs; 1 and 2 intra-op threads), after a
check that their head outputs agree within 1e-5."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.peers import TorchStack, interleaved_medians, ort_session
from statecast.models import Model
from statecast.models.importers import import_state_dict


@dataclass(frozen=True)
class Shape:
    cell: str
    hidden: int
    layers: int
    features: int
    streams: int
    steps: int
    horizon: int = 12

    def flops(self) -> float:
        """Multiply-adds x 2 of the recurrent layers for the whole call."""
        gates = (4 if self.cell == "lstm" else 3) * self.hidden
        per_step = sum(2 * ((self.features if layer == 0 else self.hidden) + self.hidden)
                       * gates for layer in range(self.layers))
        return float(per_step * self.streams * self.steps)

    def label(self) -> str:
        return (f"{self.cell.upper()} {self.layers}x{self.hidden}, {self.features} feat, "
                f"{self.streams} x {self.steps}")


def compare(shape: Shape, rounds: int, budget: float = 0.02, run: bool = True
            ) -> dict[str, float]:
    """Median seconds per call of every contender (``run``: include ``Model.run``)."""
    import torch

    stack = TorchStack(shape.cell, shape.features, shape.hidden, shape.layers, shape.horizon)
    imported = import_state_dict(stack.state_dict())
    model = Model(imported.spec, imported.tensors)
    rng = np.random.default_rng(0)
    b, t = shape.streams, shape.steps
    x = rng.standard_normal((b, t, shape.features)).astype(np.float32)
    h0 = (rng.standard_normal((shape.layers, b, shape.hidden)) * 0.5).astype(np.float32)
    c0 = (rng.standard_normal((shape.layers, b, shape.hidden)) * 0.5).astype(np.float32)
    torch_args = [torch.from_numpy(x), torch.from_numpy(h0)]
    feeds = {"x": x, "h0": h0}
    if shape.cell == "lstm":
        torch_args.append(torch.from_numpy(c0))
        feeds["c0"] = c0
    start = model.to_state((h0,) if shape.cell == "gru" else (h0, c0), b)
    sessions = {n: ort_session(stack.export_onnx(b, t), n) for n in (1, 2)}

    _, _, head = model.run(x, start)
    with torch.inference_mode():
        torch_head = stack.net(*torch_args)[1].numpy()
    ort_head = sessions[1].run(["head"], feeds)[0]
    for name, other in (("torch", torch_head), ("onnxruntime", ort_head)):
        np.testing.assert_allclose(head, other, atol=1e-5, rtol=1e-5,
                                   err_msg=f"statecast and {name} disagree on {shape}")

    arena = start.arena.copy()
    slots = np.arange(b, dtype=np.int64)
    y = np.empty((b, t, shape.hidden), np.float32)
    head_out = np.empty((b, shape.horizon), np.float32)

    def torch_call() -> None:
        with torch.inference_mode():
            stack.net(*torch_args)

    contenders = {}
    if run:
        contenders["statecast Model.run"] = lambda: model.run(x, start)
    contenders.update({
        "statecast forward_into": lambda: model.forward_into(x, arena, slots, y, head_out,
                                                             check=False),
        "torch eager 1 thread": torch_call,
        "torch eager 2 threads": torch_call,
        "onnxruntime 1 thread": lambda: sessions[1].run(None, feeds),
        "onnxruntime 2 threads": lambda: sessions[2].run(None, feeds),
    })
    before = {"torch eager 1 thread": lambda: torch.set_num_threads(1),
              "torch eager 2 threads": lambda: torch.set_num_threads(2)}
    return interleaved_medians(contenders, rounds, budget=budget, before=before)


def best(medians: dict[str, float], prefix: str) -> float:
    return min(v for k, v in medians.items() if k.startswith(prefix))
