"""What the admin API does, independent of HTTP: publish versions, move aliases, delete
versions, seed and re-warm streams."""

from __future__ import annotations

import shutil
import tempfile
import time
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from statecast.models.artifact import read_artifact
from statecast.models.errors import ArtifactError
from statecast.models.importers import (
    ForecastOptions,
    Imported,
    import_file,
    load_scaler,
    output_from_flags,
)
from statecast.models.importers.files import SUFFIXES
from statecast.models.names import check_name
from statecast.service.errors import (
    RequestError,
    StateMismatch,
    StreamNotFound,
    VersionInUse,
)
from statecast.service.forecasting import ForecastService
from statecast.service.requests import check_stream_id
from statecast.service.retries import until_written
from statecast.service.schemas import AdminSeedBody, AdminVersionBody, validated
from statecast.service.stores import StateStore, StreamRecord

#: Uploads: any file :func:`import_file` takes, or a native artifact (``.zip``).
UPLOAD_SUFFIXES = (*SUFFIXES, ".zip")


def comma_names(text: str | None) -> tuple[str, ...] | None:
    """``"a, b,"`` -> ``("a", "b")``; None for no text (a CLI flag or a form field)."""
    return tuple(p.strip() for p in text.split(",") if p.strip()) if text else None


class Administration:
    """Operator actions on one registry and store."""

    def __init__(self, service: ForecastService) -> None:
        self.service = service
        self.registry = service.models.registry
        self.store = service.store

    def publish(self, name: str, filename: str, data: bytes, form: dict[str, str],
                scaler: bytes | None = None) -> dict[str, Any]:
        """Import an uploaded framework file (or a native artifact ``.zip``) as a version."""
        check_name(name, "model name")
        suffix = Path(filename).suffix.lower()
        if suffix not in UPLOAD_SUFFIXES:
            raise RequestError(f"upload a {', '.join(UPLOAD_SUFFIXES)} file, not {filename!r}")
        folder = Path(tempfile.mkdtemp(prefix="statecast-upload-"))
        try:
            path = folder / f"upload{suffix}"
            path.write_bytes(data)
            if suffix == ".zip":
                spec, tensors, source = self._native(path, folder)
            else:
                imported = self._import(path, form, scaler, folder)
                spec, tensors, source = imported.spec, imported.tensors, imported.source
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        source = {**source, "file": Path(filename).name}
        aliases = ("latest", *(comma_names(form.get("aliases")) or ()))
        version = self.registry.publish(name, spec, tensors, source,
                                        version=form.get("version") or None, aliases=aliases)
        self.service.models.get(name, version)  # loaded here before any call needs it
        return {"model": name, "version": version, "aliases": self.registry.aliases(name)}

    @staticmethod
    def _native(path: Path, folder: Path) -> tuple[Any, Any, dict[str, Any]]:
        target = folder / "artifact"
        target.mkdir()
        try:
            with zipfile.ZipFile(path) as archive:
                for member in ("model.json", "weights.safetensors"):
                    (target / member).write_bytes(archive.read(member))
        except (zipfile.BadZipFile, KeyError) as error:
            raise ArtifactError(f"a native artifact is a zip of model.json and "
                                f"weights.safetensors: {error}") from None
        artifact = read_artifact(target)
        return artifact.spec, artifact.tensors, dict(artifact.manifest.get("source", {}))

    @staticmethod
    def _import(path: Path, form: dict[str, str], scaler: bytes | None,
                folder: Path) -> Imported:
        """The upload through :func:`import_file`, its options from the form fields."""
        scaler_data = None
        if scaler is not None:
            (folder / "scaler.json").write_bytes(scaler)
            scaler_data = load_scaler(folder / "scaler.json")
        try:
            horizon = int(form["horizon"]) if form.get("horizon") else None
        except ValueError:
            raise RequestError(f"horizon must be an integer, got {form['horizon']!r}") from None
        options = ForecastOptions(mode=form.get("mode", "direct"), horizon=horizon,
                                  targets=comma_names(form.get("targets")),
                                  features=comma_names(form.get("features")),
                                  state_mode=form.get("state_mode", "carry"),
                                  scaler=scaler_data,
                                  output=output_from_flags(form.get("head_output") or None,
                                                           form.get("quantiles") or None))
        activations = comma_names(form.get("head_activations"))
        return import_file(path, options=options, cell=form.get("cell") or None,
                           rnn_prefix=form.get("rnn_prefix") or None,
                           head_prefix=form.get("head_prefix") or None,
                           head_activations=list(activations) if activations else None,
                           head_every_step=form.get("head_every_step") == "true")

    def set_alias(self, name: str, alias: str, body: Any) -> dict[str, Any]:
        version = validated(AdminVersionBody, body).version
        self.service.models.get(name, self.registry.resolve(f"{name}@{version}")[1])
        self.registry.set_alias(name, check_name(alias, "alias"), version)
        return {"model": name, "aliases": self.registry.aliases(name)}

    def delete_version(self, name: str, version: str, force: bool) -> dict[str, Any]:
        bound = bound_streams(self.store, name, version)
        if bound and not force:
            raise VersionInUse(f"{len(bound)} stream(s) are bound to {name}@{version} (e.g. "
                               f"{bound[:5]}): reset or re-warm them, or delete with force",
                               streams=len(bound))
        dropped = self.registry.delete_version(name, version)
        return {"model": name, "version": version, "deleted": True,
                "aliases_dropped": dropped, "streams_left_bound": len(bound)}

    def seed_state(self, name: str, stream: str, body: Any) -> dict[str, Any]:
        """Set a stream's h (and c) per layer, creating the stream if needed."""
        check_stream_id(stream, self.service.max_stream_id)
        seed = validated(AdminSeedBody, body)
        step = seed.step
        reference = f"{name}@{seed.version}" if seed.version else name
        version = self.registry.resolve(reference)[1]
        model = self.service.models.get(name, version)
        offsets = model.network.state_offsets
        if len(seed.layers) != len(offsets):
            raise StateMismatch(f"the model has {len(offsets)} layers; got {len(seed.layers)}")
        row = np.zeros(model.state_size, np.float32)
        for index, (layer, (h_at, h_width, c_at, c_width)) in enumerate(
                zip(seed.layers, offsets, strict=True)):
            for part, at, width in (("h", h_at, h_width), ("c", c_at, c_width)):
                if at < 0:
                    continue
                values = np.asarray(getattr(layer, part), dtype=np.float64)  # finite: schema
                if values.shape != (width,):
                    raise StateMismatch(f"layer {index} needs {part} as {width} finite numbers")
                row[at:at + width] = values

        def attempt() -> dict[str, Any] | None:
            current = self.store.get(name, stream)
            now = time.time()
            record = StreamRecord(
                model=name, stream=stream, version=version,
                origin=current.origin if current and not current.expired else step,
                step=step, state=row,
                tail=np.zeros((0, model.spec.input_size), np.float32),
                revision=current.revision + 1 if current else 0,
                created_at=current.created_at if current else now, updated_at=now)
            if self.store.compare_and_set(record, current.revision if current else None):
                return {"stream": stream, "model": name, "version": version, "step": step}
            return None

        return until_written(attempt, f"stream {stream!r}")

    def rewarm(self, name: str, stream: str, body: Any) -> dict[str, Any]:
        """Move a stream onto another version by running its retained observations
        through it from its initial state (exact for window:W models holding W
        observations, an approximation for carry models)."""
        check_stream_id(stream, self.service.max_stream_id)
        version = validated(AdminVersionBody, body).version
        version = self.registry.resolve(f"{name}@{version}")[1]
        model = self.service.models.get(name, version)

        def attempt() -> dict[str, Any] | None:
            record = self.store.get(name, stream)
            if record is None or record.expired:
                raise StreamNotFound(f"no live stream {stream!r} of model {name!r}")
            observations = record.tail.reshape(-1, model.spec.input_size)[
                -model.spec.retain:]
            # As a call computes it: a window:W model from its last W observations.
            state = model.advance(model.new_arena(1), [observations])
            window = model.spec.window
            exact = window is not None and (len(observations) >= window
                                            or record.step - record.origin == len(observations))
            moved = replace(record, version=version, pending=b"").advanced(
                step=record.step, state=state[0], tail=observations)
            if self.store.compare_and_set(moved, record.revision):
                return {"stream": stream, "model": name, "version": version,
                        "step": record.step, "observations": len(observations),
                        "exact": bool(exact)}
            return None

        return until_written(attempt, f"stream {stream!r}")


def bound_streams(store: StateStore, name: str, version: str) -> list[str]:
    """Live streams of ``name`` bound to ``version`` (what blocks deleting it), sorted."""
    return sorted(r.stream for r in store.scan(name) if r.version == version and not r.expired)
