"""Structured logs: one JSON object per line through the standard logging module.

Fields: time, level, event, and whichever of task_id, idempotency_key, attempt, error_class, error,
latency_ms the event carries. Quiet (WARNING) by default so benchmarks do not measure logging.
"""
import json
import logging

LOGGER_NAME = "tq"
logger = logging.getLogger(LOGGER_NAME)
logger.addHandler(logging.NullHandler())


class JsonLineFormatter(logging.Formatter):
    def format(self, record):
        entry = {"time": round(record.created, 6), "level": record.levelname,
                 "event": record.getMessage()}
        fields = getattr(record, "fields", None)
        if fields:
            entry.update(fields)
        if record.exc_info and record.exc_info[0] is not None:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(level="WARNING", path=""):
    """Send the engine's logs to stderr (or `path`) as JSON lines at `level`; idempotent."""
    for handler in list(logger.handlers):
        if getattr(handler, "_tq", False):
            logger.removeHandler(handler)
            handler.close()
    handler = logging.FileHandler(path) if path else logging.StreamHandler()
    handler._tq = True
    handler.setFormatter(JsonLineFormatter())
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False


def event(level, name, **fields):
    """Log one event with its fields; cheap when the level is disabled."""
    if logger.isEnabledFor(level):
        logger.log(level, name, extra={"fields": fields})

