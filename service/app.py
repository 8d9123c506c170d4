"""The Flask application: thin views over :class:`service.forecasting.ForecastService`."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from flask import Blueprint, Flask, Response, current_app, g, jsonify, request

from statecast.models import Registry, StatecastError
from statecast.service.access_log import access_line, access_logger, write_access_line
from statecast.service.admin_api import admin
from statecast.service.bundled import seed_registry
from statecast.service.errors import BodyTooLarge, ModelNotSupported, UnsupportedMediaType
from statecast.service.forecasting import ForecastService, check_servable
from statecast.service.http_errors import error_response, register_error_handlers
from statecast.service.json_codec import FastJSONProvider
from statecast.service.kserve import v2
from statecast.service.metrics import CONTENT_TYPE, Metrics, TimedStore
from statecast.service.model_cache import ModelCache
from statecast.service.openapi import openapi_document
from statecast.service.requests import parse_json
from statecast.service.settings import Settings
from statecast.service.stores import StateStore, open_store

log = logging.getLogger("statecast")
v1 = Blueprint("v1", __name__)
EXTENSION = "statecast"


@dataclass
class Runtime:
    """Per-app objects (``app.extensions["statecast"]``), never module globals."""

    settings: Settings
    registry: Registry
    store: StateStore
    models: ModelCache
    service: ForecastService
    metrics: Metrics
    ready: bool = False
    started_at: float = field(default_factory=time.time)
    stopping: threading.Event = field(default_factory=threading.Event)

    def close(self) -> None:
        """Stop background work and release the store."""
        self.stopping.set()
        self.store.close()


def runtime() -> Runtime:
    value: Runtime = current_app.extensions[EXTENSION]
    return value


def _json_body() -> Any:
    if not request.is_json:
        raise UnsupportedMediaType(
            f"send Content-Type: application/json (got {request.mimetype or 'none'})")
    limit = runtime().settings.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLarge(f"request body exceeds {limit} bytes", limit=limit)
    return parse_json(request.get_data(cache=False))


@v1.post("/v1/models/<model>/streams/<stream>/forecast")
def forecast(model: str, stream: str) -> Response:
    g.streams = 1
    result = runtime().service.forecast(model, stream, _json_body())
    g.version = result["version"]
    return jsonify(result)


@v1.post("/v1/models/<model>/forecast")
def forecast_many(model: str) -> Response:
    result = runtime().service.forecast_many(model, _json_body())
    items = result["items"]
    g.streams = len(items)
    g.version = ",".join(sorted({item["version"] for item in items if "version" in item}))
    return jsonify(result)


@v1.get("/v1/models/<model>/streams/<stream>")
def describe_stream(model: str, stream: str) -> Response:
    return jsonify(runtime().service.describe(model, stream))


@v1.get("/v1/models/<model>/streams/<stream>/state")
def stream_state(model: str, stream: str) -> Response:
    return jsonify(runtime().service.state(model, stream))


@v1.delete("/v1/models/<model>/streams/<stream>")
def delete_stream(model: str, stream: str) -> Response:
    return jsonify(runtime().service.delete(model, stream))


def _model_entry(registry: Registry, name: str) -> dict[str, Any]:
    versions = []
    for version in registry.versions(name):
        manifest = registry.manifest(f"{name}@{version}")
        spec = manifest.get("spec", {})
        versions.append({"version": version, "created_at": manifest.get("created_at"),
                         "source": manifest.get("source", {}).get("framework"),
                         "features": spec.get("features"), "targets": spec.get("targets"),
                         "horizon": spec.get("horizon"),
                         "forecast_mode": spec.get("forecast_mode"),
                         "state_mode": spec.get("state_mode")})
    return {"name": name, "versions": versions, "aliases": registry.aliases(name)}


@v1.get("/v1/models")
def list_models() -> Response:
    registry = runtime().registry
    return jsonify({"models": [_model_entry(registry, name) for name in registry.models()]})


@v1.get("/v1/models/<model>")
def show_model(model: str) -> Response:
    registry = runtime().registry
    name, version = registry.resolve(model)
    entry = _model_entry(registry, name)
    entry["default_version"] = version
    return jsonify(entry)


@v1.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@v1.get("/openapi.json")
def openapi() -> Response:
    state = runtime()
    return jsonify(openapi_document(server_version(), state.settings.max_stream_id_length))


@v1.get("/metrics")
def metrics() -> Response:
    state = runtime()

    def active() -> list[tuple[str, int]]:
        return [(name, state.store.count(name)) for name in state.registry.models()]

    state.metrics.models_loaded.set(state.models.loaded_count())
    return Response(state.metrics.exposition(active), content_type=CONTENT_TYPE)


@v1.get("/readyz")
def readyz() -> Response | tuple[Response, int]:
    state = runtime()
    if not state.ready:
        return error_response("not_ready", "models are still loading")
    return jsonify({"status": "ready", "models": state.registry.models()})


def server_version() -> str:
    """The installed statecast distribution's version."""
    try:
        return metadata.version("statecast")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def warm_up(state: Runtime) -> None:
    """Load every model's default version and run it once (compiles the kernels)."""
    for model in state.models.load_defaults():
        try:
            check_servable(model)
        except ModelNotSupported as error:
            log.warning("model %s@%s is not served: %s", model.name, model.version, error)
            continue
        model.run(np.zeros((1, 1, model.spec.input_size), np.float32))


def create_app(settings: Settings | None = None, store: StateStore | None = None,
               warm: bool = True) -> Flask:
    """Build the app: registry (seeded with the bundled model), store, models, routes."""
    settings = settings or Settings()
    # statecast is a namespace package (kernels, models and service install under it), whose
    # root Flask cannot always locate: name the folders.
    here = str(Path(__file__).resolve().parent)
    app = Flask("statecast.service", root_path=here, instance_path=here)
    app.json = FastJSONProvider(app)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    registry = Registry(settings.registry)
    seed_registry(registry)
    metrics = Metrics()
    store = TimedStore(store or open_store(settings.store, settings.stream_ttl,
                                           settings.tombstone_ttl), metrics)
    models = ModelCache(registry)
    state = Runtime(settings, registry, store, models,
                    ForecastService(models, store, settings.max_window,
                                    settings.max_batch_items, settings.stream_ttl,
                                    settings.max_streams, settings.max_horizon,
                                    settings.max_stream_id_length, metrics),
                    metrics)
    app.extensions[EXTENSION] = state
    app.register_blueprint(v1)
    app.register_blueprint(admin)
    app.register_blueprint(v2)
    register_error_handlers(app)
    _observe_requests(app, metrics, settings.access_log)
    if warm:
        warm_up(state)
    if settings.stream_ttl is not None and not store.expires_idle:
        _start_expiry(state, settings.stream_ttl)
    state.ready = True
    return app


def _start_expiry(state: Runtime, ttl: float) -> None:
    """A daemon thread that turns idle streams into tombstones (calls also check)."""

    def sweep() -> None:
        while not state.stopping.wait(min(60.0, max(ttl / 4, 0.05))):
            try:
                state.service.expire_idle()
            except StatecastError as error:
                log.warning("expiry sweep failed: %s", error)

    threading.Thread(target=sweep, name="statecast-expiry", daemon=True).start()


def _observe_requests(app: Flask, metrics: Metrics, log_access: bool) -> None:
    """Time every request into the latency histogram and write its access log line."""
    logger = access_logger() if log_access else None

    @app.before_request
    def _start() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def _finish(response: Response) -> Response:
        latency = time.perf_counter() - g.get("started", time.perf_counter())
        rule = request.url_rule
        route = rule.rule if rule is not None else "<unmatched>"
        metrics.requests.labels(route, request.method, str(response.status_code)).observe(
            latency)
        if logger is not None:
            annotations: dict[str, Any] = {}
            model = (request.view_args or {}).get("model")
            if model is not None:
                annotations["model"] = model
            for key in ("version", "streams"):
                if key in g:
                    annotations[key] = g.get(key)
            write_access_line(logger, access_line(request.method, route, request.path,
                                                  response.status_code, latency, annotations))
        return response
