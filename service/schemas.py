"""The request and response bodies of the HTTP API as pydantic models.

Request models validate every body before anything else reads it, and ``/openapi.json``
is generated from these same classes (:mod:`service.openapi`): the published contract
and the enforced one cannot drift. Checks that depend on the model being called (feature
count, horizon, covariates) and on the server's configured limits (rows per window, items
per batch, body size) come after, in :mod:`service.requests`; the document's descriptions
name them. Response models are documentation only (responses are built as dicts for speed);
the schemathesis run in the tests checks real responses against them.

Numbers follow JSON Schema, which the document speaks: an ``integer`` is any number with
no fractional part, so ``320.0`` is accepted as ``320`` (a production client that writes
every number as a float, as JavaScript's may, is not refused over it); booleans and strings
are never numbers. Observations are float32 on the server: the schema bounds them to
float32's finite range.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

import numpy as np
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)

from statecast.models.conformal import MAX_LEVELS
from statecast.models.names import NAME_PATTERN
from statecast.service.errors import NonFiniteValue, RequestError

#: The largest finite float32: observations beyond it cannot be represented.
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _integral(value: Any) -> Any:
    """``320.0`` -> ``320`` (JSON Schema's integer); anything else as given."""
    if type(value) is float and value.is_integer():
        return int(value)
    return value


#: JSON integers (an int, or a float with no fractional part) from 0, and from 1. The bound
#: comes before the conversion, so that the JSON schema states it as ``minimum``.
Count = Annotated[int, Field(ge=0), BeforeValidator(_integral)]
Positive = Annotated[int, Field(ge=1), BeforeValidator(_integral)]
#: A value the server keeps as float32: finite and within float32's range.
Number = Annotated[float, Field(ge=-FLOAT32_MAX, le=FLOAT32_MAX)]
#: One observation: its values in the model's feature order.
Row = Annotated[list[Number], Field(min_length=1)]
#: Observations: ``[time][features]``, or a flat list when the model takes one feature.
Rows = Annotated[list[Row], Field(min_length=1)] | Annotated[list[Number], Field(min_length=1)]
#: Stream ids: a letter or digit, then letters, digits and ``. _ : -``.
STREAM_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*")
StreamId = Annotated[str, StringConstraints(pattern=f"^{STREAM_ID.pattern}$")]
#: A model name, version or alias (:mod:`models.names`).
Name = Annotated[str, StringConstraints(pattern=f"^{NAME_PATTERN.pattern}$")]


class _Strict(BaseModel):
    """Strict JSON types: no numbers from strings, no booleans as numbers, no NaN."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


#: Interval levels: distinct percentages in (0, 100), at most eight.
Levels = Annotated[list[Annotated[float, Field(gt=0, lt=100)]],
                   Field(max_length=MAX_LEVELS, json_schema_extra={"uniqueItems": True})]


class ForecastRequestBody(_Strict):
    """``POST /v1/models/{model}/streams/{stream}/forecast``."""

    start: Count | None = Field(None, description=(
        "Position of the window's first observation in the stream (0-based). Observations "
        "the stream already consumed are skipped (idempotent retries); a start beyond the "
        "stream's next position is a gap (409). Omitted: the window continues the stream."))
    window: Rows = Field(description=(
        "New observations, [time][features] in the model's feature order (a flat list for "
        "one feature); every row holds the model's feature count, and at most the server's "
        "max_window rows (422 wrong_feature_count, window_too_long)."))
    horizon: Positive | None = Field(None, description=(
        "Forecast steps; default the model's horizon, at most the model's horizon (direct "
        "models) or the server's max_horizon (recursive models) (422 horizon_too_long)."))
    commit: bool = Field(True, description=(
        "Keep the stream's new state; false forecasts without changing the stream."))
    reset: bool = Field(False, description=(
        "Start the stream over from the model's initial state (and the newest version the "
        "model name resolves to)."))
    future: Rows | None = Field(None, description=(
        "Models with future covariates: their values at each forecast step, "
        "[horizon][covariates]; refused by models without (422)."))
    level: Levels | None = Field(None, description=(
        "Prediction intervals to add, as percentages in (0, 100), e.g. [80, 95]: the "
        "response then carries intervals lo-80, hi-80, ... from the model's distribution "
        "head, else conformal from the model version's calibration (422 level_unavailable "
        "when neither gives the level)."))


class BatchOptions(_Strict):
    """Defaults for every item of a batch call (an item may override them)."""

    horizon: Positive | None = None
    commit: bool | None = None
    reset: bool | None = None
    level: Levels | None = None


class BatchItem(ForecastRequestBody):
    """One stream of a batch call."""

    stream: StreamId = Field(description="The stream id.")


class BatchRequestBody(BatchOptions):
    """``POST /v1/models/{model}/forecast``: many streams of one model in one call. Each
    item is validated (and answers) on its own: an item the schema refuses gets its error
    in the response (200) while the others are served."""

    items: list[BatchItem] = Field(min_length=1, description=(
        "At most the server's max_batch_items (422 batch_too_large)."))


class AdminVersionBody(_Strict):
    """Admin calls that name a version: aliases, re-warming."""

    version: Name = Field(description="A version, or an alias of one.")


class SeedLayer(_Strict):
    h: list[Number]
    c: list[Number] | None = None


class AdminSeedBody(_Strict):
    """``PUT /v1/admin/models/{model}/streams/{stream}/state``."""

    step: Count = Field(0, description=(
        "Observations the seeded stream has consumed."))
    layers: list[SeedLayer] = Field(description="h (and c for LSTM) of each layer.")
    version: Name | None = Field(None, description=(
        "A version, or an alias of one; default: the model's default version."))


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
    intervals: dict[str, list[list[float]]] | None = Field(None, description=(
        "With level: lo-<level> and hi-<level> bounds, each [horizon][targets]."))


class BatchItemError(BaseModel):
    stream: Any
    error: ErrorDetail


class BatchResponse(BaseModel):
    items: list[ForecastResponse | BatchItemError]


class StreamAccuracy(BaseModel):
    """A stream's own scores: values scored, and per horizon step the exponentially
    weighted mean absolute error of its recent forecasts (span 50; null before the
    step's first score)."""

    scored: int
    rolling_mae: list[float | None]


class StepAccuracy(BaseModel):
    step: int
    count: int
    mae: float | None
    smape: float | None = Field(description="Mean of |y - f| / (|y| + |f|) (0 when both "
                                "are 0), as Nixtla's smape: between 0 and 1")
    coverage: dict[str, float] = Field(description="Per level, the share of observations "
                                       "inside the interval served with the forecast")


class ModelAccuracy(BaseModel):
    """How a model version's committed forecasts scored, per horizon step, since ``since``
    (Unix seconds of its first score; null: none yet)."""

    model: str
    version: str
    since: float | None
    scored: int
    steps: list[StepAccuracy]


class StreamInfo(BaseModel):
    stream: str
    model: str
    version: str
    step: int
    origin: int
    updated_at: float
    expired: bool
    accuracy: StreamAccuracy | None = None


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


def _where(problem: Any) -> str:
    """The problem's location without pydantic's union tags (``list[...]``, ...)."""
    parts = [str(part) for part in problem["loc"]
             if isinstance(part, int) or str(part).isidentifier()]
    return ".".join(parts) or "body"


def _non_finite(problem: Any) -> str | None:
    """Why ``problem`` is a non-finite value (NaN, Infinity, a number beyond float32, or
    null among the observations), or None when it is another problem."""
    value = problem.get("input")
    if isinstance(value, float) and not math.isfinite(value):
        return f"{_where(problem)} is not finite: send finite numbers only"
    if isinstance(value, (int, float)) and not isinstance(value, bool) and (
            problem["type"] in ("less_than_equal", "greater_than_equal")
            and abs(value) > FLOAT32_MAX):
        return f"{_where(problem)} is beyond float32's range: send finite float32 values"
    if value is None and problem["loc"] and problem["loc"][0] in ("window", "future"):
        return f"{problem['loc'][0]} holds null: send finite numbers only"
    return None


def _most_specific(problems: list[Any]) -> Any:
    """The problem to report: one about a value of the right type rather than a type
    mismatch (each branch of a union reports one), the deepest (the branch that got
    furthest), the last branch on a tie."""
    return max(reversed(problems), key=lambda problem: (
        not problem["type"].endswith("_type"), len(_where(problem).split("."))))


def _refusal(error: ValidationError) -> RequestError:
    """The error a failed validation answers: ``non_finite_value`` when any problem is a
    non-finite number (so a NaN is refused with the same code wherever it is), else a 422
    naming the most specific problem."""
    problems = error.errors()
    for problem in problems:
        reason = _non_finite(problem)
        if reason is not None:
            return NonFiniteValue(reason)
    problem = _most_specific(problems)
    return RequestError(f"{_where(problem)}: {problem['msg']}")


def validated(model: type[BaseModel], body: Any) -> Any:
    """``body`` validated by ``model``; a failure is a 422 (``non_finite_value`` for NaN,
    Infinity, null observations or numbers beyond float32, ``invalid_request`` naming the
    first problem otherwise)."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as error:
        raise _refusal(error) from None
