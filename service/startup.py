"""Start-up hooks of a built app, kept out of :func:`service.app.create_app` so that
building an app has no side effects: whoever serves it runs them explicitly (each gunicorn
worker once it has loaded the app, ``service/gunicorn_conf.py``; tests that need them).
``statecast serve`` seeds the registry itself before it starts gunicorn, so that workers
starting together find it seeded.

- :func:`prepare`: seed the registry with the bundled model and load (and run once, which
  compiles the kernels) every model's default version;
- :func:`start`: start the idle-stream sweep (when the store does not expire streams
  itself) and mark the app ready (``/readyz``).
"""

from __future__ import annotations

import logging
import threading

import numpy as np
from flask import Flask

from statecast.models import StatecastError
from statecast.service.app import create_app
from statecast.service.bundled import seed_registry
from statecast.service.errors import ModelNotSupported
from statecast.service.forecasting import check_servable
from statecast.service.runtime import EXTENSION, Runtime
from statecast.service.settings import Settings
from statecast.service.stores import StateStore

log = logging.getLogger("statecast")


def _runtime(app: Flask) -> Runtime:
    state: Runtime = app.extensions[EXTENSION]
    return state


def warm_up(state: Runtime) -> None:
    """Load every model's default version and run it once (compiles the kernels); a model
    the service cannot forecast with is logged and left out, not fatal."""
    for model in state.models.load_defaults():
        try:
            check_servable(model)
        except ModelNotSupported as error:
            log.warning("model %s@%s is not served: %s", model.name, model.version, error)
            continue
        model.run(np.zeros((1, 1, model.spec.input_size), np.float32))


def prepare(app: Flask, warm: bool = True) -> None:
    """Seed the registry with the bundled model; with ``warm``, load and run every model's
    default version so that the first request does not pay for it."""
    state = _runtime(app)
    seed_registry(state.registry)
    if warm:
        warm_up(state)


def start(app: Flask) -> None:
    """Start background work and mark the app ready. Idle streams are swept by a daemon
    thread when a TTL is set and the store does not expire them itself; the thread stops
    with :meth:`Runtime.close`."""
    state = _runtime(app)
    ttl = state.settings.stream_ttl
    if ttl is not None and not state.store.expires_idle:
        _start_expiry(state, ttl)
    state.ready = True


def serving_app(settings: Settings | None = None, store: StateStore | None = None,
                warm: bool = True) -> Flask:
    """An app built, prepared and started: what a server process runs, in one call."""
    app = create_app(settings, store)
    prepare(app, warm=warm)
    start(app)
    return app


def _start_expiry(state: Runtime, ttl: float) -> None:
    """A daemon thread that turns idle streams into tombstones (calls also check)."""

    def sweep() -> None:
        while not state.stopping.wait(min(60.0, max(ttl / 4, 0.05))):
            try:
                state.service.expire_idle()
            except StatecastError as error:
                log.warning("expiry sweep failed: %s", error)

    threading.Thread(target=sweep, name="statecast-expiry", daemon=True).start()
