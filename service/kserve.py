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
from dataclasses import replace
from typing import Any

import numpy as np
from flask import Blueprint, Response, jsonify, request

from statecast.models.conformal import interval_names
from statecast.models.names import split_reference
from statecast.service.calls import StreamCall
from statecast.service.errors import (
    BodyTooLarge,
    MalformedRequest,
    NonFiniteValue,
    RequestError,
    StreamNotFound,
    UnsupportedMediaType,
)
from statecast.service.forecasting import check_servable
from statecast.service.http_errors import v2_error_response
from statecast.service.json_codec import parse_json
from statecast.service.kserve_schemas import (
    InferParameters,
    InferRequest,
    InferTensor,
    RequestedOutput,
)
from statecast.service.paths import check_path_parameters
from statecast.service.requests import future_features_of
from statecast.service.runtime import runtime, server_version
from statecast.service.schemas import FLOAT32_MAX, validated

v2 = Blueprint("v2", __name__)
v2.before_request(check_path_parameters)

EXTENSIONS = ["sequence", "sequence(string_id)", "binary_tensor_data", "parameters"]
HEADER_LENGTH = "Inference-Header-Content-Length"


# -- health and metadata --------------------------------------------------------------------


@v2.get("/v2")
def server_metadata() -> Response:
    return jsonify({"name": "statecast", "version": server_version(),
                    "extensions": EXTENSIONS})


@v2.get("/v2/health/live")
def live() -> Response:
    return jsonify({"live": True})


@v2.get("/v2/health/ready")
def ready() -> Response | tuple[Response, int]:
    if not runtime().ready:  # the protocol: not ready is a 4xx
        return v2_error_response("models are still loading", 400)
    return jsonify({"ready": True})


def _reference(model: str, version: str | None) -> str:
    return f"{model}@{version}" if version is not None else model


def _loaded(model: str, version: str | None) -> Any:
    state = runtime()
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
    return jsonify({"name": loaded.name, "versions": runtime().registry.versions(loaded.name),
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
    limit = runtime().settings.max_body_bytes
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
        else:
            into.append(value)


def _tensor(spec: InferTensor, binary: bytes, offset: int) -> tuple[np.ndarray, int]:
    """The input as float32 ``spec.shape``, and the offset of the next binary input (the
    schema checked its name, type and shape; here its values are checked against them)."""
    shape = spec.shape
    size = int(np.prod(shape))
    nbytes = spec.parameters.binary_data_size if spec.parameters is not None else None
    if nbytes is not None:
        if spec.data is not None or nbytes != 4 * size:
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
    if not np.isfinite(values).all() or (size and np.abs(values).max() > FLOAT32_MAX):
        raise NonFiniteValue(f"input {spec.name!r} holds values that are not finite float32")
    return values.reshape(shape).astype(np.float32), offset


def _sequence(parameters: InferParameters) -> int | str | None:
    """The sequence id (None: stateless); 0 and "" mean none, as in Triton."""
    value = parameters.sequence_id
    return None if value in (None, 0, "") else value


def _binary_output(requested: list[RequestedOutput] | None, everything_binary: bool) -> bool:
    """Whether ``forecast`` goes out as binary data: as the last requested output that
    says, else as the request's ``binary_data_output``."""
    said = [output.parameters.binary_data for output in requested or []
            if output.parameters is not None and output.parameters.binary_data is not None]
    return said[-1] if said else everything_binary


@v2.post("/v2/models/<model>/infer")
@v2.post("/v2/models/<model>/versions/<version>/infer")
def infer(model: str, version: str | None = None) -> Response:
    header, binary = _read_body()
    call: InferRequest = validated(InferRequest, header)
    parameters = call.parameters or InferParameters()
    sequence = _sequence(parameters)
    start, end = parameters.sequence_start, parameters.sequence_end
    step, horizon = parameters.sequence_step, parameters.horizon
    binary_out = _binary_output(call.outputs, parameters.binary_data_output)
    tensors: dict[str, np.ndarray] = {}
    offset = 0
    for spec in call.inputs:
        if spec.name in tensors:
            raise RequestError(f"input {spec.name!r} is given twice: send 'window' (and "
                               "'future' for models with future covariates), once each")
        tensors[spec.name], offset = _tensor(spec, binary, offset)
    if "window" not in tensors:
        raise RequestError("input 'window' [batch, steps, features] is missing")
    window, future = tensors["window"], tensors.get("future")
    if future is not None and future.shape[0] != window.shape[0]:
        raise RequestError("inputs 'window' and 'future' must have the same batch size")
    levels = _levels(parameters.level)
    calls = [StreamCall(window=window[row], horizon=horizon, level=levels,
                        future=None if future is None else future[row])
             for row in range(window.shape[0])]
    service = runtime().service
    reference = _reference(model, version)
    if sequence is None:
        if start or end or step is not None:
            raise RequestError("sequence_start, sequence_end and sequence_step need a "
                               "sequence_id")
        name, answered, forecasts, intervals = service.forecast_stateless(reference, calls)
    else:
        if window.shape[0] != 1:
            raise RequestError("a sequence is one stream: send batch size 1")
        stream = str(sequence)  # checked by the service, as every stream id
        name = split_reference(reference)[0]
        if not start and not service.exists(reference, stream):
            raise StreamNotFound(f"unknown sequence {sequence!r}: send sequence_start to "
                                 "begin it")
        result = service.forecast(reference, stream,
                                  replace(calls[0], reset=bool(start), start=step))
        answered, forecasts, intervals = result.version, [result.forecast], [result.intervals]
        if end:
            try:
                service.delete(reference, stream)
            except StreamNotFound:
                pass  # ended by a concurrent call
    outputs = {"forecast": np.stack(forecasts)}
    for name_ in interval_names(levels):
        outputs[name_] = np.stack([bounds[name_] for bounds in intervals if bounds])
    return _response(call, name, answered, outputs, sequence, binary_out)


def _levels(value: float | str | None) -> tuple[float, ...]:
    """A ``level`` parameter as levels: a number, or numbers separated by commas."""
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(float(part) for part in value.split(","))
    return (float(value),)


def _response(call: InferRequest, name: str, version: str, outputs: dict[str, np.ndarray],
              sequence: int | str | None, binary: bool) -> Response:
    tensors: list[dict[str, Any]] = [{"name": output, "datatype": "FP32",
                                      "shape": list(values.shape)}
                                     for output, values in outputs.items()]
    answer: dict[str, Any] = {"model_name": name, "model_version": version,
                              "outputs": tensors}
    if call.id is not None:
        answer["id"] = call.id
    if sequence is not None:
        answer["parameters"] = {"sequence_id": sequence}
    if not binary:
        for tensor, values in zip(tensors, outputs.values(), strict=True):
            tensor["data"] = values.ravel().astype(float).tolist()
        return jsonify(answer)
    chunks = [values.astype("<f4").tobytes() for values in outputs.values()]
    for tensor, data in zip(tensors, chunks, strict=True):
        tensor["parameters"] = {"binary_data_size": len(data)}
    head = json.dumps(answer, separators=(",", ":")).encode()
    response = Response(head + b"".join(chunks), content_type="application/octet-stream")
    response.headers[HEADER_LENGTH] = str(len(head))
    return response
