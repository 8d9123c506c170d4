"""The compose stack, run for real with podman-compose: two statecast replicas behind one
Redis (AOF on a volume); a stream advanced through both in turn, Redis restarted in the
middle, and every answer equal to a single in-process server's: nothing was lost."""

from __future__ import annotations

import time
import uuid

import numpy as np
import pytest

from statecast.service.settings import Settings
from statecast.service.startup import serving_app
from tests.container.podman import call, compose, inspect, podman, wait_healthy
from tests.redis_server import free_port

pytestmark = [pytest.mark.container, pytest.mark.slow]

# The yearly sunspot numbers 1700-1740, sent as a first window and then a year at a time.
SUNSPOTS = [5, 11, 16, 23, 36, 58, 29, 20, 10, 8, 3, 0, 0, 2, 11, 27, 47, 63, 60, 39, 28, 26,
            22, 11, 21, 40, 78, 122, 103, 73, 47, 35, 11, 5, 16, 34, 70, 81, 111, 101, 73]
FIRST = 24


def answer(port: int, method: str, path: str, body: dict | None = None) -> dict:
    """A call's JSON answer, which must be a 200."""
    status, payload = call(port, method, path, body)
    assert status == 200, payload
    return payload


def windows() -> list[dict]:
    """The calls of one stream: the first 24 years, then one year each."""
    calls = [{"start": 1700, "window": SUNSPOTS[:FIRST]}]
    calls += [{"start": 1700 + i, "window": [SUNSPOTS[i]]} for i in range(FIRST, len(SUNSPOTS))]
    return calls


@pytest.fixture()
def reference(tmp_path):
    """One in-process server on the memory store: what every call should answer."""
    app = serving_app(Settings(registry=tmp_path / "registry", store="memory"))
    client = app.test_client()
    yield lambda body: client.post("/v1/models/sunspots/streams/s/forecast", json=body).json
    app.extensions["statecast"].close()


def containers(project: str) -> dict[str, str]:
    """The project's containers by compose service."""
    names = podman("ps", "-a", "--filter", f"label=io.podman.compose.project={project}",
                   "--format", "{{.Names}}").stdout.split()
    return {inspect("container", name)["Config"]["Labels"]["com.docker.compose.service"]: name
            for name in names}


@pytest.fixture()
def stack(image):
    """The compose stack up on free ports; its containers by service; taken down after."""
    project = f"statecast-test-{uuid.uuid4().hex[:6]}"
    ports = {"STATECAST_HOST_PORT": str(free_port()), "STATECAST_HOST_PORT_2": str(free_port())}
    started = time.monotonic()
    try:
        # Redis first, healthy, then the replicas: podman-compose waits for `service_healthy`
        # only with podman 4.6 and newer, and then on health checks systemd would run.
        compose(project, "up", "-d", "redis", extra_env=ports)
        wait_healthy(containers(project)["redis"], started, timeout=60)
        compose(project, "up", "-d", extra_env=ports)
        services = containers(project)
        assert set(services) == {"redis", "statecast", "statecast-2"}, services
        ready = {service: wait_healthy(services[service], started, timeout=120)
                 for service in ("redis", "statecast", "statecast-2")}
        yield {"services": services, "ready": ready,
               "ports": [int(ports["STATECAST_HOST_PORT"]), int(ports["STATECAST_HOST_PORT_2"])]}
    finally:
        compose(project, "down", "-v", check=False, extra_env=ports)


def test_two_replicas_share_streams_through_a_redis_restart(stack, reference):
    replicas = stack["ports"]
    stream = "/v1/models/sunspots/streams/s"
    calls = windows()
    middle = len(calls) // 2
    for number, body in enumerate(calls[:middle]):
        forecast = answer(replicas[number % 2], "POST", f"{stream}/forecast", body)["forecast"]
        np.testing.assert_allclose(forecast, reference(body)["forecast"], rtol=1e-5)
    for service in ("statecast", "statecast-2"):
        assert inspect("container", stack["services"][service])["HostConfig"][
            "ReadonlyRootfs"] is True
    before = [answer(port, "GET", f"{stream}/state") for port in replicas]
    assert before[0] == before[1] and before[0]["step"] == calls[middle]["start"]

    redis = stack["services"]["redis"]
    restarted = time.monotonic()
    podman("restart", redis)
    wait_healthy(redis, restarted, timeout=60)
    after = [answer(port, "GET", f"{stream}/state") for port in replicas]
    assert after == before  # the stream's h, c and step, as acknowledged before the restart

    unavailable = 0
    for number, body in enumerate(calls[middle:]):
        while True:  # a worker whose Redis connection broke answers 503 once, then recovers
            status, payload = call(replicas[number % 2], "POST", f"{stream}/forecast", body)
            if status == 200:
                break
            assert status == 503 and unavailable < 4, payload
            unavailable += 1
        np.testing.assert_allclose(payload["forecast"], reference(body)["forecast"], rtol=1e-5)
        assert payload["consumed"] == 1
    final = answer(replicas[0], "GET", stream)
    assert final["step"] == 1700 + len(SUNSPOTS)
