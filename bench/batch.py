"""Batch-job benchmark: forecast 100,000 series x 48 steps from a Parquet file
into another, end to end (read, run, write), with ``statecast batch``'s job run locally and
on a Dask LocalCluster, against a PyTorch loop doing the same job with the same weights
(read the file, batches of series through ``nn.LSTM`` + ``nn.Linear``, write the file).
Prints series-steps/s and the ratios, after checking the forecasts agree.

Run: ``python -m bench.batch [--series 100000] [--steps 48] [--skip-dask]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench.load import publish_model
from bench.peers import machine
from statecast.service.batch import JobSpec, run_job

HORIZON = 12


def make_input(path: Path, series: int, steps: int) -> None:
    rng = np.random.default_rng(0)
    t = np.arange(steps)
    phase = rng.uniform(0, 6, series)[:, None]
    values = (np.sin(t[None, :] / 5 + phase) + rng.normal(0, 0.1, (series, steps)))
    pd.DataFrame({"unique_id": np.repeat(np.arange(series), steps),
                  "ds": np.tile(t, series),
                  "y": values.astype(np.float32).ravel()}).to_parquet(path, index=False)


def torch_job(registry: Path, source: Path, target: Path, batch: int = 4096) -> float:
    """The same job in PyTorch eager: read, run the same weights, write."""
    import torch

    from statecast.models import Registry

    model = Registry(registry).load("bench")
    net = torch.nn.LSTM(1, 64, num_layers=2, batch_first=True)
    head = torch.nn.Linear(64, HORIZON)
    tensors = model.tensors
    with torch.no_grad():
        for layer in range(2):
            for name in ("w_ih", "w_hh"):
                weight = tensors[f"layers.{layer}.{name}"].T  # ours are [in, 4H]
                getattr(net, f"weight_{name[2:]}_l{layer}").copy_(torch.from_numpy(weight))
            getattr(net, f"bias_ih_l{layer}").copy_(
                torch.from_numpy(tensors[f"layers.{layer}.b_ih"]))
            getattr(net, f"bias_hh_l{layer}").copy_(
                torch.from_numpy(tensors[f"layers.{layer}.b_hh"]))
        head.weight.copy_(torch.from_numpy(tensors["head.0.weight"].T))
        head.bias.copy_(torch.from_numpy(tensors["head.0.bias"]))
    started = time.perf_counter()
    frame = pd.read_parquet(source).sort_values(["unique_id", "ds"], kind="stable")
    ids = frame["unique_id"].unique()
    steps = len(frame) // len(ids)
    values = frame["y"].to_numpy(np.float32).reshape(len(ids), steps, 1)
    last = frame["ds"].to_numpy().reshape(len(ids), steps)[:, -1]
    out = np.empty((len(ids), HORIZON), np.float32)
    with torch.inference_mode():
        for start in range(0, len(ids), batch):
            x = torch.from_numpy(values[start:start + batch].copy())
            y, _ = net(x)
            out[start:start + batch] = head(y[:, -1]).numpy()
    pd.DataFrame({"unique_id": np.repeat(ids, HORIZON),
                  "ds": (last[:, None] + np.arange(1, HORIZON + 1)).ravel(),
                  "bench": out.ravel()}).to_parquet(target, index=False)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--series", type=int, default=100_000)
    parser.add_argument("--steps", type=int, default=48)
    parser.add_argument("--chunk-size", type=int, default=10_000)
    parser.add_argument("--skip-dask", action="store_true")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="statecast-batch-"))
    publish_model(root / "registry")
    source = root / "series.parquet"
    make_input(source, args.series, args.steps)
    spec = JobSpec("bench", str(root / "registry"), h=HORIZON)
    work = args.series * args.steps
    print(machine())
    print(f"{args.series:,} series x {args.steps} steps, horizon {HORIZON}, chunks of "
          f"{args.chunk_size:,} series")
    timings = {}
    run_job(source, root / "warm.parquet", JobSpec("bench", spec.registry, h=HORIZON),
            chunk_size=1000)  # compile / load the kernels outside the timing
    started = time.perf_counter()
    run_job(source, root / "local.parquet", spec, chunk_size=args.chunk_size)
    timings["statecast local"] = time.perf_counter() - started
    if not args.skip_dask:
        started = time.perf_counter()
        run_job(source, root / "dask.parquet", spec, chunk_size=args.chunk_size, dask="local")
        timings["statecast Dask LocalCluster"] = time.perf_counter() - started
    timings["PyTorch loop"] = torch_job(root / "registry", source, root / "torch.parquet")
    ours = pd.read_parquet(root / "local.parquet")
    theirs = pd.read_parquet(root / "torch.parquet")
    np.testing.assert_allclose(ours["bench"], theirs["bench"], rtol=1e-4, atol=1e-5)
    if not args.skip_dask:
        pd.testing.assert_frame_equal(ours, pd.read_parquet(root / "dask.parquet"))
    print("| job | seconds | series-steps/s | vs PyTorch |")
    print("|---|---:|---:|---:|")
    for name, seconds in timings.items():
        print(f"| {name} | {seconds:.2f} | {work / seconds:,.0f} | "
              f"{timings['PyTorch loop'] / seconds:.2f}x |")


if __name__ == "__main__":
    main()
