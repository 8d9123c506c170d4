"""The per-app state of a statecast server and its accessor, shared by every blueprint.

Everything a request needs lives in one :class:`Runtime` kept in
``app.extensions["statecast"]``, never in module globals: several apps (tests, replicas in
one process) never share state.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from importlib import metadata

from flask import Flask, current_app

from statecast.models import Registry
from statecast.service.forecasting import ForecastService
from statecast.service.metrics import Metrics
from statecast.service.model_cache import ModelCache
from statecast.service.settings import Settings
from statecast.service.stores import StateStore

EXTENSION = "statecast"


@dataclass
class Runtime:
    """Per-app objects (``app.extensions["statecast"]``). ``ready`` turns true once the
    start-up hooks of :mod:`service.startup` have run."""

    settings: Settings
    registry: Registry
    store: StateStore
    models: ModelCache
    service: ForecastService
    metrics: Metrics
    ready: bool = False
    stopping: threading.Event = field(default_factory=threading.Event)

    def close(self) -> None:
        """Stop background work and release the store."""
        self.stopping.set()
        self.store.close()


def runtime(app: Flask | None = None) -> Runtime:
    """The runtime of ``app`` (default: the app handling the current request)."""
    value: Runtime = (current_app if app is None else app).extensions[EXTENSION]
    return value


def server_version() -> str:
    """The installed statecast distribution's version."""
    try:
        return metadata.version("statecast")
    except metadata.PackageNotFoundError:
        return "0+unknown"
