"""Which failures are worth another attempt, and how long to wait before it.

Rule for exceptions the engine does not know: they are treated as transient. A task that keeps
raising them is still bounded by max_attempts and then dead-lettered, and the output is written
atomically and idempotently, so a needless retry costs time, never correctness; giving up at once on
an unknown error would lose work that a retry would have saved. Errors that are plainly about the task
itself (ValueError, TypeError, KeyError, UnicodeError, and the OSErrors that say a file is missing or
forbidden) are permanent.
"""
import random

from .errors import PermanentError, TransientError

TRANSIENT = "transient"
PERMANENT = "permanent"

_PERMANENT_OS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)
_PERMANENT_BUILTIN = (ValueError, TypeError, KeyError, UnicodeError, LookupError)


def classify(exc):
    """Return "transient" or "permanent" for an exception raised by one attempt."""
    if isinstance(exc, PermanentError):
        return PERMANENT
    if isinstance(exc, TransientError):
        return TRANSIENT
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return TRANSIENT
    if isinstance(exc, _PERMANENT_OS) or isinstance(exc, _PERMANENT_BUILTIN):
        return PERMANENT
    return TRANSIENT


def backoff_delay(attempt, base_s, cap_s, rng=random):
    """Full-jitter exponential backoff after failed attempt `attempt` (1-based): U(0, min(cap, base*2**(n-1)))."""
    return rng.uniform(0.0, min(cap_s, base_s * (2 ** (attempt - 1))))
