"""Building an app has no side effects; the start-up hooks do the rest, explicitly:
``prepare`` seeds the registry and loads the models, ``start`` starts the expiry sweep and
marks the app ready. And ``statecast serve`` hands its settings to gunicorn without
changing its own environment."""

import os
import threading

import pytest

from statecast.service.app import create_app
from statecast.service.cli import main
from statecast.service.settings import Settings, serve_environment
from statecast.service.startup import prepare, start


def sweeps() -> int:
    return sum(thread.name == "statecast-expiry" for thread in threading.enumerate())


@pytest.fixture()
def built(tmp_path):
    app = create_app(Settings(registry=tmp_path / "registry", store="memory", stream_ttl=30,
                              access_log=False))
    yield app, tmp_path / "registry"
    app.extensions["statecast"].close()


def test_create_app_seeds_nothing_loads_nothing_and_starts_nothing(built):
    before = sweeps()
    app, registry = built
    state = app.extensions["statecast"]
    assert not registry.exists() or not any(registry.iterdir())
    assert state.models.loaded_count() == 0 and not state.ready
    assert sweeps() == before
    client = app.test_client()
    not_ready = client.get("/readyz")
    assert not_ready.status_code == 503 and not_ready.headers["Retry-After"] == "1"
    assert not_ready.get_json()["error"]["code"] == "not_ready"
    assert client.get("/v2/health/ready").status_code == 400  # the protocol: a 4xx


def test_prepare_seeds_and_loads_and_start_sweeps_and_is_ready(built):
    before = sweeps()
    app, registry = built
    state = app.extensions["statecast"]
    prepare(app)
    assert (registry / "sunspots").is_dir() and state.models.loaded_count() == 1
    assert not state.ready and sweeps() == before
    start(app)
    assert state.ready and sweeps() == before + 1
    client = app.test_client()
    assert client.get("/readyz").get_json()["models"] == ["sunspots"]
    assert client.get("/v2/health/ready").status_code == 200
    app.extensions["statecast"].close()  # the sweep stops with the runtime
    for thread in threading.enumerate():
        if thread.name == "statecast-expiry":
            thread.join(timeout=5)
    assert sweeps() == before


def test_prepare_without_warming_only_seeds(built):
    app, registry = built
    prepare(app, warm=False)
    assert (registry / "sunspots").is_dir()
    assert app.extensions["statecast"].models.loaded_count() == 0


def test_the_server_environment_reads_back_the_same_settings(tmp_path, monkeypatch):
    settings = Settings(registry=tmp_path / "r", store="sqlite:x.db", port=8123, workers=3,
                        access_log=False, admin_token="s3cret", stream_ttl=2.5)
    base = {"PATH": "/bin", "STATECAST_MAX_STREAMS": "7", "STATECAST_LOG_LEVEL": "debug"}
    environment = serve_environment(settings, base)
    assert base == {"PATH": "/bin", "STATECAST_MAX_STREAMS": "7",
                    "STATECAST_LOG_LEVEL": "debug"}
    assert environment["PATH"] == "/bin" and environment["STATECAST_LOG_LEVEL"] == "debug"
    assert "STATECAST_MAX_STREAMS" not in environment  # None in settings: no variable
    monkeypatch.setattr(os, "environ", environment)
    assert Settings() == settings


def test_serve_builds_its_settings_without_writing_the_environment(tmp_path, monkeypatch,
                                                                   capsys):
    monkeypatch.chdir(tmp_path)
    before = dict(os.environ)
    assert main(["serve", "--workers", "2", "--store", "memory", "--port", "8765"]) == 2
    assert "memory store lives in one process" in capsys.readouterr().err
    assert main(["serve", "--port", "70000"]) == 2
    assert "invalid settings" in capsys.readouterr().err
    assert dict(os.environ) == before
