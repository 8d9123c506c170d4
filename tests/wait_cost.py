"""What ``?wait=1`` costs: a Redis master with one replica (both local, AOF on), the same
writes timed without and with ``WAIT 1`` after each write, runs interleaved to share the
machine's noise. Two levels: the store alone (``compare_and_set_many`` of a batch of
streams, one Lua script and one ``WAIT`` per call) and the service (``POST
/v1/models/{model}/forecast``, one observation per stream: read, kernel, scoring, write).

Run: ``python -m tests.wait_cost [--calls N] [--streams S]``; it prints the machine, each
configuration's median and p90 per call, and the ratio with ``WAIT`` to without.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from statecast.service.settings import Settings
from statecast.service.startup import serving_app
from statecast.service.stores import StreamRecord, open_store
from tests.redis_server import RedisServer, start_replica


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    version = subprocess.run(["redis-server", "--version"], capture_output=True,
                             text=True).stdout.split()[2]
    return f"{os.cpu_count()} vCPU {model}, Redis {version.removeprefix('v=')}"


def store_writes(url: str, calls: int, streams: int) -> list[float]:
    """Seconds per ``compare_and_set_many`` of ``streams`` records (one step each)."""
    store = open_store(url)
    records = [StreamRecord(model="bench", stream=f"s{i}", version="1", origin=0, step=0,
                            state=np.zeros(64, np.float32),
                            tail=np.zeros((16, 1), np.float32)) for i in range(streams)]
    assert all(store.compare_and_set_many([(record, None) for record in records]))
    times = []
    for _ in range(calls):
        new = [r.advanced(step=r.step + 1, state=r.state + 1, tail=r.tail) for r in records]
        started = time.perf_counter()
        assert all(store.compare_and_set_many([(n, r.revision)
                                               for n, r in zip(new, records, strict=True)]))
        times.append(time.perf_counter() - started)
        records = new
    store.close()
    return times


def service_calls(url: str, folder: Path, calls: int, streams: int) -> list[float]:
    """Seconds per batch forecast call of ``streams`` streams, one observation each."""
    app = serving_app(Settings(registry=folder / "registry", store=url, access_log=False))
    client = app.test_client()
    names = [f"s{i}" for i in range(streams)]
    y = 60 + 45 * np.sin(np.arange(calls + 30) / 9.0)
    route = "/v1/models/sunspots/forecast"

    def call(start: int, size: int) -> None:
        response = client.post(route, json={"items": [
            {"stream": name, "start": start,
             "window": [float(v) for v in y[start:start + size]]} for name in names]})
        assert response.status_code == 200, response.get_json()

    call(0, 30)
    times = []
    for start in range(30, 30 + calls):
        started = time.perf_counter()
        call(start, 1)
        times.append(time.perf_counter() - started)
    app.extensions["statecast"].close()
    return times


def summary(times: list[float]) -> str:
    ms = np.asarray(times) * 1000
    return f"median {statistics.median(ms):7.3f} ms  p90 {np.percentile(ms, 90):7.3f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    master = RedisServer()
    master.start()
    replica = None
    folder = Path(tempfile.mkdtemp(prefix="statecast-wait-"))
    results: dict[str, list[float]] = {}
    try:
        replica = start_replica(master)
        for round_ in range(args.rounds):
            for level, size in (("store", args.streams), ("service", args.streams),
                                ("service", 1)):
                for wait in (0, 1):
                    url = f"{master.url}?wait={wait}&wait_timeout_ms=1000"
                    master_client_flush(master)
                    if level == "store":
                        times = store_writes(url, args.calls, size)
                    else:
                        times = service_calls(url, folder / f"{round_}-{size}-{wait}",
                                              args.calls, size)
                    results.setdefault(f"{level:7} {size:3} streams wait={wait}",
                                       []).extend(times)
    finally:
        if replica is not None:
            replica.cleanup()
        master.cleanup()
        shutil.rmtree(folder, ignore_errors=True)
    print(machine())
    print(f"{args.rounds} rounds x {args.calls} calls, master and replica on this machine")
    for name, times in results.items():
        print(f"{name}: {summary(times)}")
    for name in results:
        if name.endswith("wait=1"):
            without = statistics.median(results[name.replace("wait=1", "wait=0")])
            print(f"{name.removesuffix(' wait=1')}: wait=1 / wait=0 = "
                  f"{statistics.median(results[name]) / without:.2f}")


def master_client_flush(master: RedisServer) -> None:
    import redis

    client = redis.Redis.from_url(master.url)
    client.flushall()
    client.close()


if __name__ == "__main__":
    main()
