"""Scale benchmark: how a store's bytes per stream, throughput, fill time and cold start
grow with the number of live streams.

For each store (``memory``, ``sqlite``, ``redis``) and model (the bundled ``sunspots``:
1-layer LSTM hidden 32; ``lstm2x64``: a 2-layer hidden-64 LSTM published for the run, as
in :mod:`bench.load`) a real ``statecast serve`` (gunicorn, its defaults but the store;
access log off) is filled, through the batch route (``POST /v1/models/{model}/forecast``,
256 new streams a call, ``retain`` observations each so that the retained tail is full,
ids ``m0``, ``m1`` ...), by ``--clients`` concurrent HTTP clients, to each ``N`` of
``--streams`` in turn (each step adds streams to the ones already there). After each fill:

- bytes per stream: ``memory``: the worker's RSS growth (``VmRSS``), and the arena's
  bytes (its rows as allocated: it doubles when full) for reference; ``sqlite``: the file
  (+ WAL) after a ``wal_checkpoint(TRUNCATE)``, with the pages of the streams table and
  its key (``dbstat``) and the free pages beside it; ``redis``: ``used_memory`` (a fresh
  ``redis-server`` with AOF per model), with its RSS beside it (the AOF's size, which
  grows with every write, is in the JSON only). Growth is measured from after the first
  call (its 256 streams set the baseline: the process's own start-up and first-call
  allocations are not a stream's), so per stream = growth / (N - 256); the growth from
  the previous ``N`` per stream added is shown beside it (what one more stream costs,
  without the fixed costs that weigh on small ``N``). These are compared with the raw
  state a stream needs (h and c of every layer as float32, the retained tail, ``step``
  and ``origin``, two timestamps, 8 bytes each), with and without the stream's
  pending-forecast record of online scoring (:func:`kernels.scoring.record_bytes`), which
  is on unless ``--scoring off``;
- throughput and latency with ``wrk`` on random existing streams (``math.random`` over
  ``0 .. N-1``): single-stream calls appending one observation at 1 and 32 connections,
  batch calls of 256 distinct streams at 4 connections (a 1-second warm-up, then the best
  of ``--rounds`` runs of ``--seconds``); requests/s, stream-steps/s, p50 and p99, and
  the bytes the workers and ``redis-server`` wrote to disk per request
  (``/proc/<pid>/io``); items that answered an error are counted (they fail the run).
  The machine's load average is printed beside them: on a shared machine the same row
  moves by 30% and more between runs, so compare ratios of rows measured close together;
- time to fill: streams/s of the step;
- cold start: the server is stopped and started again on the same store; seconds until
  ``/readyz`` answers 200 and until the first forecast on an existing stream answers.
  ``sqlite`` and ``redis`` keep their streams, so this is measured after every ``N``;
  ``memory`` keeps nothing across a restart (by design), so only after the last ``N``.
  The kernels come from the Numba cache the first server filled, and the store's files
  from the OS page cache: a restart on a warm machine, not a first start.

Before each ``N`` the memory (``memory``, ``redis``) or disk (``sqlite``) it needs is
estimated from the previous step's figures (the first from the target: twice the raw
bytes with the pending record) and the
fill time from its fill rate; an ``N`` that would not fit, or would fill for longer than
``--max-fill-minutes``, is not run and the table says why.

Targets: at most 2x the raw state bytes per stream in every store (judged at the largest
``N`` run); throughput at 1M streams at least 80% of that at 10k (each wrk row).

Run: ``python -m bench.scale [--stores memory,sqlite,redis] [--models sunspots,lstm2x64]
[--streams 10000,100000,1000000] [--seconds 5] [--rounds 1] [--scoring on|off]
[--max-fill-minutes 90] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import re
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from bench.load import parse, publish_model
from bench.server import Running, redis_server, serving_address
from statecast.models import Registry
from statecast.service.bundled import seed_registry

#: Streams a fill call creates, and a batch call of the throughput rows names.
BATCH = 256
#: Target: measured bytes per stream at most this many times the raw state's.
BYTES_TARGET = 2.0
#: Target: throughput at 1M streams at least this fraction of that at 10k.
THROUGHPUT_TARGET = 0.8
GIB = 1 << 30

#: wrk's common part: a per-thread seed, non-2xx answers and error items counted per
#: thread and added up in ``done``. STREAMS and MODEL are replaced before use.
_COMMON = """
threads = {}
errors = 0
math.randomseed(os.time())
setup = function(thread)
  thread:set("seed", math.random(1, 1000000000))
  table.insert(threads, thread)
end
init = function(args) math.randomseed(seed) end
response = function(status, headers, body)
  if status ~= 200 then errors = errors + 1 end
  local _, found = body:gsub('"error"', '')
  errors = errors + found
end
done = function(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do total = total + thread:get("errors") end
  io.write("item errors: " .. total .. "\\n")
end
headers = {["Content-Type"] = "application/json"}
"""
SINGLE = _COMMON + """
request = function()
  local id = math.random(0, STREAMS - 1)
  return wrk.format("POST", "/v1/models/MODEL/streams/m" .. id .. "/forecast", headers,
                    '{"window": [[' .. VALUE .. ']]}')
end
"""
BATCH_RANDOM = _COMMON + """
request = function()
  local seen, items = {}, {}
  while #items < BATCH do
    local id = math.random(0, STREAMS - 1)
    if not seen[id] then
      seen[id] = true
      items[#items + 1] = '{"stream": "m' .. id .. '", "window": [[' .. VALUE .. ']]}'
    end
  end
  return wrk.format("POST", "/v1/models/MODEL/forecast", headers,
                    '{"items": [' .. table.concat(items, ",") .. ']}')
end
"""
#: (label, script, connections, stream-steps a request).
ROWS = (("single-stream", SINGLE, 1, 1), ("single-stream", SINGLE, 32, 1),
        ("batch of 256", BATCH_RANDOM, 4, BATCH))
MODELS = ("sunspots", "lstm2x64")
STORES = ("memory", "sqlite", "redis")


@dataclass(frozen=True)
class Raw:
    """The bytes one stream of a model needs, by part; ``pending``: its record of
    committed forecasts awaiting observations (online scoring), apart."""

    state: int
    tail: int
    counters: int
    times: int
    pending: int
    retain: int
    features: int
    layers: str

    @property
    def total(self) -> int:
        return self.state + self.tail + self.counters + self.times


def raw_bytes(manifest: dict[str, Any]) -> Raw:
    """A stream's raw bytes from a model's manifest: h (``proj_size`` wide when projected)
    and c (LSTM only) of every layer as float32, ``retain x features`` float32 observations,
    ``step`` and ``origin``, created and updated times (8 bytes each); the pending record
    of its scored steps (its horizon, at most :data:`service.scoring.MAX_SCORED_STEPS`, when
    its observations carry its targets), without interval levels."""
    from statecast.kernels.scoring import record_bytes
    from statecast.service.scoring import MAX_SCORED_STEPS

    spec = manifest["spec"]
    state = 0
    for layer in spec["layers"]:
        hidden = int(layer["hidden_size"])
        state += int(layer.get("proj_size") or hidden)
        if layer["cell"] == "lstm":
            state += hidden
    features = int(spec["input_size"])
    targets = spec["targets"]
    steps = (min(int(spec["horizon"]), MAX_SCORED_STEPS)
             if all(target in spec["features"] for target in targets) else 0)
    layers = " + ".join(f"{layer['cell'].upper()} {layer['hidden_size']}"
                        for layer in spec["layers"])
    return Raw(state=4 * state, tail=4 * int(spec["retain"]) * features, counters=16,
               times=16, pending=record_bytes(steps, len(targets), 0) if steps else 0,
               retain=int(spec["retain"]), features=features, layers=layers)


def machine() -> dict[str, Any]:
    """CPU model, cores, RAM and load from ``/proc`` (the machine is shared: say so)."""
    cpu, flags = "unknown", set()
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    vectors = [name for name in ("avx2", "fma", "avx512f", "amx_tile") if name in flags]
    return {"cpu": f"{cpu} ({', '.join(vectors) or 'no AVX2'})", "cores": os.cpu_count(),
            "ram_gib": meminfo("MemTotal") / GIB,
            "available_gib": meminfo("MemAvailable") / GIB, "load": os.getloadavg(),
            "python": platform.python_version()}


def meminfo(name: str) -> int:
    """A ``/proc/meminfo`` figure, in bytes."""
    with open("/proc/meminfo", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith(f"{name}:"):
                return int(line.split()[1]) * 1024
    raise KeyError(name)


def vm_rss(pid: int) -> int:
    """A process's resident set, in bytes."""
    with open(f"/proc/{pid}/status", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise KeyError("VmRSS")


def disk_written(pids: list[int]) -> int:
    """Bytes the processes have sent (or dirtied for) storage (``/proc/<pid>/io``
    ``write_bytes``): WAL, checkpoints and AOF writes."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/io", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("write_bytes:"):
                    total += int(line.split()[1])
    return total


def children(pid: int) -> list[int]:
    """Child processes of ``pid`` (gunicorn's workers of its master)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(child) for child in (task / "children").read_text().split()]
    return found


def windows(model: str, rows: int, variants: int = 16) -> list[str]:
    """``variants`` JSON windows of ``rows`` one-feature observations: an 11-step cycle
    in sunspot counts for ``sunspots``, standardised values for the others."""
    out = []
    for phase in range(variants):
        cycle = [math.sin(2 * math.pi * (t + phase) / 11) for t in range(rows)]
        values = ([round(75 + 70 * v, 1) for v in cycle] if model == "sunspots"
                  else [round(v, 3) for v in cycle])
        out.append("[" + ",".join(f"[{v}]" for v in values) + "]")
    return out


class Filler:
    """Creates streams ``m<first> .. m<last>`` through the batch route, :data:`BATCH` a
    call, from ``clients`` threads with a ``requests.Session`` each."""

    def __init__(self, model: str, rows: int, clients: int) -> None:
        self.model = model
        self.windows = windows(model, rows)
        self.clients = clients
        self._local = threading.local()

    def _post(self, url: str, first: int, last: int) -> None:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        items = ",".join(f'{{"stream": "m{n}", "window": {self.windows[n % len(self.windows)]}}}'
                         for n in range(first, last))
        response = session.post(f"{url}/v1/models/{self.model}/forecast",
                                data=f'{{"items": [{items}]}}',
                                headers={"Content-Type": "application/json"}, timeout=300)
        if response.status_code != 200 or b'"error"' in response.content:
            raise RuntimeError(f"fill call on m{first}..m{last - 1} answered "
                               f"{response.status_code}: {response.text[:500]}")
        if response.content.count(b'"created":true') != last - first:
            raise RuntimeError(f"fill call on m{first}..m{last - 1}: not every stream was new")

    def fill(self, port: int, first: int, last: int) -> float:
        """Create the streams; the wall seconds it took."""
        url = f"http://127.0.0.1:{port}"
        began = time.perf_counter()
        pool = ThreadPoolExecutor(self.clients)
        try:
            for done in pool.map(lambda start: self._post(url, start, min(start + BATCH, last)),
                                 range(first, last, BATCH)):
                del done
        finally:
            pool.shutdown(cancel_futures=True)  # after a failed call, send no more
        return time.perf_counter() - began


def run_wrk(port: int, script: str, connections: int, seconds: int, folder: Path
            ) -> dict[str, float]:
    """One ``wrk --latency`` run: requests/s, p50, p99 (ms), non-2xx and error items."""
    path = folder / "scale.lua"
    path.write_text(script)
    result = subprocess.run(["wrk", "-t", str(min(2, connections)), "-c", str(connections),
                             "-d", f"{seconds}s", "--latency", "-s", str(path),
                             f"http://127.0.0.1:{port}"], capture_output=True, text=True,
                            check=True)
    try:
        figures = parse(result.stdout)
        figures["item_errors"] = float(re.search(  # type: ignore[union-attr]
            r"item errors: (\d+)", result.stdout).group(1))
        figures["requests"] = float(re.search(  # type: ignore[union-attr]
            r"(\d+) requests in", result.stdout).group(1))
    except AttributeError:
        raise SystemExit(f"unexpected wrk output:\n{result.stdout}\n{result.stderr}") from None
    return figures


def script(template: str, model: str, streams: int) -> str:
    value = "(50 + id % 100)" if model == "sunspots" else "(id % 200) / 100 - 1"
    return (template.replace("STREAMS", str(streams)).replace("MODEL", model)
            .replace("VALUE", value).replace("BATCH", str(BATCH)))


def forecast_once(port: int, model: str, stream: str) -> tuple[float, bool]:
    """One single-stream call on ``stream``: its seconds, and whether it created it."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/models/{model}/streams/{stream}/forecast",
        data=b'{"window": [[1.0]]}', headers={"Content-Type": "application/json"})
    began = time.perf_counter()
    with urllib.request.urlopen(request, timeout=60) as response:
        body = json.loads(response.read())
    return time.perf_counter() - began, bool(body.get("created"))


@dataclass
class Step:
    """The figures of one ``N``."""

    streams: int
    fill_seconds: float = 0.0
    fill_rate: float = 0.0
    bytes: dict[str, float] = field(default_factory=dict)
    rows: list[dict[str, float]] = field(default_factory=list)
    cold: dict[str, float] = field(default_factory=dict)
    load: float = 0.0


@dataclass
class Run:
    """One store and model: its steps and the sizes it did not run, with why."""

    store: str
    model: str
    raw: Raw
    workers: int = 0
    steps: list[Step] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)
    error: str = ""


class Store:
    """One store under test: its address and how its bytes are read."""

    def __init__(self, kind: str, folder: Path) -> None:
        self.kind = kind
        self.folder = folder
        self._stack = contextlib.ExitStack()
        self.redis: Any = None
        if kind == "redis":
            import redis

            server = self._stack.enter_context(redis_server())
            self.address = server.url
            self.redis_pid = server.process.pid
            self.aof = server.folder
            self.redis = redis.Redis.from_url(server.url)
        elif kind == "sqlite":
            self.path = folder / "state.db"
            self.address = f"sqlite:{self.path}"
        else:
            self.address = "memory"

    def close(self) -> None:
        if self.redis is not None:
            self.redis.close()
        self._stack.close()

    def usage(self, running: Running, model: str) -> dict[str, float]:
        """What the store holds now, in bytes (``bytes``: the figure per stream is taken
        from), with the streams it holds counted (``memory``: the model's live streams in
        ``/metrics``; ``redis``: every key)."""
        if self.kind == "memory":
            workers = children(running.pid)
            with urllib.request.urlopen(f"http://127.0.0.1:{running.port}/metrics",
                                        timeout=60) as response:
                found = re.search(rf'^statecast_active_streams{{model="{model}"}} (\S+)$',
                                  response.read().decode(), re.M)
            return {"bytes": float(sum(vm_rss(pid) for pid in workers)),
                    "count": float(found.group(1)) if found else 0.0}
        if self.kind == "sqlite":
            with contextlib.closing(sqlite3.connect(self.path, timeout=60)) as connection:
                busy = connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
                count = connection.execute("SELECT COUNT(*) FROM streams").fetchone()[0]
                pages = dict(connection.execute(
                    "SELECT name, SUM(pgsize) FROM dbstat GROUP BY name").fetchall())
                page = connection.execute("PRAGMA page_size").fetchone()[0]
                free = connection.execute("PRAGMA freelist_count").fetchone()[0] * page
            if busy:
                raise RuntimeError("the sqlite checkpoint could not finish (busy)")
            wal = self.path.with_name(self.path.name + "-wal")
            size = self.path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
            return {"bytes": float(size), "count": float(count), "free": float(free),
                    "streams": float(pages.get("streams", 0) + pages.get("streams_key", 0))}
        info = self.redis.info("memory")
        aof = sum(path.stat().st_size for path in Path(self.aof).rglob("*") if path.is_file())
        return {"bytes": float(info["used_memory"]), "rss": float(info["used_memory_rss"]),
                "aof": float(aof), "count": float(self.redis.dbsize())}

    def writers(self, running: Running) -> list[int]:
        """Processes whose disk writes a call causes: the workers, and ``redis-server``."""
        return children(running.pid) + ([self.redis_pid] if self.kind == "redis" else [])

    def room(self) -> float:
        """Bytes the next fill may take: free memory, or for ``sqlite`` free disk."""
        if self.kind == "sqlite":
            return float(shutil.disk_usage(self.folder).free)
        return float(meminfo("MemAvailable"))


@contextlib.contextmanager
def server(store: Store, registry: Path, workers: int, scoring: bool
           ) -> Iterator[Running]:
    environment = {"STATECAST_ACCESS_LOG": "false",
                   "STATECAST_SCORING": "true" if scoring else "false"}
    with serving_address(store.address, registry, workers, environment) as running:
        yield running


def measure(run: Run, store: Store, registry: Path, sizes: list[int], args: argparse.Namespace,
            folder: Path, say: Callable[[str], None]) -> None:
    """Fill ``store`` with ``run.model``'s streams to each size in turn, measuring each."""
    workers = 1 if store.kind == "memory" else 2
    run.workers = workers
    filler = Filler(run.model, run.raw.retain, args.clients)
    servers = contextlib.ExitStack()
    try:
        running = servers.enter_context(server(store, registry, workers, args.scoring))
        say(f"{store.kind}/{run.model}: ready in {running.ready_after:.1f} s")
        first = filler.fill(running.port, 0, BATCH)
        say(f"  first call ({BATCH} streams): {first:.2f} s")
        baseline = store.usage(running, run.model)
        filled = BATCH
        per_stream = BYTES_TARGET * (run.raw.total + run.raw.pending)
        rate = 0.0
        for size in sizes:
            need = per_stream * (size - filled) * 1.25
            room = store.room() - GIB
            if need > room:
                run.skipped.append((size, f"needs ~{need / GIB:.1f} GiB more "
                                          f"{'disk' if store.kind == 'sqlite' else 'memory'}"
                                          f", {max(room, 0) / GIB:.1f} GiB free"))
                say(f"  {size:,}: not run ({run.skipped[-1][1]})")
                break
            if rate and (size - filled) / rate > 60 * args.max_fill_minutes:
                run.skipped.append((size, f"fill would take ~{(size - filled) / rate / 60:.0f}"
                                          f" min at {rate:,.0f} streams/s (limit "
                                          f"{args.max_fill_minutes:g} min)"))
                say(f"  {size:,}: not run ({run.skipped[-1][1]})")
                break
            step = Step(size)
            if rate:
                say(f"  filling to {size:,}: ~{(size - filled) / rate:.0f} s expected")
            step.fill_seconds = filler.fill(running.port, filled, size)
            step.fill_rate = rate = (size - filled) / step.fill_seconds
            filled = size
            usage = store.usage(running, run.model)
            if usage.get("count", size) < size:
                raise RuntimeError(f"{usage['count']:.0f} streams stored, {size} expected")
            step.bytes = {"per_stream": (usage["bytes"] - baseline["bytes"]) / (size - BATCH),
                          **usage}
            for key in ("rss", "streams"):
                if key in usage:
                    step.bytes[f"{key}_per_stream"] = (usage[key] - baseline[key]) / (size - BATCH)
            if run.steps:
                before = run.steps[-1]
                step.bytes["marginal"] = ((usage["bytes"] - before.bytes["bytes"])
                                          / (size - before.streams))
            per_stream = max(step.bytes["per_stream"], step.bytes.get("marginal", 0.0),
                             step.bytes.get("rss_per_stream", 0.0))
            if store.kind == "memory":
                capacity = 64 * 2 ** math.ceil(math.log2(max(size / 64, 1)))
                step.bytes["arena_per_stream"] = capacity * run.raw.state / size
            say(f"  {size:,} streams: filled in {step.fill_seconds:.1f} s "
                f"({step.fill_rate:,.0f} streams/s), {step.bytes['per_stream']:,.0f} bytes/stream")
            step.load = os.getloadavg()[0]
            for label, template, connections, steps in ROWS:
                code = script(template, run.model, size)
                run_wrk(running.port, code, connections, 1, folder)  # warm-up
                best: dict[str, float] = {}
                for _ in range(args.rounds):
                    pids = store.writers(running)
                    written = disk_written(pids)
                    result = run_wrk(running.port, code, connections, args.seconds, folder)
                    result["disk_per_request"] = ((disk_written(pids) - written)
                                                  / max(result["requests"], 1.0))
                    if result["errors"] or result["item_errors"]:
                        raise RuntimeError(f"{label} x{connections}: {result}")
                    if result["rps"] > best.get("rps", -1.0):
                        best = result
                step.rows.append({**best, "connections": connections,
                                  "steps_per_s": best["rps"] * steps})
                say(f"    {label} x{connections}: {best['rps']:,.0f} req/s, p50 "
                    f"{best['p50']:.2f} ms, p99 {best['p99']:.2f} ms, "
                    f"{best['disk_per_request'] / 1024:,.1f} KiB written/request")
            if store.kind != "memory" or size == sizes[-1]:
                servers.close()
                began = time.perf_counter()
                running = servers.enter_context(server(store, registry, workers,
                                                       args.scoring))
                latency, created = forecast_once(running.port, run.model, "m0")
                step.cold = {"ready": running.ready_after,
                             "first_forecast": time.perf_counter() - began,
                             "first_call": latency, "created": float(created)}
                say(f"    restart: ready {running.ready_after:.1f} s, first forecast "
                    f"{step.cold['first_forecast']:.1f} s"
                    + (" (stream created: the store is empty)" if created else ""))
            run.steps.append(step)
    finally:
        servers.close()


def fmt(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def table(run: Run, sizes: list[int]) -> list[str]:
    """The markdown table of one store and model: a column per size, the targets."""
    steps = {step.streams: step for step in run.steps}
    raw, with_pending = run.raw.total, run.raw.total + run.raw.pending
    columns = [fmt(size) for size in sizes]
    lines = [f"#### {run.store}, {run.model} ({run.raw.layers}, retain {run.raw.retain}; "
             f"{run.workers} worker(s))", "",
             *([f"Stopped by an error: {run.error}", ""] if run.error else []),
             "| figure | " + " | ".join(columns) + " | target |",
             "|---|" + "---:|" * len(sizes) + "---|"]

    def row(name: str, cell: Callable[[Step], str], target: str = "") -> None:
        cells = [cell(steps[size]) if size in steps else _why(run, size) for size in sizes]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {target} |")

    def verdict(limit: float, over: float) -> str:
        if not run.steps:
            return f"<= {limit:g}x: not run"
        ratio = run.steps[-1].bytes["per_stream"] / over
        return (f"<= {limit:g}x at {fmt(run.steps[-1].streams)}: "
                f"{'pass' if ratio <= limit else 'fail'}")

    row("bytes/stream measured", lambda s: fmt(s.bytes["per_stream"]))
    row("bytes/stream added since the previous N",
        lambda s: fmt(s.bytes["marginal"]) if "marginal" in s.bytes else "-")
    if run.store == "memory":
        row("arena bytes/stream (h, c rows allocated)",
            lambda s: fmt(s.bytes["arena_per_stream"]))
    if run.store == "sqlite":
        row("of which the streams table and its key", lambda s: fmt(
            s.bytes["streams_per_stream"]))
        row("free pages in the file (bytes)", lambda s: fmt(s.bytes["free"]))
    if run.store == "redis":
        row("used_memory_rss/stream", lambda s: fmt(s.bytes["rss_per_stream"]))
    row(f"raw state bytes/stream (h,c {run.raw.state} + tail {run.raw.tail} + step, origin, "
        f"times 32)", lambda s: fmt(raw))
    row("pending-forecast record bytes/stream", lambda s: fmt(run.raw.pending))
    row("measured / raw", lambda s: fmt(s.bytes["per_stream"] / raw, 2),
        verdict(BYTES_TARGET, raw))
    row("measured / (raw + pending)", lambda s: fmt(s.bytes["per_stream"] / with_pending, 2),
        verdict(BYTES_TARGET, with_pending))
    row("fill: streams/s (this step)", lambda s: fmt(s.fill_rate))
    row("fill: seconds (this step)", lambda s: fmt(s.fill_seconds, 1))
    small = steps.get(10_000)
    large = steps.get(1_000_000)
    for index, (label, _, connections, _) in enumerate(ROWS):
        name = f"{label} x{connections}"
        unit = "stream-steps/s" if label.startswith("batch") else "requests/s"
        if small is not None and large is not None:
            ratio = large.rows[index]["rps"] / small.rows[index]["rps"]
            target = (f"1M / 10k >= {THROUGHPUT_TARGET:.0%}: {ratio:.0%} "
                      f"{'pass' if ratio >= THROUGHPUT_TARGET else 'fail'}")
        elif len(run.steps) > 1:
            ratio = run.steps[-1].rows[index]["rps"] / run.steps[0].rows[index]["rps"]
            target = (f"1M vs 10k not both run; {fmt(run.steps[-1].streams)} / "
                      f"{fmt(run.steps[0].streams)}: {ratio:.0%}")
        else:
            target = "1M vs 10k not both run"
        row(f"{name}: {unit}",
            lambda s, i=index: fmt(s.rows[i]["steps_per_s"]), target)
        row(f"{name}: p50 / p99 ms",
            lambda s, i=index: f"{s.rows[i]['p50']:.2f} / {s.rows[i]['p99']:.1f}")
        row(f"{name}: KiB written to disk per request",
            lambda s, i=index: fmt(s.rows[i]["disk_per_request"] / 1024, 1))
    row("machine load (1-minute average) before the wrk rows", lambda s: fmt(s.load, 2))
    row("cold start: /readyz 200 (s)",
        lambda s: fmt(s.cold["ready"], 1) if s.cold else "-")
    row("cold start: first forecast on an existing stream (s)",
        lambda s: (fmt(s.cold["first_forecast"], 1)
                   + (" (empty: stream created)" if s.cold["created"] else ""))
        if s.cold else "-")
    return lines


def _why(run: Run, size: int) -> str:
    for skipped, reason in run.skipped:
        if skipped == size:
            return f"not run: {reason}"
    return "not run"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stores", default=",".join(STORES))
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--streams", default="10000,100000,1000000",
                        help="comma-separated N, filled in increasing order")
    parser.add_argument("--seconds", type=int, default=5, help="per wrk row")
    parser.add_argument("--rounds", type=int, default=1,
                        help="runs of each wrk row, the best kept")
    parser.add_argument("--clients", type=int, default=4, help="concurrent fill clients")
    parser.add_argument("--scoring", choices=("on", "off"), default="on")
    parser.add_argument("--max-fill-minutes", type=float, default=90.0,
                        help="an N whose estimated fill takes longer is not run")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    args.scoring = args.scoring == "on"
    stores = [name for name in args.stores.split(",") if name]
    models = [name for name in args.models.split(",") if name]
    sizes = sorted({int(size) for size in args.streams.split(",")})
    if unknown := (set(stores) - set(STORES)) | (set(models) - set(MODELS)):
        parser.error(f"unknown stores or models: {sorted(unknown)}")
    if sizes[0] < 2 * BATCH:
        parser.error(f"--streams must be at least {2 * BATCH}")
    root = Path(tempfile.mkdtemp(prefix="statecast-scale-"))
    registry = root / "registry"
    publish_model(registry, "lstm2x64")
    seed_registry(Registry(registry))
    host = machine()
    began = time.perf_counter()

    def say(text: str) -> None:
        print(f"[{time.perf_counter() - began:7.1f} s] {text}", flush=True)

    runs = []
    for kind in stores:
        for model in models:
            run = Run(kind, model, raw_bytes(Registry(registry).manifest(model)))
            folder = Path(tempfile.mkdtemp(prefix=f"{kind}-{model}-", dir=root))
            store = Store(kind, folder)
            try:
                measure(run, store, registry, sizes, args, folder, say)
            except Exception as error:  # the other stores and models still run
                run.error = f"{type(error).__name__}: {error}"
                say(f"  failed: {run.error}")
            finally:
                store.close()
                shutil.rmtree(folder, ignore_errors=True)
            runs.append(run)
    print()
    print(f"Machine: {host['cpu']}, {host['cores']} cores, {host['ram_gib']:.1f} GiB RAM "
          f"({host['available_gib']:.1f} available at start, load {host['load'][0]:.2f}), "
          f"Python {host['python']}. Scoring {'on' if args.scoring else 'off'}; "
          f"{args.clients} fill clients; wrk {args.seconds} s a row, best of {args.rounds}; "
          f"whole run {time.perf_counter() - began:.0f} s.")
    for run in runs:
        print()
        print("\n".join(table(run, sizes)))
    print()
    figures = {"machine": host, "scoring": args.scoring, "runs": [
        {"store": run.store, "model": run.model, "raw": run.raw.__dict__,
         "workers": run.workers, "skipped": run.skipped,
         "steps": [step.__dict__ for step in run.steps]} for run in runs]}
    print(json.dumps(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
