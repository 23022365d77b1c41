"""tqengine: a bounded, idempotent, retrying, observable thread-pool task queue with durable state.

Public API: Config (every knob), WorkerPool (the engine; alias Engine), TaskQueue (the bounded queue),
Processor (one task), Metrics (counters, latency, depth, JSON), TaskResult and TaskHandle.
"""
from .config import Config, load_config
from .errors import (ConfigError, ObjectNotFound, PermanentError, TaskError, TransientError,
                     ValidationError)
from .metrics import Metrics, percentile
from .pool import Engine, TaskHandle, TaskResult, WorkerPool
from .processor import Processor
from .queue import TaskQueue

__all__ = ["Config", "load_config", "WorkerPool", "Engine", "TaskHandle", "TaskResult", "TaskQueue",
           "Processor", "Metrics", "percentile", "ConfigError", "TaskError", "TransientError",
           "PermanentError", "ValidationError", "ObjectNotFound"]
