"""The container files, read: the Dockerfile passes hadolint, the compose file the Compose
specification's schema. ``tests/container`` builds and runs them with podman."""

import shutil
import subprocess
import sys
from pathlib import Path

from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    found = BIN / name
    return str(found) if found.exists() else shutil.which(name) or name


def test_the_dockerfile_passes_hadolint():
    result = subprocess.run([tool("hadolint"), str(ROOT / "Dockerfile")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dockerfile_installs_with_the_script_ci_runs_and_drops_root():
    text = (ROOT / "Dockerfile").read_text()
    assert "sh service/deploy/install.sh redis" in text
    assert "USER 10001" in text and "HEALTHCHECK" in text and "libgomp1" in text
    assert "install.sh" in (ROOT / "Makefile").read_text()


def test_the_dockerfile_builds_on_any_network():
    text = (ROOT / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE=python:3.11-slim" in text and "FROM ${BASE_IMAGE}" in text
    assert text.count("--mount=type=secret,id=ca-bundle,required=false") == 3
    assert "ca-bundle" not in text.split("FROM runtime\n", 1)[1]  # not in the last stage
    assert (ROOT / ".dockerignore").read_text().startswith("# Only what the image copies")


def test_the_compose_file_is_valid_and_wires_health_and_persistence():
    result = subprocess.run([tool("check-jsonschema"), "--builtin-schema",
                             "vendor.compose-spec", str(ROOT / "docker-compose.yml")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    compose = YAML(typ="safe").load((ROOT / "docker-compose.yml").read_text())
    redis, statecast = compose["services"]["redis"], compose["services"]["statecast"]
    assert "--appendonly" in redis["command"] and "healthcheck" in redis
    for replica in (statecast, compose["services"]["statecast-2"]):
        assert replica["environment"]["STATECAST_STORE"] == "redis://redis:6379/0"
        assert replica["depends_on"]["redis"]["condition"] == "service_healthy"
        assert "healthcheck" in replica and "registry:/data/registry" in replica["volumes"]
        assert replica["read_only"] is True and replica["tmpfs"] == ["/tmp"]
        assert replica["stop_grace_period"] == "15s"
