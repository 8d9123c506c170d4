"""The real server (``statecast serve``: gunicorn, several workers, sqlite) under concurrent
clients, a worker killed with SIGKILL and the whole server killed and restarted. Clients
retry every unanswered call with the same ``start``; afterwards every stream has consumed
exactly what was sent and holds the state an offline replay computes."""

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from statecast.models import Registry
from statecast.service.stores import SqliteStore

pytestmark = pytest.mark.slow

STREAMS = ["plant-1", "plant-2", "plant-3"]
LENGTH, CHUNK = 60, 5


def series(index: int) -> list[float]:
    t = np.arange(LENGTH)
    return [round(float(v), 3) for v in 80 + 60 * np.sin(t / 5.0 + index) + 3 * index]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


class Server:
    def __init__(self, root: Path, port: int, store: str | None = None) -> None:
        self.root, self.port, self.process = root, port, None
        self.store = store or f"sqlite:{root / 'state.db'}"

    def start(self) -> None:
        log = open(self.root / "server.log", "a")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "statecast.service.cli", "serve", "--port", str(self.port),
             "--workers", "2", "--registry", str(self.root / "registry"),
             "--store", self.store],
            cwd=self.root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "PYTHONPATH": os.getcwd()})
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2):
                    return
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        raise AssertionError((self.root / "server.log").read_text()[-3000:])

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=30)


def call(port: int, stream: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/models/sunspots/streams/{stream}/forecast",
        data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def client(port: int | list[int], answered: list[int], failures: list[str]) -> None:
    """Send every chunk of every stream in order, retrying until each is answered; with
    several ports, calls go round the servers."""
    ports = port if isinstance(port, list) else [port]
    turn = 0
    data = {stream: series(i) for i, stream in enumerate(STREAMS)}
    for chunk in range(LENGTH // CHUNK):
        for stream in STREAMS:
            body = {"start": chunk * CHUNK,
                    "window": data[stream][chunk * CHUNK:(chunk + 1) * CHUNK]}
            deadline = time.time() + 120
            while True:
                if time.time() > deadline:
                    failures.append(f"{stream} chunk {chunk} never answered")
                    return
                turn += 1
                try:
                    status, payload = call(ports[turn % len(ports)], stream, body)
                except (urllib.error.URLError, OSError, http.client.HTTPException,
                        json.JSONDecodeError):
                    time.sleep(0.05)
                    continue
                if status == 200:
                    answered.append(1)
                    break
                if status == 409 and payload["error"]["code"] == "gap_in_stream":
                    time.sleep(0.01)  # another client has not sent the chunk before yet
                    continue
                if status >= 500:
                    time.sleep(0.05)
                    continue
                failures.append(f"{stream} chunk {chunk}: {status} {payload}")
                return


def wait_for(answered: list[int], count: int, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while len(answered) < count and time.time() < deadline:
        time.sleep(0.02)


def test_no_acknowledged_observation_is_lost_or_doubled(tmp_path):
    server = Server(tmp_path, free_port())
    server.start()
    assert_settings_passed(server)
    answered: list[int] = []
    failures: list[str] = []
    clients = [threading.Thread(target=client, args=(server.port, answered, failures))
               for _ in range(4)]
    try:
        for thread in clients:
            thread.start()
        wait_for(answered, 30)
        workers = children(server.process.pid)
        assert workers, "no gunicorn workers found"
        os.kill(workers[0], signal.SIGKILL)  # one worker dies mid-load; gunicorn respawns it
        wait_for(answered, 80)
        server.kill()  # the whole server dies ...
        time.sleep(0.5)
        server.start()  # ... and comes back on the same files
        for thread in clients:
            thread.join(timeout=180)
        assert not failures, failures
        assert_served_steps(server.port)
    finally:
        server.stop()
    assert_replayed(SqliteStore(tmp_path / "state.db"), tmp_path / "registry")


def assert_settings_passed(server: Server) -> None:
    """``statecast serve`` exec'd gunicorn (same process) with its flags as settings in the
    new process's environment."""
    environ = dict(entry.split("=", 1) for entry in Path(
        f"/proc/{server.process.pid}/environ").read_text().split("\0") if "=" in entry)
    assert environ["STATECAST_PORT"] == str(server.port)
    assert (environ["STATECAST_WORKERS"], environ["STATECAST_STORE"]) == ("2", server.store)
    assert "gunicorn" in Path(f"/proc/{server.process.pid}/cmdline").read_text()


def assert_served_steps(port: int) -> None:
    """Every stream has consumed all LENGTH observations, as the server reports it."""
    for stream in STREAMS:
        with urllib.request.urlopen(
                f"http://127.0.0.1:{port}/v1/models/sunspots/streams/{stream}") as response:
            assert json.loads(response.read())["step"] == LENGTH


def assert_replayed(store, registry: Path) -> None:
    """Every stored stream equals an offline replay of its series (state within 1e-5)."""
    model = Registry(registry).load("sunspots")
    for index, stream in enumerate(STREAMS):
        record = store.get("sunspots", stream)
        assert (record.origin, record.step) == (0, LENGTH)
        x = model.scale_inputs(np.asarray(series(index), np.float32).reshape(1, -1, 1))
        _, replay, _ = model.run(x)
        np.testing.assert_allclose(record.state, replay.arena[0], atol=1e-5, rtol=1e-5)
        np.testing.assert_array_equal(record.tail[:, 0],
                                      np.asarray(series(index), np.float32)[-LENGTH:])
