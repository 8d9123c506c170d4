"""Typed errors of the service layer: requests, streams and state stores.

Every class carries its machine ``code`` and the HTTP ``status`` it is answered with
(:mod:`service.http_errors` reads both from the error, so a new error class cannot fall
through to a 500). A ``503`` tells the client to retry (it goes with ``Retry-After``).
"""

from __future__ import annotations

from typing import Any

from statecast.models.errors import StatecastError


class ServiceError(StatecastError):
    """Base of the service layer's errors."""

    code = "service_error"
    status = 400


class StoreError(ServiceError):
    """A state store cannot be reached or used (the request may be retried)."""

    code = "store_unavailable"
    status = 503


class InvalidStoreUrl(StoreError, ValueError):
    """A store address is not ``memory``, ``sqlite:PATH``, ``redis://host:port/db`` or
    ``redis+cluster://host:port`` (or its options are wrong): the server cannot keep
    streams, so it is unavailable (raised at start-up, in practice)."""

    code = "invalid_store_url"
    status = 503


class ReplicationUnconfirmed(StoreError):
    """A redis store asked to wait for replicas (``?wait=N``) wrote on the master, but fewer
    than N replicas acknowledged the write in time: a failover now could lose it. The write
    stands on the master; a retry of the call is idempotent (``start``) and waits again."""

    code = "replication_unconfirmed"
    status = 503


class NotReady(ServiceError):
    """The server is still loading its models."""

    code = "not_ready"
    status = 503


class RequestError(ServiceError):
    """A request the service refuses; ``details`` go into the JSON error body."""

    code = "invalid_request"
    status = 422

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.details = details


def error_body(error: StatecastError) -> dict[str, Any]:
    """An error as ``/v1`` writes it: ``{"code", "message", ...details}``."""
    details = error.details if isinstance(error, RequestError) else {}
    return {"code": error.code, "message": str(error), **details}


class MalformedJson(RequestError):
    code = "malformed_json"
    status = 400


class MalformedRequest(RequestError):
    """A body that cannot be read: bad compression, wrong binary framing."""

    code = "malformed_request"
    status = 400


class UnsupportedMediaType(RequestError):
    code = "unsupported_media_type"
    status = 415


class BodyTooLarge(RequestError):
    code = "body_too_large"
    status = 413


class NonFiniteValue(RequestError):
    """NaN, Infinity or null where a number is required."""

    code = "non_finite_value"
    status = 422


class WrongFeatureCount(RequestError):
    code = "wrong_feature_count"
    status = 422


class WindowTooLong(RequestError):
    code = "window_too_long"
    status = 422


class MissingFuture(RequestError):
    """A recursive model with covariates needs their future values."""

    code = "missing_future"
    status = 422


class UnexpectedFuture(RequestError):
    """Future covariates sent to a model that takes none."""

    code = "unexpected_future"
    status = 422


class StateMismatch(RequestError):
    """A seeded state whose layers or sizes are not the model's."""

    code = "state_mismatch"
    status = 422


class InsufficientHistory(RequestError):
    """A model that forecasts from a fixed window has fewer observations than the window."""

    code = "insufficient_history"
    status = 422


class BatchTooLarge(RequestError):
    code = "batch_too_large"
    status = 422


class HorizonTooLong(RequestError):
    code = "horizon_too_long"
    status = 422


class InvalidStreamId(RequestError):
    code = "invalid_stream_id"
    status = 422


class ModelNotSupported(RequestError):
    """The model's forecast mode or state mode is not served."""

    code = "model_not_supported"
    status = 422


class StreamNotFound(RequestError):
    code = "stream_not_found"
    status = 404


class GapInStream(RequestError):
    """``start`` lies beyond the stream's next expected observation."""

    code = "gap_in_stream"
    status = 409


class StreamExpired(RequestError):
    """The stream was idle past the TTL: it must be reset, not silently restarted."""

    code = "stream_expired"
    status = 410


class CapacityExceeded(RequestError):
    """The model already has as many live streams as allowed (retry later)."""

    code = "capacity_exceeded"
    status = 503


class OverlapMismatch(RequestError):
    """A resent observation differs from the one the stream consumed."""

    code = "overlap_mismatch"
    status = 409


class VersionConflict(RequestError):
    """The call names another version than the one the stream is bound to."""

    code = "version_conflict"
    status = 409


class Contention(StoreError):
    """Concurrent writers on one stream kept winning every compare-and-set of
    :mod:`service.retries`; the client may retry."""

    code = "contention"
    status = 503


class VersionInUse(RequestError):
    """A version still serves streams: deleting it needs force."""

    code = "version_in_use"
    status = 409


class AdminDisabled(RequestError):
    """No admin token is configured: the admin API is off."""

    code = "admin_disabled"
    status = 403


class Unauthorized(RequestError):
    """The admin token is missing or wrong."""

    code = "unauthorized"
    status = 401
