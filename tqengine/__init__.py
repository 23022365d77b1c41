"""tqengine: a bounded, idempotent, retrying, observable thread-pool task queue with durable state.

Public API: Config (every knob) and load_config, WorkerPool (the engine; alias Engine), TaskQueue (the
bounded queue), Processor (one attempt of one task), Metrics (counters, latency, depth, JSON), TaskResult
and TaskHandle, and the error classes. docs/ARCHITECTURE.md shows how the modules fit.

The names load on first use (PEP 562), so importing one submodule (`tqengine.config`, as the lab's
command-line parser does) does not load the pool, the processor and Pillow with it.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import Config, load_config
    from .errors import ConfigError, ObjectNotFound, PermanentError, TaskError, TransientError, ValidationError
    from .flight import TaskHandle
    from .metrics import Metrics, percentile
    from .pool import Engine, WorkerPool
    from .processor import Processor
    from .queue import TaskQueue
    from .records import TaskResult

_HOMES = {
    "Config": "config", "load_config": "config",
    "ConfigError": "errors", "ObjectNotFound": "errors", "PermanentError": "errors", "TaskError": "errors",
    "TransientError": "errors", "ValidationError": "errors",
    "TaskHandle": "flight", "Metrics": "metrics", "percentile": "metrics",
    "Engine": "pool", "WorkerPool": "pool", "Processor": "processor", "TaskQueue": "queue",
    "TaskResult": "records",
}

__all__ = ["Config", "load_config", "WorkerPool", "Engine", "TaskHandle", "TaskResult", "TaskQueue",
           "Processor", "Metrics", "percentile", "ConfigError", "TaskError", "TransientError",
           "PermanentError", "ValidationError", "ObjectNotFound"]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value         # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
