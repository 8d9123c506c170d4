"""Typed errors of the service layer: requests, streams and state stores.

The HTTP layer maps these (and the model errors of ``models.errors``) to status codes in one
place; nothing here knows about HTTP.
"""

from __future__ import annotations

from statecast.models.errors import StatecastError


class ServiceError(StatecastError):
    """Base of the service layer's errors."""

    code = "service_error"


class StoreError(ServiceError):
    """A state store cannot be reached or used (the request may be retried)."""

    code = "store_unavailable"


class InvalidStoreUrl(StoreError, ValueError):
    """A store address is not ``memory``, ``sqlite:PATH`` or ``redis://host:port/db``."""

    code = "invalid_store_url"


class RequestError(ServiceError):
    """A request the service refuses; ``details`` go into the JSON error body."""

    code = "invalid_request"

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.details = details


class MalformedJson(RequestError):
    code = "malformed_json"


class MalformedRequest(RequestError):
    """A body that cannot be read: bad compression, wrong binary framing."""

    code = "malformed_request"


class UnsupportedMediaType(RequestError):
    code = "unsupported_media_type"


class BodyTooLarge(RequestError):
    code = "body_too_large"


class NonFiniteValue(RequestError):
    """NaN, Infinity or null where a number is required."""

    code = "non_finite_value"


class WrongFeatureCount(RequestError):
    code = "wrong_feature_count"


class WindowTooLong(RequestError):
    code = "window_too_long"


class MissingFuture(RequestError):
    """A recursive model with covariates needs their future values."""

    code = "missing_future"


class InsufficientHistory(RequestError):
    """A model that forecasts from a fixed window has fewer observations than the window."""

    code = "insufficient_history"


class BatchTooLarge(RequestError):
    code = "batch_too_large"


class HorizonTooLong(RequestError):
    code = "horizon_too_long"


class InvalidStreamId(RequestError):
    code = "invalid_stream_id"


class ModelNotSupported(RequestError):
    """The model's forecast mode or state mode is not served yet."""

    code = "model_not_supported"


class StreamNotFound(RequestError):
    code = "stream_not_found"


class GapInStream(RequestError):
    """``start`` lies beyond the stream's next expected observation."""

    code = "gap_in_stream"


class StreamExpired(RequestError):
    """The stream was idle past the TTL: it must be reset, not silently restarted."""

    code = "stream_expired"


class CapacityExceeded(RequestError):
    """The model already has as many live streams as allowed."""

    code = "capacity_exceeded"


class OverlapMismatch(RequestError):
    """A resent observation differs from the one the stream consumed."""

    code = "overlap_mismatch"


class VersionConflict(RequestError):
    """The call names another version than the one the stream is bound to."""

    code = "version_conflict"


class Contention(StoreError):
    """Concurrent writers on one stream kept winning; the client may retry."""

    code = "contention"


class VersionInUse(RequestError):
    """A version still serves streams: deleting it needs force."""

    code = "version_in_use"


class AdminDisabled(RequestError):
    code = "admin_disabled"


class Unauthorized(RequestError):
    code = "unauthorized"
