"""The engine: submitters and workers around a bounded queue, with idempotency, retries and a durable
record of every task. `WorkerPool` is the public face (`Engine` is an alias).

Life of a task:
  submit -> validate -> claim its idempotency key in SQLite (committed before submit returns)
         -> TaskQueue.offer (block with deadline | fail_fast)  -- refused: recorded as rejected
         -> a worker thread (ThreadPoolExecutor) runs one attempt through the Processor
         -> success | transient: BackoffScheduler, then requeue (no thread held while waiting)
                    | permanent or out of attempts: dead letter
         -> the final state is committed, then the handle resolves.

Every submission of one idempotency key shares one `_Flight`: a duplicate that arrives while the key
is queued or running joins it (and never runs it twice); one that arrives after it ended gets the
stored result. The in-memory flight table only routes waiters; the truth is the SQLite row.
"""
import collections
import json
import random
import reprlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

from . import logs
from .config import Config
from .objects import make_store
from .state.lock import DatabaseLock
from .errors import ConfigError, TransientError, ValidationError
from .metrics import Metrics
from .processor import Processor
from .queue import STOP, TaskQueue
from .retry import PERMANENT, BackoffScheduler, backoff_delay, classify
from .state.store import Claim, TaskStore
from .tasks import fingerprint, validate

WORKER_POLL_S = 0.25


@dataclass(frozen=True)
class TaskResult:
    """The final record of one submission, as its handle reports it."""
    task_id: object
    idempotency_key: object
    status: str                 # success | dead | rejected (failed: the state store itself failed)
    attempts: int
    output_key: object
    output_digest: object
    latency_ms: float           # this submission's submit -> result
    error: object
    error_class: object
    duplicate: bool             # True when another submission of the key did the work
    row_id: object

    def as_dict(self):
        return asdict(self)


class _Flight:
    """One idempotency key on its way through the engine, shared by every submission of it."""
    __slots__ = ("key", "payload", "task_id", "image_key", "variant", "row_id", "attempts", "event",
                 "record", "finished_at", "submitted_at", "primary_counted", "recovered", "refused")

    def __init__(self, key, payload, task_id, image_key, variant, submitted_at):
        self.key, self.payload, self.task_id = key, payload, task_id
        self.image_key, self.variant = image_key, variant
        self.row_id = None
        self.attempts = 0
        self.event = threading.Event()
        self.record = None
        self.finished_at = None
        self.submitted_at = submitted_at
        self.primary_counted = True
        self.recovered = False          # resumed from the database at start (no handle waits for it)
        self.refused = False            # rejected because the engine is shutting down


class TaskHandle:
    """What submit() returns: wait for the final record with result(timeout)."""
    __slots__ = ("_flight", "task_id", "duplicate", "_submitted_at")

    def __init__(self, flight, task_id, duplicate, submitted_at):
        self._flight, self.task_id, self.duplicate, self._submitted_at = flight, task_id, duplicate, submitted_at

    def done(self):
        return self._flight.event.is_set()

    def result(self, timeout=None):
        flight = self._flight
        if not flight.event.wait(timeout):
            raise TimeoutError(f"task {self.task_id!r} did not finish within {timeout} s")
        rec = flight.record
        return TaskResult(task_id=self.task_id, idempotency_key=flight.key, status=rec["status"],
                          attempts=rec.get("attempts", 0), output_key=rec.get("output_key"),
                          output_digest=rec.get("output_digest"),
                          latency_ms=max(0.0, (flight.finished_at - self._submitted_at) * 1000.0),
                          error=rec.get("error"), error_class=rec.get("error_class"),
                          duplicate=self.duplicate, row_id=flight.row_id)


def _task_identity(task):
    """(key, payload json, task_id, image_key, variant, validation error or None) of a submission."""
    try:
        image_key, variant = validate(task)
        error = None
    except ValidationError as exc:
        image_key = variant = None
        error = exc
    task_id = task.get("task_id") if isinstance(task, dict) else None
    if not isinstance(task_id, (str, int)) or isinstance(task_id, bool):
        task_id = None
    elif isinstance(task_id, str):
        task_id = _storable(task_id)
    try:
        payload = fingerprint(task)
    except (TypeError, ValueError, RecursionError) as exc:   # keys JSON cannot hold, a cycle, deep nesting
        payload = json.dumps(reprlib.repr(task))
        if error is None:
            error = ValidationError(f"a task must be plain JSON data ({type(exc).__name__}: {str(exc)[:200]})")
            image_key = variant = None
    key = f"{image_key}#{variant}" if error is None else _invalid_key(task)
    return key, payload, (str(task_id) if task_id is not None else None), image_key, variant, error


def _storable(text):
    """`text` with anything UTF-8 cannot carry (lone surrogates) backslash-escaped, so SQLite takes it."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _invalid_key(task):
    """Key for a task that failed validation: `/invalid/` + the usual key when that is printable and
    short, else None. Repeating the same bad task is then a duplicate (a rerun adds no dead letters). A
    valid image_key never starts with `/` (tasks.check_key refuses absolute keys), so no valid task can
    ever need a key of this form, whatever its image and variant."""
    if not isinstance(task, dict):
        return None
    image_key, variant = task.get("image_key"), task.get("size", task.get("variant"))
    if not isinstance(image_key, str) or not isinstance(variant, str):
        return None
    key = f"/invalid/{image_key}#{variant}"
    if len(key) > 1100 or not key.isprintable():
        return None
    return key


class WorkerPool:
    """The task queue engine. Use as a context manager; leaving the block shuts it down gracefully."""

    def __init__(self, config=None, **overrides):
        if config is None:
            config = Config(**overrides)
        elif overrides:
            config = Config(**{**asdict(config), **overrides})
        self.config = config.validate()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._inflight = {}          # idempotency key -> _Flight (queued, running or retrying)
        self._active = 0             # flights not yet final (keyed or not)
        self._accepting = False
        self._abort = False
        self._workers_stop = False
        self._submitted = 0
        self._submitting = 0            # submit_many calls in progress (the store must outlive them)
        self._closing = False
        self.recovered_outcomes = collections.Counter()     # final statuses of tasks resumed at start
        self._started = False
        self.metrics = Metrics(self.config.max_workers)
        self._rng = random.Random(f"backoff|{self.config.seed}")

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self):
        if self._started:
            return self
        cfg = self.config
        logs.configure(cfg.log_level, cfg.log_file)
        self._db_lock = DatabaseLock(cfg.db_path).acquire()     # one engine per database
        try:
            self.store = TaskStore(cfg.db_path)
        except Exception:
            self._db_lock.release()
            raise
        self.objects = None
        try:
            self.objects = _make_object_store(cfg)
            removed = self.objects.remove_temp_files()
            if cfg.store == "http":     # a wrong or dead URL: one clear error, not every task dead
                try:
                    self.objects.ping()
                except TransientError as exc:
                    raise ConfigError(f"cannot reach the object store at {cfg.store_url}: {exc}") from None
        except BaseException as exc:
            if self.objects is not None:
                self.objects.close()
            self.store.close()
            self._db_lock.release()
            if isinstance(exc, OSError):
                raise ConfigError(f"cannot use store root {cfg.store_root}: {exc.strerror or exc}") from None
            raise
        if removed:
            logs.event(30, "temp_files_removed", count=removed)
        self.processor = Processor.from_config(cfg, self.objects)
        self.queue = TaskQueue(cfg.queue_size, cfg.mode, cfg.enqueue_timeout_s, self.metrics)
        self.scheduler = BackoffScheduler(self._release_from_backoff)
        self.store.start()
        self._executor = ThreadPoolExecutor(max_workers=cfg.max_workers, thread_name_prefix="tq-worker")
        self._worker_futures = [self._executor.submit(self._worker_loop) for _ in range(cfg.max_workers)]
        self._closing = False
        self._accepting = True
        self._started = True
        if cfg.recover:
            self._recover()
        logs.event(20, "engine_started", workers=cfg.max_workers, queue_size=cfg.queue_size, mode=cfg.mode)
        return self

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, exc, tb):
        self.shutdown(graceful=exc_type is None or not issubclass(exc_type, KeyboardInterrupt))
        return False

    def drain(self, timeout=None):
        """Wait until no task is queued, running or waiting for a retry; False on timeout."""
        deadline = None if timeout is None else time.perf_counter() + timeout
        with self._idle:
            while self._active > 0:
                if self._abort:
                    return False
                remaining = None if deadline is None else deadline - time.perf_counter()
                if remaining is not None and remaining <= 0:
                    return False
                self._idle.wait(remaining if remaining is not None else 1.0)
        return True

    def abort(self):
        """Stop as soon as the tasks in hand finish; queued ones stay in the database for the next start."""
        self._accepting = False
        self._abort = True
        with self._idle:
            self._idle.notify_all()

    def shutdown(self, graceful=True, timeout=None):
        """Stop intake; graceful: finish queued, running and retrying tasks (up to `timeout`,
        default config.shutdown_timeout_s), else stop after the tasks in hand. Unfinished tasks stay
        in the database and resume at the next start. Returns True when nothing was left behind."""
        if not self._started:
            return True
        self._accepting = False
        timeout = self.config.shutdown_timeout_s if timeout is None else timeout
        clean = self.drain(timeout) if graceful else False
        if not clean:
            self._abort = True
        self._workers_stop = True
        self.queue.wake(self.config.max_workers)
        deadline = time.perf_counter() + max(5.0, timeout if graceful else 5.0)
        for future in self._worker_futures:
            try:
                future.result(timeout=max(0.0, deadline - time.perf_counter()))
            except Exception:  # a worker that died or hangs is reported, not waited for forever
                logs.event(40, "worker_did_not_stop")
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.scheduler.stop()
        with self._idle:                # no submission may be using the store when it closes
            self._closing = True
            self._idle.wait_for(lambda: self._submitting == 0, timeout=30.0)
        self.store.close()
        self.objects.close()
        self._db_lock.release()
        self._started = False
        left = self._active
        self._release_waiters_after_abort()
        logs.event(20, "engine_stopped", graceful=graceful, unfinished=left)
        return left == 0

    # -- submission --------------------------------------------------------------------------
    def submit(self, task):
        """Submit one task; returns a TaskHandle. Never raises for a bad task."""
        return self.submit_many((task,))[0]

    def submit_many(self, tasks):
        """Submit several tasks with one database commit for all their claims; a list of handles."""
        with self._lock:
            if not self._started or self._closing:
                raise RuntimeError("the engine is not running (start() it, or use `with WorkerPool(...)`); "
                                   "after shutdown() it takes no tasks")
            self._submitting += 1
        try:
            return self._submit_many(tasks)
        finally:
            with self._lock:
                self._submitting -= 1
                if self._submitting == 0:
                    self._idle.notify_all()

    def _submit_many(self, tasks):
        now = time.perf_counter()
        if self.metrics.first_submit is None:
            self.metrics.submitted(now)
        handles, claims, flights = [], [], []
        accepting = self._accepting
        with self._lock:
            for task in tasks:
                self._submitted += 1
                key, payload, task_id, image_key, variant, error = _task_identity(task)
                flight = self._inflight.get(key) if key is not None and error is None else None
                if flight is not None and flight.payload == payload:
                    self.metrics.count("duplicates")
                    handles.append(TaskHandle(flight, task_id, True, now))
                    continue
                flight = _Flight(key, payload, task_id, image_key, variant, now)
                if not accepting:       # recorded and answered, but not work that drain() waits for
                    claim = Claim(key, payload, task_id, "rejected", "ShuttingDown",
                                  "the engine is shutting down and accepts no new tasks")
                    flight.refused = True
                elif error is not None:
                    claim = Claim(key, payload, task_id, "dead", type(error).__name__, str(error))
                elif key in self._inflight:
                    claim = Claim(key, payload, task_id, "conflict", "IdempotencyConflict",
                                  f"conflict: idempotency key {key[:200]!r} is in flight with a "
                                  f"different payload")
                else:
                    claim = Claim(key, payload, task_id)
                    self._inflight[key] = flight
                if not flight.refused:
                    self._active += 1
                claims.append(claim)
                flights.append(flight)
                handles.append(TaskHandle(flight, task_id, False, now))
        if not claims:
            return handles
        try:
            self.store.claim(claims)
        except Exception as exc:
            for flight in flights:
                self._resolve(flight, {"status": "failed", "attempts": 0, "error_class": type(exc).__name__,
                                       "error": f"state store failed: {exc}"})
            return handles
        duplicate_flights = set()
        for claim, flight in zip(claims, flights):
            row = claim.row
            flight.row_id = row["id"]
            flight.attempts = row.get("attempts", 0)
            outcome = claim.outcome
            if outcome in ("new", "reclaimed", "adopted") and claim.intent == "queued":
                if not self.queue.offer(flight):
                    self.store.transition(flight.row_id, "rejected",
                                          ("QueueFull", f"queue full ({self.config.mode})"),
                                          self._after_commit(flight, {
                                              "status": "rejected", "attempts": flight.attempts,
                                              "error_class": "QueueFull",
                                              "error": f"queue full ({self.config.mode})"}))
            elif outcome == "final":
                # The key finished in an earlier run: hand back the stored result, run nothing.
                flight.primary_counted = False
                duplicate_flights.add(id(flight))
                self.metrics.count("duplicates")
                self._resolve(flight, {"status": row["status"], "attempts": row["attempts"],
                                       "output_key": row["output_key"], "output_digest": row["output_digest"],
                                       "error_class": row["error_class"], "error": row["last_error"]})
            else:  # dead on arrival (validation), rejected while shutting down, or a key conflict
                self._resolve(flight, {"status": row["status"], "attempts": 0,
                                       "error_class": row.get("error_class", claim.error_class),
                                       "error": row.get("last_error", claim.error)})
        if duplicate_flights:
            for handle in handles:
                if id(handle._flight) in duplicate_flights:
                    handle.duplicate = True
        return handles

    # -- workers -----------------------------------------------------------------------------
    def _worker_loop(self):
        get = self.queue.get
        while True:
            flight = get(WORKER_POLL_S)
            if flight is None:
                if self._workers_stop:
                    return
                continue
            if flight is STOP:
                if self._workers_stop:
                    return
                continue
            if self._abort:
                continue  # left queued in the database; the next start resumes it
            self._run_attempt(flight)

    def _run_attempt(self, flight):
        cfg = self.config
        attempt = flight.attempts + 1
        flight.attempts = attempt
        self.store.transition(flight.row_id, "running", (attempt,))
        started = time.perf_counter()
        try:
            output_key, digest, nbytes = self.processor.process(flight.image_key, flight.variant,
                                                                flight.key, attempt)
        except Exception as exc:
            self.metrics.busy(time.perf_counter() - started)
            self.metrics.count("failed")
            kind = classify(exc)
            error_class, message = type(exc).__name__, str(exc)[:2000]
            final = kind == PERMANENT or attempt >= cfg.max_attempts
            logs.event(30 if final else 20, "attempt_failed", task_id=flight.task_id,
                       idempotency_key=flight.key, attempt=attempt, error_class=error_class, error=message,
                       kind=kind)
            if kind != PERMANENT and attempt < cfg.max_attempts:
                delay = backoff_delay(attempt, cfg.backoff_base_s, cfg.backoff_cap_s, self._rng)
                self.metrics.count("retried")
                self.store.transition(flight.row_id, "retrying",
                                      (attempt, time.time() + delay, error_class, message))
                self.scheduler.schedule(delay, flight)
            else:
                if kind != PERMANENT:
                    message = f"gave up after {attempt} attempts: {message}"
                self.store.transition(flight.row_id, "dead", (attempt, error_class, message),
                                      self._after_commit(flight, {"status": "dead", "attempts": attempt,
                                                                  "error_class": error_class, "error": message}))
            return
        self.metrics.busy(time.perf_counter() - started)
        self.store.transition(flight.row_id, "success", (attempt, output_key, digest, nbytes),
                              self._after_commit(flight, {"status": "success", "attempts": attempt,
                                                          "output_key": output_key, "output_digest": digest}))

    def _release_from_backoff(self, flight):
        if not self.queue.requeue(flight, lambda: self._workers_stop or self._abort):
            logs.event(20, "retry_left_for_next_start", task_id=flight.task_id, idempotency_key=flight.key)

    # -- resolution --------------------------------------------------------------------------
    def _after_commit(self, flight, record):
        def callback(err):
            if err is not None:
                self._resolve(flight, {"status": "failed", "attempts": record.get("attempts", 0),
                                       "error_class": type(err).__name__, "error": f"state store failed: {err}"})
            else:
                self._resolve(flight, record)
        return callback

    def _resolve(self, flight, record):
        flight.record = record
        flight.finished_at = time.perf_counter()
        with self._lock:
            if flight.key is not None and self._inflight.get(flight.key) is flight:
                del self._inflight[flight.key]
            if not flight.refused:
                self._active -= 1
                if self._active == 0:
                    self._idle.notify_all()
            if flight.recovered:
                self.recovered_outcomes[record["status"]] += 1
        status = record["status"]
        if flight.primary_counted:
            latency = (flight.finished_at - flight.submitted_at) * 1000.0 if status == "success" or \
                status == "dead" else None
            self.metrics.final(status, latency)
        flight.event.set()
        logs.event(20, "task_final", task_id=flight.task_id, idempotency_key=flight.key, status=status,
                   attempt=record.get("attempts"), error_class=record.get("error_class"))

    def _release_waiters_after_abort(self):
        """After a non-graceful stop, wake anyone still waiting: their task is left for the next start."""
        with self._lock:
            left = list(self._inflight.values())
        for flight in left:
            if not flight.event.is_set():
                flight.record = {"status": "queued", "attempts": flight.attempts, "error_class": None,
                                 "error": "engine stopped before the task finished; it resumes at next start"}
                flight.finished_at = time.perf_counter()
                flight.event.set()

    # -- recovery ----------------------------------------------------------------------------
    def _recover(self):
        """Resume what an earlier process left queued, running or retrying."""
        rows = self.store.unfinished()
        now_wall = time.time()
        resumed = settled = 0
        for row in rows:
            try:
                task = json.loads(row["payload"])
            except ValueError:
                task = None
            if isinstance(task, dict) and row["task_id"] is not None:
                task["task_id"] = row["task_id"]
            key, payload, task_id, image_key, variant, error = _task_identity(task)
            flight = _Flight(row["idempotency_key"], row["payload"], row["task_id"], image_key, variant,
                             time.perf_counter())
            flight.row_id = row["id"]
            flight.attempts = row["attempts"]
            flight.recovered = True
            with self._lock:
                if flight.key is not None:
                    self._inflight[flight.key] = flight
                self._active += 1
            if error is None and row["status"] == "running" and row["attempts"] >= self.config.max_attempts:
                done = self.processor.completed_output(image_key, variant)
                if done is not None:   # the last attempt finished its output; only the commit was lost
                    record = {"status": "success", "attempts": row["attempts"], "output_key": done[0],
                              "output_digest": done[1]}
                    self.store.transition(flight.row_id, "success", (row["attempts"], *done),
                                          self._after_commit(flight, record))
                    settled += 1
                    continue
            if error is not None or (row["status"] == "running" and row["attempts"] >= self.config.max_attempts):
                message = (str(error) if error is not None else
                           f"attempt {row['attempts']} was interrupted by a crash and no attempts are left")
                error_class = type(error).__name__ if error is not None else "Interrupted"
                self.store.transition(flight.row_id, "dead", (row["attempts"], error_class, message),
                                      self._after_commit(flight, {"status": "dead", "attempts": row["attempts"],
                                                                  "error_class": error_class, "error": message}))
                settled += 1
                continue
            delay = 0.0
            if row["status"] == "retrying" and row["next_attempt_at"]:
                delay = max(0.0, min(row["next_attempt_at"] - now_wall, self.config.backoff_cap_s))
            self.scheduler.schedule(delay, flight)
            resumed += 1
        if rows:
            logs.event(30, "recovered", resumed=resumed, settled=settled)
        self.recovered = resumed + settled
        return self.recovered

    # -- metrics -----------------------------------------------------------------------------
    @property
    def submitted(self):
        return self._submitted

    def metrics_snapshot(self, params=None):
        """The metrics JSON (docs/CONTRACTS.md) from the engine's side; never blocks on the queue."""
        cfg = self.config
        snap = self.metrics.snapshot(params=params if params is not None else asdict(cfg),
                                     tasks_submitted=self._submitted, latency_ms=cfg.latency_ms,
                                     idle=self._active == 0)
        return snap


def _make_object_store(cfg):
    return make_store(cfg.store, cfg.store_root, cfg.store_url, cfg.chunk_size, cfg.max_workers,
                      client=cfg.http_client, token=cfg.store_token)


Engine = WorkerPool
