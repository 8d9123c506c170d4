"""The service's hot path: one stream, one step (and a few more shapes) through
``Model.run`` and the in-place ``Model.forward_into``, against PyTorch eager and ONNX
Runtime (TorchScript export, h0/c0 as inputs) at 1 and 2 threads, measured in the same run.

Run: ``python bench/hot_path.py`` (``--quick``: the one-stream case only).
Target (issue 2): 1 stream x 1 step, 2-layer LSTM hidden 64, 8 features: Model.run >= 4x
faster than the best ONNX Runtime and >= 30x faster than the best PyTorch eager.
"""

from __future__ import annotations

import argparse

import numpy as np

from bench.peers import TorchStack, fmt_time, interleaved_medians, machine, ort_session
from models import Model
from models.importers import import_state_dict

CASES = [(1, 1), (1, 24), (64, 1), (64, 24), (1024, 24)]


def measure(cell: str, batch: int, steps: int, hidden: int = 64, layers: int = 2,
            features: int = 8, horizon: int = 12, rounds: int = 15) -> dict[str, float]:
    import torch

    stack = TorchStack(cell, features, hidden, layers, horizon)
    imported = import_state_dict(stack.state_dict())
    model = Model(imported.spec, imported.tensors)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, steps, features)).astype(np.float32)
    h0 = (rng.standard_normal((layers, batch, hidden)) * 0.5).astype(np.float32)
    c0 = (rng.standard_normal((layers, batch, hidden)) * 0.5).astype(np.float32)
    torch_args = [torch.from_numpy(x), torch.from_numpy(h0)]
    feeds = {"x": x, "h0": h0}
    if cell == "lstm":
        torch_args.append(torch.from_numpy(c0))
        feeds["c0"] = c0
    state = (h0,) if cell == "gru" else (h0, c0)
    _, start_state, _ = model.run(np.zeros((batch, 1, features), np.float32), state)
    # start_state is a State; replace its arena with the exact h0/c0 for the comparison.
    start_state.arena[:] = model._arena_from_arrays(state, batch)

    path = stack.export_onnx(batch, steps)
    sessions = {threads: ort_session(path, threads) for threads in (1, 2)}

    # Agreement first: every contender's head output within 1e-5 of statecast's.
    _, _, head = model.run(x, start_state)
    with torch.inference_mode():
        torch_head = stack.net(*torch_args)[1].numpy()
    ort_head = sessions[1].run(["head"], feeds)[0]
    for name, other in (("torch", torch_head), ("onnxruntime", ort_head)):
        np.testing.assert_allclose(head, other, atol=1e-5, rtol=1e-5,
                                   err_msg=f"statecast and {name} disagree")

    arena = start_state.arena.copy()
    slots = np.arange(batch, dtype=np.int64)
    y = np.empty((batch, steps, hidden), np.float32)
    head_out = np.empty((batch, horizon), np.float32)

    def torch_call() -> None:
        with torch.inference_mode():
            stack.net(*torch_args)

    contenders = {
        "statecast Model.run": lambda: model.run(x, start_state),
        "statecast forward_into": lambda: model.forward_into(x, arena, slots, y, head_out,
                                                             check=False),
        "torch eager 1 thread": torch_call,
        "torch eager 2 threads": torch_call,
        "onnxruntime 1 thread": lambda: sessions[1].run(None, feeds),
        "onnxruntime 2 threads": lambda: sessions[2].run(None, feeds),
    }
    before = {"torch eager 1 thread": lambda: torch.set_num_threads(1),
              "torch eager 2 threads": lambda: torch.set_num_threads(2)}
    return interleaved_medians(contenders, rounds, before=before)


def report(cell: str, batch: int, steps: int, medians: dict[str, float]) -> None:
    best_torch = min(v for k, v in medians.items() if k.startswith("torch"))
    best_ort = min(v for k, v in medians.items() if k.startswith("onnxruntime"))
    print(f"\n{cell.upper()} 2 layers, hidden 64, 8 features: {batch} stream(s) x {steps} "
          f"step(s)")
    for name, seconds in medians.items():
        extra = ""
        if name.startswith("statecast"):
            extra = (f"   {best_torch / seconds:6.1f}x faster than best torch, "
                     f"{best_ort / seconds:5.2f}x faster than best onnxruntime")
        rate = batch * steps / seconds
        print(f"  {name:24s} {fmt_time(seconds)}  {rate:12,.0f} stream-steps/s{extra}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="only 1 stream x 1 step")
    parser.add_argument("--cell", choices=("lstm", "gru"), default="lstm")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    print(machine())
    for batch, steps in CASES[:1] if args.quick else CASES:
        report(args.cell, batch, steps, measure(args.cell, batch, steps, rounds=args.rounds))


if __name__ == "__main__":
    main()
