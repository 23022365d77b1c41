"""The state database as tools see it: read the dead letters, send them back to the queue.

Used by `python -m lab dlq`; it takes no engine lock (a requeued task is `queued` in the database and runs
at the next engine start). Every statement on the engine's schema lives in this package.
"""
from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable
from typing import Any

from ..errors import ConfigError
from . import schema
from .schema import connect


def open_database(db_path: str) -> sqlite3.Connection:
    """A connection to an existing engine database; ConfigError (one line) when it is missing or is not
    one (no dead_letters table)."""
    if not os.path.exists(db_path):
        raise ConfigError(f"no database at {db_path}")
    try:
        conn = connect(db_path, timeout_s=5.0)
        conn.execute("PRAGMA synchronous=NORMAL")
    except sqlite3.Error as exc:
        raise ConfigError(f"cannot open database {db_path}: {exc}") from None
    try:
        schema.check_existing(db_path)
        if schema.check_schema(conn, db_path):
            raise ConfigError(f"{db_path} is not a task database of the engine (it is empty)")
    except BaseException:
        conn.close()
        raise
    return conn


_COLUMNS = ("id", "task_row", "task_id", "idempotency_key", "error_class", "error_message", "attempts",
            "created_at", "dead_at", "requeued_at")


def dead_letters(conn: sqlite3.Connection, include_requeued: bool = False) -> list[dict[str, Any]]:
    """Dead letters in id order (open ones only unless include_requeued), each with its task's payload."""
    where = "" if include_requeued else " WHERE d.requeued_at IS NULL"
    columns = ", ".join(f"d.{c}" for c in _COLUMNS)
    cur = conn.execute(f"SELECT {columns}, t.payload FROM dead_letters d LEFT JOIN tasks t ON t.id = d.task_row"
                       f"{where} ORDER BY d.id")
    return [dict(zip((*_COLUMNS, "payload"), row, strict=True)) for row in cur.fetchall()]


def requeue_dead_letters(conn: sqlite3.Connection,
                         ids: Iterable[int] | None = None) -> tuple[list[int], list[int]]:
    """Mark the tasks of open dead letters `ids` (None: all open ones) `queued` with a fresh attempt budget,
    and close those entries, in one transaction; returns (ids whose task was requeued, ids closed as stale:
    their task row is gone or no longer dead). ConfigError naming the first id that is not an open dead
    letter (nothing is changed then)."""
    open_rows = {row["id"]: row for row in dead_letters(conn)}
    chosen = sorted(open_rows) if ids is None else sorted(set(ids))
    missing = [i for i in chosen if i not in open_rows]
    if missing:
        raise ConfigError(f"no open dead letter with id {missing[0]}")
    now = time.time()
    requeued: list[int] = []
    stale: list[int] = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        for i in chosen:
            cur = conn.execute("UPDATE tasks SET status='queued', attempts=0, next_attempt_at=NULL, updated_at=?,"
                               " version=version+1 WHERE id=? AND status='dead'", (now, open_rows[i]["task_row"]))
            (requeued if cur.rowcount else stale).append(i)
            conn.execute("UPDATE dead_letters SET requeued_at=? WHERE id=?", (now, i))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return requeued, stale


def prune_finished(conn: sqlite3.Connection, older_than_s: float, batch: int = 5000) -> int:
    """Delete finished rows (success, dead, rejected) last changed more than `older_than_s` ago, with their
    dead letters, in batches; returns how many. A pruned idempotency key is free again: the same task
    submitted later runs again."""
    cutoff = time.time() - older_than_s
    removed = 0
    schema.create_prune_indexes(conn)
    while True:
        done = schema.prune_batch(conn, cutoff, batch)
        removed += done
        if done < batch:
            return removed
