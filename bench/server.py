"""A ``statecast serve`` process for the service benchmarks: started on a free port with
a chosen store (a local ``redis-server`` is started for ``redis``), stopped on exit."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Running:
    port: int
    workers: int
    ready_after: float
    #: The server's store address (``sqlite:PATH``, ``redis://...``, ``memory``).
    store: str = "memory"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serving(store: str, registry: Path, root: Path, workers: int | None = None,
            environment: dict[str, str] | None = None) -> Iterator[Running]:
    """Run ``statecast serve`` (its defaults but the store, and ``environment``'s
    variables; one worker for ``memory``) until ready; yield its port, workers and
    cold-start seconds."""
    redis = None
    if workers is None:
        workers = 1 if store == "memory" else 2
    if store == "redis":
        from tests.redis_server import RedisServer

        redis = RedisServer()
        redis.start()
        address = redis.url
    else:
        address = "memory" if store == "memory" else f"sqlite:{root / 'state.db'}"
        if address != "memory" and Path(address[len("sqlite:"):]).exists():
            Path(address[len("sqlite:"):]).unlink()  # each server starts on no streams
    port = _free_port()
    started = time.perf_counter()
    server = subprocess.Popen(
        [sys.executable, "-m", "statecast.service.cli", "serve", "--port", str(port), "--store",
         address, "--registry", str(registry), "--workers", str(workers)],
        cwd=os.getcwd(), env={**os.environ, **(environment or {})},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2):
                    break
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError("statecast serve did not become ready") from None
                time.sleep(0.05)
        yield Running(port, workers, time.perf_counter() - started, address)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        if redis is not None:
            redis.cleanup()
