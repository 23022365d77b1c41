"""Durable task state in SQLite: task records, idempotency keys (UNIQUE), dead letters, recovery.

One write connection; operations are appended to a pending list and committed in batches by group
commit with leader election: a thread that needs its operation durable takes the commit lock and
commits everything pending in one BEGIN IMMEDIATE ... COMMIT, its own and everyone else's; threads
that queued behind it find their operation already committed and return at once. At low load a
thread commits its own operation with no hand-off to another thread; at high load one commit
carries many. Operations nobody waits for (`running`, `retrying`) ride along with the next commit,
or a flusher thread commits them within FLUSH_EVERY_S. So:

- a claim (the INSERT that reserves an idempotency key) is committed before submit() returns;
- a final state (success / dead / rejected) is committed before the task's handle resolves;
- `running` and `retrying` are durable within FLUSH_EVERY_S, so after a crash the attempt count may
  miss an attempt that had just started; the output write is idempotent, so that costs a repeated
  attempt at most, never a wrong result.

With WAL and synchronous=NORMAL a commit survives the process being killed (SIGKILL); a power loss
may lose the last commits (SQLite's documented trade-off), which would replay those tasks on resume.
A database locked by another process is waited for with a bounded, jittered retry.
"""
import collections
import logging
import os
import random
import sqlite3
import threading
import time

from ..errors import ConfigError

UNFINISHED = ("queued", "running", "retrying")

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks(
  id INTEGER PRIMARY KEY,
  task_id TEXT,
  idempotency_key TEXT UNIQUE,
  payload TEXT NOT NULL,
  status TEXT NOT NULL CHECK (status IN
      ('queued','running','retrying','success','failed','dead','rejected')),
  attempts INTEGER NOT NULL DEFAULT 0,
  created_at REAL NOT NULL,
  updated_at REAL NOT NULL,
  next_attempt_at REAL,
  output_key TEXT,
  output_digest TEXT,
  output_bytes INTEGER,
  version INTEGER NOT NULL DEFAULT 1,
  error_class TEXT,
  last_error TEXT
);
CREATE INDEX IF NOT EXISTS tasks_unfinished ON tasks(status)
  WHERE status IN ('queued','running','retrying');
CREATE TABLE IF NOT EXISTS dead_letters(
  id INTEGER PRIMARY KEY,
  task_row INTEGER NOT NULL REFERENCES tasks(id),
  task_id TEXT,
  idempotency_key TEXT,
  payload TEXT NOT NULL,
  error_class TEXT,
  error_message TEXT,
  attempts INTEGER NOT NULL,
  created_at REAL NOT NULL,
  dead_at REAL NOT NULL,
  requeued_at REAL
);
CREATE INDEX IF NOT EXISTS dead_letters_open ON dead_letters(task_row) WHERE requeued_at IS NULL;
"""

_INSERT = ("INSERT INTO tasks(task_id, idempotency_key, payload, status, attempts, created_at, updated_at,"
           " error_class, last_error) VALUES(?,?,?,?,0,?,?,?,?)"
           " ON CONFLICT(idempotency_key) DO NOTHING RETURNING id")
_SELECT_KEY = ("SELECT id, task_id, payload, status, attempts, output_key, output_digest, error_class,"
               " last_error FROM tasks WHERE idempotency_key = ?")
_DEAD_LETTER = ("INSERT INTO dead_letters(task_row, task_id, idempotency_key, payload, error_class,"
                " error_message, attempts, created_at, dead_at) SELECT id, task_id, idempotency_key, payload,"
                " error_class, last_error, attempts, created_at, ? FROM tasks WHERE id = ?")
_TRANSITIONS = {
    "running": "UPDATE tasks SET status='running', attempts=?, updated_at=?, version=version+1 WHERE id=?",
    "retrying": ("UPDATE tasks SET status='retrying', attempts=?, next_attempt_at=?, error_class=?,"
                 " last_error=?, updated_at=?, version=version+1 WHERE id=?"),
    "success": ("UPDATE tasks SET status='success', attempts=?, output_key=?, output_digest=?,"
                " output_bytes=?, next_attempt_at=NULL, updated_at=?, version=version+1 WHERE id=?"),
    "dead": ("UPDATE tasks SET status='dead', attempts=?, error_class=?, last_error=?,"
             " next_attempt_at=NULL, updated_at=?, version=version+1 WHERE id=?"),
    "rejected": ("UPDATE tasks SET status='rejected', error_class=?, last_error=?, updated_at=?,"
                 " version=version+1 WHERE id=?"),
}

MAX_BATCH = 4096
CHECKPOINT_EVERY_S = 0.5
FLUSH_EVERY_S = 0.05


class _Op:
    """One pending write: `kind` (claim | running | retrying | success | dead | rejected), the row it
    changes and the statement's arguments (for a claim: the Claims), who to call once it is committed,
    and the ticket of a thread waiting for it."""
    __slots__ = ("kind", "row_id", "args", "callback", "ticket")

    def __init__(self, kind, row_id, args, callback=None, ticket=None):
        self.kind, self.row_id, self.args, self.callback, self.ticket = kind, row_id, args, callback, ticket


class _Ticket:
    """Tells a thread that its operation was committed (done) and how (error None or the exception)."""
    __slots__ = ("done", "error")

    def __init__(self):
        self.done = False
        self.error = None


class StoreError(RuntimeError):
    """The state store could not commit (disk full, database corrupt, locked for too long)."""


class Claim:
    """One submission asking for its idempotency key. `intent` says what row to create:
    queued (normal), dead (the task failed validation), rejected (refused before claiming a key)."""
    __slots__ = ("key", "payload", "task_id", "intent", "error_class", "error", "outcome", "row")

    def __init__(self, key, payload, task_id, intent="queued", error_class=None, error=None):
        self.key, self.payload, self.task_id, self.intent = key, payload, task_id, intent
        self.error_class, self.error = error_class, error
        self.outcome = None   # new | reclaimed | adopted | final | conflict
        self.row = None       # dict of the row as committed


def _is_busy(exc):
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def connect(db_path, timeout_s=0.2):
    return sqlite3.connect(db_path, timeout=timeout_s, isolation_level=None, check_same_thread=False)


def enable_wal(conn):
    """Switch to WAL (needs a moment of exclusive access on a database in rollback-journal mode)."""
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise sqlite3.OperationalError("database is locked (could not switch to WAL)")
    conn.execute("PRAGMA synchronous=NORMAL")
    # Checkpoints (copying the WAL into the database, with fsyncs) run in their own thread
    # (TaskStore._checkpoint_loop), not inside a commit: a commit never stalls behind one.
    conn.execute("PRAGMA wal_autocheckpoint=0")


class StateStore:
    """The SQLite task table: claims, state transitions, recovery reads; group commit."""

    def __init__(self, db_path, lock_wait_s=60.0):
        self.db_path = db_path
        self.lock_wait_s = lock_wait_s
        self._pending = collections.deque()   # _Op not yet committed
        self._commit_lock = threading.Lock()
        self._threads = []
        self._stop = threading.Event()
        self.commits = 0
        self.ops_applied = 0
        self._closed = False
        try:
            directory = os.path.dirname(os.path.abspath(db_path))
            os.makedirs(directory, exist_ok=True)
            if os.path.isdir(db_path):
                raise IsADirectoryError(21, "is a directory")
            self._conn = connect(db_path)
            self._with_lock_retry(lambda: enable_wal(self._conn))
            self._with_lock_retry(lambda: self._conn.executescript(SCHEMA))
            probe = os.path.join(directory, f".tq-write-probe-{os.getpid()}")
            with open(probe, "wb"):
                pass
            os.unlink(probe)
        except (sqlite3.Error, OSError) as exc:
            raise ConfigError(f"cannot open database {db_path}: {exc}") from None

    # -- reads (before the writer starts, or from other connections) ------------------------
    def unfinished(self):
        cur = self._conn.execute(
            "SELECT id, task_id, idempotency_key, payload, status, attempts, next_attempt_at"
            " FROM tasks WHERE status IN ('queued','running','retrying') ORDER BY id")
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]

    # -- the writer -------------------------------------------------------------------------
    def start(self):
        """Start the flusher (commits operations nobody waits for) and the WAL checkpointer."""
        for target, name in ((self._flush_loop, "tq-store-flush"), (self._checkpoint_loop, "tq-store-checkpoint")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _flush_loop(self):
        while not self._stop.wait(FLUSH_EVERY_S):
            if self._pending:
                self._try_lead()

    def _checkpoint_loop(self):
        """Every CHECKPOINT_EVERY_S, if anything was committed, run a PASSIVE checkpoint on a connection of
        its own: it copies committed WAL frames into the database without blocking the writer."""
        try:
            conn = connect(self.db_path, timeout_s=0.05)
        except sqlite3.Error:
            return
        seen = self.commits
        while not self._stop.wait(CHECKPOINT_EVERY_S):
            if self.commits == seen:
                continue
            seen = self.commits
            try:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error:
                pass   # busy (another process holds a lock): the next round tries again
        conn.close()

    def claim(self, claims):
        """Commit the claims and fill in each one's outcome; returns once they are durable."""
        ticket = _Ticket()
        self._pending.append(_Op("claim", None, claims, ticket=ticket))
        self._commit_pending(ticket)
        if ticket.error is not None:
            raise StoreError(str(ticket.error))
        return claims

    def mark_running(self, row_id, attempt):
        """Attempt `attempt` started; rides along with the next commit (at most FLUSH_EVERY_S later)."""
        self._pending.append(_Op("running", row_id, (attempt,)))

    def mark_retrying(self, row_id, attempt, next_attempt_at, error_class, error):
        """Attempt `attempt` failed and the task waits until `next_attempt_at` (wall clock) for the next;
        rides along with the next commit."""
        self._pending.append(_Op("retrying", row_id, (attempt, next_attempt_at, error_class, error)))

    def finish(self, row_id, outcome, on_commit):
        """The final state (outcome.status success, dead or rejected), committed promptly: this thread
        commits it unless a commit is already under way, whose leader then takes it too (this thread never
        waits); `on_commit(err)` runs after the commit (err None) or its failure."""
        status = outcome.status
        if status == "success":
            args = (outcome.attempts, outcome.output_key, outcome.output_digest, outcome.output_bytes)
        elif status == "dead":
            args = (outcome.attempts, outcome.error_class, outcome.error)
        elif status == "rejected":
            args = (outcome.error_class, outcome.error)
        else:
            raise ValueError(f"not a final status: {status!r}")
        self._pending.append(_Op(status, row_id, args, on_commit))
        self._try_lead()

    def close(self, timeout=30.0):
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []
        self._commit_pending()
        with self._commit_lock:         # never close the connection under a commit in another thread
            self._closed = True
            try:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            except sqlite3.Error:
                pass
            try:
                self._conn.close()
            except sqlite3.Error:
                pass

    def _commit_pending(self, ticket=None):
        """Commit everything pending (unless `ticket` was committed by an earlier leader while this
        thread waited for the lock), run the callbacks outside the lock, then look again: an
        operation queued while the lock was held may have found it taken and left it to us."""
        with self._commit_lock:
            if ticket is not None and ticket.done:
                batch = None
            else:
                batch, errors = self._commit_batch()
        if batch:
            self._run_callbacks(batch, errors)
        if ticket is not None and not ticket.done:   # more than MAX_BATCH were ahead of it
            self._commit_pending(ticket)
        self._try_lead()

    def _try_lead(self):
        """Commit what is pending if no other thread is committing; never waits for the lock."""
        while self._pending:
            if not self._commit_lock.acquire(blocking=False):
                return          # the leader re-checks the pending list after it releases the lock
            try:
                batch, errors = self._commit_batch()
            finally:
                self._commit_lock.release()
            if batch:
                self._run_callbacks(batch, errors)

    def _commit_batch(self):
        """Take up to MAX_BATCH pending operations and commit them (commit lock held)."""
        pending = self._pending
        batch = []
        try:
            while len(batch) < MAX_BATCH:
                batch.append(pending.popleft())
        except IndexError:
            pass
        if not batch:
            return batch, []
        errors = self._commit(batch)
        for op, err in zip(batch, errors, strict=True):
            if op.ticket is not None:
                op.ticket.error = err
                op.ticket.done = True
        return batch, errors

    @staticmethod
    def _run_callbacks(batch, errors):
        for op, err in zip(batch, errors, strict=True):
            callback = op.callback
            if callback is not None:
                try:
                    callback(err)
                except Exception:  # a caller's callback must not break the committer
                    logging.getLogger("tq").exception("store callback failed")

    def _commit(self, batch):
        """Commit the batch in one transaction; if that fails for a reason other than a lock, commit
        its operations one by one so a single bad one (say, a string SQLite cannot encode) fails
        alone. Returns one error (or None) per operation."""
        if self._closed:
            return [StoreError("the state store is closed")] * len(batch)
        try:
            self._with_lock_retry(lambda: self._apply(batch))
            self.commits += 1
            self.ops_applied += len(batch)
            return [None] * len(batch)
        except Exception as exc:  # a failed commit must still reach every waiter
            if len(batch) == 1 or (isinstance(exc, sqlite3.OperationalError) and _is_busy(exc)):
                return [exc] * len(batch)   # locked past the bound: one answer for all, not one wait each
        errors = []
        for op in batch:
            try:
                self._with_lock_retry(lambda: self._apply([op]))
                self.commits += 1
                self.ops_applied += 1
                errors.append(None)
            except Exception as exc:
                errors.append(exc)
        return errors

    def _with_lock_retry(self, action):
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
                if not isinstance(exc, sqlite3.OperationalError) or not _is_busy(exc) \
                        or time.perf_counter() >= deadline:
                    raise
                time.sleep(random.uniform(delay / 2, delay))
                delay = min(delay * 2, 0.25)

    def _apply(self, batch):
        execute = self._conn.execute
        now = time.time()
        # A `running` whose attempt already ended in this same batch is superseded by that outcome
        # (which writes the same attempt count): skip it, one UPDATE fewer per fast task.
        ended = {(op.row_id, op.args[0]) for op in batch if op.kind in ("success", "dead", "retrying")}
        execute("BEGIN IMMEDIATE")
        for op in batch:
            kind = op.kind
            if kind == "claim":
                for claim in op.args:
                    self._apply_claim(execute, claim, now)
            elif kind == "running":
                if (op.row_id, op.args[0]) not in ended:
                    execute(_TRANSITIONS["running"], (op.args[0], now, op.row_id))
            elif kind in _TRANSITIONS:
                execute(_TRANSITIONS[kind], (*op.args, now, op.row_id))
                if kind == "dead":
                    execute(_DEAD_LETTER, (now, op.row_id))
            else:
                raise ValueError(f"unknown store operation {kind!r}")
        execute("COMMIT")

    def _apply_claim(self, execute, claim, now):
        if claim.intent in ("rejected", "conflict"):
            # Refused before owning a key: recorded under no key so the key stays free.
            row_id = execute(_INSERT, (claim.task_id, None, claim.payload, "rejected", now, now,
                                       claim.error_class, claim.error)).fetchall()[0][0]
            claim.outcome = claim.intent
            claim.row = {"id": row_id, "status": "rejected", "attempts": 0, "error_class": claim.error_class,
                         "last_error": claim.error}
            return
        status = "dead" if claim.intent == "dead" else "queued"
        rows = execute(_INSERT, (claim.task_id, claim.key, claim.payload, status, now, now,
                                 claim.error_class, claim.error)).fetchall()
        got = rows[0] if rows else None
        if got is not None:
            if status == "dead":
                execute(_DEAD_LETTER, (now, got[0]))
            claim.outcome, claim.row = "new", {"id": got[0], "status": status, "attempts": 0}
            return
        cols = ("id", "task_id", "payload", "status", "attempts", "output_key", "output_digest",
                "error_class", "last_error")
        row = dict(zip(cols, execute(_SELECT_KEY, (claim.key,)).fetchone()))
        if claim.intent == "dead":
            if row["payload"] == claim.payload and row["status"] == "dead" and \
                    row["error_class"] == claim.error_class and row["last_error"] == claim.error:
                claim.outcome, claim.row = "final", row      # the same bad task again
                return
            # A bad task never shares a row with the task that holds its key: record it keyless.
            row_id = execute(_INSERT, (claim.task_id, None, claim.payload, "dead", now, now,
                                       claim.error_class, claim.error)).fetchall()[0][0]
            execute(_DEAD_LETTER, (now, row_id))
            claim.outcome, claim.row = "new", {"id": row_id, "status": "dead", "attempts": 0}
            return
        if row["payload"] != claim.payload:
            message = (f"conflict: idempotency key {claim.key[:200]!r} is already held by task "
                       f"{row['task_id']!r} with a different payload")
            row_id = execute(_INSERT, (claim.task_id, None, claim.payload, "rejected", now, now,
                                       "IdempotencyConflict", message)).fetchall()[0][0]
            claim.outcome = "conflict"
            claim.row = {"id": row_id, "status": "rejected", "attempts": 0,
                         "error_class": "IdempotencyConflict", "last_error": message}
        elif row["status"] == "rejected":
            execute("UPDATE tasks SET status='queued', task_id=?, error_class=NULL, last_error=NULL,"
                    " updated_at=?, version=version+1 WHERE id=?", (claim.task_id, now, row["id"]))
            row["status"] = "queued"
            claim.outcome, claim.row = "reclaimed", row
        elif row["status"] in UNFINISHED:
            claim.outcome, claim.row = "adopted", row
        else:
            claim.outcome, claim.row = "final", row
