"""The redis store on a Redis Cluster of three masters: a call's writes spread over several
slots and masters still score each observation once (also when one slot's compare-and-set
fails), reads and scans cover every master, a master killed and restarted on its AOF loses
no acknowledged update, a resharded slot is followed; and ``?wait=N`` on both kinds of
Redis: 503 ``replication_unconfirmed`` when fewer replicas acknowledge a write."""

import numpy as np
import pytest
import redis
from redis.crc import key_slot

from statecast.service.accuracy import (
    RESIDUAL_WRITES,
    decode_residual_chunk,
)
from statecast.service.errors import StoreError
from statecast.service.scoring import WriteScores
from statecast.service.settings import Settings
from statecast.service.startup import serving_app
from statecast.service.stores import StreamRecord, open_store
from statecast.service.stores.redis import stream_key
from tests.redis_server import RedisCluster, RedisServer, start_replica

BATCH = "/v1/models/sunspots/forecast"
ONE = "/v1/models/sunspots/streams/{}/forecast"
REDIS = {"redis": "redis_url", "redis-cluster": "redis_cluster_url"}


@pytest.fixture(scope="module")
def own_cluster():
    """A cluster of this module's own, for tests that kill, reshard or add replicas."""
    cluster = RedisCluster()
    cluster.start()
    yield cluster
    cluster.cleanup()


def make_app(tmp_path, store):
    return serving_app(Settings(registry=tmp_path / "registry", store=store,
                                access_log=False), warm=False)


def series(n=120, seed=0):
    rng = np.random.default_rng(seed)
    return (60 + 45 * np.sin(np.arange(n) / 9.0) + rng.normal(0, 6, n)).round(2)


def on_every_master(cluster, per_master=2, model="sunspots"):
    """Stream names whose keys fall on each master, ``per_master`` of each."""
    found: dict[int, list[str]] = {index: [] for index in range(len(cluster.nodes))}
    number = 0
    while min(map(len, found.values())) < per_master:
        name = f"s{number}"
        owner = found[cluster.node_of(stream_key(model, name))]
        if len(owner) < per_master:
            owner.append(name)
        number += 1
    return [name for names in found.values() for name in names]


def batch(client, streams, y, start, size=1):
    return client.post(BATCH, json={"items": [
        {"stream": s, "start": start, "window": [[float(v)] for v in y[start:start + size]]}
        for s in streams]})


def counts(client):
    return [step["count"] for step in client.get("/v1/models/sunspots/accuracy")
            .get_json()["steps"]]


def test_a_batch_over_every_master_scores_each_observation_once(redis_cluster,
                                                                 redis_cluster_url, tmp_path):
    streams = on_every_master(redis_cluster)
    cluster_app = make_app(tmp_path / "cluster", redis_cluster_url)
    memory_app = make_app(tmp_path / "memory", "memory")  # the same calls, one process
    y = series()
    for client in (cluster_app.test_client(), memory_app.test_client()):
        assert batch(client, streams, y, 0, 30).status_code == 200
        for start in range(30, 45):
            items = batch(client, streams, y, start).get_json()["items"]
            assert [item["step"] for item in items] == [start + 1] * len(streams)
    on_cluster, in_memory = (app.test_client().get("/v1/models/sunspots/accuracy").get_json()
                             for app in (cluster_app, memory_app))
    # 16 forecasts a stream (at steps 30 .. 45), observed up to step 45.
    assert on_cluster["scored"] == in_memory["scored"] == 6 * sum(15 - k for k in range(12))
    for a, b in zip(on_cluster["steps"], in_memory["steps"], strict=True):
        assert a["count"] == b["count"] and a["mae"] == pytest.approx(b["mae"], rel=1e-5)
    # Kept per slot: one totals key for each stream's slot, all listed in the version's set.
    store = cluster_app.extensions["statecast"].store.inner  # under its timer
    tags = store.client.smembers("statecast-accuracy-slots:{sunspots/1}")
    assert len(tags) == len({key_slot(stream_key("sunspots", s).encode()) for s in streams})
    for app in (cluster_app, memory_app):
        app.extensions["statecast"].close()


def record(stream, revision=0, model="m"):
    return StreamRecord(model=model, stream=stream, version="1", origin=0, step=1,
                        state=np.full(2, revision, np.float32),
                        tail=np.zeros((1, 1), np.float32), revision=revision)


def write_scores(*errors):
    """Each write scored one absolute error at step 1."""
    sums = np.zeros((len(errors), 3, 2))
    for index, error in enumerate(errors):
        sums[index, :, 0] = [1.0, error, 0.0]
    return WriteScores((), sums, np.array(errors, np.float32).reshape(-1, 1),
                       np.ones(len(errors), np.int32), np.arange(len(errors)))


def same_slot_pair(model="m"):
    """Two stream names whose keys share a hash slot."""
    seen: dict[int, str] = {}
    number = 0
    while True:
        name = f"p{number}"
        slot = key_slot(stream_key(model, name).encode())
        if slot in seen:
            return seen[slot], name
        seen[slot] = name
        number += 1


def test_a_slot_whose_compare_and_set_fails_adds_nothing(redis_cluster, redis_cluster_url):
    store = open_store(redis_cluster_url)
    try:
        first, second = same_slot_pair()
        others = [s for s in on_every_master(redis_cluster, 1, "m") if s not in (first, second)]
        names = [first, second, *others]
        assert store.compare_and_set_many([(record(n), None) for n in names],
                                          write_scores(*[1.0] * len(names))) == [True] * 5
        # One stale write in a shared slot, one alone in its slot: those two fail, their
        # slot-mates and the other slots land with their scores.
        writes = [(record(first, 1), 0), (record(second, 1), 7),
                  (record(others[0], 1), 3), (record(others[1], 1), 0),
                  (record(others[2], 1), 0)]
        results = store.compare_and_set_many(writes, write_scores(10, 100, 1000, 20, 30))
        assert results == [True, False, False, True, True]
        assert [store.get("m", n).revision for n in names] == [1, 0, 0, 1, 1]
        since, totals = store.accuracy("m", "1")
        np.testing.assert_array_equal(totals["count"], [5.0 + 3.0, 0.0])
        np.testing.assert_array_equal(totals["abs_error"], [5.0 + 60.0, 0.0])
        kept = np.concatenate([decode_residual_chunk(chunk)[1].ravel()
                               for chunk in store.residuals("m", "1")])
        assert sorted(kept) == [1.0] * 5 + [10.0, 20.0, 30.0]
        assert since is not None
    finally:
        store.close()


def test_reads_and_scans_cover_every_master(redis_cluster, redis_cluster_url):
    store = open_store(redis_cluster_url, ttl=60)
    try:
        names = on_every_master(redis_cluster, 2, "m")
        assert all(store.compare_and_set_many([(record(n), None) for n in names]))
        asked = [*reversed(names), "never"]
        got = store.get_many("m", asked)
        assert [r.stream if r else None for r in got] == [*reversed(names), None]
        assert sorted(r.stream for r in store.scan("m")) == sorted(names)
        assert store.count("m") == len(names)
        assert store.delete("m", names[0]) and not store.delete("m", names[0])
    finally:
        store.close()


def test_residuals_are_the_newest_writes_over_every_slot(redis_cluster_url):
    store = open_store(redis_cluster_url)
    try:
        names, slots, number = [], set(), 0
        while len(names) < RESIDUAL_WRITES + 88:  # more slots than residuals kept
            name = f"r{number}"
            slot = key_slot(stream_key("m", name).encode())
            if slot not in slots:
                slots.add(slot)
                names.append(name)
            number += 1
        errors = [float(i) for i in range(len(names))]
        assert all(store.compare_and_set_many([(record(n), None) for n in names],
                                              write_scores(*errors)))
        chunks = store.residuals("m", "1")
        kept = [float(decode_residual_chunk(chunk)[1][0, 0]) for chunk in chunks]
        assert kept == errors[-RESIDUAL_WRITES:]  # newest, oldest first
        assert store.accuracy("m", "1")[1]["count"][0] == len(names)
    finally:
        store.close()


def test_the_plain_store_keeps_its_keys(redis_url):
    store = open_store(redis_url)
    try:
        store.compare_and_set(record("a"), None, write_scores(2.0))
        assert sorted(store.client.keys()) == [
            b"statecast-accuracy:{m/1}", b"statecast-residuals:{m/1}", b"statecast:{m/a}"]
        assert set(store.client.hgetall("statecast-accuracy:{m/1}")) == {
            b"since", b"count:0", b"count:1", b"abs_error:0", b"abs_error:1", b"smape:0",
            b"smape:1"}
    finally:
        store.close()


def test_a_master_killed_and_restarted_on_its_aof_loses_no_acknowledged_update(
        own_cluster, tmp_path):
    """Every acknowledged call is in the AOF file before its answer: Redis writes (but with
    ``appendfsync everysec`` does not fsync) it before replying, and a killed process leaves
    what it wrote in the kernel's page cache."""
    own_cluster.flush()
    streams = on_every_master(own_cluster)
    victim = len(own_cluster.nodes) - 1
    healthy = [s for s in streams if own_cluster.node_of(stream_key("sunspots", s)) != victim]
    app = make_app(tmp_path / "cluster", own_cluster.url)
    mirror = make_app(tmp_path / "memory", "memory")  # every acknowledged call, again
    client, mirrored = app.test_client(), mirror.test_client()
    y = series()
    acknowledged: dict[str, int] = {}

    def call(names, start, size=1):
        response = batch(client, names, y, start, size)
        if response.status_code == 200:
            assert batch(mirrored, names, y, start, size).status_code == 200
            for item in response.get_json()["items"]:
                acknowledged[item["stream"]] = item["step"]
        return response

    assert call(streams, 0, 30).status_code == 200
    for start in range(30, 40):
        assert call(streams, start).status_code == 200
    own_cluster.nodes[victim].kill()  # right after an acknowledged write
    down = call(streams, 40)
    assert down.status_code == 503, down.get_json()
    assert down.get_json()["error"]["code"] == "store_unavailable"
    assert down.headers["Retry-After"] == "1"
    # The other masters still serve their streams.
    alive = call(healthy, 40)
    assert alive.status_code == 200, alive.get_json()
    own_cluster.nodes[victim].start()  # same port, folder, nodes.conf and AOF file
    own_cluster.wait_until_ok()
    store = open_store(own_cluster.url)
    try:
        assert {s: store.get("sunspots", s).step for s in streams} == acknowledged
    finally:
        store.close()
    assert counts(client) == counts(mirrored)
    # The same app, not restarted, serves every stream again.
    assert call([s for s in streams if s not in healthy], 40).status_code == 200
    assert call(streams, 41).status_code == 200
    assert counts(client) == counts(mirrored)
    for each in (app, mirror):
        each.extensions["statecast"].close()


def test_a_stream_whose_slot_moves_to_another_master_is_still_served(own_cluster):
    own_cluster.flush()
    store = open_store(own_cluster.url)
    try:
        assert store.compare_and_set(record("moving"), None, write_scores(1.0))
        key = stream_key("m", "moving")
        slot, source = key_slot(key.encode()), own_cluster.node_of(key)
        target = (source + 1) % len(own_cluster.nodes)
        # Mid-migration the old master answers ASK for the keys it gave away: a write there
        # fails whole (a 503 for the service) and the client retries later.
        own_cluster.move_slot(slot, source, target, finish=False)
        with pytest.raises(StoreError, match="AskError"):
            store.compare_and_set(record("moving", 1), 0, write_scores(5.0))
        own_cluster.move_slot(slot, source, target)
        assert own_cluster.node_of(key) == target
        # The store's client still maps the slot to the old master: it follows MOVED.
        assert store.compare_and_set(record("moving", 1), 0, write_scores(2.0))
        assert store.get("m", "moving").same_content(record("moving", 1))
        np.testing.assert_array_equal(store.accuracy("m", "1")[1]["count"], [2.0, 0.0])
        np.testing.assert_array_equal(store.accuracy("m", "1")[1]["abs_error"], [3.0, 0.0])
    finally:
        store.close()


@pytest.mark.parametrize("kind", sorted(REDIS))
def test_waiting_for_a_replica_that_is_not_there_answers_503(kind, request, tmp_path):
    url = request.getfixturevalue(REDIS[kind])
    app = make_app(tmp_path / "wait", f"{url}?wait=1&wait_timeout_ms=20")
    client = app.test_client()
    y = series()
    body = {"start": 0, "window": [float(v) for v in y[:30]]}
    refused = client.post(ONE.format("a"), json=body)
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
    error = refused.get_json()["error"]
    assert error["code"] == "replication_unconfirmed"
    assert "0 of 1 replicas" in error["message"]
    # The write is on the master: a retry consumes nothing and answers.
    assert client.get("/v1/models/sunspots/streams/a").get_json()["step"] == 30
    again = client.post(ONE.format("a"), json=body)
    assert again.status_code == 200 and again.get_json()["consumed"] == 0
    app.extensions["statecast"].close()
    plain = make_app(tmp_path / "plain", url)
    assert plain.test_client().post(ONE.format("b"), json=body).status_code == 200
    plain.extensions["statecast"].close()


def test_waiting_for_a_replica_that_is_there(tmp_path):
    master = RedisServer()
    master.start()
    replica = None
    try:
        replica = start_replica(master)
        app = make_app(tmp_path, f"{master.url}?wait=1&wait_timeout_ms=500")
        client = app.test_client()
        y = series()
        answer = client.post(ONE.format("a"), json={"window": [float(v) for v in y[:30]]})
        assert answer.status_code == 200, answer.get_json()
        # Acknowledged means on the replica: read it there at once.
        copy = redis.Redis(port=replica.port)
        assert int(copy.hget("statecast:{sunspots/a}", "step")) == 30
        copy.close()
        replica.kill()
        lost = client.post(ONE.format("a"), json={"window": [float(y[30])]})
        assert lost.get_json()["error"]["code"] == "replication_unconfirmed"
        app.extensions["statecast"].close()
    finally:
        if replica is not None:
            replica.cleanup()
        master.cleanup()


def test_waiting_for_a_replica_on_the_cluster(own_cluster, tmp_path):
    own_cluster.flush()
    if not own_cluster.replicas:
        own_cluster.add_replica(0)
    app = make_app(tmp_path, f"{own_cluster.url}?wait=1&wait_timeout_ms=500")
    client = app.test_client()
    streams = on_every_master(own_cluster, 1)
    y = series()
    body = {"items": [{"stream": s, "window": [float(v) for v in y[:30]]}
                      for s in streams[:1]]}
    assert client.post(BATCH, json=body).status_code == 200  # master 0 has a replica
    body["items"][0]["stream"] = streams[1]
    refused = client.post(BATCH, json=body)  # master 1 has none
    assert refused.get_json()["error"]["code"] == "replication_unconfirmed"
    app.extensions["statecast"].close()
