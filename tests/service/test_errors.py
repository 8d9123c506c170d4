"""Every error statecast raises on purpose carries its code and HTTP status, and the HTTP
layer answers each from the error itself: no error class can fall through to a 500."""

import importlib
import pkgutil

import pytest
from flask import Blueprint

import statecast.models
import statecast.service
from statecast.models.errors import StatecastError
from statecast.service.app import create_app
from statecast.service.errors import CapacityExceeded, RequestError, Unauthorized
from statecast.service.settings import Settings

#: Modules that act when imported instead of defining things: gunicorn's configuration
#: (sets the metrics directory of the process) and the bundled model's training script.
ACTING = {"statecast.service.gunicorn_conf", "statecast.service.bundled.train_sunspots"}


def _import_every_module() -> None:
    """Register every error class: import all modules of statecast.models and .service."""
    for package in (statecast.models, statecast.service):
        for module in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if module.name not in ACTING:
                importlib.import_module(module.name)


def _subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


_import_every_module()
ERRORS = sorted({cls for cls in [StatecastError, *_subclasses(StatecastError)]
                 if cls.__module__.startswith("statecast.")}, key=lambda cls: cls.__name__)


def _instance(cls: type) -> StatecastError:
    return cls("what went wrong", detail=1) if issubclass(cls, RequestError) else cls(
        "what went wrong")


def test_the_walk_finds_the_errors_of_every_layer():
    names = {cls.__name__ for cls in ERRORS}
    assert {"StatecastError", "InvalidInput", "ModelNotFound", "RequestError", "Contention",
            "StoreError", "BatchInputError", "NotReady"} <= names
    assert len(ERRORS) >= 40


@pytest.mark.parametrize("cls", ERRORS, ids=lambda cls: cls.__name__)
def test_each_error_has_its_own_code_and_a_client_or_retry_status(cls):
    assert "code" in vars(cls) and "status" in vars(cls), "declared on the class itself"
    assert isinstance(cls.code, str) and cls.code
    assert 400 <= cls.status <= 499 or cls.status == 503


def test_codes_name_one_class_each():
    codes = [cls.code for cls in ERRORS]
    assert len(codes) == len(set(codes)), sorted(code for code in codes
                                                 if codes.count(code) > 1)


@pytest.fixture(scope="module")
def raising_client(tmp_path_factory):
    """An app with a route that raises any error class, on /v1 and on /v2."""
    app = create_app(Settings(registry=tmp_path_factory.mktemp("errors") / "registry",
                              store="memory", access_log=False))
    by_name = {cls.__name__: cls for cls in ERRORS}
    routes = Blueprint("raising", __name__)

    @routes.get("/v1/raise/<name>")
    @routes.get("/v2/raise/<name>")
    def _raise(name: str):
        raise _instance(by_name[name])

    app.register_blueprint(routes)
    yield app.test_client()
    app.extensions["statecast"].close()


@pytest.mark.parametrize("cls", ERRORS, ids=lambda cls: cls.__name__)
def test_no_error_answers_500_and_the_status_is_the_errors_own(raising_client, cls):
    response = raising_client.get(f"/v1/raise/{cls.__name__}")
    assert response.status_code == cls.status != 500
    error = response.get_json()["error"]
    assert (error["code"], error["message"]) == (cls.code, "what went wrong")
    if issubclass(cls, RequestError):
        assert error["detail"] == 1
    assert ("Retry-After" in response.headers) == (cls.status == 503)
    v2 = raising_client.get(f"/v2/raise/{cls.__name__}")
    assert v2.status_code == (400 if cls.status == 422 else cls.status)
    assert v2.get_json() == {"error": "what went wrong"}


def test_status_headers_go_with_the_status(raising_client):
    busy = raising_client.get(f"/v1/raise/{CapacityExceeded.__name__}")
    assert busy.headers["Retry-After"] == "1"
    denied = raising_client.get(f"/v1/raise/{Unauthorized.__name__}")
    assert denied.headers["WWW-Authenticate"].startswith("Bearer")


def test_werkzeug_errors_keep_their_status_and_json_bodies(raising_client):
    missing = raising_client.get("/v1/nowhere")
    assert missing.status_code == 404
    assert missing.get_json()["error"]["code"] == "not_found"
    missing = raising_client.get("/v2/nowhere")
    assert missing.status_code == 404 and isinstance(missing.get_json()["error"], str)
