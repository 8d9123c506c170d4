"""The admin API: thin views over :class:`Administration`, behind a bearer token compared
in constant time. With no token configured the routes exist and answer
``403 admin_disabled``. The token is checked before anything else of the request (path
parameters included), so an unauthenticated caller learns nothing but 401 or 403."""

from __future__ import annotations

import hmac

from flask import Blueprint, Response, jsonify, request

from statecast.service.administration import Administration
from statecast.service.errors import AdminDisabled, RequestError, Unauthorized
from statecast.service.json_codec import parse_json
from statecast.service.paths import check_path_parameters
from statecast.service.runtime import runtime

admin = Blueprint("admin", __name__)


@admin.before_request
def _authorize() -> None:
    token = runtime().settings.admin_token
    if not token:
        raise AdminDisabled("the admin API is disabled: set STATECAST_ADMIN_TOKEN")
    offered = request.headers.get("Authorization", "")
    scheme, _, secret = offered.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(secret.encode(), token.encode()):
        raise Unauthorized("send Authorization: Bearer <admin token>")


admin.before_request(check_path_parameters)  # after the token: registered second


def _administration() -> Administration:
    return Administration(runtime().service)


def _body() -> object:
    raw = request.get_data(cache=False)
    return parse_json(raw) if raw else {}


@admin.post("/v1/admin/models/<model>/versions")
def publish(model: str) -> tuple[Response, int]:
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        raise RequestError("send the model as multipart/form-data field 'file'")
    scaler = request.files.get("scaler")
    result = _administration().publish(model, upload.filename, upload.read(),
                                       request.form.to_dict(),
                                       scaler.read() if scaler is not None else None)
    return jsonify(result), 201


@admin.put("/v1/admin/models/<model>/aliases/<alias>")
def set_alias(model: str, alias: str) -> Response:
    return jsonify(_administration().set_alias(model, alias, _body()))


@admin.delete("/v1/admin/models/<model>/versions/<version>")
def delete_version(model: str, version: str) -> Response:
    force = request.args.get("force", "false")
    if force not in ("true", "false"):
        raise RequestError(f"force must be true or false, got {force[:20]!r}")
    return jsonify(_administration().delete_version(model, version, force == "true"))


@admin.put("/v1/admin/models/<model>/streams/<stream>/state")
def seed_state(model: str, stream: str) -> Response:
    return jsonify(_administration().seed_state(model, stream, _body()))


@admin.post("/v1/admin/models/<model>/streams/<stream>/rewarm")
def rewarm(model: str, stream: str) -> Response:
    return jsonify(_administration().rewarm(model, stream, _body()))
