"""The native artifact: a folder with ``model.json`` (manifest) and ``weights.safetensors``.

Reading verifies the weight file's sha256 and every tensor's name, dtype and shape against
the spec before anything uses it. No pickle anywhere.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from statecast.models.errors import ArtifactError, IntegrityError, InvalidSpec
from statecast.models.spec import ModelSpec

FORMAT = "statecast-model"
FORMAT_VERSION = 1
MANIFEST = "model.json"
WEIGHTS = "weights.safetensors"


@dataclass(frozen=True)
class Artifact:
    """A model version's contents: its spec, weights and manifest."""

    spec: ModelSpec
    tensors: dict[str, np.ndarray]
    manifest: dict[str, Any]


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_tensors(spec: ModelSpec, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Return the tensors as contiguous float32, or raise naming the missing/misshapen one."""
    expected = spec.tensor_shapes()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ArtifactError(f"weights do not match the spec: missing {missing}, "
                            f"unexpected {unexpected}")
    checked = {}
    for name, shape in expected.items():
        tensor = np.asarray(tensors[name])
        if tensor.shape != shape:
            raise ArtifactError(f"tensor {name!r} has shape {tensor.shape}, the spec says "
                                f"{shape}")
        if not np.issubdtype(tensor.dtype, np.floating):
            raise ArtifactError(f"tensor {name!r} has dtype {tensor.dtype}, expected float32")
        checked[name] = np.ascontiguousarray(tensor, dtype=np.float32)
        if not np.all(np.isfinite(checked[name])):
            raise ArtifactError(f"tensor {name!r} holds NaN or infinite values")
    return checked


def write_artifact(folder: Path, spec: ModelSpec, tensors: dict[str, np.ndarray],
                   source: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write a complete artifact into ``folder`` (which must exist) and return its manifest."""
    checked = check_tensors(spec, tensors)
    weights_path = folder / WEIGHTS
    save_file(checked, str(weights_path))
    weights_path.chmod(0o644)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": source or {},
        "weights": {"file": WEIGHTS, "sha256": sha256_of(weights_path)},
        "spec": spec.to_json(),
    }
    manifest_path = folder / MANIFEST
    with open(manifest_path, "w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=2)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    return manifest


def read_artifact(folder: Path) -> Artifact:
    """Read and verify the artifact in ``folder``."""
    manifest_path = folder / MANIFEST
    try:
        with open(manifest_path, encoding="utf-8") as handle:
            manifest = json.load(handle)
    except FileNotFoundError:
        raise ArtifactError(f"{manifest_path} is missing") from None
    except json.JSONDecodeError as error:
        raise ArtifactError(f"{manifest_path} is not valid JSON: {error}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArtifactError(f"{manifest_path} is not a {FORMAT} manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{manifest_path}: unsupported format_version "
                            f"{manifest.get('format_version')!r} (this build reads "
                            f"{FORMAT_VERSION})")
    try:
        spec = ModelSpec.from_json(manifest["spec"])
    except (KeyError, InvalidSpec) as error:
        raise ArtifactError(f"{manifest_path}: {error}") from None
    weights = manifest.get("weights", {})
    if weights.get("file") != WEIGHTS:
        raise ArtifactError(f"{manifest_path}: weights must be {WEIGHTS!r}")
    weights_path = folder / WEIGHTS
    if not weights_path.is_file():
        raise ArtifactError(f"{weights_path} is missing")
    actual = sha256_of(weights_path)
    if actual != weights.get("sha256"):
        raise IntegrityError(f"{weights_path}: sha256 {actual} differs from the manifest's "
                             f"{weights.get('sha256')}")
    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError) as error:
        raise ArtifactError(f"{weights_path}: {error}") from None
    return Artifact(spec, check_tensors(spec, tensors), manifest)
