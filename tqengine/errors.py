"""Every error class of the engine: task errors (transient or permanent, which decides retrying), the object
stores' errors, resource errors (the machine's fault, not the task's), state-store errors and ConfigError."""
from __future__ import annotations


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


class AttemptTimeout(TransientError):
    """One attempt ran past attempt_timeout_s (checked while its source streams in and its output out)."""


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

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class StoreClientError(PermanentError):
    """The object server refused the request with a 4xx other than 400/404."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ConfigError(ValueError):
    """A configuration value is invalid; the command line turns it into exit code 2."""


class ResourceError(Exception):
    """The machine, not the task, is at fault: a full disk or quota, a read-only file system, no file
    descriptors left, an I/O error. Never a task's failure: the engine stops, leaving the work queued in the
    database, and a rerun once the cause is fixed finishes it. `cause` is a short phrase ("disk full")."""

    def __init__(self, message: str, cause: str = "resource exhausted") -> None:
        super().__init__(message)
        self.cause = cause


class StoreError(RuntimeError):
    """The state store (SQLite) could not do what was asked; `cause` names why in a few words."""

    def __init__(self, message: str, cause: str = "state store failure") -> None:
        super().__init__(message)
        self.cause = cause


class StoreResourceError(StoreError, ResourceError):
    """The state store's disk is full, read-only, or failing: stop, the work stays resumable."""


class StoreCorrupt(StoreError):
    """The database file is damaged (SQLite: malformed, not a database)."""


class StoreLocked(StoreError):
    """Another process held the database locked for longer than the engine waits (lock_wait_s)."""


class SchemaMismatch(ConfigError):
    """The database was not written by this version of the engine (another schema, or another program)."""


# -- bad source images (tqengine.transform): permanent, each with its own class in the dead-letter table --
class ImageError(PermanentError):
    """The source object is not an image the engine can make a variant of (base of the classes below)."""


class NotAnImage(ImageError):
    """The source is empty or is not a JPEG, PNG, WebP, GIF or BMP file (what Pillow cannot identify)."""


class ImageTruncated(ImageError):
    """The source image ends before its pixel data does."""


class ImageCorrupt(ImageError):
    """The source image's headers or pixel data cannot be decoded (damaged, or hostile: headers larger
    than the engine reads, more data than its pixels need)."""


class DecompressionBomb(ImageError):
    """The source has more pixels than `max_image_pixels` (or Pillow's own limit), or is a WebP larger
    than its decoder may read whole: decoding it would take unbounded memory."""


class UnsupportedImage(ImageError):
    """A real image the engine does not decode from a stream: TIFF and other random-access layouts."""


class UnsupportedImageMode(UnsupportedImage):
    """The source's pixel mode (16-bit grey, 32-bit integer or float, LAB, ...) has no 8-bit variant here."""


class ZeroSizedVariant(ImageError):
    """Fitting the source into WxH leaves a side of 0 pixels (e.g. a 10000x1 strip into 100x100)."""
