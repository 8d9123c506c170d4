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
    directory (``TMPDIR``, else ``/tmp``), made once per cache and per user. Raises
    ``OSError`` when neither can be written."""
    if is_writable(cache):
        return cache
    digest = hashlib.sha256(str(cache.absolute()).encode()).hexdigest()[:12]
    copy = Path(tempfile.gettempdir()) / f"statecast-kernels-{os.getuid()}-{digest}"
    try:
        if cache.is_dir():
            shutil.copytree(cache, copy, dirs_exist_ok=True)
        copied = is_writable(copy)
    except OSError:
        copied = False
    if not copied:
        raise OSError(f"neither the kernel cache {cache} nor its copy {copy} is writable: "
                      "mount a writable temporary directory (a tmpfs on /tmp)")
    return copy
