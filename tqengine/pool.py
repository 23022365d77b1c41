"""The engine: lifecycle and wiring of submitters and workers around a bounded queue. `WorkerPool` is the
public face (`Engine` is an alias).

Life of a task:
  submit -> admission (admission.py): validate, claim the idempotency key in SQLite (committed before
            submit returns), TaskQueue.offer (block with deadline | fail_fast; refused: recorded rejected)
         -> a worker thread (ThreadPoolExecutor) runs one attempt through the Processor
         -> success | transient: BackoffScheduler, then requeue (no thread held while waiting)
                    | permanent or out of attempts: dead letter
         -> the final state is committed (state/store.py), then the handle resolves.
At start, recovery (recovery.py) resumes what an earlier process left unfinished.
"""
from __future__ import annotations

import collections
import random
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Any

from . import logs
from .admission import Admission
from .config import Config
from .errors import ConfigError, PermanentError, ResourceError, StoreError, TransientError
from .flight import Flight, FlightTable, TaskHandle
from .metrics import Metrics
from .objects import ObjectStore, make_store
from .processor import Processor
from .queue import STOP, TaskQueue
from .records import Outcome, TaskResult
from .recovery import recover
from .retry import PERMANENT, RESOURCE, BackoffScheduler, backoff_delay, classify, describe, resource_cause
from .state.lock import DatabaseLock
from .state.store import StateStore
from .sync import TIMEOUT_MAX, Signal, wait_seconds
from .tasks import shown

__all__ = ["WorkerPool", "Engine", "TaskHandle", "TaskResult"]

WORKER_POLL_S = 0.25
# Whether the writer wakes a commit's run() callers in turn (sync.wake_in_turn) or all at once, looked at again
# every TURN_POLICY_S: at once while the workers' attempts keep at least WORKERS_CPU_BOUND of a CPU busy
# (thread CPU time). Workers that mostly wait (I/O, sleeps, C code without the GIL... any task whose CPU is
# short) come back to a GIL that a herd of woken callers queues for: in turn, 1 ms tasks 1.10x, 1000 clients
# 1.26x. Workers that hold the GIL throughout (thumbnails of tiny sources) lose ~7% in turn: the callers' work
# back to back needs fewer GIL hand-offs (README, Results).
TURN_POLICY_S = 0.05
WORKERS_CPU_BOUND = 0.5
ProcessorFactory = Callable[[Config, ObjectStore], Any]
_thread_time = time.thread_time


class WorkerPool:
    """The task queue engine. Use as a context manager; leaving the block shuts it down gracefully.

    `processor`: what runs one attempt, for tests and measurements: an object with the Processor's
    `process` and `completed_output` methods, or a factory `(config, object_store) -> processor`;
    default Processor.from_config."""

    def __init__(self, config: Config | None = None, processor: Any = None, **overrides: Any) -> None:
        if config is None:
            config = Config(**overrides)
        elif overrides:
            config = Config(**{**asdict(config), **overrides})
        self.config = config.validate()
        self._processor_given = processor
        self.flights = FlightTable()
        self._accepting = False
        self._abort = False
        self._workers_stop = False
        self._submitting = 0            # submit_many calls in progress (the store must outlive them)
        self._closing = False
        self.recovered = 0
        self.recovered_outcomes: collections.Counter[str] = collections.Counter()
        self._started = False
        self.metrics = Metrics(self.config.max_workers)
        self._rng = random.Random(f"backoff|{self.config.seed}")
        self._admission: Admission | None = None
        self.fatal_error: BaseException | None = None     # why the engine stopped itself (resource errors)
        self._cpu_cells: list[list[float]] = []     # each worker's thread CPU time in attempts (no lock: its own)
        self._turn = (True, time.perf_counter(), 0.0)    # (in turn?, when decided, the workers' CPU then)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> WorkerPool:
        """Open the database (refusing one that is not this engine's), the object store, start the workers
        and resume what an earlier process left unfinished. Any failure here stops what was started and
        raises: ConfigError for a configuration problem (a foreign database, an unreachable store)."""
        if self._started:
            return self
        cfg = self.config
        logs.configure(cfg.log_level, cfg.log_file)
        self._db_lock = DatabaseLock(cfg.db_path).acquire()     # one engine per database
        try:
            self.state = StateStore(cfg.db_path, retention_s=cfg.retention_s, on_fatal=self._fatal,
                                    used_before=self._db_lock.previous_holder is not None)
        except Exception:
            self._db_lock.release()
            raise
        self.objects: ObjectStore | None = None
        try:
            unfinished = self.state.unfinished() if cfg.recover else []   # before any thread starts
            self.objects = make_store(cfg.store, cfg.store_root, cfg.store_url, cfg.chunk_size, cfg.max_workers,
                                      client=cfg.http_client, token=cfg.store_token,
                                      max_read_bytes=cfg.max_source_bytes,
                                      allow_hard_links=cfg.allow_hard_links)
            removed = self.objects.remove_temp_files()
            if cfg.store == "http":     # a wrong or dead URL: one clear error, not every task dead
                try:
                    self.objects.ping()
                except TransientError as exc:
                    raise ConfigError(f"cannot reach the object store at {cfg.store_url}: {exc}") from None
        except BaseException as exc:
            if self.objects is not None:
                self.objects.close()
            self.state.close()
            self._db_lock.release()
            if isinstance(exc, OSError):
                raise ConfigError(f"cannot use store root {cfg.store_root}: {exc.strerror or exc}") from None
            if isinstance(exc, StoreError):
                raise ConfigError(f"cannot use database {cfg.db_path}: {exc}") from None
            raise
        if removed:
            logs.event(30, "temp_files_removed", count=removed)
        self.processor = self._make_processor(self.objects)
        self.queue = TaskQueue(cfg.queue_size, cfg.mode, cfg.enqueue_timeout_s, self.metrics)
        self.scheduler = BackoffScheduler(self._release_from_backoff)
        self._admission = Admission(self.flights, self.state, self.queue, self.metrics, cfg.mode,
                                    self._resolve, self._finish)
        backlog_at = 2 * cfg.max_workers
        self.state.start(backlogged=lambda: self.queue.backlog() >= backlog_at, in_turn=self._callers_in_turn)
        self._executor = ThreadPoolExecutor(max_workers=cfg.max_workers, thread_name_prefix="tq-worker")
        self._worker_futures = [self._executor.submit(self._worker_loop) for _ in range(cfg.max_workers)]
        self._closing = False
        self._accepting = True
        self._started = True
        try:
            if unfinished:
                done = recover(unfinished, self.flights, self.processor, self.scheduler, cfg.max_attempts,
                               cfg.backoff_cap_s, self._finish)
                self.recovered = done.resumed + done.settled
                logs.event(30, "recovered", resumed=done.resumed, settled=done.settled)
        except BaseException:
            self.shutdown(graceful=False)       # no worker may outlive a failed start
            raise
        logs.event(20, "engine_started", workers=cfg.max_workers, queue_size=cfg.queue_size, mode=cfg.mode)
        return self

    def _fatal(self, error: BaseException) -> None:
        """The machine failed under the engine (disk full, read-only, corrupt database): stop at once; what
        is unfinished stays in the database for a rerun. Called from any thread; never blocks."""
        if self.fatal_error is None:
            self.fatal_error = error
            logs.event(50, "engine_stopping", error_class=type(error).__name__, error=str(error)[:500],
                       cause=getattr(error, "cause", None))
        self.abort()

    def _make_processor(self, objects: ObjectStore) -> Any:
        given = self._processor_given
        if given is None:
            return Processor.from_config(self.config, objects)
        if hasattr(given, "process") and not isinstance(given, type):
            return given
        return given(self.config, objects)

    def __enter__(self) -> WorkerPool:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        self.shutdown(graceful=exc_type is None or not issubclass(exc_type, KeyboardInterrupt))

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until no task is queued, running or waiting for a retry; False on timeout."""
        timeout = wait_seconds(timeout)
        deadline = None if timeout is None else time.perf_counter() + timeout
        table = self.flights
        with table.changed:
            while table.active > 0:
                if self._abort:
                    return False
                remaining = None if deadline is None else deadline - time.perf_counter()
                if remaining is not None and remaining <= 0:
                    return False
                table.changed.wait(min(remaining, TIMEOUT_MAX) if remaining is not None else 1.0)
        return True

    def abort(self) -> None:
        """Stop as soon as the tasks in hand finish; queued and retrying ones stay in the database for the next
        start. Their waiters are answered `queued` now, not at shutdown(): the workers answer the queued ones as
        they take them, the backoff thread the ones waiting out a backoff (a run() caller inside the `with`
        block waited for its own timeout before, or for ever without one)."""
        self._accepting = False
        self._abort = True
        scheduler: BackoffScheduler | None = getattr(self, "scheduler", None)   # None before start()
        if scheduler is not None:
            scheduler.release_all()
        with self.flights.changed:
            self.flights.changed.notify_all()

    def shutdown(self, graceful: bool = True, timeout: float | None = None) -> bool:
        """Stop intake; graceful: finish queued, running and retrying tasks (up to `timeout`,
        default config.shutdown_timeout_s), else stop after the tasks in hand. Unfinished tasks stay
        in the database and resume at the next start. Returns True when nothing was left behind."""
        if not self._started:
            return True
        timeout = self.config.shutdown_timeout_s if timeout is None else wait_seconds(timeout)
        assert timeout is not None
        self._accepting = False
        clean = self.drain(timeout) if graceful else False
        if not clean:
            self._abort = True
        self._workers_stop = True
        self.queue.wake(self.config.max_workers)
        deadline = time.perf_counter() + max(5.0, timeout if graceful else 5.0)
        for future in self._worker_futures:
            try:
                future.result(timeout=min(max(0.0, deadline - time.perf_counter()), TIMEOUT_MAX))
            except Exception:  # a worker that died or hangs is reported, not waited for forever
                logs.event(40, "worker_did_not_stop")
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.scheduler.stop()
        for flight in self.flights.unfinished():    # run() callers asleep in a submission: look again, then leave
            if flight.waker is not None:
                flight.waker.set()
        with self.flights.changed:          # no submission may be using the store when it closes
            self._closing = True
            self.flights.changed.wait_for(lambda: self._submitting == 0, timeout=30.0)
        self.state.close()
        assert self.objects is not None
        self.objects.close()
        self._db_lock.release()
        self._started = False
        left = self.flights.active
        self._release_waiters_after_abort()
        logs.event(20, "engine_stopped", graceful=graceful, unfinished=left)
        return left == 0

    # -- submission --------------------------------------------------------------------------
    def submit(self, task: Any) -> TaskHandle:
        """Submit one task; returns a TaskHandle. Never raises for a bad task."""
        return self.submit_many((task,))[0]

    def submit_many(self, tasks: Iterable[Any]) -> list[TaskHandle]:
        """Submit several tasks with one database commit for all their claims; a list of handles."""
        self._begin_submission()
        try:
            assert self._admission is not None
            return self._admission.admit(tasks, self._accepting)
        finally:
            self._end_submission()

    def run(self, task: Any, timeout: float | None = None) -> TaskResult:
        """Submit one task and wait for its final result: `submit(task).result(timeout)` with one wake-up
        instead of two. The caller sleeps through its claim's commit (the writer queues the task, or on a full
        queue in block mode parks it in the queue's line for a worker to move in) and wakes at the outcome,
        or at the commit when it must act itself (a refusal in fail_fast mode, a stored result).
        `timeout` bounds the whole wait (TimeoutError, as result()); the task goes on, as after submit(). The
        guarantees are submit()'s and result()'s: the claim is durable before the task runs, the final
        state before this returns. Measured on the durable path, 100 clients that submit and wait, against
        submit() then result(): 1.05-1.17x tasks/s, 0.80-0.89x CPU per task, 6.0 -> 3.5 context switches per
        task (README, Results)."""
        timeout = wait_seconds(timeout)     # ValueError for NaN before anything is submitted
        deadline = None if timeout is None else time.perf_counter() + timeout
        self._begin_submission()
        try:
            assert self._admission is not None
            handle = self._admission.admit_one(task, self._accepting, Signal(), timeout)
        finally:
            self._end_submission()
        return handle.result_within(None if deadline is None else max(0.0, deadline - time.perf_counter()), timeout)

    def _begin_submission(self) -> None:
        """Count a submission call in (shutdown() closes the store only once none is left), or RuntimeError."""
        with self.flights.lock:
            if not self._started or self._closing:
                raise RuntimeError("the engine is not running (start() it, or use `with WorkerPool(...)`); "
                                   "after shutdown() it takes no tasks")
            self._submitting += 1

    def _end_submission(self) -> None:
        table = self.flights
        with table.lock:
            self._submitting -= 1
            if self._submitting == 0:
                table.changed.notify_all()

    # -- workers -----------------------------------------------------------------------------
    def _worker_loop(self) -> None:
        get = self.queue.get
        busy = self.metrics.busy_cell()
        cpu = [0.0]
        self._cpu_cells.append(cpu)
        while True:
            flight = get(WORKER_POLL_S)
            if flight is None or flight is STOP:
                if self._workers_stop:
                    return
                continue
            if self._abort:
                _answer_left_queued(flight)     # its row stays queued: the next start resumes it
                continue
            self._run_attempt(flight, busy, cpu)

    def _run_attempt(self, flight: Flight, busy: list[float], cpu: list[float]) -> None:
        """Run one attempt of `flight` and record what came of it; `busy` and `cpu` are this worker's cells of
        busy (wall) time and thread CPU time in attempts."""
        cfg = self.config
        assert flight.row_id is not None        # a queued flight has been claimed
        attempt = flight.attempts + 1
        flight.attempts = attempt
        self.state.mark_running(flight.row_id, attempt)
        started = time.perf_counter()
        cpu_started = _thread_time()
        try:
            output_key, digest, nbytes = _checked_output(self.processor.process(flight.image_key, flight.variant,
                                                                                flight.key, attempt))
        except Exception as exc:
            busy[0] += time.perf_counter() - started
            cpu[0] += _thread_time() - cpu_started
            self.metrics.count("failed")
            kind = classify(exc)
            error_class, message = describe(exc)
            if kind == RESOURCE:        # not the task's fault: the attempt does not count, the engine stops
                flight.attempts = attempt - 1
                self.state.requeue(flight.row_id, attempt - 1, lambda err: None)
                self._fatal(exc if isinstance(exc, ResourceError) else
                            ResourceError(f"{error_class}: {message}", resource_cause(exc)))
                return
            final = kind == PERMANENT or attempt >= cfg.max_attempts
            logs.event(30 if final else 20, "attempt_failed", task_id=flight.task_id,
                       idempotency_key=flight.key, attempt=attempt, error_class=error_class, error=message,
                       kind=kind)
            if not final:
                delay = backoff_delay(attempt, cfg.backoff_base_s, cfg.backoff_cap_s, self._rng)
                self.metrics.count("retried")
                self.state.mark_retrying(flight.row_id, attempt, time.time() + delay, error_class, message)
                self.scheduler.schedule(delay, flight)
                return
            if kind != PERMANENT:
                message = f"gave up after {attempt} attempts: {message}"
            self._finish(flight, Outcome.dead(attempt, error_class, message))
            return
        busy[0] += time.perf_counter() - started
        cpu[0] += _thread_time() - cpu_started
        self._finish(flight, Outcome("success", attempt, output_key, digest, nbytes))

    def _callers_in_turn(self) -> bool:
        """For the state store's writer (its only caller): wake a commit's run() callers in turn, unless over the
        last TURN_POLICY_S or more the workers' attempts kept WORKERS_CPU_BOUND of a CPU busy (see above)."""
        in_turn, since, cpu_then = self._turn
        now = time.perf_counter()
        if now - since < TURN_POLICY_S:
            return in_turn
        cpu_now = sum(cell[0] for cell in self._cpu_cells)
        in_turn = cpu_now - cpu_then < WORKERS_CPU_BOUND * (now - since)
        self._turn = (in_turn, now, cpu_now)
        return in_turn

    def _release_from_backoff(self, flight: Flight) -> None:
        if self._abort or not self.queue.requeue(flight, lambda: self._workers_stop or self._abort):
            logs.event(20, "retry_left_for_next_start", task_id=flight.task_id, idempotency_key=flight.key)
            _answer_left_queued(flight)

    # -- resolution --------------------------------------------------------------------------
    def _finish(self, flight: Flight, outcome: Outcome) -> None:
        """Commit the flight's final outcome, then answer it (or report that the commit failed). A run() caller
        is woken in turn with the others of the commit (StateStore.finish, sync.wake_in_turn)."""
        assert flight.row_id is not None
        self.state.finish(flight.row_id, outcome, _Final(self, flight, outcome))

    def _resolve(self, flight: Flight, outcome: Outcome, in_turn: bool = False) -> Signal | None:
        """Record the outcome and wake the flight's waiters. `in_turn` (a callback of the state store's writer): a
        run() caller's Signal is returned, not set, for the writer to set in turn with the others of its commit."""
        flight.outcome = outcome        # flight.finish(outcome), once a task in the writer: without the call
        flight.finished_at = finished = time.perf_counter()
        with self.flights.lock:
            self.flights.end(flight)
            if flight.recovered:
                self.recovered_outcomes[outcome.status] += 1
        status = outcome.status
        if flight.primary_counted:
            self.metrics.final(status, (finished - flight.submitted_at) * 1000.0
                               if status == "success" or status == "dead" else None)
        flight.event.set()
        if logs.logger.isEnabledFor(20):        # once per task: not even its fields gathered when quiet
            logs.event(20, "task_final", task_id=flight.task_id, idempotency_key=flight.key, status=status,
                       attempt=outcome.attempts, error_class=outcome.error_class)
        waker = flight.waker
        if waker is None or in_turn:
            return waker
        waker.set()
        return None

    def _release_waiters_after_abort(self) -> None:
        """After a non-graceful stop, wake anyone still waiting: their task is left for the next start."""
        for flight in self.flights.unfinished():
            _answer_left_queued(flight)

    # -- metrics -----------------------------------------------------------------------------
    @property
    def submitted(self) -> int:
        return self._admission.submitted if self._admission is not None else 0

    def metrics_snapshot(self, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """The metrics JSON (docs/CONTRACTS.md) from the engine's side; never blocks on the queue."""
        cfg = self.config
        if params is None:
            params = asdict(cfg)
            if params.get("store_token"):
                params["store_token"] = "(set)"      # a secret: never written to metrics files
        return self.metrics.snapshot(params=params,
                                     tasks_submitted=self.submitted, latency_ms=cfg.latency_ms,
                                     idle=self.flights.active == 0)


class _Final:
    """The store's callback for a final outcome's commit (in the writer thread): answer the flight, or report
    that the commit failed; returns the run() caller's Signal for the writer to set in turn. One object a task,
    in place of a closure over three variables (five objects that the garbage collector traversed while the
    commit was pending)."""
    __slots__ = ("pool", "flight", "outcome")

    def __init__(self, pool: WorkerPool, flight: Flight, outcome: Outcome) -> None:
        self.pool, self.flight, self.outcome = pool, flight, outcome

    def __call__(self, err: BaseException | None) -> Signal | None:
        outcome = self.outcome
        if err is not None:
            outcome = Outcome.store_failed(outcome.attempts, err)
        return self.pool._resolve(self.flight, outcome, in_turn=True)


Engine = WorkerPool


def _answer_left_queued(flight: Flight) -> None:
    """Answer the waiters of a flight the engine stops without finishing: `queued`, its row left unfinished in
    the database for the next start (nothing is committed, and the flight still counts as unfinished)."""
    if not flight.event.is_set():
        flight.finish(Outcome.left_queued(flight.attempts))
        flight.wake()


def _checked_output(output: Any) -> tuple[str, str, int]:
    """A processor's (output_key, digest, bytes written), or PermanentError: the final row can hold nothing
    else (a list or an integer past 64 bits failed the commit, and the task was answered `failed`)."""
    try:
        output_key, digest, nbytes = output
        if type(output_key) is str and type(digest) is str and type(nbytes) is int and 0 <= nbytes < 2 ** 63:
            if not (output_key.isascii() and digest.isascii()):
                output_key.encode("utf-8")
                digest.encode("utf-8")
            return output_key, digest, nbytes
    except (TypeError, ValueError):     # not three values, or a lone surrogate
        pass
    raise PermanentError(f"the processor returned {shown(output)}, not (output_key: str, digest: str, "
                         f"bytes: int >= 0)")

