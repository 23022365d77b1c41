"""The engine's SQLite schema, its version, and opening a database safely.

`check_existing`, `check_schema` and `quick_check` refuse, before anything is written to the file, a
database that is not the engine's (another program's tables), one written by another version of the engine
(PRAGMA user_version), an existing empty file (a truncated database would otherwise silently start afresh)
and a damaged one; only then do `enable_wal` and `create` switch to WAL and create the tables of a new
database. `store_error(exc)`
turns a sqlite3 or OS error into the StoreError that names its cause (disk full, read-only, corrupt,
locked), so no caller ever says only "state store failure".
"""
from __future__ import annotations

import errno
import functools
import os
import sqlite3

from ..errors import ConfigError, SchemaMismatch, StoreCorrupt, StoreError, StoreLocked, StoreResourceError

SCHEMA_VERSION = 1
SQLITE_NEEDED = (3, 35, 0)      # RETURNING (3.35: pruning) and UPDATE ... FROM (3.33), used by the writer
UNFINISHED = ("queued", "running", "retrying")
FINAL = ("success", "dead", "rejected")
TABLES = ("tasks", "dead_letters")

SCHEMA = """
CREATE TABLE tasks(
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
CREATE TABLE dead_letters(
  id INTEGER PRIMARY KEY,
  task_row INTEGER NOT NULL REFERENCES tasks(id),
  task_id TEXT,
  idempotency_key TEXT,
  error_class TEXT,
  error_message TEXT,
  attempts INTEGER NOT NULL,
  created_at REAL NOT NULL,
  dead_at REAL NOT NULL,
  requeued_at REAL
);
CREATE INDEX dead_letters_open ON dead_letters(task_row) WHERE requeued_at IS NULL;
"""

_INSERT_INTO = ("INSERT INTO tasks(task_id, idempotency_key, payload, status, attempts, created_at, updated_at,"
                " error_class, last_error) VALUES ")
_INSERT_ROW = "(?,?,?,?,0,?,?,?,?)"
_ON_CONFLICT = " ON CONFLICT(idempotency_key) DO NOTHING"
# one row: no RETURNING (~4 us a row here); store.py reads the cursor's rowcount and lastrowid
INSERT = _INSERT_INTO + _INSERT_ROW + _ON_CONFLICT
# Runs of claims and of successes go to SQLite as one statement per GROUP_ROWS rows (store.py _apply). A run of
# claims is one INSERT without RETURNING: SQLite gives each new row the largest id in the table plus one (its
# documented rowid algorithm), so the rows made by one INSERT hold the ids lastrowid - rowcount + 1 ... lastrowid,
# in the order of its VALUES. RETURNING cost four GIL releases a returned row in the sqlite3 module (counted with
# a uprobe on drop_gil), each one waking a thread that waits for the GIL. Once a row holds the largest
# possible id, SQLite picks new ids at random: the store then inserts one claim at a time (store.py).
GROUP_ROWS = 64
TOP_ROWID = 2 ** 63 - 1
HAS_TOP_ROWID = f"SELECT 1 FROM tasks WHERE id = {TOP_ROWID}"
NEW_ROWS = "SELECT idempotency_key, id FROM tasks WHERE id > ? AND id <= ?"     # the rows one INSERT made


@functools.lru_cache(maxsize=2 * GROUP_ROWS)
def insert_rows(n: int) -> str:
    """INSERT of n ordinary claims (9 values a row, as INSERT); a claim whose key is taken makes no row."""
    return _INSERT_INTO + ",".join([_INSERT_ROW] * n) + _ON_CONFLICT


@functools.lru_cache(maxsize=2 * GROUP_ROWS)
def success_rows(n: int) -> str:
    """UPDATE of n rows to `success`, 6 values a row: id, attempts, output_key, output_digest, output_bytes,
    updated_at (the columns of TRANSITIONS['success'])."""
    return ("UPDATE tasks SET status='success', attempts=v.column2, output_key=v.column3, output_digest=v.column4,"
            " output_bytes=v.column5, next_attempt_at=NULL, updated_at=v.column6, version=version+1 FROM (VALUES " +
            ",".join(["(?,?,?,?,?,?)"] * n) + ") AS v WHERE tasks.id = v.column1")


SELECT_KEY = ("SELECT id, task_id, payload, status, attempts, output_key, output_digest, error_class,"
              " last_error FROM tasks WHERE idempotency_key = ?")
SELECT_KEY_COLUMNS = ("id", "task_id", "payload", "status", "attempts", "output_key", "output_digest",
                      "error_class", "last_error")
DEAD_LETTER = ("INSERT INTO dead_letters(task_row, task_id, idempotency_key, error_class, error_message,"
               " attempts, created_at, dead_at) SELECT id, task_id, idempotency_key, error_class, last_error,"
               " attempts, created_at, ? FROM tasks WHERE id = ?")
RECLAIM = ("UPDATE tasks SET status='queued', task_id=?, error_class=NULL, last_error=NULL, updated_at=?,"
           " version=version+1 WHERE id=?")
# Recovery reads the unfinished rows once, at start, by a scan (0.16 s per million rows, cached): an index
# on them would be written twice per task, at the claim and at the final state (~11 us a task, a quarter of
# the writer's SQLite time). Databases made before that change lose the index when they are opened.
OLD_UNFINISHED_INDEX = "DROP INDEX IF EXISTS tasks_unfinished"
UNFINISHED_ROWS = ("SELECT id, task_id, idempotency_key, payload, status, attempts, next_attempt_at"
                   " FROM tasks WHERE status IN ('queued','running','retrying') ORDER BY id")
TRANSITIONS = {
    "running": "UPDATE tasks SET status='running', attempts=?, updated_at=?, version=version+1 WHERE id=?",
    "queued": ("UPDATE tasks SET status='queued', attempts=?, next_attempt_at=NULL, updated_at=?,"
               " version=version+1 WHERE id=?"),
    "retrying": ("UPDATE tasks SET status='retrying', attempts=?, next_attempt_at=?, error_class=?,"
                 " last_error=?, updated_at=?, version=version+1 WHERE id=?"),
    "success": ("UPDATE tasks SET status='success', attempts=?, output_key=?, output_digest=?,"
                " output_bytes=?, next_attempt_at=NULL, updated_at=?, version=version+1 WHERE id=?"),
    "dead": ("UPDATE tasks SET status='dead', attempts=?, error_class=?, last_error=?,"
             " next_attempt_at=NULL, updated_at=?, version=version+1 WHERE id=?"),
    "rejected": ("UPDATE tasks SET status='rejected', error_class=?, last_error=?, updated_at=?,"
                 " version=version+1 WHERE id=?"),
}
# made only where finished rows are pruned (retention_s, `lab db prune`): it costs ~10 us per task
FINISHED_INDEX = ("CREATE INDEX IF NOT EXISTS tasks_finished_at ON tasks(updated_at)"
                  " WHERE status IN ('success','dead','rejected')")
LETTERS_BY_ROW_INDEX = "CREATE INDEX IF NOT EXISTS dead_letters_task_row ON dead_letters(task_row)"
PRUNE = ("DELETE FROM tasks WHERE id IN (SELECT id FROM tasks WHERE status IN ('success','dead','rejected')"
         " AND updated_at < ? LIMIT ?) RETURNING id")
PRUNE_LETTERS = "DELETE FROM dead_letters WHERE task_row = ?"


def create_prune_indexes(conn: sqlite3.Connection) -> None:
    """The indexes pruning needs (finished rows by age, dead letters by row); made only where rows are pruned."""
    conn.execute(FINISHED_INDEX)
    conn.execute(LETTERS_BY_ROW_INDEX)


def prune_batch(conn: sqlite3.Connection, cutoff: float, limit: int) -> int:
    """Delete up to `limit` finished rows last changed before `cutoff` (wall clock) with their dead letters,
    in one transaction; how many rows went. sqlite3.Error after a rollback."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        ids = [r[0] for r in conn.execute(PRUNE, (cutoff, limit)).fetchall()]
        for row_id in ids:
            conn.execute(PRUNE_LETTERS, (row_id,))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return len(ids)

_FULL = (errno.ENOSPC, errno.EDQUOT)


def connect(db_path: str, timeout_s: float = 0.2) -> sqlite3.Connection:
    return sqlite3.connect(db_path, timeout=timeout_s, isolation_level=None, check_same_thread=False)


def is_busy(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text)


def store_error(exc: BaseException, what: str = "state store") -> StoreError:
    """The StoreError (with its cause) for an exception raised by sqlite3 or the file system."""
    if isinstance(exc, StoreError):
        return exc
    text = str(exc)
    lowered = text.lower()
    code = getattr(exc, "errno", None)
    if "database or disk is full" in lowered or code in _FULL:
        return StoreResourceError(f"{what}: disk full ({text})", "disk full")
    if "readonly" in lowered or "read-only" in lowered or code == errno.EROFS:
        return StoreResourceError(f"{what}: the database cannot be written ({text})", "read-only database")
    if "disk i/o error" in lowered or code == errno.EIO:
        return StoreResourceError(f"{what}: disk I/O error ({text})", "disk I/O error")
    if code in (errno.EMFILE, errno.ENFILE):
        return StoreResourceError(f"{what}: out of file descriptors ({text})", "no file descriptors left")
    if "malformed" in lowered or "not a database" in lowered or isinstance(exc, sqlite3.DatabaseError) and \
            "corrupt" in lowered:
        return StoreCorrupt(f"{what}: the database file is damaged ({text})", "database corrupt")
    if is_busy(exc):
        return StoreLocked(f"{what}: {text}", "database locked by another process")
    if "unable to open" in lowered:
        return StoreResourceError(f"{what}: cannot open the database file ({text})", "cannot open database")
    return StoreError(f"{what}: {text}", "state store failure")


def check_existing(db_path: str, used_before: bool = False) -> None:
    """Refuse an existing file that must not be opened as the engine's database (before any write):
    a folder, or an empty file that an engine used before (its lock file says so): a truncated database
    would otherwise silently start afresh and run every task again."""
    if os.path.isdir(db_path):
        raise ConfigError(f"cannot open database {db_path}: is a directory")
    try:
        size = os.path.getsize(db_path)
    except FileNotFoundError:
        return
    wal = db_path + "-wal"
    if size == 0 and (used_before or (os.path.exists(wal) and os.path.getsize(wal) > 0)):
        raise ConfigError(f"database {db_path} is empty (0 bytes) but an engine used it before: it was "
                          f"truncated; move it away to start a new database")


def check_schema(conn: sqlite3.Connection, db_path: str) -> bool:
    """True for a new (empty) database, False for the engine's own of this version; SchemaMismatch or
    StoreCorrupt (before anything is written) otherwise."""
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as exc:
        if is_busy(exc):
            raise
        raise store_error(exc, f"database {db_path}") from None
    if not names and version == 0:
        return True
    if version == SCHEMA_VERSION and set(TABLES) <= names:
        return False
    if version == 0 and set(TABLES) <= names:
        raise SchemaMismatch(f"database {db_path} was written by an older version of the engine (schema 0, this "
                             f"engine writes schema {SCHEMA_VERSION}); finish it with that version, or use a new "
                             f"--db")
    if version > SCHEMA_VERSION and set(TABLES) <= names:
        raise SchemaMismatch(f"database {db_path} was written by a newer version of the engine (schema "
                             f"{version}, this engine knows {SCHEMA_VERSION})")
    raise SchemaMismatch(f"database {db_path} is not a task database of the engine (it holds "
                         f"{', '.join(sorted(names)) or 'no tables'}, user_version {version}); use another --db")


def quick_check(conn: sqlite3.Connection, db_path: str) -> None:
    """StoreCorrupt if SQLite's quick_check finds damage (pages, indexes: O(size), a few ms per MB)."""
    try:
        rows = conn.execute("PRAGMA quick_check(5)").fetchall()
    except sqlite3.DatabaseError as exc:
        if is_busy(exc):
            raise
        raise store_error(exc, f"database {db_path}") from None
    problems = [r[0] for r in rows if r[0] != "ok"]
    if problems:
        raise StoreCorrupt(f"database {db_path} is damaged: {'; '.join(problems)[:300]}", "database corrupt")


def create(conn: sqlite3.Connection) -> None:
    """The tables of a new database and its schema version, in one transaction (statement by statement:
    executescript would commit on its own)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def enable_wal(conn: sqlite3.Connection) -> None:
    """Switch to WAL (needs a moment of exclusive access on a database in rollback-journal mode)."""
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise sqlite3.OperationalError("database is locked (could not switch to WAL)")
    conn.execute("PRAGMA synchronous=NORMAL")
    # checkpoints run outside commits (store.py): a commit never stalls behind the copy into the database
    conn.execute("PRAGMA wal_autocheckpoint=0")
    # once a checkpoint has reset the WAL, its file is cut back to this size
    conn.execute(f"PRAGMA journal_size_limit={8 * 1024 * 1024}")
