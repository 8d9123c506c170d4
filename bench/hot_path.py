"""The service's hot path: one stream, one step (and a few more shapes) through
``Model.run`` and the in-place ``Model.forward_into``, against PyTorch eager and ONNX
Runtime (TorchScript export, h0/c0 as inputs) at 1 and 2 threads, measured in the same run.

Run: ``python bench/hot_path.py`` (``--quick``: the one-stream case only).
Target: 1 stream x 1 step, 2-layer LSTM hidden 64, 8 features: Model.run >= 4x
faster than the best ONNX Runtime and >= 30x faster than the best PyTorch eager.
"""

from __future__ import annotations

import argparse

from bench.compare import Shape, best, compare
from bench.peers import fmt_time, machine

CASES = [(1, 1), (1, 24), (64, 1), (64, 24), (1024, 24)]


def report(shape: Shape, medians: dict[str, float]) -> None:
    best_torch, best_ort = best(medians, "torch"), best(medians, "onnxruntime")
    print(f"\n{shape.cell.upper()} {shape.layers} layers, hidden {shape.hidden}, "
          f"{shape.features} features: {shape.streams} stream(s) x {shape.steps} step(s)")
    for name, seconds in medians.items():
        extra = ""
        if name.startswith("statecast"):
            extra = (f"   {best_torch / seconds:6.1f}x faster than best torch, "
                     f"{best_ort / seconds:5.2f}x faster than best onnxruntime")
        rate = shape.streams * shape.steps / seconds
        print(f"  {name:24s} {fmt_time(seconds)}  {rate:12,.0f} stream-steps/s{extra}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="only 1 stream x 1 step")
    parser.add_argument("--cell", choices=("lstm", "gru"), default="lstm")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    print(machine())
    for streams, steps in CASES[:1] if args.quick else CASES:
        shape = Shape(args.cell, hidden=64, layers=2, features=8, streams=streams, steps=steps)
        report(shape, compare(shape, args.rounds))


if __name__ == "__main__":
    main()
