"""Typed errors of the service layer: requests, streams and state stores.

The HTTP layer maps these (and the model errors of ``models.errors``) to status codes in one
place; nothing here knows about HTTP.
"""

from __future__ import annotations

from models.errors import StatecastError


class ServiceError(StatecastError):
    """Base of the service layer's errors."""

    code = "service_error"


class StoreError(ServiceError):
    """A state store cannot be reached or used (the request may be retried)."""

    code = "store_unavailable"


class InvalidStoreUrl(StoreError, ValueError):
    """A store address is not ``memory``, ``sqlite:PATH`` or ``redis://host:port/db``."""

    code = "invalid_store_url"
