"""The bounded task queue and its backpressure policy.

A queue.Queue(maxsize=queue_size) sits between submitters and the worker threads. `offer` applies
the configured policy: `block` waits up to enqueue_timeout_s for room and then refuses, `fail_fast`
refuses at once. A refusal is returned to the caller, who records it; nothing is dropped here.
Retries and recovered tasks come back through `requeue`, which waits for room (they were accepted
earlier, so they are never refused) but gives up when the engine stops.

Waiting for room: a producer that finds the queue full is parked, in arrival order, in a waiting line
next to the queue (it holds what the producer would otherwise hold in its own blocked thread), and
whoever takes a task out of the queue (`get`, a worker) moves the head of the line in, under one lock.
So every producer gets room first come first served, and a producer need not wake to put its task in:
`park` is for WorkerPool.run() callers, who sleep until their task's outcome and wake once, not three
times (at the commit, for room, at the outcome). Each parked task belongs to a producer that is waiting
for it (`offer`, `requeue`, `park`) and that takes it back (`withdraw`) when its wait ends, so the line
is never longer than the number of producers waiting: the queue's bound stays the only one.
"""
from __future__ import annotations

import collections
import queue
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .config import check
from .sync import Signal

if TYPE_CHECKING:
    from .metrics import Metrics

STOP = object()


class _MeasuredQueue(queue.Queue[Any]):
    """queue.Queue whose depth changes are reported from inside its own mutex, so the recorded depth
    is exactly qsize() at every instant (the metrics lock is taken inside, never the other way)."""

    def __init__(self, maxsize: int, metrics: Metrics) -> None:
        super().__init__(maxsize)
        self._metrics = metrics
        # whether the next put is a newly accepted task (counted `enqueued`) or one accepted before (a retry, a
        # recovered task): set by TaskQueue._put_now just before its put, under the TaskQueue's line lock, which
        # every put of a task holds (STOP markers are not counted), so it is counted with its depth change
        self.new_task = True

    # queue.Queue's own _put and _get are these deque calls: made here, not through super() (twice a task)
    def _put(self, item: Any) -> None:
        self.queue.append(item)
        if item is not STOP:
            self._metrics.put_one(self.new_task)

    def _get(self) -> Any:
        item = self.queue.popleft()
        if item is not STOP:
            self._metrics.took_one()
        return item


class TaskQueue:
    """The engine's bounded queue: `offer` applies the backpressure policy, `requeue` never refuses."""

    def __init__(self, maxsize: int, mode: str, enqueue_timeout_s: float, metrics: Metrics) -> None:
        # the Config's rules (ConfigError): maxsize 0 would make queue.Queue unbounded, a misspelt mode block
        check("queue_size", maxsize)
        check("mode", mode)
        check("enqueue_timeout_s", enqueue_timeout_s)
        self._q = _MeasuredQueue(maxsize, metrics)
        self.maxsize = maxsize
        self.mode = mode
        self.enqueue_timeout_s = enqueue_timeout_s
        self._metrics = metrics
        # parked, in order: (task, what its producer waits on or None, whether it counts as enqueued)
        self._line: collections.deque[tuple[Any, Signal | None, bool]] = collections.deque()
        self._line_lock = threading.Lock()

    def backlog(self) -> int:
        """Tasks waiting in the queue now (read without its lock: a moment's count, for a heuristic)."""
        return len(self._q.queue)

    def offer(self, item: Any) -> bool:
        """Put a newly accepted task; False when the backpressure policy refuses it."""
        if self.mode == "fail_fast":
            return self.offer_nowait(item)
        return self._wait_in_line(item, lambda: False, True, self.enqueue_timeout_s)

    def offer_nowait(self, item: Any) -> bool:
        """Put a newly accepted task if there is room now and nobody waits for room; False (nothing done)
        otherwise."""
        with self._line_lock:
            return not self._line and self._put_now(item)

    def park(self, item: Any) -> bool:
        """Put a newly accepted task now if `offer_nowait` would, else park it at the end of the line: True
        when it is in the queue, False when parked. A parked task goes into the queue as room comes, unless
        its producer takes it back first (`withdraw`, which it must do when its wait for room ends)."""
        with self._line_lock:
            if not self._line and self._put_now(item):
                return True
            self._line.append((item, None, True))
            return False

    def withdraw(self, item: Any) -> bool:
        """Take a parked task out of the line; False when it has already gone into the queue."""
        with self._line_lock:
            for index, (parked, _signal, _count) in enumerate(self._line):
                if parked is item:
                    del self._line[index]
                    return True
            return False

    def has_room(self, n: int = 1) -> bool:
        """True when `n` more items would fit now and nobody waits for room (a hint: others may take it first)."""
        return not self._line and self._q.qsize() + n <= self.maxsize

    def requeue(self, item: Any, stopping: Callable[[], bool], poll_s: float = 0.1) -> bool:
        """Put back a task that was accepted before (retry, recovery); False if `stopping()` first."""
        return self._wait_in_line(item, stopping, False, None, poll_s)

    def get(self, timeout: float | None) -> Any:
        """The next task, STOP, or None when nothing came within `timeout` seconds. Taking one makes room
        for the head of the line, which goes in here."""
        try:
            item = self._q.get(timeout=timeout)
        except queue.Empty:
            return None
        if self._line:
            self._move_line()
        return item

    def wake(self, n: int) -> None:
        """Hand `n` STOP markers to idle workers without ever blocking."""
        for _ in range(n):
            try:
                self._q.put_nowait(STOP)
            except queue.Full:
                return

    # -- the line -----------------------------------------------------------------------------
    def _put_now(self, item: Any, count: bool = True) -> bool:
        """Put `item` if there is room now (call with the line lock held); `count`: a newly accepted task (a
        requeued one was counted `enqueued` when it was accepted)."""
        q = self._q
        q.new_task = count
        try:
            q.put(item, False)              # put_nowait(item), one call less
        except queue.Full:
            return False
        return True

    def _move_line(self) -> None:
        """Move parked tasks into the queue, in order, while there is room."""
        with self._line_lock:
            line = self._line
            while line:
                item, signal, count = line[0]
                if not self._put_now(item, count):
                    return
                line.popleft()
                if signal is not None:
                    signal.set()

    def _wait_in_line(self, item: Any, stopping: Callable[[], bool], count: bool, timeout: float | None,
                      poll_s: float | None = None) -> bool:
        """Put `item` now, or park it and wait until it goes in (True), `timeout` passes or `stopping()`
        holds at a poll (False: taken back out of the line, or True if it went in meanwhile)."""
        placed = Signal()
        with self._line_lock:
            if not self._line and self._put_now(item, count):
                return True
            self._line.append((item, placed, count))
        if poll_s is None:
            placed.wait(timeout)
        else:
            while not placed.wait(poll_s) and not stopping():
                pass
        return placed.is_set() or not self.withdraw(item)
