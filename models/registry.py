"""The directory registry: ``<root>/<model>/<version>/`` plus ``<root>/<model>/aliases.json``.

Versions are immutable. Publishing writes the artifact into a hidden temporary folder and
renames it into place, so a reader never sees half a version; a rename onto an existing
version fails, so two publishers never share a number. Alias updates are serialised by a
lock file and replace ``aliases.json`` atomically.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from statecast.models.artifact import read_artifact, write_artifact
from statecast.models.conformal import Calibration, read_calibration, write_calibration
from statecast.models.errors import ModelNotFound, VersionExists
from statecast.models.model import Model
from statecast.models.names import check_name, split_reference
from statecast.models.spec import ModelSpec

ALIASES = "aliases.json"
LATEST = "latest"
PRODUCTION = "production"


def _version_key(version: str) -> tuple[int, int | str]:
    return (0, int(version)) if version.isdigit() else (1, version)


class Registry:
    """Model versions and aliases under one root directory."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"Registry({str(self.root)!r})"

    # -- reading -------------------------------------------------------------------------

    def models(self) -> list[str]:
        """Names of the models with at least one version, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and not p.name.startswith(".") and self.versions(p.name))

    def versions(self, name: str) -> list[str]:
        """The model's versions, oldest first (numbers numerically)."""
        folder = self.root / check_name(name, "model name")
        if not folder.is_dir():
            return []
        return sorted((p.name for p in folder.iterdir()
                       if p.is_dir() and not p.name.startswith(".")), key=_version_key)

    def aliases(self, name: str) -> dict[str, str]:
        """Alias -> version of one model (``{}`` when it has none)."""
        path = self.root / check_name(name, "model name") / ALIASES
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
        except FileNotFoundError:
            return {}
        return {str(k): str(v) for k, v in data.items()}

    def resolve(self, reference: str) -> tuple[str, str]:
        """``"name"``, ``"name@version"`` or ``"name@alias"`` -> ``(name, version)``.

        A version of that name wins over an alias; a plain name means the alias
        ``production`` if it exists, else ``latest``.
        """
        name, tag = split_reference(reference)
        versions = self.versions(name)
        if not versions:
            raise ModelNotFound(f"no model named {name!r} in {self.root}")
        if tag is not None and tag in versions:
            return name, tag
        aliases = self.aliases(name)
        if tag is None:
            tag = PRODUCTION if PRODUCTION in aliases else LATEST
        if tag in aliases and aliases[tag] in versions:
            return name, aliases[tag]
        if tag == LATEST:
            return name, versions[-1]
        raise ModelNotFound(f"model {name!r} has no version or alias {tag!r}; versions: "
                            f"{versions}, aliases: {sorted(aliases)}")

    def path(self, name: str, version: str) -> Path:
        """Folder of one version (validated names only)."""
        return self.root / check_name(name, "model name") / check_name(version, "version")

    def manifest(self, reference: str) -> dict[str, Any]:
        """The manifest of a version, without loading its weights."""
        name, version = self.resolve(reference)
        with open(self.path(name, version) / "model.json", encoding="utf-8") as handle:
            manifest: dict[str, Any] = json.load(handle)
        return manifest

    def calibration(self, reference: str) -> Calibration | None:
        """The conformal calibration stored beside a version (verified), or None."""
        name, version = self.resolve(reference)
        return read_calibration(self.path(name, version))

    def set_calibration(self, reference: str, calibration: Calibration) -> str:
        """Store ``calibration`` beside a version, replacing any other; return the version.
        The version itself stays unchanged."""
        name, version = self.resolve(reference)
        with self._locked(name):
            write_calibration(self.path(name, version), calibration)
        return version

    def load(self, reference: str) -> Model:
        """Load and verify a version: ``"name"``, ``"name@version"`` or ``"name@alias"``."""
        name, version = self.resolve(reference)
        artifact = read_artifact(self.path(name, version))
        return Model(artifact.spec, artifact.tensors, name=name, version=version,
                     manifest=artifact.manifest)

    # -- writing -------------------------------------------------------------------------

    @contextmanager
    def _locked(self, name: str) -> Iterator[Path]:
        folder = self.root / check_name(name, "model name")
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield folder
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def publish(self, name: str, spec: ModelSpec, tensors: dict[str, np.ndarray],
                source: dict[str, Any] | None = None, version: str | None = None,
                aliases: tuple[str, ...] = (LATEST,)) -> str:
        """Write a new immutable version and point ``aliases`` at it; return the version.

        Without ``version`` the next integer is taken. Raises :class:`VersionExists` if the
        named version exists.
        """
        check_name(name, "model name")
        if version is not None:
            check_name(version, "version")
        for alias in aliases:
            check_name(alias, "alias")
        with self._locked(name) as folder:
            staging = Path(tempfile.mkdtemp(prefix=".publishing-", dir=folder))
            staging.chmod(0o755)  # mkdtemp makes it private; a version is for every reader
            try:
                write_artifact(staging, spec, tensors, source)
                if version is None:
                    numbers = [int(v) for v in self.versions(name) if v.isdigit()]
                    version = str(max(numbers, default=0) + 1)
                target = folder / version
                if target.exists():
                    raise VersionExists(f"model {name!r} already has version {version!r}")
                os.rename(staging, target)
            finally:
                if staging.exists():
                    shutil.rmtree(staging, ignore_errors=True)
            self._update_aliases(folder, dict.fromkeys(aliases, version))
        return version

    def set_alias(self, name: str, alias: str, version: str) -> None:
        """Point ``alias`` of model ``name`` at an existing ``version``."""
        check_name(alias, "alias")
        if version not in self.versions(name):
            raise ModelNotFound(f"model {name!r} has no version {version!r}")
        with self._locked(name) as folder:
            self._update_aliases(folder, {alias: version})

    def delete_version(self, name: str, version: str) -> list[str]:
        """Remove a version (renamed aside, then deleted, so no reader sees half of it) and
        the aliases that pointed at it; return those aliases."""
        target = self.path(name, version)
        if not target.is_dir():
            raise ModelNotFound(f"model {name!r} has no version {version!r}")
        with self._locked(name) as folder:
            doomed = Path(tempfile.mkdtemp(prefix=".deleting-", dir=folder))
            os.rename(target, doomed / version)
            shutil.rmtree(doomed, ignore_errors=True)
            aliases = self.aliases(name)
            dropped = sorted(alias for alias, points in aliases.items() if points == version)
            self._update_aliases(folder, {}, drop=dropped)
        return dropped

    def _update_aliases(self, folder: Path, changes: dict[str, str],
                        drop: list[str] | None = None) -> None:
        aliases = self.aliases(folder.name)
        aliases.update(changes)
        for alias in drop or []:
            aliases.pop(alias, None)
        handle, temporary = tempfile.mkstemp(prefix=".aliases-", dir=folder)
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(aliases, out, indent=2, sort_keys=True)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, folder / ALIASES)
