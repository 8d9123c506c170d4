"""The one table from error codes to HTTP status, and the JSON error body."""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from statecast.models.errors import StatecastError
from statecast.service.errors import RequestError

STATUS: dict[str, int] = {
    "malformed_json": 400,
    "malformed_request": 400,
    "unauthorized": 401,
    "admin_disabled": 403,
    "model_not_found": 404,
    "stream_not_found": 404,
    "gap_in_stream": 409,
    "overlap_mismatch": 409,
    "version_conflict": 409,
    "version_in_use": 409,
    "version_exists": 409,
    "stream_expired": 410,
    "body_too_large": 413,
    "unsupported_media_type": 415,
    "invalid_request": 422,
    "invalid_name": 422,
    "invalid_stream_id": 422,
    "non_finite_value": 422,
    "wrong_feature_count": 422,
    "window_too_long": 422,
    "batch_too_large": 422,
    "missing_future": 422,
    "insufficient_history": 422,
    "horizon_too_long": 422,
    "model_not_supported": 422,
    "import_failed": 422,
    "invalid_spec": 422,
    "artifact_error": 422,
    "integrity_error": 422,
    "store_unavailable": 503,
    "capacity_exceeded": 503,
    "contention": 503,
    "not_ready": 503,
}
#: Headers that go with a status: when to retry, how to authenticate.
HEADERS = {503: {"Retry-After": "1"}, 401: {"WWW-Authenticate": 'Bearer realm="statecast"'}}


def error_response(code: str, message: str, status: int | None = None,
                   details: dict[str, Any] | None = None) -> tuple[Response, int]:
    """``{"error": {"code", "message", ...details}}`` with the code's status."""
    status = status or STATUS.get(code, 500)
    details = details or {}
    response = jsonify({"error": {"code": code, "message": message, **details}})
    for header, value in HEADERS.get(status, {}).items():
        response.headers[header] = value
    return response, status


def register_error_handlers(app: Flask) -> None:
    """Map statecast errors and Werkzeug's HTTP errors to JSON bodies."""

    @app.errorhandler(StatecastError)
    def _statecast(error: StatecastError) -> tuple[Response, int]:
        details = error.details if isinstance(error, RequestError) else {}
        return error_response(error.code, str(error), details=details)

    @app.errorhandler(HTTPException)
    def _http(error: HTTPException) -> tuple[Response, int]:
        status = error.code or 500
        code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(
            status, "http_error")
        return error_response(code, error.description or error.name, status)
