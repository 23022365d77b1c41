"""Structured logs: one JSON object per line through the standard logging module.

Fields: time, level, event, and whichever of task_id, idempotency_key, attempt, error_class, error,
latency_ms the event carries. Quiet (WARNING) by default so benchmarks do not measure logging.
"""
from __future__ import annotations

import json
import logging
from typing import Any

from .errors import ConfigError

LOGGER_NAME = "tq"
logger = logging.getLogger(LOGGER_NAME)
logger.addHandler(logging.NullHandler())
_INSTALLED: list[logging.Handler] = []     # the handlers configure() added (and the next call removes)


class JsonLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {"time": round(record.created, 6), "level": record.levelname,
                 "event": record.getMessage()}
        fields = getattr(record, "fields", None)
        if fields:
            entry.update(fields)
        if record.exc_info and record.exc_info[0] is not None:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(level: str = "WARNING", path: str = "") -> None:
    """Send the engine's logs to stderr (or `path`, appended to) as JSON lines at `level`; idempotent.
    ConfigError naming the cause when `path` cannot be opened (a folder, a missing or read-only folder)."""
    try:
        handler: logging.Handler = logging.FileHandler(path) if path else logging.StreamHandler()
    except OSError as exc:
        raise ConfigError(f"cannot open log file {path}: {exc.strerror or exc}") from None
    while _INSTALLED:
        old = _INSTALLED.pop()
        logger.removeHandler(old)
        old.close()
    _INSTALLED.append(handler)
    handler.setFormatter(JsonLineFormatter())
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False


def event(level: int, name: str, **fields: Any) -> None:
    """Log one event with its fields; cheap when the level is disabled."""
    if logger.isEnabledFor(level):
        logger.log(level, name, extra={"fields": fields})

