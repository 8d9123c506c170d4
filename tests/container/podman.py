"""Podman as the container tests drive it: the repository's image built and run for real,
with local stand-ins for the public base images where no image registry is reachable.

Podman runs here without systemd: ``containers.conf`` beside this file (runc, cgroupfs,
events to a file, no default ulimits). Health checks are run on demand with ``podman
healthcheck run`` (their timers need systemd). ``make test`` installs podman, runc and
debootstrap from Debian's packages, and podman-compose from PyPI (the dev extra).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.error import HTTPError
from urllib.request import Request, urlopen

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
BASE_IMAGE = "docker.io/library/python:3.11-slim"  # the Dockerfile's default base
REDIS_IMAGE = "docker.io/library/redis:7"  # the compose file's Redis
IMAGE = "localhost/statecast:latest"  # the compose file's `image: statecast:latest`
DEBIAN_MIRROR = os.environ.get("STATECAST_TEST_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# The stand-in's venv: `python` and `pip` on PATH, as in the official image.
STAND_IN_PYTHON = "/opt/python"
STAND_IN_PATH = (f"{STAND_IN_PYTHON}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:"
                 "/sbin:/bin")


def environment() -> dict[str, str]:
    """The environment podman and podman-compose run in: this folder's containers.conf, and
    builds in Docker's image format (the OCI format drops HEALTHCHECK)."""
    return {**os.environ, "CONTAINERS_CONF": str(HERE / "containers.conf"),
            "BUILDAH_FORMAT": "docker"}


def podman(*args: str, check: bool = True, timeout: float = 900,
           input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``podman args``; raise with its output when it fails and ``check`` is set."""
    result = subprocess.run(["podman", *args], capture_output=True, text=True,
                            env=environment(), timeout=timeout, input=input)
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def compose(project: str, *args: str, check: bool = True,
            extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``podman-compose -p project args`` on the repository's compose file."""
    binary = Path(sys.executable).with_name("podman-compose")
    command = [str(binary) if binary.exists() else "podman-compose", "-p", project,
               "-f", str(ROOT / "docker-compose.yml"), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900,
                            env={**environment(), **(extra_env or {})}, cwd=ROOT)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed ({result.returncode}):\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def has_image(name: str) -> bool:
    return podman("image", "exists", name, check=False).returncode == 0


def pulled(name: str) -> bool:
    """Whether ``name`` is here or could be pulled (fails at once without a registry)."""
    return has_image(name) or podman("pull", "-q", name, check=False,
                                     timeout=300).returncode == 0


def _as_root(command: Sequence[str]) -> list[str]:
    return list(command) if os.geteuid() == 0 else ["sudo", "-n", *command]


def make_python_stand_in() -> None:
    """Tag a local ``python:3.11-slim``: Debian bookworm from debootstrap (its Python is
    3.11) with a venv whose ``python`` and ``pip`` come first on PATH."""
    with tempfile.TemporaryDirectory(prefix="statecast-base-") as folder:
        rootfs = Path(folder) / "rootfs"
        subprocess.run(_as_root(["debootstrap", "--variant=minbase",
                                 "--include=python3,python3-venv,ca-certificates",
                                 "bookworm", str(rootfs), DEBIAN_MIRROR]),
                       check=True, capture_output=True, timeout=900)
        subprocess.run(_as_root(["chroot", str(rootfs), "python3", "-m", "venv",
                                 STAND_IN_PYTHON]), check=True, timeout=300)
        subprocess.run(_as_root(["sh", "-c", "rm -rf var/cache/apt/archives/*.deb "
                                 "var/lib/apt/lists/* usr/share/doc/* usr/share/man/*"]),
                       cwd=rootfs, check=True)
        archive = Path(folder) / "rootfs.tar"
        subprocess.run(_as_root(["tar", "-C", str(rootfs), "-cf", str(archive), "."]),
                       check=True, timeout=300)
        podman("import", "--change", f"ENV PATH={STAND_IN_PATH}",
               "--change", "ENV LANG=C.UTF-8", "--change", 'CMD ["python3"]',
               str(archive), BASE_IMAGE)
        subprocess.run(_as_root(["rm", "-rf", str(rootfs)]), check=True)


def make_redis_stand_in() -> None:
    """Tag a local ``redis:7``: Debian's redis-server on the local Python base."""
    podman("build", "--format", "docker", "--pull=never", "-t", REDIS_IMAGE,
           "-f", str(HERE / "redis.Containerfile"), str(HERE))


def ensure_base_images() -> None:
    """The Dockerfile's and the compose file's public images: present, pulled or made
    here."""
    for name, make in ((BASE_IMAGE, make_python_stand_in), (REDIS_IMAGE, make_redis_stand_in)):
        if not pulled(name):
            make()


def ca_bundle() -> Path | None:
    """The CA bundle this machine trusts (the one pip is told to use, else the system's):
    passed to the build as the ``ca-bundle`` secret, since a proxy may re-sign TLS with a
    CA that only this machine knows."""
    for variable in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        value = os.environ.get(variable)
        if value and Path(value).is_file():
            return Path(value)
    system = Path("/etc/ssl/certs/ca-certificates.crt")
    return system if system.is_file() else None


def build_image(tag: str = IMAGE) -> float:
    """Build the repository's Dockerfile as a user would (default base, Docker format, no
    pulls); return the seconds it took."""
    started = time.perf_counter()
    secret = ca_bundle()
    podman("build", "--format", "docker", "--pull=never", "-t", tag,
           *(["--secret", f"id=ca-bundle,src={secret}"] if secret else []), str(ROOT),
           timeout=1800)
    return time.perf_counter() - started


def inspect(kind: str, name: str) -> dict:
    return json.loads(podman(kind, "inspect", name).stdout)[0]


def wait_healthy(container: str, since: float, timeout: float = 60) -> float:
    """Run the image's health check until it passes; the seconds from ``since`` (a
    ``time.monotonic()`` taken before the container was started). Fails with the
    container's logs if it stops or is not healthy within ``timeout`` seconds."""
    while True:
        if podman("healthcheck", "run", container, check=False).returncode == 0:
            return time.monotonic() - since
        state = inspect("container", container)["State"]
        if not state["Running"] or time.monotonic() - since > timeout:
            logs = podman("logs", container, check=False)
            raise AssertionError(f"{container} not healthy ({state['Status']}):\n"
                                 f"{logs.stdout[-3000:]}\n{logs.stderr[-3000:]}")
        time.sleep(0.25)


def call(port: int, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    """A JSON call to a published statecast port: its status and its JSON answer (an error's
    too)."""
    request = Request(f"http://127.0.0.1:{port}{path}", method=method,
                      data=None if body is None else json.dumps(body).encode(),
                      headers={"Content-Type": "application/json"})
    try:
        with urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except HTTPError as error:
        return error.code, json.loads(error.read())


def files(container: str, folder: str) -> set[str]:
    """The files under ``folder`` in a running container, as paths relative to it."""
    listing = podman("exec", container, "sh", "-c", f"cd {folder} && find . -type f")
    return set(listing.stdout.split())


def remove(*containers: str) -> None:
    for container in containers:
        podman("rm", "-f", "-t", "2", container, check=False)


def has_podman() -> bool:
    return shutil.which("podman") is not None
