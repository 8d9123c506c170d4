"""Start-up hooks of a built app (:func:`prepare`, :func:`start`), kept out of
:func:`service.app.create_app` so that building an app has no side effects: whoever serves
it runs them explicitly (each gunicorn worker once it has loaded the app,
``service/gunicorn_conf.py``; tests that need them). ``statecast serve`` seeds the registry
itself before it starts gunicorn, so that workers starting together find it seeded.
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
from statecast.service.metrics import SCORES_FLUSH_SECONDS
from statecast.service.runtime import runtime
from statecast.service.settings import Settings
from statecast.service.stores import StateStore

log = logging.getLogger("statecast")


def prepare(app: Flask, warm: bool = True) -> None:
    """Seed the registry with the bundled model; with ``warm``, load every model's default
    version and run it once (compiling the kernels), so that the first request does not pay
    for it. A model the service cannot forecast with is logged and left out, not fatal."""
    state = runtime(app)
    seed_registry(state.registry)
    if not warm:
        return
    for model in state.models.load_defaults():
        try:
            check_servable(model)
        except ModelNotSupported as error:
            log.warning("model %s@%s is not served: %s", model.name, model.version, error)
            continue
        model.run(np.zeros((1, 1, model.spec.input_size), np.float32))


def start(app: Flask) -> None:
    """Start background work and mark the app ready. Idle streams are turned into
    tombstones by a daemon thread (calls also check) when a TTL is set and the store does
    not expire them itself; another counts the scores a worker gathered in its metrics
    when no call has for a while. The threads stop with :meth:`Runtime.close`."""
    state = runtime(app)

    def count_scores() -> None:
        while not state.stopping.wait(SCORES_FLUSH_SECONDS):
            try:
                state.metrics.flush_scores()
            except Exception:  # metrics must never stop the worker
                log.exception("counting scores in the metrics failed")

    threading.Thread(target=count_scores, name="statecast-scores", daemon=True).start()
    ttl = state.settings.stream_ttl
    if ttl is not None and not state.store.expires_idle:

        def sweep() -> None:
            while not state.stopping.wait(min(60.0, max(ttl / 4, 0.05))):
                try:
                    state.service.expire_idle()
                except StatecastError as error:
                    log.warning("expiry sweep failed: %s", error)

        threading.Thread(target=sweep, name="statecast-expiry", daemon=True).start()
    state.ready = True


def serving_app(settings: Settings | None = None, store: StateStore | None = None,
                warm: bool = True) -> Flask:
    """An app built, prepared and started: what a server process runs, in one call."""
    app = create_app(settings, store)
    prepare(app, warm=warm)
    start(app)
    return app
