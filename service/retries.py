"""The one retry policy of compare-and-set writes on a stream (forecast calls, admin
seeding and re-warming): re-read and re-apply up to :data:`ATTEMPTS` times; when every
attempt lost to a concurrent writer the answer is ``503 contention`` with ``Retry-After``
(the stream is busy, the request was fine: the client retries later).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from statecast.service.errors import Contention

#: Attempts of one write before giving up: concurrent writers of one stream each win within
#: a few; only a stream hammered far beyond that answers 503.
ATTEMPTS = 64

T = TypeVar("T")


def contention(what: str) -> Contention:
    """The error of a write whose every attempt lost (``what``: the stream, for the
    message)."""
    return Contention(f"{what} kept changing under {ATTEMPTS} attempts; retry the call")


def until_written(attempt: Callable[[], T | None], what: str) -> T:
    """Run ``attempt`` (read, compute, compare-and-set) until it returns a result; it
    returns None when its compare-and-set lost. Raises :class:`Contention` when all
    :data:`ATTEMPTS` lost."""
    for _ in range(ATTEMPTS):
        result = attempt()
        if result is not None:
            return result
    raise contention(what)
