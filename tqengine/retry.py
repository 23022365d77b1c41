"""Which failures are worth another attempt, and how long to wait before it.

Rule for exceptions the engine does not know: they are treated as transient. A task that keeps
raising them is still bounded by max_attempts and then dead-lettered, and the output is written
atomically and idempotently, so a needless retry costs time, never correctness; giving up at once on
an unknown error would lose work that a retry would have saved. Errors that are plainly about the task
itself (ValueError, TypeError, KeyError, UnicodeError, and the OSErrors that say a file is missing or
forbidden, or a name too long) are permanent. Errors that are the machine's, not the task's (a full disk or quota, a
read-only file system, no file descriptors left) are "resource": the engine stops and leaves
the task queued, without counting the attempt.
"""
from __future__ import annotations

import errno
import heapq
import itertools
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from .errors import PermanentError, ResourceError, TransientError
from .tasks import type_name

TRANSIENT = "transient"
PERMANENT = "permanent"
RESOURCE = "resource"       # the machine's fault (disk full, read-only, no descriptors): stop, do not count
RESOURCE_CAUSES = {errno.ENOSPC: "object store disk full", errno.EDQUOT: "object store quota exceeded",
                   errno.EROFS: "object store is read-only", errno.EMFILE: "no file descriptors left",
                   errno.ENFILE: "no file descriptors left"}    # errno -> the cause the engine reports

_PERMANENT_OS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)
# errnos of a plain OSError that say the same about every attempt: a name past the file system's limit (a
# key's last component of 246+ bytes has no room for its output's `@WxH`) was retried max_attempts times
_PERMANENT_ERRNOS = {errno.ENAMETOOLONG}
_PERMANENT_BUILTIN = (ValueError, TypeError, KeyError, UnicodeError, LookupError)


def resource_cause(exc: BaseException) -> str:
    """What ran out, for an exception classify() calls "resource"."""
    code = getattr(exc, "errno", None)
    return RESOURCE_CAUSES.get(code, "resource exhausted") if isinstance(code, int) else "resource exhausted"


def classify(exc: BaseException) -> str:
    """Return "transient", "permanent" or "resource" for an exception raised by one attempt."""
    if isinstance(exc, ResourceError) or (isinstance(exc, OSError) and exc.errno in RESOURCE_CAUSES):
        return RESOURCE
    if isinstance(exc, PermanentError):
        return PERMANENT
    if isinstance(exc, TransientError):
        return TRANSIENT
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return TRANSIENT
    if isinstance(exc, _PERMANENT_OS) or isinstance(exc, _PERMANENT_BUILTIN):
        return PERMANENT
    if isinstance(exc, OSError) and exc.errno in _PERMANENT_ERRNOS:
        return PERMANENT
    return TRANSIENT


def describe(exc: BaseException) -> tuple[str, str]:
    """(class name, message of at most 2000 characters) of an attempt's exception; never raises: a class whose
    __str__ raises (a missing attribute, say) killed the worker thread that asked, and its task never ended."""
    name = type_name(exc)
    try:
        message = str.__str__(str(exc))[:2000]
    except Exception as inner:
        message = f"(its message cannot be shown: str() raised {type(inner).__name__})"
    return name, message


def backoff_delay(attempt: int, base_s: float, cap_s: float, rng: random.Random | Any = random) -> float:
    """Full-jitter exponential backoff after failed attempt `attempt` (1-based): U(0, min(cap, base*2**(n-1)))."""
    return rng.uniform(0.0, min(cap_s, base_s * (2 ** (attempt - 1))))


class BackoffScheduler:
    """Holds tasks waiting out their backoff without holding a worker thread.

    One thread sleeps on a Condition until the earliest due time, then hands due tasks to
    `release(item)` (which puts them back on the queue). `stop()` ends it; items still waiting are
    left to the durable store, which resumes them at the next start.
    """

    def __init__(self, release: Callable[[Any], object], name: str = "tq-backoff") -> None:
        self._release = release
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Any]] = []
        self._seq = itertools.count()
        self._stopped = False
        self._hurry = False         # release_all(): every item is due now
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def schedule(self, delay_s: float, item: Any) -> None:
        with self._cond:
            heapq.heappush(self._heap, (time.perf_counter() + max(0.0, delay_s), next(self._seq), item))
            self._cond.notify()

    def pending(self) -> int:
        with self._cond:
            return len(self._heap)

    def release_all(self) -> None:
        """Hand every waiting item, and any scheduled later, to `release` now instead of at its due time (the
        engine is stopping, and its release answers them); the releases run in the scheduler's own thread,
        so this never blocks."""
        with self._cond:
            self._hurry = True
            self._cond.notify()

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    if self._heap:
                        wait = self._heap[0][0] - time.perf_counter()
                        if wait <= 0 or self._hurry:
                            break
                        self._cond.wait(wait)
                    else:
                        self._cond.wait()
                if self._stopped:
                    return
                _due, _seq, item = heapq.heappop(self._heap)
            self._release(item)
