"""Two servers (several workers each) sharing one Redis: concurrent clients spread over
both, a worker killed with SIGKILL, a whole server killed and restarted, Redis restarted
once (AOF on). Afterwards every stream consumed exactly what was sent and holds the state an
offline replay computes."""

import os
import signal
import threading
import time

import pytest

from statecast.models import Registry
from statecast.service.bundled import seed_registry
from statecast.service.stores import open_store
from tests.redis_server import RedisServer
from tests.service.test_server import (
    Server,
    assert_replayed,
    assert_served_steps,
    children,
    client,
    free_port,
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
        assert_served_steps(ports[0])
    finally:
        for server in servers:
            if server.process is not None and server.process.poll() is None:
                server.stop()
    store = open_store(redis.url)
    try:
        assert_replayed(store, registry)
    finally:
        store.close()
        redis.cleanup()
