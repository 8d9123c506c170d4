"""One retry policy for every compare-and-set write on a stream: a write that loses every
one of its ATTEMPTS to a concurrent writer answers 503 ``contention`` with Retry-After,
whichever route made it (/v1, a batch item, /v2 sequences, admin seeding and re-warming)."""

from dataclasses import replace

import numpy as np
import pytest

from statecast.service.errors import Contention
from statecast.service.retries import ATTEMPTS, until_written
from statecast.service.settings import Settings
from statecast.service.startup import serving_app
from statecast.service.stores import MemoryStore, SqliteStore

AUTH = {"Authorization": "Bearer retry-token"}


class RivalMixin:
    """A real store where, while ``rival`` is on, another writer touches the stream just
    before each compare-and-set (it rewrites the stored record with the next revision),
    so the write always loses."""

    rival = False
    attempts = 0

    def compare_and_set(self, record, expected_revision, scores=None):
        if self.rival:
            self.attempts += 1
            current = self.get(record.model, record.stream)
            if current is not None:
                assert super().compare_and_set(replace(current, revision=current.revision + 1),
                                               current.revision)
        return super().compare_and_set(record, expected_revision, scores)

    def compare_and_set_many(self, writes, scores=None):
        return [self.compare_and_set(record, expected,
                                     None if scores is None else scores.only(index))
                for index, (record, expected) in enumerate(writes)]


class RivalMemoryStore(RivalMixin, MemoryStore):
    #: A rival can only come between a read and a compare-and-set: batch appends that run
    #: in place under the store's lock have no such gap, so this store takes the records'
    #: path for every call.
    runs_in_place = False


class RivalSqliteStore(RivalMixin, SqliteStore):
    pass


@pytest.fixture(params=["memory", "sqlite"])
def contended(request, tmp_path):
    """A client, its store, and two streams written before the rival starts."""
    store = (RivalMemoryStore() if request.param == "memory"
             else RivalSqliteStore(tmp_path / "state.db"))
    app = serving_app(Settings(registry=tmp_path / "registry", store="memory",
                               admin_token="retry-token", access_log=False),
                      store=store, warm=False)
    client = app.test_client()
    for stream in ("a", "b"):
        assert client.post(f"/v1/models/sunspots/streams/{stream}/forecast",
                           json={"window": [5.0, 11.0]}).status_code == 200
    store.rival = True
    yield client, store
    app.extensions["statecast"].close()


def assert_contention(response, store, before):
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert store.attempts == before + ATTEMPTS


def test_a_forecast_call_gives_up_after_the_attempts_with_503(contended):
    client, store = contended
    response = client.post("/v1/models/sunspots/streams/a/forecast", json={"window": [16.0]})
    assert_contention(response, store, 0)
    assert response.get_json()["error"]["code"] == "contention"
    record = store.get("sunspots", "a")
    assert record.step == 2  # the rival only touched it: nothing of the call was stored


def test_a_batch_item_that_keeps_losing_fails_alone_with_contention(contended):
    client, store = contended
    response = client.post("/v1/models/sunspots/forecast", json={"items": [
        {"stream": "a", "window": [16.0]}, {"stream": "b", "window": [16.0]},
        {"stream": "bad id*", "window": [1.0]}]})
    assert response.status_code == 200
    items = response.get_json()["items"]
    assert [item["error"]["code"] for item in items] == [
        "contention", "contention", "invalid_stream_id"]
    assert store.attempts == 2 * ATTEMPTS


def test_a_v2_sequence_call_gives_up_the_same_way(contended):
    client, store = contended
    response = client.post("/v2/models/sunspots/infer", json={
        "parameters": {"sequence_id": "a"},
        "inputs": [{"name": "window", "datatype": "FP32", "shape": [1, 1, 1],
                    "data": [16.0]}]})
    assert_contention(response, store, 0)
    assert "kept changing" in response.get_json()["error"]


def test_admin_seeding_and_rewarming_give_up_the_same_way(contended):
    client, store = contended
    h, c = np.zeros(32).tolist(), np.zeros(32).tolist()
    seeded = client.put("/v1/admin/models/sunspots/streams/a/state", headers=AUTH,
                        json={"step": 7, "layers": [{"h": h, "c": c}]})
    assert_contention(seeded, store, 0)
    assert seeded.get_json()["error"]["code"] == "contention"
    rewarmed = client.post("/v1/admin/models/sunspots/streams/b/rewarm", headers=AUTH,
                           json={"version": "1"})
    assert_contention(rewarmed, store, ATTEMPTS)
    assert rewarmed.get_json()["error"]["code"] == "contention"


def test_until_written_stops_at_the_first_write_and_counts_its_attempts():
    calls = []

    def wins_on_the_third() -> str | None:
        calls.append(1)
        return "written" if len(calls) == 3 else None

    assert until_written(wins_on_the_third, "stream 's'") == "written"
    assert len(calls) == 3
    calls.clear()
    with pytest.raises(Contention, match=f"stream 's' kept changing under {ATTEMPTS}"):
        until_written(lambda: calls.append(1), "stream 's'")
    assert len(calls) == ATTEMPTS
