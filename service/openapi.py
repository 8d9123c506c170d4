"""``/openapi.json``: the API's OpenAPI 3.1 document, generated from the route table
(:mod:`service.routes`) and the pydantic models that validate the requests: bodies
(:mod:`service.schemas`, :mod:`service.kserve_schemas`) and path parameters
(:mod:`service.paths`), so that what the document accepts the server accepts.

``tests/service/test_openapi.py`` checks that every route the app serves is in the table,
and the schemathesis run checks real responses against the documented schemas.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from statecast.service.paths import path_model
from statecast.service.routes import OPERATIONS, Operation

_REF = "#/components/schemas/{model}"
DESCRIPTION = (
    "Stateful recurrent forecasting: each stream's state is kept server-side, so a call "
    "sends only the stream's new observations. A request this document accepts may still "
    "be refused for what a schema cannot know: the called model's feature count, horizon "
    "and covariates, the server's configured limits (rows per window, items per batch, "
    "body size) and the state of the stream (gaps, conflicts).")


def _parameters(operation: Operation, max_stream_id: int) -> list[dict[str, Any]]:
    model = path_model(operation.path, operation.reference, max_stream_id)
    found = []
    for name, schema in model.model_json_schema().get("properties", {}).items():
        schema = dict(schema)
        schema.pop("title", None)
        description = schema.pop("description", "")
        examples = schema.pop("examples", [])
        found.append({"name": name, "in": "path", "required": True, "schema": schema,
                      "description": description, "example": examples[0]})
    for name, query, description in operation.query:
        found.append({"name": name, "in": "query", "required": False, "schema": query,
                      "description": description})
    return found


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _ref(model: type[BaseModel]) -> dict[str, Any]:
    return {"$ref": _REF.format(model=model.__name__)}


def _request_body(op: Operation) -> dict[str, Any] | None:
    if op.multipart:
        return {"required": True, "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": ["file"], "properties": {
                "file": {"type": "string", "format": "binary"},
                "scaler": {"type": "string", "format": "binary"}},
            "additionalProperties": {"type": "string"}}}}}
    if op.body is None:
        return None
    body: dict[str, Any] = {"required": True, "content": _json(_ref(op.body))}
    if op.binary:
        body["content"]["application/octet-stream"] = {"schema": {
            "type": "string", "format": "binary", "description": "Triton's binary tensor "
            "extension: the JSON header (Inference-Header-Content-Length bytes), then the "
            "inputs' binary data"}}
    return body


def _ok(op: Operation) -> dict[str, Any]:
    if op.text:
        return {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}}
    ok: dict[str, Any] = {"description": "OK", "content": _json(
        {"type": "object"} if op.response is None else _ref(op.response))}
    if op.binary:
        ok["content"]["application/octet-stream"] = {"schema": {
            "type": "string", "format": "binary", "description": "With binary outputs: "
            "the JSON header (Inference-Header-Content-Length bytes), then the data"}}
    return ok


def openapi_document(version: str, max_stream_id: int = 256) -> dict[str, Any]:
    """The whole document; ``version`` is the server's, ``max_stream_id`` its longest
    stream id."""
    bodies = {op.body for op in OPERATIONS if op.body}
    models = bodies | {op.response for op in OPERATIONS if op.response} | {
        op.error for op in OPERATIONS}
    keyed: list[tuple[type[BaseModel], JsonSchemaMode]] = sorted(
        ((model, "validation" if model in bodies else "serialization")
         for model in models if model is not None), key=lambda pair: pair[0].__name__)
    _, definitions = models_json_schema(keyed, ref_template=_REF)
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        entry: dict[str, Any] = {"summary": op.summary,
                                 "operationId": f"{op.method}_{op.path}".replace("/", "_"),
                                 "parameters": _parameters(op, max_stream_id)}
        body = _request_body(op)
        if body is not None:
            entry["requestBody"] = body
        error = {"description": "An error", "content": _json(_ref(op.error))}
        entry["responses"] = {"201" if op.multipart else "200": _ok(op), "default": error}
        if op.admin:
            entry["security"] = [{"bearerAuth": []}]
        paths.setdefault(op.path, {})[op.method] = entry
    return {
        "openapi": "3.1.0",
        "info": {"title": "statecast", "version": version, "description": DESCRIPTION},
        "paths": paths,
        "components": {"schemas": definitions["$defs"], "securitySchemes": {
            "bearerAuth": {"type": "http", "scheme": "bearer"}}},
    }
