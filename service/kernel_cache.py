"""Where Numba keeps the compiled kernels (``NUMBA_CACHE_DIR``), chosen before Numba is
imported.

Numba refuses to cache at all, even to read a valid cache, when it cannot write to the
cache directory ("cannot cache function ...: no locator available"). A container with a
read-only root filesystem has its kernels compiled into the image, in a directory it cannot
write: :func:`writable_kernel_cache` then serves a copy of it from the temporary directory
(a tmpfs in such containers), where a kernel missing from the cache (another CPU, another
Numba) can also be compiled and kept for the other workers.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import stat
import tempfile
from pathlib import Path


def kernel_cache_dir(base: Path) -> Path:
    """``base/<hash of the kernels' source>``: Numba checks a cached kernel against its own
    file only, not the kernels it calls, so an upgrade that changes any kernel file must
    not reuse the old cache."""
    spec = importlib.util.find_spec("statecast.kernels")  # located, not imported: no Numba
    assert spec is not None and spec.origin is not None
    digest = hashlib.sha256()
    for path in sorted(Path(spec.origin).parent.glob("*.py")):
        digest.update(path.read_bytes())
    return base / digest.hexdigest()[:12]


def is_writable(folder: Path) -> bool:
    """Whether files can be created in ``folder`` (made if missing), tested as Numba tests
    it: by creating one."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError:
        return False
    return True


def writable_kernel_cache(cache: Path) -> Path:
    """``cache`` if it is writable; otherwise a writable copy of it under the temporary
    directory (``TMPDIR``, else ``/tmp``), made once and then reused, with the kernels
    compiled into it since. Raises ``OSError`` when neither can be written."""
    if is_writable(cache):
        return cache
    try:
        digest = hashlib.sha256(str(cache.absolute()).encode()).hexdigest()[:12]
        copy = Path(tempfile.gettempdir()) / f"statecast-kernels-{os.getuid()}-{digest}"
        if not _own_copy(copy):
            _publish_copy(cache, copy)
        if _own_copy(copy) and is_writable(copy):
            return copy
    except OSError:
        pass
    raise OSError(f"the kernel cache {cache} is not writable and no private copy of it "
                  "could be made: mount a writable temporary directory (a tmpfs on /tmp)")


def _own_copy(copy: Path) -> bool:
    """Whether ``copy`` is a finished copy this user alone can change: a real folder (no
    link) of this user's, writable by no one else, marked done. Numba's cache files are
    pickles: a folder someone else could have made or written must not be loaded."""
    try:
        status = copy.lstat()
    except FileNotFoundError:
        return False
    return (stat.S_ISDIR(status.st_mode) and status.st_uid == os.getuid()
            and not status.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
            and (copy / _DONE).is_file())


def _publish_copy(cache: Path, copy: Path) -> None:
    """Copy ``cache`` into a private staging folder and rename it to ``copy`` in one step,
    so that no process ever loads a half-written copy; another process that published
    first wins (its copy is as good)."""
    staging = Path(tempfile.mkdtemp(prefix=f"{copy.name}.", dir=copy.parent))  # mode 0700
    try:
        if cache.is_dir():
            shutil.copytree(cache, staging, dirs_exist_ok=True)
        for folder in (path for path in staging.rglob("*") if path.is_dir()):
            folder.chmod(folder.stat().st_mode | stat.S_IRWXU)  # kernels are added here
        staging.chmod(0o700)
        (staging / _DONE).touch()
        try:
            staging.rename(copy)
        except OSError:  # published by another process meanwhile, or a stranger's folder
            if not _own_copy(copy):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


_DONE = ".statecast-copy-done"
