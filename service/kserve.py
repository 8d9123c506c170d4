"""``/v2``: the Open Inference Protocol (KServe v2) with Triton's sequence and binary-tensor
extensions, so that clients built for KServe or Triton (``tritonclient.http``) work as
they are.

- Input ``window`` FP32 ``[batch, time, features]`` (and ``future`` FP32
  ``[batch, horizon, covariates]`` for recursive models with covariates); output
  ``forecast`` FP32 ``[batch, horizon, targets]``; ``horizon`` a request parameter.
- A sequence is a statecast stream: ``sequence_id`` (an unsigned integer, or a string) is
  the stream id (an integer in decimal), so ``/v1`` sees the same stream. ``sequence_start``
  starts it over, ``sequence_end`` forgets it after the call, a call on an unknown sequence
  without ``sequence_start`` is ``404``; ``sequence_step`` is ``/v1``'s ``start`` (a retry
  consumes nothing twice). Without a sequence id a call is stateless: every window runs
  from the model's initial state and nothing is stored.
- Binary tensors (``Inference-Header-Content-Length``, ``binary_data_size``; binary
  outputs on request) and gzip/deflate request bodies.
- Errors are ``{"error": "..."}`` with the status of the same error on ``/v1`` (a request
  the model cannot take is ``400`` here, the protocol's "bad request").

Every call goes through :class:`service.forecasting.ForecastService`, the code ``/v1`` uses.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

import numpy as np
from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from statecast.models import StatecastError
from statecast.service.errors import (
    BodyTooLarge,
    MalformedRequest,
    NonFiniteValue,
    RequestError,
    StreamNotFound,
    UnsupportedMediaType,
)
from statecast.service.forecasting import check_servable
from statecast.service.http_errors import HEADERS, STATUS
from statecast.service.requests import check_stream_id, future_features_of, parse_json
from statecast.service.schemas import InferRequest, RequestedOutput, validated_open

v2 = Blueprint("v2", __name__)

EXTENSIONS = ["sequence", "sequence(string_id)", "binary_tensor_data", "parameters"]
HEADER_LENGTH = "Inference-Header-Content-Length"
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _state() -> Any:
    return current_app.extensions["statecast"]


def _error(message: str, status: int) -> Response:
    response = jsonify({"error": message})
    response.status_code = status
    for header, value in HEADERS.get(status, {}).items():
        response.headers[header] = value
    return response


@v2.errorhandler(StatecastError)
def _statecast_error(error: StatecastError) -> Response:
    status = STATUS.get(error.code, 500)
    return _error(str(error), 400 if status == 422 else status)


@v2.errorhandler(HTTPException)
def _http_error(error: HTTPException) -> Response:
    return _error(error.description or error.name, error.code or 500)


# -- health and metadata --------------------------------------------------------------------


@v2.get("/v2")
def server_metadata() -> Response:
    from statecast.service.app import server_version

    return jsonify({"name": "statecast", "version": server_version(),
                    "extensions": EXTENSIONS})


@v2.get("/v2/health/live")
def live() -> Response:
    return jsonify({"live": True})


@v2.get("/v2/health/ready")
def ready() -> Response:
    if not _state().ready:
        return _error("models are still loading", 400)  # the protocol: false is a 4xx
    return jsonify({"ready": True})


def _reference(model: str, version: str | None) -> str:
    return f"{model}@{version}" if version is not None else model


def _loaded(model: str, version: str | None) -> Any:
    state = _state()
    name, resolved = state.models.resolve(_reference(model, version))
    loaded = state.models.get(name, resolved)
    check_servable(loaded)
    return loaded


@v2.get("/v2/models/<model>")
@v2.get("/v2/models/<model>/versions/<version>")
def model_metadata(model: str, version: str | None = None) -> Response:
    loaded = _loaded(model, version)
    spec = loaded.spec
    horizon = spec.horizon if spec.forecast_mode == "direct" else -1
    inputs = [{"name": "window", "datatype": "FP32", "shape": [-1, -1, spec.input_size]}]
    covariates = future_features_of(spec)
    if covariates:
        inputs.append({"name": "future", "datatype": "FP32",
                       "shape": [-1, -1, len(covariates)]})
    return jsonify({"name": loaded.name, "versions": _state().registry.versions(loaded.name),
                    "platform": "statecast", "inputs": inputs,
                    "outputs": [{"name": "forecast", "datatype": "FP32",
                                 "shape": [-1, horizon, len(spec.targets)]}]})


@v2.get("/v2/models/<model>/ready")
@v2.get("/v2/models/<model>/versions/<version>/ready")
def model_ready(model: str, version: str | None = None) -> Response:
    _loaded(model, version)
    return jsonify({"ready": True})


# -- inference ------------------------------------------------------------------------------


def _inflate(raw: bytes, encoding: str, limit: int) -> bytes:
    """A gzip or deflate (zlib) body, refused past ``limit`` bytes once inflated."""
    wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
    inflater = zlib.decompressobj(wbits)
    try:
        body = inflater.decompress(raw, limit + 1)
    except zlib.error as error:
        raise MalformedRequest(f"the {encoding} body does not inflate: {error}") from None
    if len(body) > limit or inflater.unconsumed_tail:
        raise BodyTooLarge(f"the inflated body exceeds {limit} bytes", limit=limit)
    return body


def _read_body() -> tuple[Any, bytes]:
    """The JSON header of an infer request and the binary tensor data after it."""
    limit = _state().settings.max_body_bytes
    raw = request.get_data(cache=False)
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding in ("gzip", "deflate"):
        raw = _inflate(raw, encoding, limit)
    elif encoding != "identity":
        raise UnsupportedMediaType(f"Content-Encoding {encoding!r}: send gzip, deflate or "
                                   "none")
    length = request.headers.get(HEADER_LENGTH)
    if length is None:
        return parse_json(raw), b""
    if not length.isdigit() or not 0 < int(length) <= len(raw):
        raise MalformedRequest(f"{HEADER_LENGTH} must be the JSON header's size in bytes "
                               f"(1-{len(raw)})")
    return parse_json(raw[:int(length)]), raw[int(length):]


def _flatten(data: Any, into: list[float]) -> None:
    for value in data:
        if isinstance(value, list):
            _flatten(value, into)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            into.append(value)
        else:
            raise RequestError(f"tensor data must be numbers, got {value!r}"[:120])


def _tensor(spec: Any, binary: bytes, offset: int, dims: int) -> tuple[np.ndarray, int]:
    """The input as float32 ``spec.shape``, and the offset of the next binary input."""
    if spec.datatype != "FP32":
        raise RequestError(f"input {spec.name!r} must be FP32, got {spec.datatype}")
    shape = spec.shape
    if len(shape) != dims or any(d < 1 for d in shape):
        raise RequestError(f"input {spec.name!r} must have shape [batch, steps, values] with "
                           f"every dimension at least 1, got {shape}")
    size = int(np.prod(shape))
    nbytes = (spec.parameters or {}).get("binary_data_size")
    if nbytes is not None:
        if spec.data is not None or isinstance(nbytes, bool) or nbytes != 4 * size:
            raise RequestError(f"input {spec.name!r}: binary_data_size must be {4 * size} "
                               "(shape x 4 bytes) and no data given")
        if offset + nbytes > len(binary):
            raise MalformedRequest(f"input {spec.name!r}: the body holds {len(binary) - offset}"
                                   f" bytes of binary data, {nbytes} announced")
        values = np.frombuffer(binary, "<f4", size, offset).astype(np.float64)
        offset += nbytes
    else:
        if spec.data is None:
            raise RequestError(f"input {spec.name!r} has neither data nor binary_data_size")
        flat: list[float] = []
        _flatten(spec.data, flat)
        if len(flat) != size:
            raise RequestError(f"input {spec.name!r} holds {len(flat)} values; shape {shape} "
                               f"needs {size}")
        values = np.asarray(flat, np.float64)
    if not np.isfinite(values).all() or (size and np.abs(values).max() > _FLOAT32_MAX):
        raise NonFiniteValue(f"input {spec.name!r} holds values that are not finite float32")
    return values.reshape(shape).astype(np.float32), offset


def _flag(parameters: dict[str, Any], name: str) -> bool:
    value = parameters.get(name, False)
    if not isinstance(value, bool):
        raise RequestError(f"parameter {name} must be true or false")
    return value


def _count(parameters: dict[str, Any], name: str, least: int) -> int | None:
    value = parameters.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                              or value < least):
        raise RequestError(f"parameter {name} must be an integer >= {least}")
    return value


def _sequence(parameters: dict[str, Any]) -> int | str | None:
    """The sequence id (None: stateless); 0 and "" mean none, as in Triton."""
    value = parameters.get("sequence_id")
    if value is None or value == 0 or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)) or (
            isinstance(value, int) and value < 0):
        raise RequestError("parameter sequence_id must be an unsigned integer or a string")
    return value


def _outputs(requested: list[RequestedOutput] | None, everything_binary: bool) -> bool:
    """Whether ``forecast`` goes out as binary data."""
    binary = everything_binary
    for output in requested or []:
        if output.name != "forecast":
            raise RequestError(f"unknown output {output.name!r}: the model has 'forecast'")
        wanted = (output.parameters or {}).get("binary_data")
        if wanted is not None:
            if not isinstance(wanted, bool):
                raise RequestError("output parameter binary_data must be true or false")
            binary = wanted
    return binary


@v2.post("/v2/models/<model>/infer")
@v2.post("/v2/models/<model>/versions/<version>/infer")
def infer(model: str, version: str | None = None) -> Response:
    header, binary = _read_body()
    call: InferRequest = validated_open(InferRequest, header)
    parameters = call.parameters or {}
    sequence = _sequence(parameters)
    start, end = _flag(parameters, "sequence_start"), _flag(parameters, "sequence_end")
    step = _count(parameters, "sequence_step", 0)
    horizon = _count(parameters, "horizon", 1)
    binary_out = _outputs(call.outputs, _flag(parameters, "binary_data_output"))
    tensors: dict[str, np.ndarray] = {}
    offset = 0
    for spec in call.inputs:
        if spec.name not in ("window", "future") or spec.name in tensors:
            raise RequestError(f"unexpected input {spec.name!r}: send 'window' (and 'future' "
                               "for recursive models with covariates), once each")
        tensors[spec.name], offset = _tensor(spec, binary, offset, 3)
    if "window" not in tensors:
        raise RequestError("input 'window' [batch, steps, features] is missing")
    window, future = tensors["window"], tensors.get("future")
    if future is not None and future.shape[0] != window.shape[0]:
        raise RequestError("inputs 'window' and 'future' must have the same batch size")
    bodies = []
    for row in range(window.shape[0]):
        body: dict[str, Any] = {"window": window[row].tolist()}
        if horizon is not None:
            body["horizon"] = horizon
        if future is not None:
            body["future"] = future[row].tolist()
        bodies.append(body)
    service = _state().service
    reference = _reference(model, version)
    if sequence is None:
        if start or end or step is not None:
            raise RequestError("sequence_start, sequence_end and sequence_step need a "
                               "sequence_id")
        name, answered, forecasts = service.forecast_stateless(reference, bodies)
    else:
        if window.shape[0] != 1:
            raise RequestError("a sequence is one stream: send batch size 1")
        stream = check_stream_id(str(sequence), service.max_stream_id)
        name = service.models.split(reference)[0]
        if not start and service.store.get(name, stream) is None:
            raise StreamNotFound(f"unknown sequence {sequence!r}: send sequence_start to "
                                 "begin it")
        body = dict(bodies[0], reset=start)
        if step is not None:
            body["start"] = step
        result = service.forecast(reference, stream, body)
        answered, forecasts = result["version"], [np.asarray(result["forecast"], np.float32)]
        if end:
            try:
                service.delete(reference, stream)
            except StreamNotFound:
                pass  # ended by a concurrent call
    return _response(call, name, answered, np.stack(forecasts).astype(np.float32),
                     sequence, binary_out)


def _response(call: InferRequest, name: str, version: str, forecast: np.ndarray,
              sequence: int | str | None, binary: bool) -> Response:
    tensor: dict[str, Any] = {"name": "forecast", "datatype": "FP32",
                              "shape": list(forecast.shape)}
    answer: dict[str, Any] = {"model_name": name, "model_version": version,
                              "outputs": [tensor]}
    if call.id is not None:
        answer["id"] = call.id
    if sequence is not None:
        answer["parameters"] = {"sequence_id": sequence}
    if not binary:
        tensor["data"] = forecast.ravel().astype(float).tolist()
        return jsonify(answer)
    data = forecast.astype("<f4").tobytes()
    tensor["parameters"] = {"binary_data_size": len(data)}
    head = json.dumps(answer, separators=(",", ":")).encode()
    response = Response(head + data, content_type="application/octet-stream")
    response.headers[HEADER_LENGTH] = str(len(head))
    return response
