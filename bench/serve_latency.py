"""Latency of single-stream forecast calls against a running ``statecast serve``.

Starts the server (bundled model, a fresh registry and store in a temporary folder) on a free
local port, measures cold start to ready, then sends sequential calls over one keep-alive
connection, each appending one observation to one of 100 streams (horizon 12), and prints
the median and 99th percentile. The load benchmark (wrk, many connections) is ``bench/load.py``.

Run: ``python -m bench.serve_latency [--store memory|sqlite|redis] [--calls N]`` (redis:
a local ``redis-server`` with AOF, started for the run).
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import tempfile
import time
from pathlib import Path

from bench.server import serving


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", choices=("memory", "sqlite", "redis"), default="sqlite")
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="statecast-latency-"))
    with serving(args.store, root / "registry", root) as server:
        print(f"store {args.store}, {server.workers} worker(s): ready "
              f"{server.ready_after:.2f} s after start")
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        latencies = []
        for call in range(args.calls):
            body = json.dumps({"window": [[float(call % 150)]]})
            began = time.perf_counter()
            connection.request("POST", f"/v1/models/sunspots/streams/s{call % 100}/forecast",
                               body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            latencies.append(time.perf_counter() - began)
            assert response.status == 200, response.status
        latencies.sort()
        print(f"{args.calls} single-stream calls (1 observation, horizon 12): median "
              f"{statistics.median(latencies) * 1e3:.2f} ms, p99 "
              f"{latencies[int(0.99 * len(latencies))] * 1e3:.2f} ms")

if __name__ == "__main__":
    main()
