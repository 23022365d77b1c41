"""Durable task state in SQLite: task records, idempotency keys (UNIQUE), dead letters, recovery reads.

One writer thread owns the write connection. Every write is appended to the open batch (a batch closes at
MAX_BATCH_WRITES rows and the next one opens); the writer takes the oldest batch, commits it in one
BEGIN IMMEDIATE ... COMMIT, runs the claims' callbacks, then wakes everyone who waits for that batch (one
Signal per batch, not one per operation: its waiters wake one after the other) and runs the callbacks of
the final states.
No lock is ever held across an SQLite call, so threads waiting to write never convoy behind a commit,
and at load one commit carries many tasks. So:

- a claim (the INSERT that reserves an idempotency key) is committed before submit() returns; its
  callback (the admission's: queue the new flights) runs in the writer after the commit, before the
  claimer wakes, and never for a claimer that gave up waiting (claim_wait_s);
- a final state (success / dead / rejected) is committed before the task's handle resolves (its
  callback runs in the writer thread after the commit). The Signals the callbacks of a batch return (the
  engine's run() callers) are set once they have all run: in turn, each woken caller waking the next
  (sync.wake_in_turn), so they do not queue for the GIL as a herd in front of the workers, unless
  `in_turn()` (given to start()) says the workers keep a CPU busy themselves: then all at once;
- group commit under load: while the workers have a backlog (`backlogged()`, given to start(): the pool's
  queue holds at least two tasks per worker), an urgent batch gathers writes until it is GROUP_WAIT_S old
  (or full) before it is committed, instead of at once. A commit costs the writer ~400 us of CPU under
  load whatever it carries (GIL turns and cold caches around each SQLite call: README, Results); at 100
  clients this cuts the commits per task from 0.15 to 0.07 (1 ms tasks) and from 1.28 to 0.21 (5 ms tasks),
  and the CPU per task by 16% and 22%. A task waits at most GROUP_WAIT_S more, and only when
  workers have queued work that covers the wait. Without a backlog (one client, a few) nothing waits;
- `running` is written only for an attempt still running RUNNING_AFTER_S after it started (a short
  attempt's success supersedes it), `retrying` rides along with the next commit; after a crash the
  attempt count may miss an attempt that had just started, which costs a repeated attempt at most: the
  output write is idempotent.

WAL and checkpoints: a checkpointer thread copies committed frames into the database (PASSIVE) every
CHECKPOINT_EVERY_S; when the WAL passes WAL_SOFT_LIMIT the writer runs a RESTART checkpoint between
batches (it waits, boundedly, for readers to leave the old frames), and past WAL_HARD_LIMIT it holds the
next commit until one succeeds (up to lock_wait_s), so a reader that keeps a snapshot open cannot grow
the WAL without bound. journal_size_limit cuts the file back after each reset.

With WAL and synchronous=NORMAL a commit survives the process being killed (SIGKILL); a power loss may
lose the last commits (SQLite's documented trade-off), which would replay those tasks on resume. A
database locked by another process is waited for with a bounded, jittered retry. Errors name their cause
(schema.store_error): a full disk, a read-only or damaged database is reported as such, and such resource
errors reach `on_fatal`, which stops the engine. So does a defect that kills the writer thread: every write
waiting for it, and every later one, is answered with that error at once (`_writer_failed`).

Why one module of ~500 lines: everything here shares the one connection the writer thread owns (batches,
claims, transitions, WAL checkpoints, retention); the schema, its statements and the opening checks are in
schema.py, what tools read and change in inspect.py.
"""
from __future__ import annotations

import collections
import functools
import logging
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

from ..errors import ConfigError, StoreError, StoreResourceError
from ..sync import Signal, wake_in_turn
from ..sync import Signal as WakeSignal  # what callbacks return (tests replace `Signal`, the batches')
from . import schema
from .schema import connect, is_busy, store_error

CHECKPOINT_EVERY_S = 0.25
FLUSH_EVERY_S = 0.05        # how long a `retrying` may wait for a commit to ride along with
RUNNING_AFTER_S = 0.05      # an attempt still running this long gets its `running` row written
WAL_SOFT_LIMIT = 16 * 1024 * 1024
WAL_HARD_LIMIT = 48 * 1024 * 1024
PRUNE_EVERY_S = 5.0
PRUNE_BATCH = 2000
# Rows one commit writes at most (a claim op of submit_many, which cannot be split, may write more). After a
# commit the writer runs every write's callback and wakes its waiters under the GIL; with no cap, at 1000
# clients a batch grew to ~1000 writes and that took 5-140 ms, past the interpreter's 5 ms switch interval,
# so the writer was preempted in it and queued for the GIL behind the threads it had just woken, and the next
# batch grew bigger still (README, Results: with the queue's line, 1000 clients 1.21-1.29x tasks/s, about half
# the switches per task).
MAX_BATCH_WRITES = 64
GROUP_WAIT_S = 0.002        # under load (a backlog of queued tasks), an urgent batch gathers writes this long
log = logging.getLogger("tq")

__all__ = ["Claim", "StateStore", "StoreError"]


def _never() -> bool:
    return False


def _always() -> bool:
    return True


def _insert(execute: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """INSERT a task row: its id, or None when its idempotency key is taken (ON CONFLICT DO NOTHING)."""
    cursor = execute(schema.INSERT, args)
    return cursor.lastrowid if cursor.rowcount == 1 else None


class Claim:
    """One submission asking for its idempotency key. `intent` says what row to create:
    queued (normal), dead (the task failed validation), rejected/conflict (refused before owning a key)."""
    __slots__ = ("key", "payload", "task_id", "intent", "error_class", "error", "outcome", "row")

    def __init__(self, key: str | None, payload: str, task_id: str | None, intent: str = "queued",
                 error_class: str | None = None, error: str | None = None) -> None:
        self.key, self.payload, self.task_id, self.intent = key, payload, task_id, intent
        self.error_class, self.error = error_class, error
        self.outcome: str | None = None   # new | reclaimed | adopted | final | conflict
        self.row: dict[str, Any] | None = None


class _Op:
    """One write: `kind` (claim | queued | retrying | success | dead | rejected), the row it changes, the
    statement's arguments (for a claim: the Claims), who to call once it is committed, and its error."""
    __slots__ = ("kind", "row_id", "args", "callback", "error", "answered")

    def __init__(self, kind: str, row_id: int | None, args: Any,
                 callback: Callable[[BaseException | None], Signal | None] | None = None) -> None:
        self.kind, self.row_id, self.args, self.callback = kind, row_id, args, callback
        self.error: BaseException | None = None
        self.answered = False       # committed (or failed: `error`), before any callback runs


class _Batch:
    """The writes one commit carries; `done` is set once it is committed (or has failed)."""
    __slots__ = ("ops", "claims", "urgent", "done", "since", "writes")

    def __init__(self) -> None:
        self.ops: list[_Op] = []
        self.claims: list[_Op] = []     # its claim ops, in order (their callbacks run first: _answer)
        self.writes = 0             # rows its ops write (a claim op writes one per claim)
        self.since = 0.0            # when its first write arrived
        self.urgent = False         # someone waits for it: commit now, not at the next flush
        # many claimers wait on one batch. A Signal wakes them one after the other (each woken waiter passes the
        # lock on); threading.Event woke them all at once, and a herd of woken threads fighting for the GIL
        # costs switches (each waits in 5 ms slices): with the writer queueing new flights itself, measured
        # 100 clients 6.3 -> 5.2 switches/task, 1.16x tasks/s; 1000 clients 17.7 -> 8.4, 1.43x, CPU 0.65x
        self.done = Signal()


class StateStore:
    """The SQLite task table: claims, state transitions, recovery reads, retention; one writer thread."""

    def __init__(self, db_path: str, lock_wait_s: float = 60.0, retention_s: float = 0.0,
                 on_fatal: Callable[[StoreError], None] | None = None, used_before: bool = False) -> None:
        self.db_path = db_path
        self.lock_wait_s = lock_wait_s
        self.claim_wait_s = lock_wait_s + 30.0     # how long claim() waits for its commit before giving up
        self.retention_s = retention_s
        self.on_fatal = on_fatal
        self.commits = 0
        self.claims_pending = 0         # claims enqueued and not yet answered (their callbacks not yet run)
        self.wal_high_water = 0
        self.fatal: StoreError | None = None
        self._wal_big = False
        self._prune_due = False         # set by the checkpointer every PRUNE_EVERY_S when retention is on
        # taken as `with self._cv`, not through its lock directly: Condition.__enter__ is a Python call, and a
        # thread due to give up the GIL does so there, before it holds the lock. Taken directly, the lock was
        # often held across that switch, and with 1000 clients the workers and the writer queued behind it
        # (1000 clients: a full queue and 6-8 context switches per task in 36 of 52 runs, 4 of 47 before, 3 of 20 after)
        self._cv = threading.Condition()
        self._batch = _Batch()
        self._full: collections.deque[_Batch] = collections.deque()    # closed batches, oldest first
        self._running: dict[int, tuple[int, float]] = {}     # row -> (attempt, started), not yet written
        self._stopping = False
        self._closed = False
        self._writer_error: StoreError | None = None     # set once the writer thread died of a defect
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._sequential_ids = True     # new rows take the next ids (schema.insert_rows); read at open
        self._backlogged: Callable[[], bool] = _never
        self._in_turn: Callable[[], bool] = _always
        self._open(used_before)

    def _open(self, used_before: bool) -> None:
        db_path = self.db_path
        if sqlite3.sqlite_version_info < schema.SQLITE_NEEDED:
            raise ConfigError(f"the engine needs SQLite {'.'.join(map(str, schema.SQLITE_NEEDED))} or newer "
                              f"(RETURNING, UPDATE ... FROM); this Python has SQLite {sqlite3.sqlite_version}")
        directory = os.path.dirname(os.path.abspath(db_path))
        try:
            os.makedirs(directory, exist_ok=True)
            schema.check_existing(db_path, used_before)
            self._conn = connect(db_path)
        except ConfigError:
            raise
        except (sqlite3.Error, OSError) as exc:
            raise ConfigError(f"cannot open database {db_path}: {getattr(exc, 'strerror', None) or exc}") from None
        try:
            new = self._with_lock_retry(lambda: schema.check_schema(self._conn, db_path))
            if not new:
                self._with_lock_retry(lambda: schema.quick_check(self._conn, db_path))
            self._with_lock_retry(lambda: schema.enable_wal(self._conn))
            if new:
                self._with_lock_retry(lambda: schema.create(self._conn)
                                      if schema.check_schema(self._conn, db_path) else None)
            else:
                self._with_lock_retry(lambda: self._conn.execute(schema.OLD_UNFINISHED_INDEX))
            if self.retention_s > 0:
                self._with_lock_retry(lambda: schema.create_prune_indexes(self._conn))
            # the engine is the one writer while it runs (DatabaseLock), so what holds at open holds throughout
            self._sequential_ids = new or self._with_lock_retry(
                lambda: self._conn.execute(schema.HAS_TOP_ROWID).fetchone()) is None
        except ConfigError:
            self._conn.close()
            raise
        except (sqlite3.Error, OSError, StoreError) as exc:
            self._conn.close()
            err = store_error(exc, f"database {db_path}")
            raise ConfigError(f"cannot open database {db_path}: {err.cause} ({exc})") from None

    # -- reads (before the writer starts, or from other connections) ------------------------
    def unfinished(self) -> list[dict[str, Any]]:
        """Every row left queued, running or retrying, in id order; StoreError naming the cause."""
        try:
            cur = self._conn.execute(schema.UNFINISHED_ROWS)
            cols = [d[0] for d in cur.description]
            return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
        except sqlite3.Error as exc:
            raise store_error(exc, f"database {self.db_path}") from None

    # -- the write API ----------------------------------------------------------------------
    def claim(self, claims: list[Claim], committed: Callable[[BaseException | None], None] | None = None,
              wake: Signal | None = None, wake_within: float | None = None) -> list[Claim]:
        """Commit the claims and fill in each one's outcome; returns once they are durable. `committed(err)`,
        if given, runs in the writer thread after the commit (or its failure) and before this returns.
        `wake`, if given, is what this waits for instead of the commit (up to `wake_within` seconds): a Signal
        that its owner sets only after the commit (`committed`, or the outcome of the claims' tasks), so a
        caller that then waits for those outcomes anyway wakes once, not twice (WorkerPool.run)."""
        op = _Op("claim", None, claims, committed)
        batch = self._enqueue(op, urgent=True)
        wait_s = self.claim_wait_s
        woken = False
        if wake is not None:
            started = time.perf_counter()
            # woken after the commit, by the owner of `wake` (its callback has run): no need to wait for the batch
            woken = wake.wait(wait_s if wake_within is None else max(0.0, min(wake_within, wait_s))) and op.answered
            if not woken:
                wait_s -= time.perf_counter() - started
        if not woken and not batch.done.wait(max(0.0, wait_s)):
            with self._cv:
                gave_up = op.callback is not None or committed is None
                op.callback = None          # the writer must not run it for a submitter that gave up
            # else the writer has taken `committed` and is running it: done follows at once
            if gave_up or not batch.done.wait(30.0):
                raise StoreError("the state store did not commit within its lock wait", "state store stalled")
        if op.error is not None:
            raise store_error(op.error)
        return claims

    def mark_running(self, row_id: int, attempt: int) -> None:
        """Attempt `attempt` started; written only if it is still running RUNNING_AFTER_S later (the writer
        looks at least every RUNNING_AFTER_S, so by 2 x RUNNING_AFTER_S after the start). No lock: one dict
        store is atomic under the GIL, only the writer and _enqueue remove entries (under the lock), and
        the writer reads the dict through a copy made in one C call. Taking the store's lock here cost every
        attempt one more hold of the lock that submitters and the writer wait on."""
        self._running[row_id] = (attempt, time.perf_counter())

    def mark_retrying(self, row_id: int, attempt: int, next_attempt_at: float, error_class: str,
                      error: str) -> None:
        """Attempt `attempt` failed and the task waits until `next_attempt_at` (wall clock) for the next;
        rides along with the next commit (at most FLUSH_EVERY_S later)."""
        self._enqueue(_Op("retrying", row_id, (attempt, next_attempt_at, error_class, error)), urgent=False)

    def requeue(self, row_id: int, attempts: int, on_commit: Callable[[BaseException | None], None]) -> None:
        """Put the task back to `queued` with `attempts` used (an attempt the machine, not the task, broke)."""
        self._enqueue(_Op("queued", row_id, (attempts,), on_commit), urgent=True)

    def finish(self, row_id: int, outcome: Any,
               on_commit: Callable[[BaseException | None], Signal | None]) -> None:
        """The final state (outcome.status success, dead or rejected), committed promptly; `on_commit(err)`
        runs in the writer thread after the commit (err None) or its failure. It may return a Signal: the
        batch's are set once all its callbacks have run (in turn, sync.wake_in_turn, or at once: start())."""
        status = outcome.status
        args: tuple[Any, ...]
        if status == "success":
            args = (outcome.attempts, outcome.output_key, outcome.output_digest, outcome.output_bytes)
        elif status == "dead":
            args = (outcome.attempts, outcome.error_class, outcome.error)
        elif status == "rejected":
            args = (outcome.error_class, outcome.error)
        else:
            raise ValueError(f"not a final status: {status!r}")
        self._enqueue(_Op(status, row_id, args, on_commit), urgent=True)

    def _enqueue(self, op: _Op, urgent: bool) -> _Batch:
        with self._cv:
            if op.row_id is not None:
                self._running.pop(op.row_id, None)     # its attempt ended: `running` is superseded
            batch = self._batch
            if batch.writes >= MAX_BATCH_WRITES:      # close it: the writer takes it next, as it is
                self._full.append(batch)
                batch = self._batch = _Batch()
                self._cv.notify()
            if not batch.ops:
                batch.since = time.perf_counter()
            batch.ops.append(op)
            if op.kind == "claim":
                batch.claims.append(op)
                self.claims_pending += len(op.args)
                batch.writes += len(op.args)
            else:
                batch.writes += 1
            if urgent and not batch.urgent:
                batch.urgent = True
                self._cv.notify()
        if self._closed:            # too late for the writer: commit (and answer) here
            self._drain_here()
        return batch

    # -- the writer -------------------------------------------------------------------------
    def start(self, backlogged: Callable[[], bool] | None = None,
              in_turn: Callable[[], bool] | None = None) -> None:
        """Start the writer and the WAL checkpointer. `backlogged()`, if given, says whether the workers have
        queued work to spare: urgent batches then gather writes for up to GROUP_WAIT_S (group commit).
        `in_turn()`, if given, says whether the Signals a batch's callbacks return are set in turn (the
        default) or all at once."""
        if backlogged is not None:
            self._backlogged = backlogged
        if in_turn is not None:
            self._in_turn = in_turn
        for target, name in ((self._writer_loop, "tq-state-writer"), (self._checkpoint_loop, "tq-state-checkpoint")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _take(self) -> _Batch | None:
        """Wait for work and take the oldest closed batch (one that reached MAX_BATCH_WRITES) at once, else the
        open batch (None once stopping and nothing is left): at once for an urgent write, else when the oldest
        write has waited FLUSH_EVERY_S or an attempt's `running` is due."""
        with self._cv:
            while True:
                if self._full:
                    return self._full.popleft()
                batch = self._batch
                now = time.perf_counter()
                if self._stopping:
                    due = list(self._running)
                    if not batch.ops and not due:
                        return None
                    break
                running = list(self._running.items())     # one C call: mark_running adds without the lock
                due = [row for row, (_a, started) in running if now - started >= RUNNING_AFTER_S]
                if batch.urgent and not due and not self._prune_due and self._gathering(batch, now):
                    self._cv.wait(batch.since + GROUP_WAIT_S - now)
                    continue
                if batch.urgent or due or self._prune_due or (batch.ops and now - batch.since >= FLUSH_EVERY_S):
                    break
                # never longer than RUNNING_AFTER_S: an attempt that starts meanwhile does not wake the writer
                waits = [RUNNING_AFTER_S]
                if batch.ops:
                    waits.append(batch.since + FLUSH_EVERY_S - now)
                if running:
                    waits.append(min(started for _row, (_a, started) in running) + RUNNING_AFTER_S - now)
                self._cv.wait(max(0.001, min(waits)))
            for row in due:
                attempt, _started = self._running.pop(row)
                batch.ops.append(_Op("running", row, (attempt,)))
            self._batch = _Batch()
            return batch

    def _gathering(self, batch: _Batch, now: float) -> bool:
        """Whether an urgent open batch waits for more writes (group commit under load, GROUP_WAIT_S)."""
        return now - batch.since < GROUP_WAIT_S and batch.writes < MAX_BATCH_WRITES and self._backlogged()

    def _writer_loop(self) -> None:
        batch: _Batch | None = None
        try:
            while True:
                batch = self._take()
                if batch is None:
                    return
                if batch.ops:
                    self._commit_batch(batch)
                    batch = None
                    self._after_commit()
                if self._prune_due:
                    self._prune_due = False
                    self._prune()
        except Exception as exc:    # a defect, not the database: nobody may wait on a writer that is gone
            log.exception("the state store's writer thread failed")
            self._writer_failed(StoreError(f"the state store's writer thread failed ({type(exc).__name__}: "
                                           f"{exc})"[:500], "state store writer failed"), batch)

    def _writer_failed(self, err: StoreError, taken: _Batch | None) -> None:
        """The writer thread is gone: answer every write waiting for it with `err` (the batch it had taken,
        unless its commit was answered already, the closed batches and the open one) and every later write at
        once, and stop the engine through on_fatal. What was not committed stays as the database has it: the
        tasks' rows resume at the next start."""
        with self._cv:
            self._writer_error = err
            self._closed = True         # later writes are answered by _drain_here, in their own thread
        if taken is not None and not any(op.answered for op in taken.ops):
            self._fail(taken, err)
        self._drain_here()              # the closed batches and the open one
        if self.fatal is None:
            self.fatal = err
            if self.on_fatal is not None:
                self.on_fatal(err)

    def _fail(self, batch: _Batch, err: BaseException) -> None:
        """Answer every write of a batch that was not committed with `err`."""
        for op in batch.ops:
            op.error = err
            op.answered = True
        self._answer(batch)

    def _commit_batch(self, batch: _Batch) -> None:
        errors = self._commit(batch.ops)
        failed = errors.count(None) != len(errors)
        if failed:
            for op, err in zip(batch.ops, errors, strict=True):
                op.error = err
        for op in batch.ops:
            op.answered = True
        self._answer(batch)
        if not failed:
            return
        fatal = next((e for e in errors if isinstance(e, StoreResourceError) or
                      (isinstance(e, StoreError) and e.cause == "database corrupt")), None)
        if fatal is not None and self.fatal is None:
            self.fatal = fatal
            if self.on_fatal is not None:
                self.on_fatal(fatal)

    def _answer(self, batch: _Batch) -> None:
        """Run the claims' callbacks (before their claimers wake, so a claimer sees what its callback did),
        wake the batch's waiters, then run the callbacks of its other writes (each op's error is set) and set
        the Signals they return (in turn, unless `in_turn()` says otherwise)."""
        claims = batch.claims
        if claims:
            with self._cv:      # each taken once: a claimer whose wait timed out takes its own (claim())
                callbacks = [(op, op.callback) for op in claims]
                for op in claims:
                    op.callback = None
                    self.claims_pending -= len(op.args)
            for op, callback in callbacks:
                if callback is not None:
                    try:
                        callback(op.error)
                    except Exception:  # a caller's callback must not break the writer
                        log.exception("store callback failed")
        batch.done.set()
        wakes: list[Signal] = []
        for op in batch.ops:
            if op.callback is not None:
                try:
                    wake = op.callback(op.error)
                except Exception:  # a caller's callback must not break the writer
                    log.exception("store callback failed")
                    continue
                if isinstance(wake, WakeSignal):    # anything else a callback returns is not the writer's to wake
                    wakes.append(wake)
        if not wakes:
            return
        if self._in_turn():
            wake_in_turn(wakes)
        else:
            for wake in wakes:
                wake.set()

    def _commit(self, ops: list[_Op]) -> list[BaseException | None]:
        """Commit the ops in one transaction; if that fails for a reason other than a lock or a resource,
        commit them one by one so a single bad one (say, a string SQLite cannot encode) fails alone."""
        try:
            self._with_lock_retry(lambda: self._apply(ops))
            self.commits += 1
            return [None] * len(ops)
        except Exception as exc:  # a failed commit must still reach every waiter
            err = store_error(exc)
            if len(ops) == 1 or type(err) is not StoreError:
                return [err] * len(ops)     # locked, full, read-only, corrupt: one answer for all
        errors: list[BaseException | None] = []
        for op in ops:
            try:
                self._with_lock_retry(functools.partial(self._apply, [op]))
                self.commits += 1
                errors.append(None)
            except Exception as exc:
                errors.append(store_error(exc))
        return errors

    def _with_lock_retry(self, action: Callable[[], Any]) -> Any:
        """Run action; on 'database is locked/busy' wait with jittered backoff, up to lock_wait_s."""
        deadline = time.perf_counter() + self.lock_wait_s
        delay = 0.005
        while True:
            try:
                return action()
            except Exception as exc:
                if self._conn.in_transaction:
                    try:
                        self._conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                if not is_busy(exc) or time.perf_counter() >= deadline:
                    raise
                time.sleep(random.uniform(delay / 2, delay))
                delay = min(delay * 2, 0.25)

    def _apply(self, ops: list[_Op]) -> None:
        """Apply the ops in order in one transaction. A run of consecutive claims and a run of consecutive
        successes each go to SQLite as one statement per GROUP_ROWS rows (schema.insert_rows, success_rows):
        each statement costs a round of the sqlite3 module (binding, a GIL release around the step), which
        per row was a third of the writer's SQLite time."""
        execute = self._conn.execute
        now = time.time()
        execute("BEGIN IMMEDIATE")
        start, count = 0, len(ops)
        while start < count:
            kind = ops[start].kind
            end = start + 1
            while end < count and ops[end].kind == kind and kind in ("claim", "success"):
                end += 1
            if kind == "claim":
                self._apply_claims(execute, [claim for op in ops[start:end] for claim in op.args], now)
            elif kind == "success":
                self._apply_successes(execute, ops[start:end], now)
            else:
                for op in ops[start:end]:
                    self._apply_one(execute, op, now)
            start = end
        execute("COMMIT")

    @staticmethod
    def _apply_one(execute: Callable[..., Any], op: _Op, now: float) -> None:
        kind = op.kind
        if kind == "running":
            execute(schema.TRANSITIONS["running"], (op.args[0], now, op.row_id))
        elif kind in schema.TRANSITIONS:
            execute(schema.TRANSITIONS[kind], (*op.args, now, op.row_id))
            if kind == "dead":
                execute(schema.DEAD_LETTER, (now, op.row_id))
        else:
            raise ValueError(f"unknown store operation {kind!r}")

    @staticmethod
    def _apply_successes(execute: Callable[..., Any], ops: list[_Op], now: float) -> None:
        """Final `success` states, GROUP_ROWS rows per statement (each row appears once: one final per task)."""
        for first in range(0, len(ops), schema.GROUP_ROWS):
            group = ops[first:first + schema.GROUP_ROWS]
            if len(group) == 1:
                StateStore._apply_one(execute, group[0], now)
                continue
            values: list[Any] = []
            extend = values.extend
            for op in group:
                extend((op.row_id, *op.args, now))
            execute(schema.success_rows(len(group)), values)

    def _apply_claims(self, execute: Callable[..., Any], claims: list[Claim], now: float) -> None:
        """Claims in order: each run of ordinary ones (intent queued) is inserted GROUP_ROWS rows per statement
        (one at a time once the table holds the largest possible id: SQLite's new ids are then random, not the
        next ones); one whose key is already taken, and every other intent, goes through _apply_claim."""
        start, count = 0, len(claims)
        group_rows = schema.GROUP_ROWS if self._sequential_ids else 1
        while start < count:
            end = start
            while end < count and end - start < group_rows and claims[end].intent == "queued":
                end += 1
            if end - start < 2:
                self._apply_claim(execute, claims[start], now)
                start += 1
                continue
            group = claims[start:end]
            values: list[Any] = []
            extend = values.extend      # a tuple per row: a nested comprehension cost 3 opcodes a value
            for c in group:
                extend((c.task_id, c.key, c.payload, "queued", now, now, None, None))
            cursor = execute(schema.insert_rows(len(group)), values)
            made, last = cursor.rowcount, cursor.lastrowid
            start = end
            if made == len(group):      # every key was free: the ids in VALUES order (schema.insert_rows)
                for row_id, claim in enumerate(group, last - made + 1):
                    claim.outcome, claim.row = "new", {"id": row_id, "status": "queued", "attempts": 0}
                continue
            # some keys were taken: which rows were made, and their ids
            ids = dict(execute(schema.NEW_ROWS, (last - made, last)).fetchall()) if made else {}
            for claim in group:
                row_id = ids.pop(claim.key, None)
                if row_id is not None:
                    claim.outcome, claim.row = "new", {"id": row_id, "status": "queued", "attempts": 0}
                else:       # its key is held by an earlier row (or by a claim just before it in this group)
                    self._claim_taken(execute, claim, now)

    def _apply_claim(self, execute: Callable[..., Any], claim: Claim, now: float) -> None:
        if claim.intent in ("rejected", "conflict"):
            # Refused before owning a key: recorded under no key so the key stays free.
            row_id = _insert(execute, (claim.task_id, None, claim.payload, "rejected", now, now,
                                       claim.error_class, claim.error))
            claim.outcome = claim.intent
            claim.row = {"id": row_id, "status": "rejected", "attempts": 0, "error_class": claim.error_class,
                         "last_error": claim.error}
            return
        status = "dead" if claim.intent == "dead" else "queued"
        new_id = _insert(execute, (claim.task_id, claim.key, claim.payload, status, now, now,
                                   claim.error_class, claim.error))
        if new_id is not None:
            if status == "dead":
                execute(schema.DEAD_LETTER, (now, new_id))
            claim.outcome, claim.row = "new", {"id": new_id, "status": status, "attempts": 0}
            return
        self._claim_taken(execute, claim, now)

    @staticmethod
    def _claim_taken(execute: Callable[..., Any], claim: Claim, now: float) -> None:
        """A claim whose key an existing row holds: the same bad task again, a conflict, a reclaim of a
        rejected key, an unfinished row to adopt, or a final one to answer from."""
        row = dict(zip(schema.SELECT_KEY_COLUMNS, execute(schema.SELECT_KEY, (claim.key,)).fetchone(), strict=True))
        if claim.intent == "dead":
            if row["payload"] == claim.payload and row["status"] == "dead" and \
                    row["error_class"] == claim.error_class and row["last_error"] == claim.error:
                claim.outcome, claim.row = "final", row      # the same bad task again
                return
            # A bad task never shares a row with the task that holds its key: record it keyless.
            row_id = _insert(execute, (claim.task_id, None, claim.payload, "dead", now, now,
                                       claim.error_class, claim.error))
            execute(schema.DEAD_LETTER, (now, row_id))
            claim.outcome, claim.row = "new", {"id": row_id, "status": "dead", "attempts": 0}
            return
        if row["payload"] != claim.payload:
            message = (f"conflict: idempotency key {str(claim.key)[:200]!r} is already held by task "
                       f"{row['task_id']!r} with a different payload")
            row_id = _insert(execute, (claim.task_id, None, claim.payload, "rejected", now, now,
                                       "IdempotencyConflict", message))
            claim.outcome = "conflict"
            claim.row = {"id": row_id, "status": "rejected", "attempts": 0,
                         "error_class": "IdempotencyConflict", "last_error": message}
        elif row["status"] == "rejected":
            execute(schema.RECLAIM, (claim.task_id, now, row["id"]))
            row["status"] = "queued"
            claim.outcome, claim.row = "reclaimed", row
        elif row["status"] in schema.UNFINISHED:
            claim.outcome, claim.row = "adopted", row
        else:
            claim.outcome, claim.row = "final", row

    # -- WAL size and retention -------------------------------------------------------------
    def _wal_size(self) -> int:
        try:
            size = os.path.getsize(self.db_path + "-wal")
        except OSError:
            return 0
        if size > self.wal_high_water:
            self.wal_high_water = size
        return size

    def _after_commit(self) -> None:
        """Keep the WAL bounded: RESTART checkpoints past the soft limit; past the hard limit, hold the
        writer until one completes (a reader holding an old snapshot is waited for, up to lock_wait_s).
        The WAL's size is read by the checkpointer thread (`_wal_big`), not here: a stat per commit is a
        GIL release per commit on the writer's path."""
        if not self._wal_big:
            return
        self._wal_big = False
        if self._wal_size() < WAL_SOFT_LIMIT:
            return
        deadline = time.perf_counter() + self.lock_wait_s
        while True:
            try:
                busy, _frames, _done = self._conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
            except sqlite3.Error as exc:
                busy = 1
                if not is_busy(exc):
                    log.warning("WAL checkpoint failed: %s", store_error(exc).cause)
                    return
            if not busy or self._wal_size() < WAL_HARD_LIMIT or time.perf_counter() >= deadline:
                if busy and self._wal_size() >= WAL_HARD_LIMIT:
                    log.warning("the WAL of %s is %d MiB: a reader keeps an old snapshot open", self.db_path,
                                self._wal_size() >> 20)
                return
            time.sleep(0.02)

    def _checkpoint_loop(self) -> None:
        """Every CHECKPOINT_EVERY_S, if anything was committed, a PASSIVE checkpoint on a connection of its
        own: it copies committed WAL frames into the database without blocking the writer."""
        try:
            conn = connect(self.db_path, timeout_s=0.05)
        except sqlite3.Error:
            return
        seen = self.commits
        warned = False
        last_prune = time.perf_counter()
        while not self._stop.wait(CHECKPOINT_EVERY_S):
            if self.retention_s > 0 and time.perf_counter() - last_prune >= PRUNE_EVERY_S:
                last_prune = time.perf_counter()
                with self._cv:
                    self._prune_due = True
                    self._cv.notify()
            if self.commits == seen:
                continue
            seen = self.commits
            if self._wal_size() >= WAL_SOFT_LIMIT:
                self._wal_big = True        # the writer runs a RESTART checkpoint after its next commit
            try:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error as exc:
                if not is_busy(exc) and not warned:     # read-only or immutable file: say so, once
                    warned = True
                    log.warning("WAL checkpoint of %s failed: %s (%s)", self.db_path, store_error(exc).cause, exc)
        conn.close()

    def _prune(self) -> int:
        """Delete finished rows (and their dead letters) older than retention_s, a batch at a time."""
        try:
            return schema.prune_batch(self._conn, time.time() - self.retention_s, PRUNE_BATCH)
        except sqlite3.Error as exc:
            log.warning("pruning finished rows failed: %s", store_error(exc).cause)
            return 0

    # -- closing ----------------------------------------------------------------------------
    def _drain_here(self) -> None:
        """Commit (in the calling thread) whatever reached the store after the writer stopped."""
        while True:
            with self._cv:
                if self._full:
                    batch = self._full.popleft()
                else:
                    batch, self._batch = self._batch, _Batch()
            if not batch.ops:
                return
            if self._writer_error is not None:      # the connection's transaction may be half done: no commit
                self._fail(batch, self._writer_error)
            elif self._conn is None:
                self._fail(batch, StoreError("the state store is closed", "state store closed"))
            else:
                self._commit_batch(batch)

    def close(self, timeout: float = 30.0) -> None:
        """Commit what is pending, stop the threads, checkpoint and close the connection."""
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []
        self._closed = True
        self._drain_here()
        conn, self._conn = self._conn, None  # type: ignore[assignment]
        if conn is None:
            return
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error:
            pass
        try:
            conn.close()
        except sqlite3.Error:
            pass
