"""The error classes the engine uses to decide between retrying a task and giving up on it."""


class TaskError(Exception):
    """Base of every error the engine raises about one task."""


class TransientError(TaskError):
    """A failure that may pass if the same attempt is made again later (retried with backoff)."""


class PermanentError(TaskError):
    """A failure that will happen again on every attempt (never retried; the task is dead-lettered)."""


class ValidationError(PermanentError):
    """The task itself is malformed: missing fields, wrong types, a key escaping the store, a bad variant."""


class ObjectNotFound(PermanentError):
    """The task's source object does not exist in the object store."""


class UnsafeObject(ValidationError):
    """The object is reached through a symbolic link, has other hard links, or changed while it was opened:
    refused, because it could name a file outside the store."""


class SourceTooLarge(PermanentError):
    """The source object is larger than the configured limit (max_source_bytes)."""


class InjectedTransient(TransientError):
    """A transient fault injected by the fault model (stands in for a timeout or a dropped connection)."""


class InjectedPermanent(PermanentError):
    """A permanent fault injected by the fault model (stands in for a corrupt source object)."""


class StoreConnectionError(TransientError):
    """The object server could not be reached, or the connection broke (also in mid-stream)."""


class StoreTimeout(TransientError):
    """The object server did not connect or answer within the timeout."""


class StoreServerError(TransientError):
    """The object server answered 5xx (or 408/429): worth another attempt later."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status


class StoreClientError(PermanentError):
    """The object server refused the request with a 4xx other than 400/404."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status


class ConfigError(ValueError):
    """A configuration value is invalid; the command line turns it into exit code 2."""
