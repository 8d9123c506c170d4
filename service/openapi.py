"""``/openapi.json``: the API's OpenAPI 3.1 document, generated from the pydantic models
that validate the requests (:mod:`service.schemas`) and the route table below.

``tests/service/test_openapi.py`` checks that every route the app serves is in the table,
and the schemathesis run checks real responses against the documented schemas.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from statecast.service import schemas

_REF = "#/components/schemas/{model}"


@dataclass(frozen=True)
class Operation:
    """One documented route: ``path`` in OpenAPI form (``{param}``)."""

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


def _v2(method: str, path: str, summary: str, response: type[BaseModel] | None,
        body: type[BaseModel] | None = None) -> Operation:
    return Operation(method, path, summary, response, body, error=schemas.V2Error,
                     binary=body is not None)


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
    _v2("get", "/v2", "Server metadata (Open Inference Protocol)", schemas.ServerMetadata),
    _v2("get", "/v2/health/live", "Liveness (200: live)", schemas.V2Health),
    _v2("get", "/v2/health/ready", "Readiness (200: ready, 4xx: not)", schemas.V2Health),
    _v2("get", "/v2/models/{model}", "Model metadata: inputs, outputs, versions",
        schemas.ModelMetadata),
    _v2("get", "/v2/models/{model}/versions/{version}", "Model metadata of one version",
        schemas.ModelMetadata),
    _v2("get", "/v2/models/{model}/ready", "Model readiness", schemas.V2Health),
    _v2("get", "/v2/models/{model}/versions/{version}/ready", "Model version readiness",
        schemas.V2Health),
    _v2("post", "/v2/models/{model}/infer",
        "Inference; a sequence_id parameter makes it a call on a stateful stream",
        schemas.InferResponse, schemas.InferRequest),
    _v2("post", "/v2/models/{model}/versions/{version}/infer",
        "Inference on one version", schemas.InferResponse, schemas.InferRequest),
    Operation("post", "/v1/admin/models/{model}/versions",
              "Publish a new version from a PyTorch, Keras or ONNX file", schemas.AdminResult,
              admin=True, multipart=True),
    Operation("put", "/v1/admin/models/{model}/aliases/{alias}", "Point an alias at a version",
              schemas.AdminResult, schemas.AdminVersionBody, admin=True),
    Operation("delete", "/v1/admin/models/{model}/versions/{version}",
              "Delete a version no stream is bound to (force: delete those streams too)",
              schemas.AdminResult, admin=True,
              query=(("force", {"type": "boolean"}, "Also delete streams bound to it"),)),
    Operation("put", "/v1/admin/models/{model}/streams/{stream}/state",
              "Seed a stream's state", schemas.AdminResult, schemas.AdminSeedBody, admin=True),
    Operation("post", "/v1/admin/models/{model}/streams/{stream}/rewarm",
              "Re-run a stream's retained observations through another version",
              schemas.AdminResult, schemas.AdminVersionBody, admin=True),
)

_NAME = {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"}
_PATH_PARAMETERS: dict[str, tuple[dict[str, Any], str, str]] = {
    "model": ({"type": "string", "pattern":
               r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}(@[A-Za-z0-9][A-Za-z0-9._-]{0,127})?$"},
              "A model name, optionally @version or @alias", "sunspots"),
    "stream": ({"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"},
               "A stream id", "demo-1"),
    "alias": (_NAME, "An alias name", "production"),
    "version": (_NAME, "A version", "1"),
}


def _parameters(operation: Operation, max_stream_id: int) -> list[dict[str, Any]]:
    found = []
    for name, (schema, description, example) in _PATH_PARAMETERS.items():
        if "{" + name + "}" in operation.path:
            schema = dict(schema)
            if name == "stream":
                schema["maxLength"] = max_stream_id
            found.append({"name": name, "in": "path", "required": True, "schema": schema,
                          "description": description, "example": example})
    for name, schema, description in operation.query:
        found.append({"name": name, "in": "query", "required": False, "schema": schema,
                      "description": description})
    return found


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def openapi_document(version: str, max_stream_id: int = 256) -> dict[str, Any]:
    """The whole document; ``version`` is the server's."""
    models = {op.body for op in OPERATIONS if op.body} | {
        op.response for op in OPERATIONS if op.response} | {op.error for op in OPERATIONS}
    keyed: list[tuple[type[BaseModel], JsonSchemaMode]] = sorted(
        ((model, "validation" if any(op.body is model for op in OPERATIONS)
          else "serialization") for model in models if model is not None),
        key=lambda pair: pair[0].__name__)
    _, definitions = models_json_schema(keyed, ref_template=_REF)
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        entry: dict[str, Any] = {"summary": op.summary,
                                 "operationId": f"{op.method}_{op.path}".replace("/", "_"),
                                 "parameters": _parameters(op, max_stream_id)}
        if op.body is not None:
            entry["requestBody"] = {"required": True, "content": _json(
                {"$ref": _REF.format(model=op.body.__name__)})}
        if op.binary:
            entry["requestBody"]["content"]["application/octet-stream"] = {
                "schema": {"type": "string", "format": "binary",
                           "description": "Triton's binary tensor extension: the JSON "
                           "header (Inference-Header-Content-Length bytes), then the "
                           "inputs' binary data"}}
        if op.multipart:
            entry["requestBody"] = {"required": True, "content": {"multipart/form-data": {
                "schema": {"type": "object", "required": ["file"], "properties": {
                    "file": {"type": "string", "format": "binary"},
                    "scaler": {"type": "string", "format": "binary"}},
                    "additionalProperties": {"type": "string"}}}}}
        if op.text:
            ok: dict[str, Any] = {"description": "OK", "content": {
                "text/plain": {"schema": {"type": "string"}}}}
        elif op.response is None:
            ok = {"description": "OK", "content": _json({"type": "object"})}
        else:
            ok = {"description": "OK", "content": _json(
                {"$ref": _REF.format(model=op.response.__name__)})}
        if op.binary:
            ok["content"]["application/octet-stream"] = {"schema": {
                "type": "string", "format": "binary", "description": "With binary outputs: "
                "the JSON header (Inference-Header-Content-Length bytes), then the data"}}
        error = {"description": "An error", "content": _json(
            {"$ref": _REF.format(model=op.error.__name__)})}
        entry["responses"] = {"201" if op.multipart else "200": ok, "default": error}
        if op.admin:
            entry["security"] = [{"bearerAuth": []}]
        paths.setdefault(op.path, {})[op.method] = entry
    return {
        "openapi": "3.1.0",
        "info": {"title": "statecast", "version": version, "description": (
            "Stateful recurrent forecasting: each stream's state is kept server-side, so a "
            "call sends only the stream's new observations.")},
        "paths": paths,
        "components": {"schemas": definitions["$defs"], "securitySchemes": {
            "bearerAuth": {"type": "http", "scheme": "bearer"}}},
    }
