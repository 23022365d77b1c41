"""tqengine: a bounded, idempotent, retrying, observable thread-pool task queue with durable state.

Public API: Config (every knob) and load_config, WorkerPool (the engine; alias Engine), TaskQueue (the
bounded queue), Processor (one attempt of one task), Metrics (counters, latency, depth, JSON), TaskResult
and TaskHandle, and the error classes. docs/ARCHITECTURE.md shows how the modules fit.
"""
from .config import Config, load_config
from .errors import ConfigError, ObjectNotFound, PermanentError, TaskError, TransientError, ValidationError
from .flight import TaskHandle
from .metrics import Metrics, percentile
from .pool import Engine, WorkerPool
from .processor import Processor
from .queue import TaskQueue
from .records import TaskResult

__all__ = ["Config", "load_config", "WorkerPool", "Engine", "TaskHandle", "TaskResult", "TaskQueue",
           "Processor", "Metrics", "percentile", "ConfigError", "TaskError", "TransientError",
           "PermanentError", "ValidationError", "ObjectNotFound"]
