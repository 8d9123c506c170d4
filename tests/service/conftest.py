"""An app built from the factory, on a temporary registry, for each store."""

import pytest

from statecast.service.settings import Settings
from statecast.service.startup import serving_app


@pytest.fixture(params=["memory", "sqlite", "redis"])
def app(request, tmp_path):
    store = {"memory": "memory", "sqlite": f"sqlite:{tmp_path / 'state.db'}"}.get(
        request.param) or request.getfixturevalue("redis_url")
    settings = Settings(registry=tmp_path / "registry", store=store, max_body_bytes=64 * 1024,
                        max_window=500)
    application = serving_app(settings)
    application.config["TESTING"] = True
    yield application
    application.extensions["statecast"].close()


@pytest.fixture()
def client(app):
    return app.test_client()
