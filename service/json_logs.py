"""Server logs as JSON lines on standard output, the form log collectors (Docker, Kubernetes,
journald) take one event per line from: ``ts`` (Unix seconds), ``level``, ``logger``,
``pid``, ``message`` and, for an error with a traceback, ``exception``.

gunicorn's own messages (``gunicorn.error``), statecast's (``statecast``), Python warnings
and anything else logged through the root logger take this form in a server; the access log
(:mod:`statecast.service.access_log`) writes its own JSON lines to the same stream.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson


class JsonLineFormatter(logging.Formatter):
    """One log record as one JSON object on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {"ts": round(record.created, 3),
                                 "level": record.levelname.lower(), "logger": record.name,
                                 "pid": record.process, "message": record.getMessage()}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(entry, default=str).decode()


def json_log_config(level: int) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` sending every logger at ``level`` and above to
    standard output as JSON lines (applied by the server's gunicorn logger class)."""
    handler = {"class": "logging.StreamHandler", "formatter": "json",
               "stream": "ext://sys.stdout"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonLineFormatter}},
        "handlers": {"stdout": handler},
        "root": {"level": level, "handlers": ["stdout"]},
        "loggers": {
            "gunicorn.error": {"level": level, "handlers": ["stdout"], "propagate": False},
        },
    }


def log_line(message: str, level: str = "info", logger: str = "statecast") -> str:
    """One JSON log line, for a process that has not configured logging (the ``statecast
    serve`` command before it becomes gunicorn)."""
    record = logging.makeLogRecord({"name": logger, "levelname": level.upper(),
                                    "msg": message})
    return JsonLineFormatter().format(record)
