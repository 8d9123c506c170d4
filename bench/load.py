"""Load benchmark: ``wrk`` (Debian package) against a running ``statecast serve``.

A 2-layer hidden-64 LSTM with a 12-step head is published into a temporary registry; the
server runs with its defaults except the store. Measured: single-stream calls (window 1,
horizon 12, appending to 1,000 streams) at 1 and 32 connections, and batch calls of 256
streams each appending one observation; requests/s, p50 and p99 (wrk's latency
distribution), stream-steps/s for batches. The same single-stream calls through ``/v2``
(Open Inference Protocol, a ``sequence_id`` per stream, JSON tensors) at 1 and 32
connections.

Online scoring (each committed forecast kept and scored when its observations arrive) is on
by default; ``--scoring both`` (the default) runs a server with it and one without it
(``STATECAST_SCORING=false``) side by side, measures every row on each in turn (best of
``--rounds``), and prints what scoring costs.

The store's own write ceiling is measured in the same run, after the rows, for sqlite and
redis: the records the batch rows left, 256 a call, written back by
``compare_and_set_many`` (the same rows, encoding, transaction or script, and the scores
such a call adds) in a tight loop on one core while the server is idle; the batch row's
stream-steps/s are printed as a share of it.

Run: ``python -m bench.load [--store sqlite|memory|redis] [--seconds 10]
[--scoring both|on|off] [--rounds 1]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from bench.server import serving

SINGLE = """
counter = 0
request = function()
  counter = counter + 1
  local body = '{"window": [' .. (counter % 97) / 10 .. ']}'
  return wrk.format("POST", "/v1/models/bench/streams/s" .. (counter % 1000) ..
                    "-" .. id .. "/forecast", {["Content-Type"] = "application/json"}, body)
end
setup = function(thread) thread:set("id", tostring(math.random(1, 1000000))) end
"""
V2_SEQUENCE = """
counter = 0
request = function()
  counter = counter + 1
  local start = "false"
  -- wrk calls request() once at start-up and drops it: start a few more than 1,000.
  if counter <= 1100 then start = "true" end
  local body = '{"inputs": [{"name": "window", "datatype": "FP32", "shape": [1, 1, 1], ' ..
               '"data": [' .. (counter % 97) / 10 .. ']}], "parameters": {"sequence_id": "q' ..
               (counter % 1000) .. '-' .. id .. '", "sequence_start": ' .. start .. '}}'
  return wrk.format("POST", "/v2/models/bench/infer", {["Content-Type"] = "application/json"},
                    body)
end
setup = function(thread) thread:set("id", tostring(math.random(1, 1000000))) end
"""
BATCH = """
counter = 0
request = function()
  counter = counter + 1
  local items = {}
  for i = 0, 255 do
    items[#items + 1] = '{"stream": "b' .. ((counter * 256 + i) % 4096) .. '-' .. id ..
                        '", "window": [' .. (i % 13) / 10 .. ']}'
  end
  return wrk.format("POST", "/v1/models/bench/forecast", {["Content-Type"] = "application/json"},
                    '{"horizon": 12, "items": [' .. table.concat(items, ",") .. ']}')
end
setup = function(thread) thread:set("id", tostring(math.random(1, 1000000))) end
"""


def publish_model(registry: Path, name: str = "bench") -> None:
    """Publish a 2-layer hidden-64 LSTM (1 feature, a 12-step head, seeded weights) as
    ``name`` into ``registry``."""
    import torch

    from statecast.models import Registry
    from statecast.models.importers import ForecastOptions, import_state_dict

    torch.manual_seed(0)
    net = torch.nn.Module()
    net.rnn = torch.nn.LSTM(1, 64, num_layers=2, batch_first=True)
    net.fc = torch.nn.Linear(64, 12)
    imported = import_state_dict({k: v.detach().numpy() for k, v in net.state_dict().items()},
                                 ForecastOptions(horizon=12))
    Registry(registry).publish(name, imported.spec, imported.tensors)


def parse(output: str) -> dict[str, float]:
    def ms(text: str) -> float:
        value, unit = re.match(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = ms(re.search(r"^\s*50%\s+(\S+)", output, re.M).group(1))  # type: ignore[union-attr]
    p99 = ms(re.search(r"^\s*99%\s+(\S+)", output, re.M).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return {"rps": rps, "p50": p50, "p99": p99, "errors": float(errors.group(1)) if errors
            else 0.0}


def wrk(port: int, script: str, connections: int, seconds: int, folder: Path
        ) -> dict[str, float]:
    path = folder / "script.lua"
    path.write_text(script)
    threads = min(2, connections)
    result = subprocess.run(["wrk", "-t", str(threads), "-c", str(connections), "-d",
                             f"{seconds}s", "--latency", "-s", str(path),
                             f"http://127.0.0.1:{port}"], capture_output=True, text=True,
                            check=True)
    try:
        return parse(result.stdout)
    except AttributeError:
        raise SystemExit(f"unexpected wrk output:\n{result.stdout}\n{result.stderr}") from None


ROWS = (("single-stream", SINGLE, 1), ("single-stream", SINGLE, 32),
        ("v2 sequence", V2_SEQUENCE, 1), ("v2 sequence", V2_SEQUENCE, 32),
        ("batch of 256", BATCH, 4))


def write_ceiling(address: str, registry: Path, scoring: bool, seconds: float
                  ) -> float:
    """Rows/s the store writes when nothing but a tight loop writes: the ``bench`` streams
    the batch rows left, 256 per ``compare_and_set_many`` (records made up front: each
    stream's row written alternately with its next revision and back, so that every
    write's check passes and every write changes the row), with the scores a batch call of
    those streams adds when ``scoring``."""
    from statecast.models import Registry
    from statecast.service.scoring import Scorer
    from statecast.service.stores import open_store

    model = Registry(registry).load("bench")
    store = open_store(address)
    try:
        records = [r for r in store.scan("bench") if not r.expired and r.stream[0] == "b"]
        batches = []
        for start in range(0, len(records) - 255, 256):
            chunk = records[start:start + 256]
            scores = None
            if scoring:
                scorer = Scorer(model, len(chunk))
                for member, record in enumerate(chunk):
                    scorer.add(member, record.pending, record.tail[-1:],
                               model.predict(record.state[None], 12)[0], None, ())
                scorer.run()
                scores = scorer.scores(range(len(chunk)))
            # Two writes of each stream that take turns (revision up, then back down):
            # every write changes its row, as a call's does (SQLite skips writing a row
            # whose bytes are unchanged).
            later = [replace(record, revision=record.revision + 1,
                             updated_at=record.updated_at + 1) for record in chunk]
            batches.append((
                [(new, record.revision) for new, record in zip(later, chunk, strict=True)],
                [(record, new.revision) for new, record in zip(later, chunk, strict=True)],
                scores))
        if not batches:
            raise SystemExit("no batch streams to measure the store's ceiling with")
        written, calls, started = 0, 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            lap, at = divmod(calls, len(batches))
            up, down, scores = batches[at]
            writes = down if lap % 2 else up
            assert all(store.compare_and_set_many(writes, scores))
            written, calls = written + len(writes), calls + 1
        return written / (time.perf_counter() - started)
    finally:
        store.close()


def measure(store: str, root: Path, seconds: int, modes: tuple[bool, ...], rounds: int
            ) -> tuple[int, dict[bool, list[tuple[str, int, dict[str, float], float]]],
                       dict[bool, float]]:
    """Every row of :data:`ROWS` on a server per scoring mode (both running, each on its own
    store), the modes alternating row by row; per mode and row the best of ``rounds``; then
    each mode's store write ceiling (:func:`write_ceiling`; sqlite and redis)."""
    best: dict[bool, list[tuple[str, int, dict[str, float], float]]] = {m: [] for m in modes}
    ceilings: dict[bool, float] = {}
    with contextlib.ExitStack() as stack:
        servers = {}
        for scoring in modes:
            folder = root / ("scoring-on" if scoring else "scoring-off")
            folder.mkdir(exist_ok=True)
            servers[scoring] = stack.enter_context(serving(
                store, root / "registry", folder,
                environment={"STATECAST_SCORING": "true" if scoring else "false"}))
        for scoring in modes:  # the batch rows' streams exist before any row is measured
            wrk(servers[scoring].port, BATCH, 4, max(2, seconds // 2), root)
        for name, script, connections in ROWS:
            for _ in range(rounds):
                for scoring in modes:
                    result = wrk(servers[scoring].port, script, connections, seconds, root)
                    steps = result["rps"] * (256 if name.startswith("batch") else 1)
                    row = (name, connections, result, steps)
                    mine = best[scoring]
                    if len(mine) and mine[-1][:2] == (name, connections):
                        if result["rps"] > mine[-1][2]["rps"]:
                            mine[-1] = row
                    else:
                        mine.append(row)
        workers = next(iter(servers.values())).workers
        if store != "memory":
            for scoring in modes:
                ceilings[scoring] = write_ceiling(servers[scoring].store, root / "registry",
                                                  scoring, seconds)
    return workers, best, ceilings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", choices=("sqlite", "memory", "redis"), default="sqlite")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--scoring", choices=("both", "on", "off"), default="both")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each row, best kept")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="statecast-load-"))
    publish_model(root / "registry")
    modes = {"both": (True, False), "on": (True,), "off": (False,)}[args.scoring]
    workers, results, ceilings = measure(args.store, root, args.seconds, modes, args.rounds)
    print(f"store {args.store}, `statecast serve` defaults ({os.cpu_count()} cores, "
          f"{workers} worker(s)), {args.seconds} s per row, best of {args.rounds}")
    print("| calls | connections | scoring | requests/s | p50 | p99 | stream-steps/s | non-2xx |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for index in range(len(ROWS)):
        for scoring in modes:
            name, connections, result, steps = results[scoring][index]
            print(f"| {name} | {connections} | {'on' if scoring else 'off'} "
                  f"| {result['rps']:,.0f} | {result['p50']:.2f} ms "
                  f"| {result['p99']:.2f} ms | {steps:,.0f} | {result['errors']:.0f} |")
    if len(modes) == 2:
        print("scoring on / off, requests/s: " + ", ".join(
            f"{on[0]} x{on[1]} {on[2]['rps'] / off[2]['rps']:.2f}"
            for on, off in zip(results[True], results[False], strict=True)))
    for scoring, ceiling in ceilings.items():
        batch = next(steps for name, _, _, steps in results[scoring] if name.startswith("batch"))
        print(f"store write ceiling, scoring {'on' if scoring else 'off'}: {ceiling:,.0f} "
              f"rows/s (one core, 256 per call); the batch route reaches {batch:,.0f} "
              f"stream-steps/s = {batch / ceiling:.0%} of it")
    print(json.dumps({"store": args.store, "ceilings": {
        "on" if k else "off": v for k, v in ceilings.items()}, "rows": [
        {"calls": n, "connections": c, "scoring": scoring, **r}
        for scoring in modes for n, c, r, _ in results[scoring]]}))


if __name__ == "__main__":
    main()
