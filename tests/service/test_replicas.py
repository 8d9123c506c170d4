"""Two servers (several workers each) sharing one Redis: concurrent clients spread over
both, a worker killed with SIGKILL, a whole server killed and restarted, Redis restarted
once (AOF on). Afterwards every stream consumed exactly what was sent and holds the state an
offline replay computes."""

import json
import os
import signal
import threading
import time
import urllib.request

import numpy as np
import pytest

from models import Registry
from service.bundled import seed_registry
from service.stores import open_store
from tests.redis_server import RedisServer
from tests.service.test_server import (
    LENGTH,
    STREAMS,
    Server,
    children,
    client,
    free_port,
    series,
    wait_for,
)

pytestmark = pytest.mark.slow


def test_replicas_on_one_redis_lose_and_double_nothing(tmp_path):
    redis = RedisServer()
    redis.start()
    registry = tmp_path / "registry"
    seed_registry(Registry(registry))  # one registry folder shared by both servers
    servers = []
    for name in ("a", "b"):
        root = tmp_path / name
        root.mkdir()
        (root / "registry").symlink_to(registry)
        servers.append(Server(root, free_port(), store=redis.url))
    answered: list[int] = []
    failures: list[str] = []
    try:
        for server in servers:
            server.start()
        ports = [server.port for server in servers]
        clients = [threading.Thread(target=client, args=(ports, answered, failures))
                   for _ in range(4)]
        for thread in clients:
            thread.start()
        wait_for(answered, 25)
        os.kill(children(servers[0].process.pid)[0], signal.SIGKILL)  # a worker of A
        wait_for(answered, 60)
        servers[1].kill()  # all of B ...
        time.sleep(0.3)
        servers[1].start()  # ... and B again
        wait_for(answered, 100)
        redis.stop()  # Redis goes away (calls answer 503, clients retry) ...
        time.sleep(0.5)
        redis.start()  # ... and comes back on its AOF file
        for thread in clients:
            thread.join(timeout=180)
        assert not failures, failures
        for stream in STREAMS:
            with urllib.request.urlopen(f"http://127.0.0.1:{ports[0]}/v1/models/sunspots/"
                                        f"streams/{stream}") as response:
                assert json.loads(response.read())["step"] == LENGTH
    finally:
        for server in servers:
            if server.process is not None and server.process.poll() is None:
                server.stop()
    model = Registry(registry).load("sunspots")
    store = open_store(redis.url)
    try:
        for index, stream in enumerate(STREAMS):
            record = store.get("sunspots", stream)
            assert (record.origin, record.step) == (0, LENGTH)
            x = model.scale_inputs(np.asarray(series(index), np.float32).reshape(1, -1, 1))
            _, replay, _ = model.run(x)
            np.testing.assert_allclose(record.state, replay.arena[0], atol=1e-5, rtol=1e-5)
    finally:
        store.close()
        redis.cleanup()
