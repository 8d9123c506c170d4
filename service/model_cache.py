"""Loaded model versions, shared by all requests of a worker."""

from __future__ import annotations

import threading

from statecast.models import Model, Registry
from statecast.models.conformal import CALIBRATION, Calibration


class ModelCache:
    """Loads each ``(model, version)`` from the registry once and keeps it.

    Every model it loads has the engine's ``spread`` off (:mod:`kernels.engine`): the
    server's calls run side by side on one Numba thread per worker.
    """

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._lock = threading.Lock()
        self._models: dict[tuple[str, str], Model] = {}
        self._calibrations: dict[tuple[str, str],
                                 tuple[tuple[int, int, int], Calibration | None]] = {}

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

    def calibration(self, name: str, version: str) -> Calibration | None:
        """The version's conformal calibration, re-read when its manifest was replaced (a
        replacement is a rename: a new inode, whatever the clock's resolution)."""
        try:
            found = (self.registry.path(name, version) / CALIBRATION).stat()
        except FileNotFoundError:
            return None
        stamp = (found.st_ino, found.st_size, found.st_mtime_ns)
        cached = self._calibrations.get((name, version))
        if cached is None or cached[0] != stamp:
            cached = (stamp, self.registry.calibration(f"{name}@{version}"))
            self._calibrations[(name, version)] = cached
        return cached[1]

    def loaded_count(self) -> int:
        """How many versions this worker holds in memory."""
        return len(self._models)

    def load_defaults(self) -> list[Model]:
        """Load the version every model's plain name resolves to (for readiness)."""
        return [self.get(*self.resolve(name)) for name in self.registry.models()]
