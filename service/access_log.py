"""Structured access logs: one JSON line per request on the ``statecast.access`` logger.

Fields: ``ts`` (Unix seconds), ``method``, ``route`` (the URL rule, e.g.
``/v1/models/<model>/streams/<stream>/forecast``), ``path``, ``status``, ``latency_ms``,
``model``, ``version`` (the versions that answered, comma-separated), ``streams`` (how many
streams the call named). Fields a request does not have are left out.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

LOGGER = "statecast.access"


def access_logger() -> logging.Logger:
    """The access logger, writing bare JSON lines to standard output (once per process)."""
    logger = logging.getLogger(LOGGER)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


def access_line(method: str, route: str, path: str, status: int, latency: float,
                annotations: dict[str, Any]) -> str:
    """One access log line (JSON, no newline)."""
    entry: dict[str, Any] = {"ts": round(time.time(), 3), "method": method, "route": route,
                             "path": path, "status": status,
                             "latency_ms": round(latency * 1000, 3)}
    entry.update(annotations)
    return json.dumps(entry, separators=(",", ":"))
