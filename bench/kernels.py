"""The engine against PyTorch eager and ONNX Runtime over the whole grid:
hidden {32, 64, 128, 256} x layers {1, 2} x features {1, 8} x streams {1, 64, 1024} x
window {1, 24}, same weights, interleaved, medians; prints latency, stream-steps/s, GFLOP/s
(and as a fraction of the machine's measured FMA peak, :mod:`bench.peak`) and the ratio to
the best of each peer, after checking that outputs agree within 1e-5.

Run: ``python -m bench.kernels`` (the full grid takes a while) or ``--quick`` (a 2-minute
subset: hidden 64 and 256, 2 layers, 8 features, every streams x window).
"""

from __future__ import annotations

import argparse
import itertools
import time

from bench.compare import Shape, best, compare
from bench.peak import fma_peak
from bench.peers import fmt_time, machine

HIDDEN = (32, 64, 128, 256)
LAYERS = (1, 2)
FEATURES = (1, 8)
STREAMS = (1, 64, 1024)
WINDOW = (1, 24)


def grid(quick: bool, cell: str) -> list[Shape]:
    if quick:
        return [Shape(cell, h, 2, 8, s, w) for h in (64, 256) for s in STREAMS
                for w in WINDOW]
    return [Shape(cell, h, layers, f, s, w) for h, layers, f, s, w in
            itertools.product(HIDDEN, LAYERS, FEATURES, STREAMS, WINDOW)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the 2-minute subset")
    parser.add_argument("--cell", choices=("lstm", "gru"), default="lstm")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(machine())
    peak = fma_peak()
    print(f"measured FMA peak (the panel tile on L1-resident data, one core x cores): "
          f"{peak:.0f} GFLOP/s")
    print(f"{'shape':42s} {'statecast':>10s} {'torch':>10s} {'onnxrt':>10s} "
          f"{'stream-steps/s':>15s} {'GFLOP/s':>8s} {'% peak':>6s} {'vs torch':>9s} "
          f"{'vs ORT':>7s}")
    started = time.perf_counter()
    wins = total = 0
    for shape in grid(args.quick, args.cell):
        budget = 0.01 if shape.streams * shape.steps * shape.hidden >= 1024 * 24 * 128 else 0.02
        medians = compare(shape, args.rounds, budget=budget, run=False)
        ours = medians["statecast forward_into"]
        torch_best, ort_best = best(medians, "torch"), best(medians, "onnxruntime")
        total += 1
        wins += ours < min(torch_best, ort_best)
        gflops = shape.flops() / ours / 1e9
        print(f"{shape.label():42s} {fmt_time(ours)} {fmt_time(torch_best)} "
              f"{fmt_time(ort_best)} {shape.streams * shape.steps / ours:15,.0f} "
              f"{gflops:8.1f} {100 * gflops / peak:5.0f}% {torch_best / ours:8.2f}x "
              f"{ort_best / ours:6.2f}x", flush=True)
    print(f"statecast faster than both peers in {wins} of {total} shapes "
          f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
