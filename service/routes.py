"""The HTTP API's route table: every route the app serves, with the pydantic models of its
path parameters, body and response. ``/openapi.json`` is rendered from it
(:mod:`service.openapi`) and every request's path parameters are checked against it
(:mod:`service.paths`); ``tests/service/test_openapi.py`` checks that the app serves
exactly these routes.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from statecast.models.names import NAME_PATTERN
from statecast.service import kserve_schemas as v2
from statecast.service import schemas


@dataclass(frozen=True)
class Operation:
    """One documented route: ``path`` in OpenAPI form (``{param}``). ``reference``: its
    ``{model}`` may name a version or alias (``name@version``); otherwise it is a plain
    name (routes with a ``{version}`` segment, admin routes)."""

    method: str
    path: str
    summary: str
    response: type[BaseModel] | None
    body: type[BaseModel] | None = None
    admin: bool = False
    multipart: bool = False
    query: tuple[tuple[str, dict[str, Any], str], ...] = ()
    text: bool = False
    error: type[BaseModel] = schemas.ErrorResponse
    binary: bool = False
    reference: bool = True


def _v2(method: str, path: str, summary: str, response: type[BaseModel] | None,
        body: type[BaseModel] | None = None) -> Operation:
    return Operation(method, path, summary, response, body, error=v2.V2Error,
                     binary=body is not None, reference="{version}" not in path)


def _admin(method: str, path: str, summary: str, body: type[BaseModel] | None = None,
           **options: Any) -> Operation:
    return Operation(method, path, summary, schemas.AdminResult, body, admin=True,
                     reference=False, **options)


OPERATIONS: tuple[Operation, ...] = (
    Operation("post", "/v1/models/{model}/streams/{stream}/forecast",
              "Send a stream's new observations and get its forecast",
              schemas.ForecastResponse, schemas.ForecastRequestBody),
    Operation("post", "/v1/models/{model}/forecast",
              "Forecast many streams of one model in one call", schemas.BatchResponse,
              schemas.BatchRequestBody),
    Operation("get", "/v1/models/{model}/streams/{stream}", "Describe a stream",
              schemas.StreamInfo),
    Operation("delete", "/v1/models/{model}/streams/{stream}", "Forget a stream",
              schemas.StreamDeleted),
    Operation("get", "/v1/models/{model}/accuracy",
              "How a model version's committed forecasts scored against what arrived later",
              schemas.ModelAccuracy,
              query=(("version", {"type": "string", "pattern": f"^{NAME_PATTERN.pattern}$"},
                      "A version or alias (default: the one the model name resolves to)"),)),
    Operation("get", "/v1/models/{model}/streams/{stream}/state",
              "A stream's hidden (and cell) state per layer", schemas.StreamState),
    Operation("get", "/v1/models", "Models, their versions and aliases", schemas.ModelList),
    Operation("get", "/v1/models/{model}", "One model, its versions and aliases",
              schemas.ModelEntry),
    Operation("get", "/healthz", "Liveness", schemas.Health),
    Operation("get", "/readyz", "Readiness: models loaded", schemas.Readiness),
    Operation("get", "/metrics", "Prometheus metrics (text exposition format)", None,
              text=True),
    Operation("get", "/openapi.json", "This document", None),
    _v2("get", "/v2", "Server metadata (Open Inference Protocol)", v2.ServerMetadata),
    _v2("get", "/v2/health/live", "Liveness (200: live)", v2.V2Health),
    _v2("get", "/v2/health/ready", "Readiness (200: ready, 4xx: not)", v2.V2Health),
    _v2("get", "/v2/models/{model}", "Model metadata: inputs, outputs, versions",
        v2.ModelMetadata),
    _v2("get", "/v2/models/{model}/versions/{version}", "Model metadata of one version",
        v2.ModelMetadata),
    _v2("get", "/v2/models/{model}/ready", "Model readiness", v2.V2Health),
    _v2("get", "/v2/models/{model}/versions/{version}/ready", "Model version readiness",
        v2.V2Health),
    _v2("post", "/v2/models/{model}/infer",
        "Inference; a sequence_id parameter makes it a call on a stateful stream",
        v2.InferResponse, v2.InferRequest),
    _v2("post", "/v2/models/{model}/versions/{version}/infer",
        "Inference on one version", v2.InferResponse, v2.InferRequest),
    _admin("post", "/v1/admin/models/{model}/versions",
           "Publish a new version from a PyTorch, Keras or ONNX file", multipart=True),
    _admin("put", "/v1/admin/models/{model}/aliases/{alias}", "Point an alias at a version",
           schemas.AdminVersionBody),
    _admin("delete", "/v1/admin/models/{model}/versions/{version}",
           "Delete a version no stream is bound to (force: delete those streams too)",
           query=(("force", {"type": "boolean"}, "Also delete streams bound to it"),)),
    _admin("put", "/v1/admin/models/{model}/streams/{stream}/state", "Seed a stream's state",
           schemas.AdminSeedBody),
    _admin("post", "/v1/admin/models/{model}/streams/{stream}/rewarm",
           "Re-run a stream's retained observations through another version",
           schemas.AdminVersionBody),
)


def flask_rule(path: str) -> str:
    """``/v1/models/{model}`` -> ``/v1/models/<model>`` (Flask's form of the path)."""
    return path.replace("{", "<").replace("}", ">")


@functools.cache
def _by_rule() -> dict[tuple[str, str], Operation]:
    return {(flask_rule(op.path), op.method.upper()): op for op in OPERATIONS}


def operation_for(rule: str, method: str) -> Operation | None:
    """The operation of a Flask rule and method (HEAD is GET's), or None (OPTIONS)."""
    return _by_rule().get((rule, "GET" if method == "HEAD" else method))
