"""Where a Redis Cluster keeps a model version's accuracy. A script runs on the keys of one
hash slot, and a write's scores must land in the script of its stream's slot: so the cluster
keeps the totals and residuals of a version per slot, under keys whose hash tag is a short
string that hashes to that slot (``statecast-accuracy:{<tag>}<model>/<version>``), and the
tags a version has used in a set (``statecast-accuracy-slots:{<model>/<version>}``), where a
reader finds them. A tag is added to the set before the first score is written under it.

Each slot keeps the newest residual chunks of its writes, each stamped with its time, as
many as ``2 * RESIDUAL_WRITES / slots used`` (at least :data:`MIN_SLOT_RESIDUALS`): a
version's residuals are the newest :data:`RESIDUAL_WRITES` of them, read from the slots
written to most recently.
"""

from __future__ import annotations

import functools
import heapq
import math
import struct
import threading
import time
from binascii import crc_hqx
from collections.abc import Iterable, Sequence

from statecast.service.accuracy import RESIDUAL_WRITES

SLOTS = 16384
#: Residual chunks a slot keeps at least, however many slots a version uses.
MIN_SLOT_RESIDUALS = 4
#: Seconds after which a process adds a tag to a version's set again, in case the set was
#: lost (flushed, or a failover dropped it).
REREGISTER = 300.0
_STAMP = struct.Struct("<d")


@functools.cache
def slot_tags() -> tuple[str, ...]:
    """For each hash slot, a short hash tag (decimal digits) whose keys land in it."""
    tags: dict[int, str] = {}
    number = 0
    while len(tags) < SLOTS:
        tag = str(number)
        tags.setdefault(crc_hqx(tag.encode(), 0) % SLOTS, tag)
        number += 1
    return tuple(tags[slot] for slot in range(SLOTS))


def totals_key(model: str, version: str, tag: str) -> str:
    return f"statecast-accuracy:{{{tag}}}{model}/{version}"


def residuals_key(model: str, version: str, tag: str) -> str:
    return f"statecast-residuals:{{{tag}}}{model}/{version}"


def tags_key(model: str, version: str) -> str:
    """The set of the tags a version's scores were added under."""
    return f"statecast-accuracy-slots:{{{model}/{version}}}"


def kept_per_slot(slots_used: int) -> int:
    """Residual chunks each slot keeps when a version's scores use ``slots_used`` slots."""
    return max(MIN_SLOT_RESIDUALS, math.ceil(2 * RESIDUAL_WRITES / max(1, slots_used)))


def stamped(chunk: bytes, now: float) -> bytes:
    """A residual chunk stamped with its write's time."""
    return _STAMP.pack(now) + chunk


def newest_chunks(lists: Iterable[Sequence[bytes]]) -> list[bytes]:
    """The newest :data:`RESIDUAL_WRITES` stamped chunks of several slots' lists, oldest
    first, stamps removed."""
    every = [(_STAMP.unpack_from(entry)[0], entry) for entries in lists for entry in entries]
    newest = heapq.nlargest(RESIDUAL_WRITES, every, key=lambda item: item[0])
    return [entry[_STAMP.size:] for _, entry in reversed(newest)]


class TagIndex:
    """The tags this process knows to be in each version's set, and the set's size when it
    last looked (it sizes the slots' residual lists)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._added: dict[tuple[str, str], dict[str, float]] = {}
        self._sizes: dict[tuple[str, str], int] = {}

    def missing(self, model: str, version: str, tags: Iterable[str]) -> list[str]:
        """Of ``tags``, those to add to the version's set (never added, or long ago)."""
        now = time.monotonic()
        with self._lock:
            added = self._added.get((model, version), {})
            return sorted({tag for tag in tags
                           if tag not in added or now - added[tag] >= REREGISTER})

    def added(self, model: str, version: str, tags: Iterable[str], size: int) -> None:
        """``tags`` are in the version's set, which holds ``size`` tags."""
        now = time.monotonic()
        with self._lock:
            known = self._added.setdefault((model, version), {})
            for tag in tags:
                known[tag] = now
            self._sizes[(model, version)] = size

    def size(self, model: str, version: str) -> int:
        """Tags in the version's set when this process last added some (1: never)."""
        with self._lock:
            return self._sizes.get((model, version), 1)
