"""One idempotency key on its way through the engine (`Flight`) and what a submitter holds (`TaskHandle`).

Every submission of a key that arrives while the key is queued, running or retrying shares that key's
Flight; when the Flight's outcome is set, every handle on it resolves. The flight table in the engine only
routes waiters: the truth is the SQLite row.
"""
from __future__ import annotations

import threading
import time

from .records import Outcome, TaskResult
from .sync import Signal, wait_seconds


class Flight:
    __slots__ = ("key", "payload", "task_id", "image_key", "variant", "row_id", "attempts", "event",
                 "outcome", "finished_at", "submitted_at", "primary_counted", "recovered", "refused", "waker")

    def __init__(self, key: str | None, payload: str, task_id: str | None, image_key: str | None,
                 variant: str | None, submitted_at: float) -> None:
        self.key, self.payload, self.task_id = key, payload, task_id
        self.image_key, self.variant = image_key, variant
        self.row_id: int | None = None
        self.attempts = 0
        self.event = Signal()
        self.outcome: Outcome | None = None
        self.finished_at: float | None = None
        self.submitted_at = submitted_at
        self.primary_counted = True     # its latency and final status count in the metrics
        self.recovered = False          # resumed from the database at start (no handle waits for it)
        self.refused = False            # rejected because the engine is shutting down
        self.waker: Signal | None = None    # a run() caller's one wake-up: set with `event`, when it must act
                                            # or when the engine stops (it then looks at `event` again)

    def wake(self) -> None:
        """Wake everyone waiting for this flight's outcome (set it first: finish())."""
        self.event.set()
        if self.waker is not None:
            self.waker.set()

    def finish(self, outcome: Outcome) -> None:
        """Record the outcome and when it came; the engine wakes the handles (`event.set()`) once its own
        bookkeeping is done, so a woken caller sees the engine's counters already updated."""
        self.outcome = outcome
        self.finished_at = time.perf_counter()


class TaskHandle:
    """What submit() returns: wait for the final record with result(timeout)."""
    __slots__ = ("_flight", "task_id", "duplicate", "_submitted_at")

    def __init__(self, flight: Flight, task_id: str | None, duplicate: bool, submitted_at: float) -> None:
        self._flight, self.task_id, self.duplicate, self._submitted_at = flight, task_id, duplicate, submitted_at

    def done(self) -> bool:
        return self._flight.event.is_set()

    def result(self, timeout: float | None = None) -> TaskResult:
        """The final record, waiting up to `timeout` seconds (None: as long as it takes); TimeoutError."""
        return self.result_within(wait_seconds(timeout), timeout)

    def result_within(self, seconds: float | None, timeout: object = None) -> TaskResult:
        """result() for a wait already checked by wait_seconds() (WorkerPool.run: its deadline's remainder);
        `timeout` is what the TimeoutError names (default: `seconds`)."""
        flight = self._flight
        if not flight.event.wait(seconds):
            shown = seconds if timeout is None else timeout
            raise TimeoutError(f"task {self.task_id!r} did not finish within {shown} s")
        outcome = flight.outcome
        assert outcome is not None and flight.finished_at is not None
        return TaskResult.build(self.task_id, flight.key, outcome.status, outcome.attempts, outcome.output_key,
                                outcome.output_digest, max(0.0, (flight.finished_at - self._submitted_at) * 1000.0),
                                outcome.error, outcome.error_class, self.duplicate, flight.row_id)


class FlightTable:
    """The keys in flight (queued, running or retrying) and the number of unfinished flights, under one lock.

    `lock` also guards the engine's own intake flags (pool.py); `changed` is notified when the last
    unfinished flight ends or the last submission call returns, which is what drain() and shutdown() wait
    for."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.by_key: dict[str, Flight] = {}
        self.active = 0             # flights not yet final (keyed or not; refusals are not counted)

    def end(self, flight: Flight) -> None:
        """The flight reached its outcome: forget its key, count it off (call with `lock` held)."""
        if flight.key is not None and self.by_key.get(flight.key) is flight:
            del self.by_key[flight.key]
        if not flight.refused:
            self.active -= 1
            if self.active == 0:
                self.changed.notify_all()

    def unfinished(self) -> list[Flight]:
        with self.lock:
            return list(self.by_key.values())
