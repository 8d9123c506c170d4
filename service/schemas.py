"""The request and response bodies of the HTTP API as pydantic models.

Request models validate every body before anything else reads it, and ``/openapi.json``
is generated from these same classes (:mod:`service.openapi`): the published contract
and the enforced one cannot drift. Checks that depend on the model being called (feature
count, window and horizon limits) come after, in :mod:`service.requests`. Response models
are documentation only (responses are built as dicts for speed); the schemathesis run in
the tests checks real responses against them.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from statecast.service.errors import NonFiniteValue, RequestError

#: Observations: ``[time][features]``, or a flat list when the model takes one feature.
Rows = list[list[float]] | list[float]
StreamId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$",
                                            min_length=1)]


class _Strict(BaseModel):
    """Strict JSON types: no numbers from strings, no booleans as numbers, no NaN."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class ForecastRequestBody(_Strict):
    """``POST /v1/models/{model}/streams/{stream}/forecast``."""

    start: int | None = Field(None, ge=0, description=(
        "Position of the window's first observation in the stream (0-based). Observations "
        "the stream already consumed are skipped (idempotent retries); a start beyond the "
        "stream's next position is a gap (409). Omitted: the window continues the stream."))
    window: Rows = Field(min_length=1, description=(
        "New observations, [time][features] in the model's feature order (a flat list for "
        "one feature)."))
    horizon: int | None = Field(None, ge=1, description=(
        "Forecast steps; default the model's horizon."))
    commit: bool = Field(True, description=(
        "Keep the stream's new state; false forecasts without changing the stream."))
    reset: bool = Field(False, description=(
        "Start the stream over from the model's initial state (and the newest version the "
        "model name resolves to)."))
    future: Rows | None = Field(None, description=(
        "Recursive models with covariates: their values at each forecast step, "
        "[horizon][covariates]."))


class BatchOptions(_Strict):
    """Defaults for every item of a batch call (an item may override them)."""

    horizon: int | None = Field(None, ge=1)
    commit: bool | None = None
    reset: bool | None = None


class BatchItem(ForecastRequestBody):
    """One stream of a batch call."""

    stream: StreamId = Field(description="The stream id.")


class BatchRequestBody(BatchOptions):
    """``POST /v1/models/{model}/forecast``: many streams of one model in one call. Each
    item is validated (and answers) on its own."""

    items: list[BatchItem] = Field(min_length=1)


class AdminVersionBody(_Strict):
    """Admin calls that name a version: aliases, re-warming."""

    version: str = Field(min_length=1)


class SeedLayer(_Strict):
    h: list[float]
    c: list[float] | None = None


class AdminSeedBody(_Strict):
    """``PUT /v1/admin/models/{model}/streams/{stream}/state``."""

    step: int = Field(0, ge=0, description="Observations the seeded stream has consumed.")
    layers: list[SeedLayer] = Field(description="h (and c for LSTM) of each layer.")
    version: str | None = Field(None, description="Default: the model's default version.")


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="allow")

    code: str = Field(description="Machine-readable error code.")
    message: str


class ErrorResponse(BaseModel):
    """Every error: ``{"error": {"code", "message", ...details}}``."""

    error: ErrorDetail


class ForecastResponse(BaseModel):
    model: str
    version: str
    stream: str
    step: int = Field(description="Observations the stream has consumed after this call.")
    consumed: int = Field(description="Observations of this window that were new.")
    skipped: int = Field(description="Observations of this window already consumed.")
    created: bool
    committed: bool
    forecast: list[list[float]] = Field(description="[horizon][targets], original units.")


class BatchItemError(BaseModel):
    stream: Any
    error: ErrorDetail


class BatchResponse(BaseModel):
    items: list[ForecastResponse | BatchItemError]


class StreamInfo(BaseModel):
    stream: str
    model: str
    version: str
    step: int
    origin: int
    updated_at: float
    expired: bool


class LayerState(BaseModel):
    h: list[float]
    c: list[float] | None = None


class StreamState(BaseModel):
    stream: str
    model: str
    version: str
    step: int
    layers: list[LayerState]


class StreamDeleted(BaseModel):
    stream: str
    model: str
    deleted: bool


class VersionEntry(BaseModel):
    version: str
    created_at: Any = None
    source: str | None = None
    features: list[str] | None = None
    targets: list[str] | None = None
    horizon: int | None = None
    forecast_mode: str | None = None
    state_mode: Any = None


class ModelEntry(BaseModel):
    name: str
    versions: list[VersionEntry]
    aliases: dict[str, str]
    default_version: str | None = None


class ModelList(BaseModel):
    models: list[ModelEntry]


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    models: list[str]


class AdminResult(BaseModel):
    """What an admin call did (its fields depend on the call)."""

    model_config = ConfigDict(extra="allow")


def _first_problem(error: ValidationError) -> str:
    problem = error.errors()[0]
    where = ".".join(str(part) for part in problem["loc"] if not str(part).startswith(
        ("list[", "float", "int")))
    return f"{where or 'body'}: {problem['msg']}"


def validated_open(model: type[BaseModel], body: Any) -> Any:
    """``body`` validated by a model that accepts extra fields; a failure is a 422."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as error:
        raise RequestError(_first_problem(error)) from None


def validated(model: type[_Strict], body: Any) -> Any:
    """``body`` validated by ``model``; a failure is a 422 naming the first problem (a null
    among the observations is ``non_finite_value``, as NaN is)."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as error:
        for problem in error.errors():
            if problem["loc"] and problem["loc"][0] in ("window", "future") and (
                    problem.get("input", 0) is None):
                raise NonFiniteValue(f"{problem['loc'][0]} holds null: send finite "
                                     "numbers only") from None
        raise RequestError(_first_problem(error)) from None


# -- Open Inference Protocol (KServe v2) --------------------------------------------------


class _Open(BaseModel):
    """The protocol lets clients add fields: accepted and ignored."""

    model_config = ConfigDict(extra="allow")


class InferTensor(_Open):
    """An input tensor: ``data`` row-major (flat or nested), or ``binary_data_size`` bytes
    of little-endian values after the JSON header (Triton's binary extension)."""

    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class RequestedOutput(_Open):
    name: str
    parameters: dict[str, Any] | None = None


class InferRequest(_Open):
    """``POST /v2/models/{model}[/versions/{version}]/infer``. Request parameters:
    ``sequence_id`` (unsigned integer or string: the stream), ``sequence_start`` (start
    it over), ``sequence_end`` (forget it after this call), ``sequence_step`` (position of
    the window's first observation: idempotent retries), ``horizon``,
    ``binary_data_output``."""

    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[InferTensor] = Field(min_length=1)
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
