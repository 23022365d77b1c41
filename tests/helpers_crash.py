"""Shared helpers for the crash, hostile-input, database-fault and reconcile tests.

Everything here runs the real CLI (task_queue_optimized.py) in a subprocess, or reads the engine's SQLite
database through a read-only connection, and checks the end state the contract promises: every task
final exactly once, every success with a complete, verified output object, no temp files, attempts
within budget.
"""
import contextlib
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time

from runners.workload import image_chunks, source_size_of, write_image
from tqengine.transform import verify_output

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI = os.path.join(ROOT, "task_queue_optimized.py")
DATA = os.path.join(ROOT, "tests", "data")
PY = sys.executable
FINAL = ("success", "dead", "rejected")
DEFAULT_OBJECT_BYTES = 16 * 1024


def cli_env(**extra):
    """A clean environment for the CLI: no TQ_* settings leaking in, no .pyc writes into the repo."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TQ_")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTHONPATH"] = ROOT
    env.update(extra)
    return env


def cli_args(tasks, store, db, *extra):
    return [PY, CLI, "--tasks", str(tasks), "--store", str(store), "--db", str(db), *map(str, extra)]


def run_cli(args, cwd, timeout=45):
    """Run the CLI to completion (args as built by cli_args); cwd is a temp dir so no .env is read."""
    return subprocess.run(args, cwd=str(cwd), env=cli_env(), capture_output=True, text=True, timeout=timeout)


def start_cli(args, cwd):
    return subprocess.Popen(args, cwd=str(cwd), env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def kill_hard(proc):
    """SIGKILL the CLI and reap it; returns its (stdout, stderr)."""
    proc.kill()
    out, err = proc.communicate(timeout=10)
    return out, err


def write_tasks(path, tasks):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(tasks, f)
    return path


def create_objects(store, tasks, default_bytes=DEFAULT_OBJECT_BYTES):
    """Create (or replace) the deterministic source images of well-formed tasks, at their source_size (no
    symlink tricks: used where the test owns the tree). default_bytes is kept for old callers, unused."""
    for task in tasks:
        write_image(str(store), task["image_key"], *source_size_of(task))


def source_chunks(task):
    """The deterministic source image bytes of a task (what create_objects / ensure_objects wrote)."""
    return image_chunks(task["image_key"], *source_size_of(task))


# -- reading the database --------------------------------------------------------------------------
@contextlib.contextmanager
def db_ro(db):
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5.0)
    try:
        yield conn
    finally:
        conn.close()


def query(db, sql, args=()):
    """Rows of a read-only query, or None while the database or its schema does not exist yet."""
    if not os.path.exists(db):
        return None
    try:
        with db_ro(db) as conn:
            return conn.execute(sql, args).fetchall()
    except sqlite3.Error:
        return None


def rows(db):
    """Every task row as a dict."""
    with db_ro(db) as conn:
        cur = conn.execute("SELECT * FROM tasks ORDER BY id")
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def dead_letters(db):
    with db_ro(db) as conn:
        cur = conn.execute("SELECT * FROM dead_letters ORDER BY id")
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def wait_for(condition, timeout, proc=None, what="condition", interval=0.01):
    """Poll `condition()` until it returns a truthy value (returned) or the deadline passes (AssertionError).
    With `proc`, fail at once if the process exits before the condition holds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"process exited (rc {proc.returncode}) before {what}; stderr tail: {err[-2000:]}")
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)  # a poll interval, not a wait for something to happen


def count_where(db, where, args=()):
    got = query(db, f"SELECT count(*) FROM tasks WHERE {where}", args)
    return got[0][0] if got else 0


# -- the end-state check ---------------------------------------------------------------------------
def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


def file_chunks(path, size=1 << 16):
    with open(path, "rb") as f:
        while True:
            chunk = f.read(size)
            if not chunk:
                return
            yield chunk


def temp_files(store):
    found = []
    for dirpath, _dirs, names in os.walk(store):
        found.extend(os.path.join(dirpath, n) for n in names if n.endswith(".tq-tmp"))
    return found


def check_end_state(db, store, tasks, max_attempts, allowed=("success",), default_bytes=DEFAULT_OBJECT_BYTES):
    """Assert the contract's end state for a task file; return {status: count} over its distinct keys.

    - every task's idempotency key has exactly one row, in a final state listed in `allowed`;
    - no row anywhere is left queued/running/retrying; attempts within 0..max_attempts;
    - every success: output object exists, sha256 == output_digest, size == output_bytes, and it is the
      variant of the deterministic source image (verify_output: decodes, fits WxH, records its sha256);
    - every dead row has an open dead-letter entry with error_class and message;
    - no *.tq-tmp file anywhere in the store.
    """
    all_rows = rows(db)
    by_key = {}
    for row in all_rows:
        assert row["status"] in FINAL, f"row left in a non-final state: {row}"
        assert 0 <= row["attempts"] <= max_attempts, f"attempts out of budget: {row}"
        if row["idempotency_key"] is not None:
            assert row["idempotency_key"] not in by_key, f"two rows for one key: {row['idempotency_key']}"
            by_key[row["idempotency_key"]] = row
    letters = {}
    for letter in dead_letters(db):
        assert letter["attempts"] <= max_attempts, letter
        if letter["requeued_at"] is None:
            letters.setdefault(letter["task_row"], []).append(letter)
    counts = {}
    seen = set()
    for task in tasks:
        key = f"{task['image_key']}#{task.get('size', task.get('variant'))}"
        assert key in by_key, f"task {task.get('task_id')} ({key}) has no row: it was lost"
        if key in seen:
            continue
        seen.add(key)
        row = by_key[key]
        assert row["status"] in allowed, f"{key}: status {row['status']} not in {allowed}: {row['last_error']}"
        counts[row["status"]] = counts.get(row["status"], 0) + 1
        if row["status"] == "success":
            assert row["attempts"] >= 1, row
            variant = task.get("size", task.get("variant"))
            out = os.path.join(str(store), "variants", *f"{task['image_key']}@{variant}".split("/"))
            assert os.path.isfile(out), f"{key}: success without its output object {out}"
            assert row["output_key"] == f"variants/{task['image_key']}@{variant}", row
            assert os.path.getsize(out) == row["output_bytes"], f"{key}: output size differs from the record"
            assert sha256_file(out) == row["output_digest"], f"{key}: output digest differs from the record"
            reason = verify_output(file_chunks(out), variant, source_chunks(task))
            assert reason is None, f"{key}: output does not verify: {reason}"
        elif row["status"] == "dead":
            entries = letters.get(row["id"])
            assert entries and len(entries) == 1, f"{key}: dead without exactly one open dead letter"
            assert entries[0]["error_class"] and entries[0]["error_message"], entries[0]
    assert temp_files(store) == [], f"temporary files left behind: {temp_files(store)[:5]}"
    return counts


def snapshot_tree(root, skip=()):
    """{path: (kind, size, mtime_ns)} for everything under root (symlinks not followed), minus the `skip` paths
    and everything below them."""
    skip = tuple(os.path.abspath(s) for s in skip)

    def skipped(path):
        return any(path == s or path.startswith(s + os.sep) for s in skip)

    out = {}
    for dirpath, dirs, names in os.walk(os.path.abspath(root)):
        dirs[:] = [d for d in dirs if not skipped(os.path.join(dirpath, d))]
        for name in dirs + names:
            path = os.path.join(dirpath, name)
            if skipped(path):
                continue
            st = os.lstat(path)
            kind = "link" if os.path.islink(path) else ("dir" if os.path.isdir(path) else "file")
            out[path] = (kind, st.st_size if kind == "file" else 0, st.st_mtime_ns if kind == "file" else 0)
    return out


def stderr_lines(text):
    """Non-empty stderr lines (the progress line uses \\r, so split on both)."""
    return [line for line in text.replace("\r", "\n").splitlines() if line.strip()]
