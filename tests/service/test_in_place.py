"""Batch appends computed as arrays (:mod:`service.bulk`), in place on the memory store's
tables or from the records of a durable store: the same answers, records and scores as
the one-stream path, item by item, for every kind of item a batch may mix; concurrent
calls on the same streams serialised; a what-if, a bad item or a gap changes nothing."""

import threading

import numpy as np
import pytest

from statecast.service.settings import Settings
from statecast.service.startup import serving_app
from statecast.service.stores import MemoryStore, SqliteStore, open_store


class RecordsMemoryStore(MemoryStore):
    """The memory store with batch calls taken through records and compare-and-set."""

    runs_in_place = False


def make_client(tmp_path, store, **overrides):
    settings = Settings(registry=tmp_path / "registry", store="memory", access_log=False,
                        **overrides)
    app = serving_app(settings, store=store, warm=False)
    return app, app.test_client()


@pytest.fixture()
def servers(tmp_path, redis_url):
    """Servers on one registry: the one-stream path for every item (the reference), then
    appends in place (memory) and from records (sqlite, redis)."""
    apps = [make_client(tmp_path, RecordsMemoryStore()), make_client(tmp_path, MemoryStore()),
            make_client(tmp_path, SqliteStore(tmp_path / "state.db")),
            make_client(tmp_path, open_store(redis_url))]
    reference = apps[0][0].extensions["statecast"].service
    reference.appends.run_records = lambda store, name, named, calls, indices, *_: (
        indices, [])
    yield [client for _, client in apps], [app.extensions["statecast"].store.inner
                                           for app, _ in apps]
    for app, _ in apps:
        app.extensions["statecast"].close()


def random_item(rng, stream, step):
    """An item of any kind: plain appends mostly, and every other kind a batch may hold."""
    kind = rng.choice(["append", "append", "append", "start", "resend", "gap", "what-if",
                       "reset", "levels", "nan", "horizon", "flat"])
    rows = int(rng.integers(1, 4))
    window = [[float(np.round(rng.normal(80, 30), 1))] for _ in range(rows)]
    item = {"stream": stream, "window": window}
    if kind == "start":
        item["start"] = step
    elif kind == "resend":
        item["start"] = max(0, step - 1)
    elif kind == "gap":
        item["start"] = step + 2
    elif kind == "what-if":
        item["commit"] = False
    elif kind == "reset":
        item["reset"] = True
    elif kind == "levels":
        item["level"] = [80]
    elif kind == "nan":
        item["window"] = [[float("nan")]]
    elif kind == "horizon":
        item["horizon"] = int(rng.integers(1, 13))
    elif kind == "flat":
        item["window"] = [row[0] for row in window]
    return item


def without_times(body):
    return {key: value for key, value in body.items() if key != "updated_at"}


def test_appends_answer_write_and_score_as_the_one_stream_path(servers):
    clients, stores = servers
    rng = np.random.default_rng(7)
    streams = [f"s{i}" for i in range(40)]
    steps = dict.fromkeys(streams, 0)
    for _ in range(30):
        chosen = rng.choice(streams, size=int(rng.integers(1, 30)), replace=False)
        items = [random_item(rng, str(stream), steps[str(stream)]) for stream in chosen]
        body = {"horizon": 12, "items": items}
        answers = [client.post("/v1/models/sunspots/forecast", json=body) for client in clients]
        assert [a.status_code for a in answers] == [200] * len(clients)
        first, *others = (a.get_json()["items"] for a in answers)
        assert all(other == first for other in others)
        for item in first:
            if "step" in item:
                steps[item["stream"]] = item["step"]
    for stream in streams:
        described = [without_times(c.get(f"/v1/models/sunspots/streams/{stream}").get_json())
                     for c in clients]
        assert all(each == described[0] for each in described)
        states = [c.get(f"/v1/models/sunspots/streams/{stream}/state").get_json()
                  for c in clients]
        assert all(each == states[0] for each in states)
        first, *others = [store.get("sunspots", stream) for store in stores]
        for other in others:
            assert (first is None) == (other is None)
            if first is not None:
                np.testing.assert_array_equal(first.tail, other.tail)
                assert (first.pending, first.revision) == (other.pending, other.revision)
    first, *others = [c.get("/v1/models/sunspots/accuracy").get_json() for c in clients]
    assert first["scored"] > 0
    for other in others:
        # The same values scored, added in another order (one sum per group of a call).
        assert other["scored"] == first["scored"]
        for ours, theirs in zip(other["steps"], first["steps"], strict=True):
            ours, theirs = dict(ours), dict(theirs)
            coverage = ours.pop("coverage"), theirs.pop("coverage")
            assert coverage[0] == pytest.approx(coverage[1], rel=1e-12)
            assert ours == pytest.approx(theirs, rel=1e-12)


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_concurrent_batches_on_the_same_streams_are_serialised(tmp_path, kind):
    """Threads send overlapping windows (each position's value is fixed) to the same
    streams: every observation is consumed once, in order, whatever the interleaving (in
    place under the store's lock, or from records by compare-and-set)."""
    app, _ = make_client(tmp_path, MemoryStore() if kind == "memory"
                         else SqliteStore(tmp_path / "state.db"))
    streams = [f"c{i}" for i in range(64)]

    def value(position):
        return float(position % 17) * 3.5 + 1.0

    def worker(seed):
        client = app.test_client()
        rng = np.random.default_rng(seed)
        known = dict.fromkeys(streams, 0)
        for _ in range(40):
            items = []
            for stream in rng.choice(streams, size=32, replace=False):
                start = max(0, known[str(stream)] - int(rng.integers(0, 2)))
                items.append({"stream": str(stream), "start": start,
                              "window": [[value(start + k)] for k in range(2)]})
            reply = client.post("/v1/models/sunspots/forecast", json={"items": items})
            assert reply.status_code == 200
            for item in reply.get_json()["items"]:
                if "step" in item:
                    known[item["stream"]] = item["step"]
                else:  # another thread went ahead: a gap for this one, nothing changed
                    assert item["error"]["code"] == "gap_in_stream"
                    known[item["stream"]] = item["error"]["expected_start"]

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    store = app.extensions["statecast"].store.inner
    model = app.extensions["statecast"].service.models.get("sunspots", "1")
    for stream in streams:
        record = store.get("sunspots", stream)
        history = np.array([value(k) for k in range(record.step)], np.float32)[:, None]
        replay = model.advance(model.new_arena(1), [history])[0]
        np.testing.assert_array_equal(record.state, replay)
        np.testing.assert_array_equal(record.tail[:, 0], history[-64:, 0])
    app.extensions["statecast"].close()


def test_what_ifs_bad_items_and_gaps_change_nothing(tmp_path):
    app, client = make_client(tmp_path, MemoryStore())
    items = [{"stream": f"w{i}", "window": [[10.0], [20.0]]} for i in range(8)]
    assert client.post("/v1/models/sunspots/forecast", json={"items": items}).status_code == 200
    store = app.extensions["statecast"].store.inner
    before = [store.get("sunspots", f"w{i}") for i in range(8)]
    reply = client.post("/v1/models/sunspots/forecast", json={"items": [
        {"stream": "w0", "window": [[1.0]], "commit": False},
        {"stream": "w1", "window": [[float("inf")]]},
        {"stream": "w2", "window": [[1.0]], "start": 9},
        {"stream": "w3", "window": [[1.0, 2.0]]},
        {"stream": "w4", "window": [[1.0]], "horizon": 99},
        {"stream": "w5", "window": [[1.0]], "start": 0},
        {"stream": "w6", "window": [[1.0]]}]})
    codes = [item.get("error", {}).get("code") for item in reply.get_json()["items"]]
    assert codes == [None, "non_finite_value", "gap_in_stream", "wrong_feature_count",
                     "horizon_too_long", "overlap_mismatch", None]
    after = [store.get("sunspots", f"w{i}") for i in range(8)]
    for index in (0, 1, 2, 3, 4, 5, 7):
        assert after[index].same_content(before[index]), index
    assert after[6].step == 3 and after[6].revision == before[6].revision + 1
    app.extensions["statecast"].close()
