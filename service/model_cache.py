"""Loaded model versions, shared by all requests of a worker."""

from __future__ import annotations

import threading

from statecast.models import Model, Registry


class ModelCache:
    """Loads each ``(model, version)`` from the registry once and keeps it.

    Every model it loads has the engine's ``spread`` off (:mod:`kernels.engine`): the
    server's calls run side by side on one Numba thread per worker.
    """

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._lock = threading.Lock()
        self._models: dict[tuple[str, str], Model] = {}

    def resolve(self, reference: str) -> tuple[str, str]:
        """``name[@version|@alias]`` -> ``(name, version)`` as the registry says now."""
        return self.registry.resolve(reference)

    def get(self, name: str, version: str) -> Model:
        """The loaded version (loaded, verified and cached on first use)."""
        key = (name, version)
        model = self._models.get(key)
        if model is None:
            with self._lock:
                model = self._models.get(key)
                if model is None:
                    model = self.registry.load(f"{name}@{version}")
                    model.engine.spread = False
                    self._models[key] = model
        return model

    def loaded_count(self) -> int:
        """How many versions this worker holds in memory."""
        return len(self._models)

    def load_defaults(self) -> list[Model]:
        """Load the version every model's plain name resolves to (for readiness)."""
        return [self.get(*self.resolve(name)) for name in self.registry.models()]
