"""Loaded model versions, shared by all requests of a worker."""

from __future__ import annotations

import threading

from statecast.models import Model, Registry
from statecast.models.names import split_reference


class ModelCache:
    """Loads each ``(model, version)`` from the registry once and keeps it.

    ``spread`` is the engine setting of every model it loads (:mod:`kernels.engine`): off in
    the server, whose calls run side by side on one Numba thread per worker.
    """

    def __init__(self, registry: Registry, spread: bool = False) -> None:
        self.registry = registry
        self.spread = spread
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
                    model.engine.spread = self.spread
                    self._models[key] = model
        return model

    def loaded_count(self) -> int:
        """How many versions this worker holds in memory."""
        return len(self._models)

    def load_defaults(self) -> list[Model]:
        """Load the version every model's plain name resolves to (for readiness)."""
        loaded = []
        for name in self.registry.models():
            resolved = self.resolve(name)
            loaded.append(self.get(*resolved))
        return loaded

    @staticmethod
    def split(reference: str) -> tuple[str, str | None]:
        return split_reference(reference)
