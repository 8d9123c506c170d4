"""The Flask application: thin views over :class:`service.forecasting.ForecastService`.

:func:`create_app` only builds the app (registry, store, models, routes): it seeds nothing,
compiles nothing and starts no thread. Whoever serves it runs the start-up hooks of
:mod:`service.startup`: each gunicorn worker once it has loaded the app
(``service/gunicorn_conf.py``), tests that need them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, Response, g, jsonify, request

from statecast.models import Registry
from statecast.service.access_log import access_logger, write_access_line
from statecast.service.admin_api import admin
from statecast.service.calls import StreamCall, StreamForecast, batch_calls
from statecast.service.errors import BodyTooLarge, NotReady, UnsupportedMediaType, error_body
from statecast.service.forecasting import ForecastService
from statecast.service.http_errors import register_error_handlers
from statecast.service.json_codec import FastJSONProvider, parse_json, sorted_json_response
from statecast.service.kserve import v2
from statecast.service.metrics import CONTENT_TYPE, Metrics, TimedStore
from statecast.service.model_cache import ModelCache
from statecast.service.openapi import openapi_document
from statecast.service.paths import check_path_parameters
from statecast.service.runtime import EXTENSION, Runtime, runtime, server_version
from statecast.service.settings import Settings
from statecast.service.stores import StateStore, open_store

v1 = Blueprint("v1", __name__)
v1.before_request(check_path_parameters)
#: What ``/v1/models`` shows of each version's spec.
_SPEC_FIELDS = ("features", "targets", "horizon", "forecast_mode", "state_mode")


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
    result = runtime().service.forecast(model, stream, StreamCall.from_json(_json_body()))
    g.version = result.version
    return jsonify(result.to_json())


@v1.post("/v1/models/<model>/forecast")
def forecast_many(model: str) -> Response:
    service = runtime().service
    calls = batch_calls(_json_body(), service.max_items)
    answers = service.forecast_many(model, calls)
    g.streams = len(answers)
    g.version = ",".join(sorted({a.version for a in answers if isinstance(a, StreamForecast)}))
    if all(type(answer) is StreamForecast for answer in answers):
        # Every item's keys are in order already: no sort to run over 256 items.
        return sorted_json_response({"items": [answer.to_json()  # type: ignore[union-attr]
                                               for answer in answers]})
    return jsonify({"items": [
        answer.to_json() if isinstance(answer, StreamForecast)
        else {"stream": stream, "error": error_body(answer)}
        for (stream, _), answer in zip(calls, answers, strict=True)]})


@v1.get("/v1/models/<model>/streams/<stream>")
def describe_stream(model: str, stream: str) -> Response:
    return jsonify(runtime().service.describe(model, stream))


@v1.get("/v1/models/<model>/accuracy")
def model_accuracy(model: str) -> Response:
    version = request.args.get("version")
    return jsonify(runtime().service.accuracy(model, version))


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
                         **{key: spec.get(key) for key in _SPEC_FIELDS}})
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
    return jsonify(openapi_document(server_version(), runtime().settings.max_stream_id_length))


@v1.get("/metrics")
def metrics() -> Response:
    state = runtime()

    def active() -> list[tuple[str, int]]:
        return [(name, state.store.count(name)) for name in state.registry.models()]

    state.metrics.models_loaded.set(state.models.loaded_count())
    return Response(state.metrics.exposition(active), content_type=CONTENT_TYPE)


@v1.get("/readyz")
def readyz() -> Response:
    state = runtime()
    if not state.ready:
        raise NotReady("models are still loading")
    return jsonify({"status": "ready", "models": state.registry.models()})


def create_app(settings: Settings | None = None, store: StateStore | None = None) -> Flask:
    """Build the app: registry, store, models, routes; no side effects (no seeding, no
    kernel compilation, no thread: :mod:`service.startup`)."""
    settings = settings or Settings()
    # statecast is a namespace package (kernels, models and service install under it), whose
    # root Flask cannot always locate: name the folders.
    here = str(Path(__file__).resolve().parent)
    app = Flask("statecast.service", root_path=here, instance_path=here)
    app.json = FastJSONProvider(app)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    registry = Registry(settings.registry)
    metrics = Metrics()
    store = TimedStore(store or open_store(settings.store, settings.stream_ttl,
                                           settings.tombstone_ttl), metrics)
    models = ModelCache(registry)
    service = ForecastService(models, store, settings.max_window, settings.max_batch_items,
                              settings.stream_ttl, settings.max_streams, settings.max_horizon,
                              settings.max_stream_id_length, metrics, settings.scoring,
                              settings.online_min_residuals)
    app.extensions[EXTENSION] = Runtime(settings, registry, store, models, service, metrics)
    app.register_blueprint(v1)
    app.register_blueprint(admin)
    app.register_blueprint(v2)
    register_error_handlers(app)
    _observe_requests(app, metrics, settings.access_log)
    return app


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
            model = (request.view_args or {}).get("model")
            annotations: dict[str, Any] = {} if model is None else {"model": model}
            annotations.update({key: g.get(key) for key in ("version", "streams") if key in g})
            write_access_line(logger, request.method, route, request.path,
                              response.status_code, latency, annotations)
        return response
