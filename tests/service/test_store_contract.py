"""The contract every state store passes, run against each implementation (Redis both as
one server and as a Redis Cluster of three masters)."""

import threading
import time

import numpy as np
import pytest

from statecast.service.errors import InvalidStoreUrl, StoreError
from statecast.service.stores import MemoryStore, SqliteStore, StreamRecord, open_store


@pytest.fixture(params=["memory", "sqlite", "redis", "redis-cluster"])
def store(request, tmp_path):
    if request.param == "memory":
        opened = MemoryStore()
    elif request.param == "sqlite":
        opened = SqliteStore(tmp_path / "s.db")
    else:
        opened = open_store(request.getfixturevalue(REDIS[request.param]))
    yield opened
    opened.close()


#: The fixture that gives an empty Redis of each kind.
REDIS = {"redis": "redis_url", "redis-cluster": "redis_cluster_url"}


@pytest.fixture(params=sorted(REDIS))
def redis_address(request):
    """An empty Redis server, then an empty Redis Cluster."""
    return request.getfixturevalue(REDIS[request.param])


def record(stream="a", model="m", version="1", step=5, seed=0, tail_rows=3, revision=0):
    rng = np.random.default_rng(seed)
    return StreamRecord(model=model, stream=stream, version=version, origin=2, step=step,
                        state=rng.standard_normal(6).astype(np.float32),
                        tail=rng.standard_normal((tail_rows, 2)).astype(np.float32),
                        revision=revision, created_at=1000.0, updated_at=1000.5)


def test_missing_streams_read_as_none(store):
    assert store.get("m", "a") is None
    assert store.get_many("m", ["a", "b"]) == [None, None]


def test_create_then_read_back_exactly(store):
    written = record()
    assert store.compare_and_set(written, None)
    read = store.get("m", "a")
    assert read.same_content(written)
    assert read.state.dtype == np.float32 and read.tail.shape == (3, 2)
    assert (read.created_at, read.updated_at) == (1000.0, 1000.5)


def test_create_only_once(store):
    assert store.compare_and_set(record(seed=1), None)
    assert not store.compare_and_set(record(seed=2), None)
    assert store.get("m", "a").same_content(record(seed=1))


def test_compare_and_set_on_the_revision(store):
    first = record()
    store.compare_and_set(first, None)
    second = first.advanced(step=9, state=first.state + 1, tail=first.tail[1:])
    assert store.compare_and_set(second, expected_revision=0)
    stale = first.advanced(step=7, state=first.state - 1, tail=first.tail)
    assert not store.compare_and_set(stale, expected_revision=0)
    read = store.get("m", "a")
    assert read.same_content(second) and read.revision == 1 and read.tail.shape == (2, 2)


def test_updating_a_missing_stream_fails(store):
    assert not store.compare_and_set(record(revision=1), expected_revision=0)
    assert store.get("m", "a") is None


def test_get_many_keeps_the_order_asked(store):
    for name in ("a", "b", "c"):
        store.compare_and_set(record(stream=name, seed=ord(name)), None)
    got = store.get_many("m", ["c", "x", "a"])
    assert [r.stream if r else None for r in got] == ["c", None, "a"]
    assert got[0].same_content(record(stream="c", seed=ord("c")))


def test_delete_forgets_entirely(store):
    store.compare_and_set(record(), None)
    assert store.delete("m", "a")
    assert store.get("m", "a") is None
    assert not store.delete("m", "a")
    assert store.compare_and_set(record(seed=3), None)


def test_scan_filters_by_model(store):
    store.compare_and_set(record(stream="a"), None)
    store.compare_and_set(record(stream="b"), None)
    store.compare_and_set(record(stream="a", model="other"), None)
    assert sorted(r.stream for r in store.scan("m")) == ["a", "b"]
    assert sorted((r.model, r.stream) for r in store.scan()) == [
        ("m", "a"), ("m", "b"), ("other", "a")]


def test_a_stream_can_move_to_another_version(store):
    first = record()
    store.compare_and_set(first, None)
    moved = StreamRecord(model="m", stream="a", version="2", origin=0, step=0,
                         state=np.zeros(10, np.float32), tail=np.zeros((0, 2), np.float32),
                         revision=1)
    assert store.compare_and_set(moved, expected_revision=0)
    read = store.get("m", "a")
    assert read.version == "2" and read.state.shape == (10,) and read.tail.shape[0] == 0


def test_concurrent_writers_never_lose_or_double_an_update(store):
    start = record(step=0)
    store.compare_and_set(StreamRecord(model="m", stream="a", version="1", origin=0, step=0,
                                       state=np.zeros(6, np.float32), tail=start.tail), None)
    threads, increments = 4, 40

    def writer():
        for _ in range(increments):
            while True:
                current = store.get("m", "a")
                new = current.advanced(step=current.step + 1, state=current.state + 1,
                                       tail=current.tail)
                if store.compare_and_set(new, current.revision):
                    break

    workers = [threading.Thread(target=writer) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    final = store.get("m", "a")
    assert final.step == threads * increments and final.revision == threads * increments
    np.testing.assert_array_equal(final.state, np.full(6, threads * increments, np.float32))


def test_store_addresses():
    assert isinstance(open_store("memory"), MemoryStore)
    with pytest.raises(InvalidStoreUrl, match="use memory, sqlite:PATH, redis://host:port/db "
                                              "or redis\\+cluster://host:port"):
        open_store("postgres://x")
    assert type(open_store("redis://localhost:6379/0")).__name__ == "RedisStore"
    # A cluster client connects when first used: a store opens while the cluster is away.
    cluster = open_store("redis+cluster://localhost:1?wait=1&wait_timeout_ms=50")
    assert type(cluster).__name__ == "RedisClusterStore"
    assert (cluster.address.url, cluster.address.wait, cluster.address.wait_timeout_ms) == (
        "redis://localhost:1", 1, 50)
    with pytest.raises(StoreError, match="localhost:1"):
        cluster.get("m", "a")
    plain = open_store("redis://:secret@localhost:6379/2?wait=2&socket_keepalive=true")
    assert (plain.address.url, plain.address.wait) == (
        "redis://:secret@localhost:6379/2?socket_keepalive=true", 2)
    for wrong, why in [("redis://h:1/0?wait=x", "wait must be an integer >= 0"),
                       ("redis://h:1/0?wait_timeout_ms=0", "wait_timeout_ms must be"),
                       ("redis+cluster://h:1/2", "a Redis Cluster has one database")]:
        with pytest.raises(InvalidStoreUrl, match=why):
            open_store(wrong)


def test_memory_store_keeps_a_version_s_streams_in_one_arena():
    store = MemoryStore()
    for name in "abc":
        store.compare_and_set(record(stream=name, seed=ord(name)), None)
    arena = store.arena("m", "1")
    assert arena.used == 3 and arena.rows.dtype == np.float32
    rows = sorted(map(tuple, arena.rows[:3].tolist()))
    assert rows == sorted(tuple(record(stream=n, seed=ord(n)).state.tolist()) for n in "abc")
    store.delete("m", "b")
    assert arena.used == 2


def test_redis_down_is_503_and_the_service_recovers_without_a_restart(tmp_path):
    from statecast.service.settings import Settings
    from statecast.service.startup import serving_app
    from tests.redis_server import RedisServer

    server = RedisServer()
    server.start()
    try:
        app = serving_app(Settings(registry=tmp_path / "r", store=server.url), warm=False)
        client = app.test_client()
        url = "/v1/models/sunspots/streams/s/forecast"
        assert client.post(url, json={"window": [1.0]}).status_code == 200
        server.stop()
        down = client.post(url, json={"window": [2.0]})
        assert down.status_code == 503
        assert down.get_json()["error"]["code"] == "store_unavailable"
        assert down.headers["Retry-After"] == "1"
        server.start()  # same port, same AOF files
        again = client.post(url, json={"window": [2.0]})
        assert again.status_code == 200 and again.get_json()["step"] == 2
    finally:
        server.cleanup()


def test_compare_and_set_many_succeeds_or_fails_item_by_item(store):
    store.compare_and_set(record(stream="a"), None)
    store.compare_and_set(record(stream="b"), None)
    a, b = store.get("m", "a"), store.get("m", "b")
    writes = [(a.advanced(step=9, state=a.state, tail=a.tail), 0),
              (b.advanced(step=9, state=b.state, tail=b.tail), 5),  # stale: fails alone
              (record(stream="c"), None),
              (record(stream="a", seed=4), None)]  # exists: fails alone
    assert store.compare_and_set_many(writes) == [True, False, True, False]
    assert store.get("m", "a").step == 9 and store.get("m", "b").step == 5
    assert store.get("m", "c") is not None
    assert store.compare_and_set_many([]) == []


def test_redis_expires_idle_streams_itself_and_keeps_a_tombstone(redis_address):
    store = open_store(redis_address, ttl=0.3, tombstone_ttl=0.6)
    try:
        assert store.expires_idle
        live = record(stream="idle", step=7)
        assert store.compare_and_set(live, None)
        key = "statecast:{m/idle}"
        assert 0 < store.client.pttl(key) <= 300
        time.sleep(0.45)
        assert not store.client.exists(key)  # Redis freed it: no worker swept
        tombstone = store.get("m", "idle")
        assert tombstone.expired and tombstone.version == "1" and tombstone.step == 7
        assert store.get_many("m", ["idle", "never"])[1] is None
        assert store.count("m") == 0
        # A reset creates it anew over the tombstone (and only once).
        again = record(stream="idle", step=1)
        assert store.compare_and_set(again, tombstone.revision)
        assert not store.compare_and_set(again, tombstone.revision)
        assert store.get("m", "idle").same_content(again)
        # Past the tombstone's time Redis forgets the stream entirely.
        assert store.delete("m", "idle")
        assert store.compare_and_set(record(stream="gone"), None)
        time.sleep(1.1)
        assert store.get("m", "gone") is None
    finally:
        store.close()


def test_without_a_ttl_redis_keys_never_expire(redis_address):
    store = open_store(redis_address)
    try:
        assert not store.expires_idle
        assert store.compare_and_set(record(stream="kept"), None)
        assert store.client.pttl("statecast:{m/kept}") == -1
        assert not store.client.exists("statecast-seen:{m/kept}")
    finally:
        store.close()


def test_by_default_redis_tombstones_stay_until_a_reset(redis_address):
    store = open_store(redis_address, ttl=0.2)
    try:
        live = record(stream="t")
        assert store.compare_and_set(live, None)
        assert store.client.pttl("statecast-seen:{m/t}") == -1  # the marker never expires
        time.sleep(0.3)
        assert store.get("m", "t").expired
        # A tombstone written by the service (on access) does not expire either.
        stone = live.tombstone()
        assert store.compare_and_set(stone, -1)  # -1: the key Redis expired is gone
        assert store.client.pttl("statecast:{m/t}") == -1
        assert store.get("m", "t").expired
    finally:
        store.close()
