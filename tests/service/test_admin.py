"""The admin API: bearer token, publishing uploads, aliases, deleting versions, seeding and
re-warming streams."""

import io
import zipfile

import numpy as np
import pytest
import torch

from statecast.models import Registry
from statecast.service.settings import Settings
from statecast.service.startup import serving_app

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(params=["memory", "sqlite", "redis"])
def client(request, tmp_path):
    store = {"memory": "memory", "sqlite": f"sqlite:{tmp_path / 'state.db'}"}.get(
        request.param) or request.getfixturevalue("redis_url")
    app = serving_app(Settings(registry=tmp_path / "registry", store=store,
                              admin_token=TOKEN), warm=False)
    yield app.test_client()
    app.extensions["statecast"].close()


def torch_file():
    torch.manual_seed(0)
    net = torch.nn.Module()
    net.rnn = torch.nn.GRU(1, 6, batch_first=True)
    net.fc = torch.nn.Linear(6, 3)
    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    return net, buffer.getvalue()


def upload(client, name, filename, data, **form):
    return client.post(f"/v1/admin/models/{name}/versions", headers=AUTH,
                       data={"file": (io.BytesIO(data), filename), **form},
                       content_type="multipart/form-data")


ROUTES = [("post", "/v1/admin/models/sunspots/versions"),
          ("put", "/v1/admin/models/sunspots/aliases/production"),
          ("delete", "/v1/admin/models/sunspots/versions/1"),
          ("put", "/v1/admin/models/sunspots/streams/a/state"),
          ("post", "/v1/admin/models/sunspots/streams/a/rewarm")]


@pytest.mark.parametrize("method,url", ROUTES)
def test_without_a_configured_token_every_admin_route_is_403(tmp_path, method, url):
    app = serving_app(Settings(registry=tmp_path / "r", store="memory"), warm=False)
    response = getattr(app.test_client(), method)(url, json={}, headers=AUTH)
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "admin_disabled"


@pytest.mark.parametrize("method,url", ROUTES)
def test_a_missing_or_wrong_token_is_401(client, method, url):
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": TOKEN}):
        response = getattr(client, method)(url, json={}, headers=headers)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_publish_a_pytorch_upload_and_forecast_with_it(client):
    net, data = torch_file()
    response = upload(client, "demand", "gru.pt", data, horizon="3", aliases="production")
    assert response.status_code == 201
    assert response.get_json() == {"model": "demand", "version": "1",
                                   "aliases": {"latest": "1", "production": "1"}}
    window = [0.1, 0.4, -0.2]
    body = client.post("/v1/models/demand/streams/a/forecast",
                       json={"window": window}).get_json()
    with torch.no_grad():
        out, _ = net.rnn(torch.tensor(window).reshape(1, -1, 1))
        expected = net.fc(out[:, -1]).numpy().reshape(3, 1)
    np.testing.assert_allclose(body["forecast"], expected, rtol=1e-5, atol=1e-5)


def test_publish_a_native_artifact_zip(client, tmp_path):
    registry = Registry(tmp_path / "registry")
    folder = registry.path("sunspots", "1")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for member in ("model.json", "weights.safetensors"):
            archive.write(folder / member, member)
    response = upload(client, "sunspots", "artifact.zip", buffer.getvalue(), version="2024-06")
    assert response.status_code == 201 and response.get_json()["version"] == "2024-06"
    again = upload(client, "sunspots", "artifact.zip", buffer.getvalue(), version="2024-06")
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "version_exists"


def test_bad_uploads_are_refused(client):
    assert upload(client, "m", "model.txt", b"x").get_json()["error"]["code"] == (
        "invalid_request")
    response = upload(client, "m", "model.pt", b"not a torch file")
    assert response.status_code == 422 and response.get_json()["error"]["code"] == (
        "import_failed")
    response = client.post("/v1/admin/models/m/versions", headers=AUTH, data={},
                           content_type="multipart/form-data")
    assert response.status_code == 422


def test_move_an_alias_and_delete_versions(client):
    _, data = torch_file()
    upload(client, "demand", "a.pt", data, horizon="3")
    upload(client, "demand", "b.pt", data, horizon="3")
    response = client.put("/v1/admin/models/demand/aliases/production", headers=AUTH,
                          json={"version": "1"})
    assert response.get_json()["aliases"]["production"] == "1"
    assert client.post("/v1/models/demand/streams/s/forecast",
                       json={"window": [0.5]}).get_json()["version"] == "1"
    blocked = client.delete("/v1/admin/models/demand/versions/1", headers=AUTH)
    assert blocked.status_code == 409
    assert blocked.get_json()["error"]["streams"] == 1
    assert client.delete("/v1/admin/models/demand/versions/2", headers=AUTH).status_code == 200
    forced = client.delete("/v1/admin/models/demand/versions/1?force=true", headers=AUTH)
    assert forced.get_json()["aliases_dropped"] == ["production"]
    missing = client.put("/v1/admin/models/demand/aliases/x", headers=AUTH,
                         json={"version": "9"})
    assert missing.status_code == 404


def test_seed_a_stream_state_and_continue_from_it(client):
    h = np.linspace(-0.5, 0.5, 32).tolist()
    c = np.linspace(1.0, -1.0, 32).tolist()
    response = client.put("/v1/admin/models/sunspots/streams/seeded/state", headers=AUTH,
                          json={"step": 100, "layers": [{"h": h, "c": c}]})
    assert response.status_code == 200 and response.get_json()["step"] == 100
    shown = client.get("/v1/models/sunspots/streams/seeded/state").get_json()
    np.testing.assert_allclose(shown["layers"][0]["h"], h, rtol=1e-6)
    body = client.post("/v1/models/sunspots/streams/seeded/forecast",
                       json={"start": 100, "window": [40.0]}).get_json()
    model = Registry(client.application.extensions["statecast"].settings.registry).load(
        "sunspots")
    start = model.to_state([(np.float32([h]), np.float32([c]))], 1)
    _, _, head = model.run(model.scale_inputs(np.float32([[[40.0]]])), start)
    np.testing.assert_allclose(body["forecast"], model.unscale_targets(head.reshape(12, 1)),
                               rtol=1e-5, atol=1e-4)
    bad = client.put("/v1/admin/models/sunspots/streams/seeded/state", headers=AUTH,
                     json={"layers": [{"h": h[:3], "c": c}]})
    assert bad.status_code == 422


def test_rewarm_moves_a_stream_to_another_version(client):
    window = [5.0, 11.0, 16.0, 23.0, 36.0]
    client.post("/v1/models/sunspots/streams/s/forecast", json={"window": window})
    registry = Registry(client.application.extensions["statecast"].settings.registry)
    model = registry.load("sunspots")
    registry.publish("sunspots", model.spec, {k: v * 0.9 for k, v in model.tensors.items()})
    response = client.post("/v1/admin/models/sunspots/streams/s/rewarm", headers=AUTH,
                           json={"version": "2"})
    assert response.status_code == 200
    result = response.get_json()
    assert (result["version"], result["step"], result["observations"], result["exact"]) == (
        "2", 5, 5, False)
    assert client.get("/v1/models/sunspots/streams/s").get_json()["version"] == "2"
    moved = registry.load("sunspots@2")
    _, replay, _ = moved.run(moved.scale_inputs(np.float32(window).reshape(1, -1, 1)))
    record = client.application.extensions["statecast"].store.get("sunspots", "s")
    np.testing.assert_allclose(record.state, replay.arena[0], rtol=1e-6, atol=1e-7)
    missing = client.post("/v1/admin/models/sunspots/streams/none/rewarm", headers=AUTH,
                          json={"version": "2"})
    assert missing.status_code == 404


def test_moving_an_alias_under_load_fails_nothing_and_never_mixes_versions(client):
    import threading

    registry = Registry(client.application.extensions["statecast"].settings.registry)
    model = registry.load("sunspots")
    registry.publish("sunspots", model.spec, {k: v * 0.95 for k, v in model.tensors.items()},
                     aliases=("latest",))
    app = client.application
    seen: dict[str, set[str]] = {}
    failures: list[str] = []
    lock = threading.Lock()

    def worker(index: int) -> None:
        local = app.test_client()
        for step in range(40):
            stream = f"w{index}-{step % 8}"
            response = local.post(f"/v1/models/sunspots/streams/{stream}/forecast",
                                  json={"window": [float(step)]})
            with lock:
                if response.status_code != 200:
                    failures.append(f"{stream}: {response.status_code} {response.get_json()}")
                else:
                    seen.setdefault(stream, set()).add(response.get_json()["version"])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for version in ("2", "1", "2", "1", "2"):
        response = client.put("/v1/admin/models/sunspots/aliases/production", headers=AUTH,
                              json={"version": version})
        assert response.status_code == 200
    for thread in threads:
        thread.join()
    assert not failures
    assert all(len(versions) == 1 for versions in seen.values()), seen
