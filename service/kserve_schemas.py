"""The bodies of ``/v2`` (the Open Inference Protocol with Triton's extensions) as pydantic
models: the infer request is validated by :class:`InferRequest` and ``/openapi.json``
publishes the same classes.

The protocol lets clients add fields (accepted and ignored), so the models allow extra
keys; the fields statecast reads are typed strictly, as on ``/v1``. What JSON Schema cannot
state is checked after validation (:mod:`service.kserve`) and said in the descriptions: a
tensor's data holds as many values as its shape says, ``window`` has the model's feature
count, the sequence flags need a ``sequence_id``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from statecast.models.conformal import MAX_LEVELS
from statecast.service.schemas import STREAM_ID, Count, Number, Positive

#: A sequence id given as a string is a stream id ("" means none, as in Triton).
SequenceName = Annotated[str, StringConstraints(pattern=f"^({STREAM_ID.pattern})?$")]
#: Levels in a KServe parameter (scalars only): "80" or "80,95", each in (0, 100).
_LEVEL = r"(?:[1-9][0-9]?(?:\.[0-9]+)?|0\.[0-9]*[1-9][0-9]*)"
LEVEL_LIST = f"^{_LEVEL}(?:,{_LEVEL}){{0,{MAX_LEVELS - 1}}}$"
#: Values of a tensor, row-major: flat, or nested as its shape.
TensorData = list[Number | list[Number | list[Number]]]


class _Open(BaseModel):
    """Extra fields accepted and ignored; the known ones strictly typed."""

    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)


class TensorParameters(_Open):
    binary_data_size: Count | None = Field(None, description=(
        "The tensor's values are this many bytes (shape x 4) of little-endian float32 "
        "after the JSON header, instead of data."))


class InferTensor(_Open):
    """An input tensor: ``data`` row-major (flat or nested), or ``binary_data_size`` bytes
    of little-endian values after the JSON header (Triton's binary extension)."""

    name: Literal["window", "future"] = Field(description=(
        "window: [batch, time, features]; future (models with future covariates): "
        "[batch, horizon, covariates]. Each at most once."))
    shape: Annotated[list[Positive],
                     Field(min_length=3, max_length=3)] = Field(description=(
                         "[batch, steps, values]; data holds their product of values."))
    datatype: Literal["FP32"]
    parameters: TensorParameters | None = None
    data: TensorData | None = None


class OutputParameters(_Open):
    binary_data: bool | None = None


class RequestedOutput(_Open):
    name: Literal["forecast"]
    parameters: OutputParameters | None = None


class InferParameters(_Open):
    """Request parameters; ``sequence_start``, ``sequence_end`` and ``sequence_step`` need a
    ``sequence_id``, and a sequence is one stream (batch size 1)."""

    sequence_id: Count | SequenceName | None = Field(None, description=(
        "The stream: an unsigned integer (in decimal) or a stream id; 0 or \"\": none, the "
        "call is stateless."))
    sequence_start: bool = Field(False, description="Start the stream over.")
    sequence_end: bool = Field(False, description="Forget the stream after this call.")
    sequence_step: Count | None = Field(None, description=(
        "Position of the window's first observation (idempotent retries)."))
    horizon: Positive | None = Field(None, description=(
        "Forecast steps; default the model's horizon."))
    binary_data_output: bool = Field(False, description="Send forecast as binary data.")
    level: Annotated[float, Field(gt=0, lt=100)] | Annotated[
        str, StringConstraints(pattern=LEVEL_LIST)] | None = Field(None, description=(
            "Prediction intervals: a level (80) or several, comma-separated (\"80,95\"); "
            "each adds the outputs lo-<level> and hi-<level>, shaped like forecast "
            "(refused, 400, when the model gives no such level)."))


class InferRequest(_Open):
    """``POST /v2/models/{model}[/versions/{version}]/infer``."""

    id: str | None = None
    parameters: InferParameters | None = None
    inputs: list[InferTensor] = Field(min_length=1, max_length=2)
    outputs: list[RequestedOutput] | None = None


class OutputTensor(_Open):
    name: str
    datatype: str
    shape: list[int]
    data: list[float] | None = None
    parameters: dict[str, Any] | None = None


class InferResponse(_Open):
    model_name: str
    model_version: str
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[OutputTensor]


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class V2Health(BaseModel):
    live: bool | None = None
    ready: bool | None = None


class V2Error(BaseModel):
    """Open Inference Protocol errors: ``{"error": "..."}``."""

    error: str
