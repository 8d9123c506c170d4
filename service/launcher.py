"""The ``statecast`` command's entry point: it readies the kernel cache, then runs the
command line (:mod:`statecast.service.cli`).

The cache directory must be settled before Numba is imported, and the command line imports
the models and their kernels, so this happens first, here: where ``NUMBA_CACHE_DIR`` cannot
be written (an image with a read-only root filesystem), a writable copy takes its place
(:func:`~statecast.service.kernel_cache.writable_kernel_cache`), for this process and for
the server it starts.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from statecast.service.kernel_cache import writable_kernel_cache


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``statecast`` with ``argv`` (default: the process's arguments)."""
    cache = os.environ.get("NUMBA_CACHE_DIR")
    if cache:
        try:
            os.environ["NUMBA_CACHE_DIR"] = str(writable_kernel_cache(Path(cache)))
        except OSError as error:
            print(f"statecast: error: {error}", file=sys.stderr)
            return 2
    from statecast.service.cli import main as command_line

    return command_line(argv)


if __name__ == "__main__":
    sys.exit(main())
