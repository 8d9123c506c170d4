"""Latency of single-stream forecast calls against a running ``statecast serve``.

Starts the server (bundled model, a fresh registry and store in a temporary folder) on a free
local port, measures cold start to ready, then sends sequential calls over one keep-alive
connection, each appending one observation to one of 100 streams (horizon 12), and prints
the median and 99th percentile. The full load benchmark (wrk, many connections) is issue 9.

Run: ``python -m bench.serve_latency [--store memory|sqlite|redis] [--calls N]`` (redis:
a local ``redis-server`` with AOF, started for the run).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", choices=("memory", "sqlite", "redis"), default="sqlite")
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="statecast-latency-"))
    port = free_port()
    redis = None
    if args.store == "redis":
        from tests.redis_server import RedisServer

        redis = RedisServer()
        redis.start()
        store = redis.url
    else:
        store = "memory" if args.store == "memory" else f"sqlite:{root / 'state.db'}"
    workers = "1" if args.store == "memory" else "2"
    started = time.perf_counter()
    server = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(port), "--store", store,
         "--registry", str(root / "registry"), "--workers", workers],
        cwd=os.getcwd(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    try:
        while True:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                connection.request("GET", "/readyz")
                ready = connection.getresponse()
                ready.read()
                if ready.status == 200:
                    break
            except OSError:
                time.sleep(0.05)
        print(f"store {args.store}, {workers} worker(s): ready "
              f"{time.perf_counter() - started:.2f} s after start")
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
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        if redis is not None:
            redis.cleanup()


if __name__ == "__main__":
    main()
