"""The model that ships with statecast, and seeding a registry with it."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from statecast.models import Registry
from statecast.models.registry import LATEST, PRODUCTION

BUNDLED_REGISTRY = Path(__file__).resolve().parent / "registry"
BUNDLED_MODEL = "sunspots"


def seed_registry(registry: Registry) -> bool:
    """Copy the bundled model into ``registry`` if it has no model of that name.

    Returns True when it seeded. The copy goes through a temporary folder and a rename, so
    a reader never sees half a version (several workers may start at once).
    """
    if registry.versions(BUNDLED_MODEL):
        return False
    source = BUNDLED_REGISTRY / BUNDLED_MODEL
    target_root = registry.root / BUNDLED_MODEL
    target_root.mkdir(parents=True, exist_ok=True)
    seeded = False
    for version_dir in sorted(p for p in source.iterdir() if p.is_dir()):
        target = target_root / version_dir.name
        if target.exists():
            continue
        # A staging folder of this process's own: servers on a shared volume seed at once.
        staging = Path(tempfile.mkdtemp(prefix=f".seeding-{version_dir.name}-",
                                        dir=target_root))
        shutil.copytree(version_dir, staging, dirs_exist_ok=True)
        try:
            staging.rename(target)
            seeded = True
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)  # another worker won the race
    versions = registry.versions(BUNDLED_MODEL)
    if versions and not registry.aliases(BUNDLED_MODEL):
        registry.set_alias(BUNDLED_MODEL, LATEST, versions[-1])
        registry.set_alias(BUNDLED_MODEL, PRODUCTION, versions[-1])
    return seeded
