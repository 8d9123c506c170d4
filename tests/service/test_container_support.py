"""What the image relies on to run as production wants it: a kernel cache usable from a
read-only folder, JSON log lines, and servers seeding one shared registry at once."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from statecast.models import Registry
from statecast.service.bundled import BUNDLED_MODEL, seed_registry
from statecast.service.deploy.dependencies import requirements
from statecast.service.json_logs import JsonLineFormatter, json_log_config, log_line
from statecast.service.kernel_cache import is_writable, writable_kernel_cache


def test_a_writable_cache_is_used_as_it_is(tmp_path):
    cache = tmp_path / "cache"
    assert writable_kernel_cache(cache) == cache and cache.is_dir()


def read_only_cache(tmp_path: Path) -> Path:
    """A cache folder this process cannot write, made read-only by a bind mount where the
    tests run as root (root ignores file modes), else by its mode."""
    cache = tmp_path / "baked"
    (cache / "kernels_x").mkdir(parents=True)
    (cache / "kernels_x" / "a.nbi").write_bytes(b"index")
    os.utime(cache / "kernels_x" / "a.nbi", (1_000_000, 1_000_000))
    if os.geteuid() != 0:
        for folder in (cache / "kernels_x", cache):
            folder.chmod(0o555)
        return cache
    mounted = subprocess.run(["mount", "--bind", str(cache), str(cache)], capture_output=True)
    if mounted.returncode == 0:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(cache)], capture_output=True)
        if not is_writable(cache):
            return cache
        subprocess.run(["umount", str(cache)], capture_output=True)
    pytest.skip("root without the right to mount: no folder can be made read-only for it")


@pytest.fixture()
def baked(tmp_path):
    cache = read_only_cache(tmp_path)
    yield cache
    if os.geteuid() == 0:
        subprocess.run(["umount", str(cache)], check=False)
    else:
        for folder in (cache, cache / "kernels_x"):
            folder.chmod(0o755)


@pytest.fixture()
def temporary(tmp_path, monkeypatch):
    """A temporary directory of this test's own, as ``tempfile.gettempdir()``."""
    import tempfile

    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def test_a_read_only_cache_is_served_from_a_private_copy_made_once(baked, temporary):
    assert not is_writable(baked)
    copy = writable_kernel_cache(baked)
    assert copy.parent == temporary and is_writable(copy)
    assert copy.stat().st_mode & 0o777 == 0o700
    index = copy / "kernels_x" / "a.nbi"
    assert index.read_bytes() == b"index" and index.stat().st_mtime == 1_000_000
    (copy / "kernels_x" / "b.nbc").write_bytes(b"compiled since")  # a kernel added
    assert writable_kernel_cache(baked) == copy  # the same copy, not copied again
    assert (copy / "kernels_x" / "b.nbc").exists()
    assert [p.name for p in temporary.iterdir()] == [copy.name]  # no staging left


def test_a_copy_others_could_have_written_is_never_used(baked, temporary):
    digest_name = writable_kernel_cache(baked).name
    planted = temporary / digest_name
    shutil.rmtree(planted)
    (planted / "kernels_x").mkdir(parents=True)
    (planted / "kernels_x" / "a.nbi").write_bytes(b"a stranger's pickle")
    planted.chmod(0o777)
    with pytest.raises(OSError, match="no private copy"):
        writable_kernel_cache(baked)
    assert (planted / "kernels_x" / "a.nbi").read_bytes() == b"a stranger's pickle"


def test_no_writable_place_is_a_clear_error(baked, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(baked))  # the temporary folder too
    with pytest.raises(OSError, match="mount a writable temporary directory"):
        writable_kernel_cache(baked)


def test_log_records_are_json_lines():
    formatter = JsonLineFormatter()
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("statecast", logging.ERROR, __file__, 1, "failed %s", ("x",),
                                   sys.exc_info())
    entry = json.loads(formatter.format(record))
    assert entry["level"] == "error" and entry["logger"] == "statecast"
    assert entry["message"] == "failed x" and "ValueError: boom" in entry["exception"]
    assert "\n" not in formatter.format(record)
    assert json.loads(log_line("serving"))["message"] == "serving"
    config = json_log_config(logging.INFO)
    assert config["handlers"]["stdout"]["stream"] == "ext://sys.stdout"
    assert config["loggers"]["gunicorn.error"]["handlers"] == ["stdout"]


def test_servers_seeding_one_registry_at_once_publish_one_whole_version(tmp_path):
    errors: list[BaseException] = []

    def seed() -> None:
        try:
            seed_registry(Registry(tmp_path))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=seed) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    registry = Registry(tmp_path)
    assert registry.versions(BUNDLED_MODEL) == ["1"]
    assert not [p for p in (tmp_path / BUNDLED_MODEL).iterdir() if p.name.startswith(".seed")]
    registry.load(BUNDLED_MODEL)


def test_the_image_installs_the_dependencies_the_project_declares():
    root = Path(__file__).resolve().parents[2]
    wanted = requirements(str(root / "pyproject.toml"), ["redis"])
    assert wanted[0].startswith("numpy") and "redis>=5.0" in wanted
    assert not any(name.startswith("torch") for name in wanted)
    assert len(wanted) == len(set(wanted))


def test_gunicorn_logs_json_lines_to_stdout_without_its_access_log():
    code = """
import logging
from gunicorn.config import Config
import statecast.service.gunicorn_conf as conf
cfg = Config()
for name in ("accesslog", "errorlog", "loglevel", "logger_class"):
    cfg.set(name, getattr(conf, name))
log = cfg.logger_class(cfg)
log.info("booting %s", "worker")
logging.getLogger("statecast").warning("from the app")
print(log.access_log_enabled)
"""
    environment = {**os.environ, "STATECAST_LOG_LEVEL": "nonsense"}  # gunicorn's INFO
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, env=environment)
    *lines, enabled = result.stdout.splitlines()
    records = [json.loads(line) for line in lines]
    assert [(r["logger"], r["level"], r["message"]) for r in records] == [
        ("gunicorn.error", "info", "booting worker"), ("statecast", "warning", "from the app")]
    assert enabled == "False" and result.stderr == ""
