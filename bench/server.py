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
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.redis_server import RedisServer


@dataclass(frozen=True)
class Running:
    """A ready server: its port, worker processes, seconds from start to ``/readyz``
    answering 200, and the gunicorn master's process id (its workers are its children)."""

    port: int
    workers: int
    ready_after: float
    pid: int = -1
    #: The server's store address (``sqlite:PATH``, ``redis://...``, ``memory``).
    store: str = "memory"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    """A fresh local ``redis-server`` (AOF on, :mod:`tests.redis_server`), removed on exit;
    apart from any ``statecast serve``, so that its data outlives a server restart."""
    from tests.redis_server import RedisServer

    redis = RedisServer()
    redis.start()
    try:
        yield redis
    finally:
        redis.cleanup()


@contextmanager
def serving_address(address: str, registry: Path, workers: int,
                    environment: dict[str, str] | None = None) -> Iterator[Running]:
    """Run ``statecast serve`` on the store at ``address`` as it is (nothing emptied: a
    restart finds the streams a durable store kept) until ready; stop it on exit."""
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
        yield Running(port, workers, time.perf_counter() - started, server.pid, address)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


@contextmanager
def serving(store: str, registry: Path, root: Path, workers: int | None = None,
            environment: dict[str, str] | None = None) -> Iterator[Running]:
    """Run ``statecast serve`` (its defaults but the store, and ``environment``'s
    variables; one worker for ``memory``) until ready; yield its port, workers and
    cold-start seconds."""
    if workers is None:
        workers = 1 if store == "memory" else 2
    if store == "redis":
        with redis_server() as redis, serving_address(redis.url, registry, workers,
                                                      environment) as running:
            yield running
        return
    address = "memory" if store == "memory" else f"sqlite:{root / 'state.db'}"
    if address != "memory" and Path(address[len("sqlite:"):]).exists():
        Path(address[len("sqlite:"):]).unlink()  # each server starts on no streams
    with serving_address(address, registry, workers, environment) as running:
        yield running
