"""The directory registry and the native artifact: immutable versions, aliases, integrity."""

import json
import threading

import numpy as np
import pytest

from statecast.models import (
    ArtifactError,
    IntegrityError,
    InvalidName,
    ModelNotFound,
    Registry,
    VersionExists,
)
from tests.models.helpers import tiny_spec, tiny_tensors


@pytest.fixture()
def registry(tmp_path):
    return Registry(tmp_path / "registry")


def test_publish_then_load_gives_the_same_weights_and_spec(registry):
    spec = tiny_spec()
    tensors = tiny_tensors(spec)
    version = registry.publish("demand", spec, tensors, {"framework": "test"})
    assert version == "1"
    model = registry.load("demand")
    assert (model.name, model.version, model.spec) == ("demand", "1", spec)
    for name, tensor in tensors.items():
        np.testing.assert_array_equal(model.tensors[name], tensor)
    manifest = json.loads((registry.root / "demand" / "1" / "model.json").read_text())
    assert manifest["format"] == "statecast-model" and manifest["source"] == {"framework": "test"}
    assert len(manifest["weights"]["sha256"]) == 64 and manifest["created_at"]


def test_versions_count_up_and_resolve_by_version_alias_production_latest(registry):
    spec = tiny_spec()
    for seed in range(3):
        registry.publish("demand", spec, tiny_tensors(spec, seed))
    assert registry.versions("demand") == ["1", "2", "3"]
    assert registry.resolve("demand") == ("demand", "3")
    registry.set_alias("demand", "production", "2")
    assert registry.resolve("demand") == ("demand", "2")
    assert registry.resolve("demand@1") == ("demand", "1")
    assert registry.resolve("demand@latest") == ("demand", "3")
    registry.set_alias("demand", "1", "3")  # an alias named like a version loses to it
    assert registry.resolve("demand@1") == ("demand", "1")
    assert registry.models() == ["demand"]


def test_versions_are_immutable(registry):
    spec = tiny_spec()
    registry.publish("demand", spec, tiny_tensors(spec), version="2024-01")
    with pytest.raises(VersionExists, match="already has version '2024-01'"):
        registry.publish("demand", spec, tiny_tensors(spec, 1), version="2024-01")
    assert registry.versions("demand") == ["2024-01"]
    assert not [p for p in (registry.root / "demand").iterdir() if p.name.startswith(".publ")]


def test_concurrent_publishers_get_distinct_versions(registry):
    spec = tiny_spec()
    versions = []
    threads = [threading.Thread(target=lambda s=seed: versions.append(
        registry.publish("demand", spec, tiny_tensors(spec, s)))) for seed in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(versions, key=int) == ["1", "2", "3", "4", "5", "6"]
    assert registry.aliases("demand")["latest"] in versions


@pytest.mark.parametrize("reference", ["../etc", "a/b", "", "x@../y", ".hidden", "a" * 129])
def test_names_that_could_escape_the_root_are_refused(registry, reference):
    with pytest.raises(InvalidName, match="invalid"):
        registry.load(reference)


def test_unknown_models_and_aliases(registry):
    with pytest.raises(ModelNotFound, match="no model named 'nope'"):
        registry.load("nope")
    spec = tiny_spec()
    registry.publish("demand", spec, tiny_tensors(spec))
    with pytest.raises(ModelNotFound, match="no version or alias 'canary'"):
        registry.load("demand@canary")
    with pytest.raises(ModelNotFound, match="has no version '9'"):
        registry.set_alias("demand", "production", "9")


def test_tampered_weights_fail_the_checksum(registry):
    spec = tiny_spec()
    registry.publish("demand", spec, tiny_tensors(spec))
    weights = registry.root / "demand" / "1" / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"sha256 .* differs from the manifest"):
        registry.load("demand")


def test_weights_must_match_the_spec(registry):
    spec = tiny_spec()
    tensors = tiny_tensors(spec)
    tensors["layers.0.w_ih"] = tensors["layers.0.w_ih"][:, :8]
    with pytest.raises(ArtifactError, match=r"'layers.0.w_ih' has shape \(2, 8\)"):
        registry.publish("demand", spec, tensors)
    del tensors["layers.0.w_ih"]
    with pytest.raises(ArtifactError, match=r"missing \['layers.0.w_ih'\]"):
        registry.publish("demand", spec, tensors)
    assert registry.versions("demand") == []


def test_a_manifest_from_elsewhere_is_refused(registry):
    spec = tiny_spec()
    registry.publish("demand", spec, tiny_tensors(spec))
    manifest = registry.root / "demand" / "1" / "model.json"
    data = json.loads(manifest.read_text())
    data["format_version"] = 99
    manifest.write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="unsupported format_version 99"):
        registry.load("demand")


def test_deleting_a_version_drops_its_aliases(registry):
    spec = tiny_spec()
    for seed in range(2):
        registry.publish("demand", spec, tiny_tensors(spec, seed))
    registry.set_alias("demand", "production", "2")
    assert registry.delete_version("demand", "2") == ["latest", "production"]
    assert registry.versions("demand") == ["1"] and registry.aliases("demand") == {}
    assert registry.resolve("demand") == ("demand", "1")
    with pytest.raises(ModelNotFound, match="has no version '2'"):
        registry.delete_version("demand", "2")
