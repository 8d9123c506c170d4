"""The image, built and run for real with podman: healthy within a minute, the README's
forecast, a stream kept across replaced containers (sqlite on a volume), a read-only root
filesystem, non-root, JSON logs on stdout, a graceful stop that lets a call in flight finish,
and kernels recompiled at start on a CPU the image was not built on."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.container.podman import (
    IMAGE,
    ca_bundle,
    call,
    files,
    inspect,
    podman,
    remove,
    wait_healthy,
)
from tests.redis_server import free_port

pytestmark = [pytest.mark.container, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
READ_ONLY = ("--read-only", "--tmpfs", "/tmp")
CACHE = "/opt/statecast/kernel-cache"  # the image's compiled kernels


def readme_example() -> tuple[str, dict]:
    """The README's first forecast: its curl command and the answer it shows."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Ask the bundled model"):]
    command = re.search(r"```sh\n(curl .*?)```", section, re.S)
    answer = re.search(r"```json\n(.*?)```", section, re.S)
    assert command and answer
    return command.group(1), json.loads(answer.group(1))


class Server:
    """One statecast container on ``port`` (published as itself), its volumes named."""

    def __init__(self, volumes: dict[str, str], *options: str, ready_within: float = 60):
        self.name = f"statecast-test-{uuid.uuid4().hex[:8]}"
        self.port = free_port()
        started = time.monotonic()
        podman("run", "-d", "--name", self.name, "-e", f"STATECAST_PORT={self.port}",
               "-p", f"127.0.0.1:{self.port}:{self.port}",
               *(f"--volume={volume}:{path}" for volume, path in volumes.items()),
               *options, IMAGE)
        self.ready_after = wait_healthy(self.name, started, timeout=ready_within)

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        return call(self.port, method, path, body)

    def logs(self) -> tuple[list[str], list[str]]:
        """The container's stdout lines and its stderr lines (podman's own notes dropped)."""
        result = podman("logs", self.name)
        own = re.compile(r'^time="[^"]*" level=')
        return (result.stdout.splitlines(),
                [line for line in result.stderr.splitlines() if not own.match(line)])


@pytest.fixture()
def volumes() -> Iterator[dict[str, str]]:
    """Named volumes on the image's state and registry folders, removed afterwards."""
    suffix = uuid.uuid4().hex[:8]
    named = {f"statecast-state-{suffix}": "/data/state",
             f"statecast-registry-{suffix}": "/data/registry"}
    for volume in named:
        podman("volume", "create", volume)
    yield named
    podman("volume", "rm", "-f", *named, check=False)


@pytest.fixture()
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    remove(*(server.name for server in started))


def assert_readme_answer(answer: dict, shown: dict) -> None:
    """The answer is the README's, whose forecast is rounded to 2 decimals."""
    assert {k: v for k, v in answer.items() if k != "forecast"} == \
        {k: v for k, v in shown.items() if k != "forecast"}
    assert len(answer["forecast"]) == len(shown["forecast"])
    for row, shown_row in zip(answer["forecast"], shown["forecast"], strict=True):
        assert row == pytest.approx(shown_row, abs=0.006)


def test_the_image_is_non_root_with_a_health_check_and_no_build_secret(image):
    config = image["Config"]
    assert config["User"] == "10001"
    assert "/readyz" in " ".join(image["Healthcheck"]["Test"])
    assert config["StopSignal"] in ("SIGTERM", "15")
    leftovers = podman("run", "--rm", "--network=none", IMAGE, "sh", "-c",
                       "ls /run/secrets 2>/dev/null; find / -xdev -name 'ca-bundle*' "
                       "2>/dev/null; echo end")
    assert leftovers.stdout.strip() == "end"


def test_another_base_image_builds_with_apt_trusting_the_ca_secret(image, tmp_path):
    """``BASE_IMAGE`` picks the base; on a base whose Debian sources are HTTPS, apt
    reaches them through a TLS-re-signing proxy with the CA secret, and not without it."""
    secret = ca_bundle()
    assert secret is not None
    base = "localhost/statecast-test/https-sources:latest"
    (tmp_path / "Containerfile").write_text(
        "FROM python:3.11-slim\n"
        "RUN for f in /etc/apt/sources.list /etc/apt/sources.list.d/*; do "
        "[ -f \"$f\" ] && sed -i 's#http://#https://#' \"$f\"; done; true\n")
    podman("build", "--pull=never", "-t", base, str(tmp_path))
    built = podman("build", "--format", "docker", "--pull=never", "--no-cache",
                   "--target", "runtime",
                   "--build-arg", f"BASE_IMAGE={base}",
                   "--secret", f"id=ca-bundle,src={secret}", str(ROOT))
    assert "https://" in built.stdout + built.stderr
    reaches = podman("run", "--rm", base, "python", "-c",
                     "import urllib.request; urllib.request.urlopen("
                     "'https://deb.debian.org/debian/', timeout=30)", check=False)
    if "CERTIFICATE_VERIFY_FAILED" in reaches.stderr:  # TLS re-signed by a CA it lacks
        refused = podman("build", "--format", "docker", "--pull=never", "--no-cache",
                         "--target", "runtime", "--build-arg", f"BASE_IMAGE={base}",
                         str(ROOT), check=False)
        assert refused.returncode != 0 and "Release" in refused.stderr + refused.stdout
    podman("rmi", "-f", base, check=False)


def test_a_container_serves_the_readme_forecast_and_keeps_the_stream_when_restarted_or_replaced(
        image, volumes, servers):
    command, shown = readme_example()
    first = Server(volumes)
    servers.append(first)
    assert first.ready_after < 60
    curl = subprocess.run(["sh", "-c", command.replace("127.0.0.1:8000",
                                                       f"127.0.0.1:{first.port}")],
                          capture_output=True, text=True, check=True, timeout=60)
    assert_readme_answer(json.loads(curl.stdout), shown)
    assert podman("exec", first.name, "id", "-u").stdout.strip() == "10001"

    # Every log line is JSON on stdout: gunicorn's, statecast's and the access log's.
    out, err = first.logs()
    records = [json.loads(line) for line in out]
    assert err == []
    assert any(record.get("logger") == "gunicorn.error" for record in records)
    assert any(record.get("route", "").endswith("/forecast") and record["status"] == 200
               for record in records)

    # Restarted: the stream is still there.
    restarted = time.monotonic()
    podman("restart", "-t", "15", first.name)
    wait_healthy(first.name, restarted)
    assert first.call("GET", "/v1/models/sunspots/streams/sun")[1]["step"] == 1724

    # Replaced by a container with a read-only root filesystem, on the same volumes.
    remove(first.name)
    second = Server(volumes, *READ_ONLY)
    servers.append(second)
    assert second.ready_after < 60
    # It served from its copy of the image's kernel cache, compiling nothing.
    assert files(second.name, CACHE) == files(second.name, "/tmp/statecast-kernels-*") - {
        "./.statecast-copy-done"}
    assert second.call("GET", "/v1/models/sunspots/streams/sun")[1]["step"] == 1724
    status, answer = second.call("POST", "/v1/models/sunspots/streams/sun/forecast",
                                 {"start": 1724, "window": [21]})
    assert status == 200 and answer["consumed"] == 1 and answer["step"] == 1725
    status, error = second.call("POST", "/v1/models/sunspots/streams/sun/forecast",
                                {"start": 1730, "window": [1]})
    assert status == 409 and error["error"]["code"] == "gap_in_stream"


def test_a_stop_lets_the_call_in_flight_finish(image, volumes, servers):
    server = Server(volumes, *READ_ONLY)
    servers.append(server)
    body = json.dumps({"window": [5.0, 11.0, 16.0]}).encode()
    head = (f"POST /v1/models/sunspots/streams/late/forecast HTTP/1.1\r\nHost: statecast\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head + body[:4])  # the call is in flight, its body half sent
        time.sleep(0.5)
        stopped: dict[str, float] = {}

        def stop() -> None:
            began = time.monotonic()
            podman("stop", "-t", "15", server.name)  # the compose file's grace period
            stopped["after"] = time.monotonic() - began

        stopper = threading.Thread(target=stop)
        stopper.start()
        deadline = time.monotonic() + 10
        while not any("Handling signal: term" in line for line in server.logs()[0]):
            assert time.monotonic() < deadline, "SIGTERM never reached gunicorn"
            time.sleep(0.1)
        time.sleep(1)  # the workers have had the signal too
        sock.sendall(body[4:])
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    stopper.join()
    assert response.startswith(b"HTTP/1.1 200"), response[:300]
    assert json.loads(response.split(b"\r\n\r\n", 1)[1])["step"] == 3
    assert inspect("container", server.name)["State"]["ExitCode"] == 0  # not killed
    assert stopped["after"] < 15

    # The call that finished during the stop was stored.
    again = Server(volumes, *READ_ONLY)
    servers.append(again)
    assert again.call("GET", "/v1/models/sunspots/streams/late")[1]["step"] == 3


def test_on_another_cpu_the_kernels_compile_at_start(image, volumes, servers):
    """The image's kernels were compiled for the CPU it was built on; a CPU Numba names
    differently (here: ``generic``) misses that cache, and each container compiles them
    once at start, into its writable copy of the cache, even on a read-only root."""
    command, shown = readme_example()
    server = Server(volumes, *READ_ONLY, "-e", "NUMBA_CPU_NAME=generic", ready_within=300)
    servers.append(server)
    status, answer = server.call("POST", "/v1/models/sunspots/streams/sun/forecast",
                                 json.loads(command.split("-d '", 1)[1].rsplit("'", 1)[0]))
    assert status == 200
    assert_readme_answer(answer, shown)
    baked, copy = files(server.name, CACHE), files(server.name, "/tmp/statecast-kernels-*")
    assert baked < copy and any(name.endswith(".nbc") for name in copy - baked)
