"""Errors as HTTP responses, in one place: the status comes from the error itself
(``StatecastError.status``), Werkzeug's own HTTP errors (404, 405, 413) keep theirs and their
headers (``Allow`` on a 405), and every error body is JSON:

- ``/v1`` and the admin API: ``{"error": {"code", "message", ...details}}``;
- ``/v2`` (Open Inference Protocol): ``{"error": "message"}``, where a request the model
  cannot take is ``400``, the protocol's "bad request", instead of ``422``.
"""

from __future__ import annotations

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from statecast.models.errors import StatecastError
from statecast.service.errors import error_body

#: Headers that go with a status: when to retry, how to authenticate.
HEADERS = {503: {"Retry-After": "1"}, 401: {"WWW-Authenticate": 'Bearer realm="statecast"'}}
#: Codes of Werkzeug's HTTP errors in /v1 bodies.
HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}


def _with_headers(response: Response, status: int,
                  extra: list[tuple[str, str]] | None = None) -> tuple[Response, int]:
    for header, value in [*HEADERS.get(status, {}).items(), *(extra or [])]:
        response.headers[header] = value
    return response, status


def v2_error_response(message: str, status: int,
                      extra: list[tuple[str, str]] | None = None) -> tuple[Response, int]:
    """The Open Inference Protocol's ``{"error": "message"}``; 422 answers as 400."""
    status = 400 if status == 422 else status
    return _with_headers(jsonify({"error": message}), status, extra)


def _is_v2() -> bool:
    return request.path == "/v2" or request.path.startswith("/v2/")


def register_error_handlers(app: Flask) -> None:
    """Answer statecast errors and Werkzeug's HTTP errors with JSON bodies, in the shape of
    the API the path belongs to (routing errors such as 405 reach no blueprint's handler,
    so the shape is chosen here, by path)."""

    @app.errorhandler(StatecastError)
    def _statecast(error: StatecastError) -> tuple[Response, int]:
        if _is_v2():
            return v2_error_response(str(error), error.status)
        return _with_headers(jsonify({"error": error_body(error)}), error.status)

    @app.errorhandler(HTTPException)
    def _http(error: HTTPException) -> tuple[Response, int]:
        status = error.code or 500
        # Werkzeug's own headers (Allow on a 405, as RFC 9110 requires), not its HTML type.
        extra = [(name, value) for name, value in error.get_headers()
                 if name.lower() != "content-type"]
        message = error.description or error.name
        if _is_v2():
            return v2_error_response(message, status, extra)
        body = {"code": HTTP_CODES.get(status, "http_error"), "message": message}
        return _with_headers(jsonify({"error": body}), status, extra)
