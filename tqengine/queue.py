"""The bounded task queue and its backpressure policy.

A queue.Queue(maxsize=queue_size) sits between submitters and the worker threads. `offer` applies
the configured policy: `block` waits up to enqueue_timeout_s for room and then refuses, `fail_fast`
refuses at once. A refusal is returned to the caller, who records it; nothing is dropped here.
Retries and recovered tasks come back through `requeue`, which waits for room (they were accepted
earlier, so they are never refused) but gives up when the engine stops.
"""
from __future__ import annotations

import queue
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .metrics import Metrics

STOP = object()


class _MeasuredQueue(queue.Queue[Any]):
    """queue.Queue whose depth changes are reported from inside its own mutex, so the recorded depth
    is exactly qsize() at every instant (the metrics lock is taken inside, never the other way)."""

    def __init__(self, maxsize: int, metrics: Metrics) -> None:
        super().__init__(maxsize)
        self._metrics = metrics

    def _put(self, item: Any) -> None:
        super()._put(item)
        if item is not STOP:
            self._metrics.depth_changed(+1)

    def _get(self) -> Any:
        item = super()._get()
        if item is not STOP:
            self._metrics.depth_changed(-1, dequeued=True)
        return item


class TaskQueue:
    """The engine's bounded queue: `offer` applies the backpressure policy, `requeue` never refuses."""

    def __init__(self, maxsize: int, mode: str, enqueue_timeout_s: float, metrics: Metrics) -> None:
        self._q = _MeasuredQueue(maxsize, metrics)
        self.maxsize = maxsize
        self.mode = mode
        self.enqueue_timeout_s = enqueue_timeout_s
        self._metrics = metrics

    def offer(self, item: Any) -> bool:
        """Put a newly accepted task; False when the backpressure policy refuses it."""
        try:
            if self.mode == "fail_fast":
                self._q.put_nowait(item)
            else:
                self._q.put(item, timeout=self.enqueue_timeout_s)
        except queue.Full:
            return False
        self._metrics.count("enqueued")
        return True

    def offer_nowait(self, item: Any) -> bool:
        """Put a newly accepted task if there is room now; False (nothing done) otherwise."""
        try:
            self._q.put_nowait(item)
        except queue.Full:
            return False
        self._metrics.count("enqueued")
        return True

    def has_room(self, n: int = 1) -> bool:
        """True when `n` more items would fit now (a hint: others may take the room first)."""
        return self._q.qsize() + n <= self.maxsize

    def requeue(self, item: Any, stopping: Callable[[], bool], poll_s: float = 0.1) -> bool:
        """Put back a task that was accepted before (retry, recovery); False if `stopping()` first."""
        while True:
            try:
                self._q.put(item, timeout=poll_s)
                return True
            except queue.Full:
                if stopping():
                    return False

    def get(self, timeout: float | None) -> Any:
        """The next task, STOP, or None when nothing came within `timeout` seconds."""
        try:
            return self._q.get(timeout=timeout)
        except queue.Empty:
            return None

    def wake(self, n: int) -> None:
        """Hand `n` STOP markers to idle workers without ever blocking."""
        for _ in range(n):
            try:
                self._q.put_nowait(STOP)
            except queue.Full:
                return
