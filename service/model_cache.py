"""Loaded model versions, shared by all requests of a worker."""

from __future__ import annotations

import os
import threading
import time

from statecast.models import Model, Registry
from statecast.models.conformal import CALIBRATION, Calibration
from statecast.models.names import check_name, split_reference
from statecast.models.registry import ALIASES

#: A model folder changed less than this long ago is listed again on every resolve: a
#: change within the file system's timestamp resolution could otherwise leave its stamp
#: as it was.
_SETTLED_SECONDS = 2.0


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
        self._resolved: dict[str, tuple[tuple[int, ...], tuple[str, str]]] = {}

    def resolve(self, reference: str) -> tuple[str, str]:
        """``name[@version|@alias]`` -> ``(name, version)`` as the registry says now.

        The answer is kept while the model's folder and its aliases file are unchanged
        (a version published or removed changes the folder, an alias moved replaces the
        file): a call resolves its model with two ``stat`` calls instead of listing the
        folder and reading the aliases."""
        stamp = self._stamp(split_reference(reference)[0])
        cached = self._resolved.get(reference)
        if stamp is not None and cached is not None and cached[0] == stamp:
            return cached[1]
        resolved = self.registry.resolve(reference)
        if stamp is not None:
            self._resolved[reference] = (stamp, resolved)
        return resolved

    def _stamp(self, name: str) -> tuple[int, ...] | None:
        """What identifies the current content of a model's folder and aliases; None when
        it is missing or changed too recently to be told apart from the next change."""
        folder = self.registry.root / check_name(name, "model name")
        try:
            listed = os.stat(folder)
        except OSError:
            return None
        try:
            aliases = os.stat(folder / ALIASES)
            alias_stamp = (aliases.st_ino, aliases.st_size, aliases.st_mtime_ns)
        except FileNotFoundError:
            alias_stamp = (0, 0, 0)
        newest = max(listed.st_mtime_ns, alias_stamp[2]) / 1e9
        if time.time() - newest < _SETTLED_SECONDS:
            return None
        return (listed.st_ino, listed.st_nlink, listed.st_mtime_ns, *alias_stamp)

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
