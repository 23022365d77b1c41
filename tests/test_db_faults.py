"""Database faults: another process holding the database locked (the engine waits with a bounded, jittered
retry and carries on; 'database is locked' never reaches the user), and a database path that cannot be
used (a clear one-line error at start, exit code 2)."""
import os
import subprocess
import threading
import time

import pytest
from helpers_crash import (
    PY,
    check_end_state,
    cli_args,
    count_where,
    run_cli,
    start_cli,
    stderr_lines,
    wait_for,
    write_tasks,
)

from runners.workload import make_tasks
from tqengine import Config, WorkerPool
from tqengine.errors import ConfigError
from tqengine.records import Outcome
from tqengine.state.store import Claim, StateStore, StoreError

HOLD_S = 2.5
LOCKER = """
import sqlite3, sys, time
db, hold = sys.argv[1], float(sys.argv[2])
conn = sqlite3.connect(db, isolation_level=None, timeout=30)
conn.execute("BEGIN EXCLUSIVE")
print("locked", time.time(), flush=True)
time.sleep(hold)          # the fault being injected: hold the lock this long
conn.execute("COMMIT")
print("released", time.time(), flush=True)
"""


def _lock(db, hold=HOLD_S):
    """Start a process that holds BEGIN EXCLUSIVE on db for `hold` seconds; return it once it holds the lock."""
    proc = subprocess.Popen([PY, "-c", LOCKER, str(db), str(hold)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    line = proc.stdout.readline()
    assert line.startswith("locked"), (line, proc.stderr.read() if proc.poll() is not None else "")
    return proc, float(line.split()[1])


def _released_at(locker):
    out, err = locker.communicate(timeout=15)
    assert locker.returncode == 0, err
    return float(out.split()[1])


def _stop(locker):
    """End a locker early (its lock dies with it) when the test no longer needs the lock held."""
    locker.kill()
    locker.communicate(timeout=10)


def _make_engine_db(db, store, tmp_path):
    """A database the engine has created (WAL mode), with one finished task in it."""
    seed = make_tasks(1, seed=99, object_bytes=500)
    proc = run_cli(cli_args(write_tasks(tmp_path / "seed.json", seed), store, db, "--create-objects"), tmp_path)
    assert proc.returncode == 0, proc.stderr


def _no_lock_error(stderr, tmp_path):
    """No lock error reaches the user (the temp path is masked: pytest names it after the test)."""
    text = stderr.replace(str(tmp_path), "<tmp>").lower()
    assert "locked" not in text and "busy" not in text and "traceback" not in text, stderr[-2000:]


@pytest.mark.timeout(30)
def test_database_locked_at_start_engine_waits_and_finishes(tmp_path):
    store, db = tmp_path / "store", tmp_path / "state" / "tasks.db"
    _make_engine_db(db, store, tmp_path)
    tasks = make_tasks(40, seed=1, object_bytes=800)
    tasks_file = write_tasks(tmp_path / "tasks.json", tasks)
    locker, locked_at = _lock(db)
    try:
        proc = run_cli(cli_args(tasks_file, store, db, "--create-objects", "--workers", "4"), tmp_path, timeout=25)
        finished_at = time.time()
    finally:
        released_at = _released_at(locker)
    assert proc.returncode == 0, proc.stderr[-2000:]
    _no_lock_error(proc.stderr, tmp_path)
    assert "success 40, dead 0, rejected 0" in proc.stdout
    assert finished_at >= released_at, "the run finished while the database was locked: nothing was tested"
    print(f"\nlocked {released_at - locked_at:.2f} s; the CLI finished {finished_at - released_at:.2f} s after release")
    check_end_state(db, store, tasks, max_attempts=3)


@pytest.mark.timeout(40)
def test_database_locked_mid_run_engine_waits_and_finishes(tmp_path):
    store, db = tmp_path / "store", tmp_path / "state" / "tasks.db"
    tasks = make_tasks(300, seed=2, object_bytes=800)
    tasks_file = write_tasks(tmp_path / "tasks.json", tasks)
    proc = start_cli(cli_args(tasks_file, store, db, "--create-objects", "--workers", "4", "--latency-ms", "10"),
                     tmp_path)
    locker = None
    try:
        wait_for(lambda: count_where(db, "status = 'success'") >= 60, 20, proc, what="60 successes")
        locker, locked_at = _lock(db)
        assert proc.poll() is None, "the run ended before the lock was taken"
        success_at_lock = count_where(db, "status = 'success'")
        out, err = proc.communicate(timeout=30)
        finished_at = time.time()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        released_at = _released_at(locker) if locker else None
    assert proc.returncode == 0, err[-2000:]
    _no_lock_error(err, tmp_path)
    assert success_at_lock < 300 and finished_at >= released_at
    assert "success 300, dead 0, rejected 0" in out
    check_end_state(db, store, tasks, max_attempts=3)


@pytest.mark.timeout(30)
def test_database_locked_while_submitting_through_the_api(tmp_path):
    store, db = tmp_path / "store", tmp_path / "tasks.db"
    tasks = make_tasks(30, seed=3, object_bytes=600)
    from helpers_crash import create_objects
    create_objects(store, tasks)
    with WorkerPool(Config(max_workers=4, db_path=str(db), store_root=str(store))) as pool:
        assert pool.submit(tasks[0]).result(10).status == "success"
        locker, _locked_at = _lock(db, hold=2.0)
        try:
            handles = pool.submit_many(tasks[1:])        # the claims wait for the lock
            submitted_at = time.time()
            results = [h.result(20) for h in handles]
        finally:
            released_at = _released_at(locker)
    assert submitted_at >= released_at, "submit_many returned before its claims could be committed"
    assert [r.status for r in results] == ["success"] * 29, \
        [(r.status, r.error) for r in results if r.status != "success"]
    check_end_state(db, store, tasks, max_attempts=3)


@pytest.mark.timeout(30)
def test_lock_wait_is_bounded_then_the_store_recovers(tmp_path):
    """The retry gives up after lock_wait_s with a clean StoreError (no hang), and the same store works again
    once the lock is gone."""
    db = tmp_path / "tasks.db"
    store = StateStore(str(db), lock_wait_s=0.6)
    store.start()
    try:
        locker, _ = _lock(db, hold=5.0)
        try:
            started = time.perf_counter()
            with pytest.raises(StoreError, match="locked"):
                store.claim([Claim("a#1x1", "{}", "t1")])
            waited = time.perf_counter() - started
        finally:
            _stop(locker)
        assert 0.5 <= waited < 1.8, f"waited {waited:.2f} s for a 0.6 s bound"
        claims = store.claim([Claim("a#1x1", "{}", "t1")])
        assert claims[0].outcome == "new"
    finally:
        store.close()


@pytest.mark.timeout(30)
# Regression (bug found by this test, fixed in 1155aff): tqengine/store.py connect(): `PRAGMA journal_mode=WAL`
# runs outside _with_lock_retry with a 0.2 s busy timeout, so a database that is not yet in WAL mode (new, or
# created by another tool) and is locked by another process fails at once: the CLI prints 'error: cannot open
# database ...: database is locked' and exits 2 instead of waiting
def test_fresh_database_locked_at_start_engine_waits(tmp_path):
    store, db = tmp_path / "store", tmp_path / "tasks.db"
    tasks = make_tasks(10, seed=4, object_bytes=600)
    locker, _ = _lock(db)           # the locker creates the file (rollback-journal mode) and locks it
    try:
        proc = run_cli(cli_args(write_tasks(tmp_path / "t.json", tasks), store, db, "--create-objects"), tmp_path)
    finally:
        _stop(locker)
    _no_lock_error(proc.stderr, tmp_path)
    assert proc.returncode == 0


@pytest.mark.timeout(30)
def test_lock_wait_bound_holds_for_a_whole_batch(tmp_path):
    db = tmp_path / "tasks.db"
    store = StateStore(str(db), lock_wait_s=0.1)
    locker, _ = _lock(db, hold=20.0)
    n, done, finished = 8, [], threading.Event()

    def callback(err):
        done.append(err)
        if len(done) == n:
            finished.set()

    try:
        for row_id in range(1, n + 1):             # queued before the writer starts: one batch
            store.finish(row_id, Outcome.rejected(0, "Test", "queued before the writer"), callback)
        started = time.perf_counter()
        store.start()
        assert finished.wait(25), "the writer never reported the batch"
        elapsed = time.perf_counter() - started
    finally:
        _stop(locker)
        store.close()
    assert all(err is not None and "locked" in str(err) for err in done)
    assert elapsed < 0.8, f"{n} ops under a lock took {elapsed:.2f} s to fail with lock_wait_s=0.1"


# -- a database path that cannot be used --------------------------------------------------------
def _bad_db_paths(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("a regular file, not a directory\n")
    adir = tmp_path / "adir"
    adir.mkdir()
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not an SQLite database" * 100)
    return {
        "under-a-regular-file": str(afile / "db.sqlite"),
        "a-directory": str(adir),
        "in-proc": "/proc/tq-no-such-dir/db.sqlite",
        "not-a-database": str(garbage),
    }


@pytest.mark.timeout(20)
@pytest.mark.parametrize("case", ["under-a-regular-file", "a-directory", "in-proc", "not-a-database"])
def test_unusable_database_path_cli_exit_2_one_line(tmp_path, case):
    db = _bad_db_paths(tmp_path)[case]
    tasks_file = write_tasks(tmp_path / "t.json", make_tasks(3, object_bytes=500))
    store = tmp_path / "store"
    proc = run_cli(cli_args(tasks_file, store, db), tmp_path, timeout=15)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = stderr_lines(proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in proc.stderr, proc.stderr
    assert "database" in lines[0] and db in lines[0], lines[0]
    assert proc.stdout == ""
    assert not store.exists(), "nothing should run when the database cannot be opened"


@pytest.mark.timeout(20)
@pytest.mark.parametrize("case", ["under-a-regular-file", "a-directory", "in-proc", "not-a-database"])
def test_unusable_database_path_api_config_error(tmp_path, case):
    db = _bad_db_paths(tmp_path)[case]
    pool = WorkerPool(Config(db_path=db, store_root=str(tmp_path / "store")))
    with pytest.raises(ConfigError) as info:
        pool.start()
    assert db in str(info.value) and "\n" not in str(info.value)


@pytest.mark.timeout(20)
# Regression (bug found by this test, fixed in 1155aff): tqengine/pool.py WorkerPool.start ->
# objects.LocalObjectStore.__init__: os.makedirs(store_root) raises NotADirectoryError/FileExistsError that nobody
# turns into ConfigError, so `--store <a regular file>/x` ends in a traceback and exit 1 (and the TaskStore opened
# just before is never closed)
def test_unusable_store_root_cli_exit_2_one_line(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("not a directory\n")
    tasks_file = write_tasks(tmp_path / "t.json", make_tasks(3, object_bytes=500))
    proc = run_cli(cli_args(tasks_file, afile / "store", tmp_path / "tasks.db"), tmp_path, timeout=15)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-1500:]
    assert len(stderr_lines(proc.stderr)) == 1


# -- one engine per database ----------------------------------------------------------------------
@pytest.mark.timeout(30)
def test_second_engine_on_the_same_database_is_refused_until_the_first_stops(tmp_path):
    cfg = dict(max_workers=2, db_path=str(tmp_path / "tasks.db"), store_root=str(tmp_path / "store"))
    first = WorkerPool(Config(**cfg)).start()
    try:
        with pytest.raises(ConfigError, match=rf"in use by another engine \(pid {os.getpid()}\)"):
            WorkerPool(Config(**cfg)).start()
        # a different database beside it is not affected
        with WorkerPool(Config(**dict(cfg, db_path=str(tmp_path / "other.db")))) as other:
            assert other.submit({"task_id": "x", "image_key": "nope.raw", "size": "8x8"}).result(10).status == "dead"
    finally:
        assert first.shutdown()
    with WorkerPool(Config(**cfg)) as again:          # released at shutdown
        assert again.drain(5)


@pytest.mark.timeout(45)
def test_second_cli_on_a_running_database_exits_2_and_the_first_finishes(tmp_path):
    store, db = tmp_path / "store", tmp_path / "tasks.db"
    tasks = make_tasks(30, seed=5, object_bytes=500)
    tasks_file = write_tasks(tmp_path / "tasks.json", tasks)
    first = start_cli(cli_args(tasks_file, store, db, "--create-objects", "--latency-ms", 100, "--workers", 2),
                      tmp_path)
    try:
        wait_for(lambda: os.path.exists(db) and count_where(db, "status = 'success'") >= 1, 20, first,
                 "the first engine's first result")
        second = run_cli(cli_args(tasks_file, store, db), tmp_path, timeout=20)
        assert second.returncode == 2, (second.returncode, second.stderr[-2000:])
        lines = stderr_lines(second.stderr)
        assert len(lines) == 1 and "Traceback" not in second.stderr, second.stderr
        assert f"in use by another engine (pid {first.pid})" in lines[0], lines[0]
        out, err = first.communicate(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    assert first.returncode == 0, err[-2000:]
    check_end_state(db, store, tasks, max_attempts=3)
    # and once it has stopped, the same command resumes nothing and answers every task as a duplicate
    again = run_cli(cli_args(tasks_file, store, db), tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
