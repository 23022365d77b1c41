"""Resume-only recovery of tasks that were waiting out a retry backoff when their engine stopped.

Nothing is submitted again: the rows in `retrying` can only be finished by recovery at the next start
(issue 15, point 2). The first engine fails every attempt (transient_rate 1) with a long backoff, so its
tasks are in `retrying` when it stops; the second engine starts on the same database with no submissions.
"""
import json
import sqlite3

import pytest
from helpers_crash import CLI, PY, cli_args, count_where, kill_hard, rows, run_cli, start_cli, wait_for, write_tasks

from runners.workload import ensure_objects, make_tasks
from tests.engine_helpers import engine_config, output_path
from tqengine import WorkerPool
from tqengine.transform import verify_output

N = 12


def _db_rows(tmp_path):
    conn = sqlite3.connect(str(tmp_path / "tasks.db"))
    try:
        cur = conn.execute("SELECT idempotency_key, status, attempts FROM tasks ORDER BY id")
        return {key: (status, attempts) for key, status, attempts in cur.fetchall()}
    finally:
        conn.close()


def _stop_while_in_backoff(tmp_path, max_attempts):
    """Run N tasks whose every attempt fails, stop non-gracefully once each has failed once; return the rows."""
    tasks = make_tasks(N, seed=71, object_bytes=400)
    ensure_objects(tasks, str(tmp_path / "store"))
    cfg = engine_config(tmp_path, max_workers=2, transient_rate=1.0, max_attempts=max_attempts,
                        backoff_base_s=30.0, backoff_cap_s=30.0, seed=3)
    pool = WorkerPool(cfg).start()
    handles = pool.submit_many(tasks)
    db = tmp_path / "tasks.db"
    wait_for(lambda: count_where(db, "attempts >= 1 AND status = 'retrying'") == N, 10,
             what="every task failed once and waiting in backoff")
    pool.abort()
    assert pool.shutdown(graceful=False) is False
    assert all(h.result(0).status == "queued" for h in handles)      # left for the next start
    before = _db_rows(tmp_path)
    assert len(before) == N
    assert {status for status, _ in before.values()} == {"retrying"}, before
    return tasks, before


@pytest.mark.timeout(30)
def test_tasks_in_backoff_when_the_engine_stopped_are_finished_by_recovery_alone(tmp_path):
    tasks, before = _stop_while_in_backoff(tmp_path, max_attempts=10)
    # each retry was due up to 30 s later; the new engine's cap (0.01 s) bounds how long it waits for it
    with WorkerPool(engine_config(tmp_path, max_workers=2, max_attempts=10)) as again:
        assert again.recovered == N
        assert again.drain(5), "recovered retrying tasks did not finish (waiting out the old backoff?)"
        snap = again.metrics_snapshot()
    after = _db_rows(tmp_path)
    assert {status for status, _ in after.values()} == {"success"}, after
    for key, (_status, attempts) in after.items():
        # exactly one more attempt: the spent attempts are remembered, not reset, and none is repeated
        assert attempts == before[key][1] + 1, (key, before[key], attempts)
    for task in tasks:
        output_key = f"variants/{task['image_key']}@{task['size']}"
        with open(output_path(tmp_path, output_key), "rb") as out, \
                open(output_path(tmp_path, task["image_key"]), "rb") as src:
            assert verify_output(iter(lambda: out.read(4096), b""), task["size"],
                                 iter(lambda: src.read(4096), b"")) is None, output_key
    assert snap["counters"]["succeeded"] == N and snap["counters"]["enqueued"] == 0
    assert again.recovered_outcomes == {"success": N}


@pytest.mark.timeout(30)
def test_recovered_retrying_tasks_keep_their_attempt_budget(tmp_path):
    """Recovered tasks that keep failing stop at max_attempts in total (across both engines), dead-lettered."""
    tasks, before = _stop_while_in_backoff(tmp_path, max_attempts=3)
    assert all(attempts < 3 for _status, attempts in before.values()), before
    cfg = engine_config(tmp_path, max_workers=2, max_attempts=3, transient_rate=1.0, seed=3)
    with WorkerPool(cfg) as again:
        assert again.recovered == N
        assert again.drain(5)
    after = _db_rows(tmp_path)
    assert after == {key: ("dead", 3) for key in before}, after
    conn = sqlite3.connect(str(tmp_path / "tasks.db"))
    letters = conn.execute("SELECT attempts, error_class FROM dead_letters").fetchall()
    conn.close()
    assert sorted(letters) == [(3, "InjectedTransient")] * N


@pytest.mark.timeout(40)
def test_killed_during_backoff_then_the_resume_only_command_finishes_the_retrying_rows(tmp_path):
    """SIGKILL while tasks wait in backoff, then `--db --store` with no task file: recovery alone."""
    tasks = make_tasks(N, seed=72, object_bytes=400)
    tasks_file = write_tasks(tmp_path / "tasks.json", tasks)
    store, db = tmp_path / "store", tmp_path / "state" / "tasks.db"
    run = ["--create-objects", "--workers", "2", "--max-attempts", "20", "--transient-rate", "1",
           "--backoff-base", "1.0", "--backoff-cap", "1.0"]
    proc = start_cli(cli_args(tasks_file, store, db, *run), tmp_path)
    try:
        wait_for(lambda: count_where(db, "status = 'retrying' AND attempts >= 1") == N, 20, proc,
                 what="every task in backoff")
    finally:
        kill_hard(proc)
    left = rows(db)
    retrying = {r["idempotency_key"]: r["attempts"] for r in left if r["status"] == "retrying"}
    assert retrying and all(r["status"] in ("retrying", "running") for r in left), left
    rerun = run_cli([PY, CLI, "--store", str(store), "--db", str(db), "--workers", "2", "--max-attempts", "20",
                     "--backoff-base", "0.01", "--backoff-cap", "0.01"], tmp_path, timeout=30)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    final = {r["idempotency_key"]: r for r in rows(db)}
    assert len(final) == N and {r["status"] for r in final.values()} == {"success"}, final
    for key, attempts in retrying.items():
        assert final[key]["attempts"] == attempts + 1, (key, attempts, final[key])


@pytest.mark.timeout(30)
def test_a_database_with_the_old_unfinished_index_resumes_and_loses_the_index(tmp_path):
    """Databases made before the hot path dropped `tasks_unfinished` (written twice per task) still resume;
    opening one drops the index, so the engine's writes stop paying for it."""
    tasks, before = _stop_while_in_backoff(tmp_path, max_attempts=10)
    conn = sqlite3.connect(str(tmp_path / "tasks.db"))
    conn.execute("CREATE INDEX tasks_unfinished ON tasks(status) WHERE status IN ('queued','running','retrying')")
    conn.close()
    with WorkerPool(engine_config(tmp_path, max_workers=2, max_attempts=10)) as again:
        assert again.recovered == N
        assert again.drain(5)
    conn = sqlite3.connect(str(tmp_path / "tasks.db"))
    try:
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    finally:
        conn.close()
    assert "tasks_unfinished" not in indexes, indexes
    assert {status for status, _ in _db_rows(tmp_path).values()} == {"success"}


@pytest.mark.timeout(60)
def test_hand_edited_unfinished_rows_end_dead_and_the_engine_still_starts(tmp_path):
    """A row whose attempts or next_attempt_at is not a number (a user's UPDATE in the sqlite3 shell) made
    recovery raise TypeError out of start(): the engine could not start on that database at all, and the
    rows recovered before the bad one were already changed. Now a row with attempts the engine cannot have
    written is dead (DamagedRow), one with an unreadable due time is due at once, and the engine runs."""
    tasks = make_tasks(3, seed=4, object_bytes=0)
    ensure_objects(tasks, str(tmp_path / "store"))
    cfg = engine_config(tmp_path)
    with WorkerPool(cfg):
        pass                                        # creates the database
    db = sqlite3.connect(str(tmp_path / "tasks.db"))
    for task, status, attempts, due in zip(tasks, ("queued", "retrying", "queued"), ("abc", 1, -3),
                                           (None, "soon", None), strict=True):
        key = f"{task['image_key']}#{task['size']}"
        payload = json.dumps({k: v for k, v in task.items() if k != "task_id"}, sort_keys=True, separators=(",", ":"))
        db.execute("INSERT INTO tasks(task_id, idempotency_key, payload, status, attempts, created_at, updated_at,"
                   " next_attempt_at) VALUES (?,?,?,?,?,0,0,?)", (task["task_id"], key, payload, status, attempts, due))
    db.commit()
    db.close()
    with WorkerPool(cfg) as pool:
        assert pool.drain(timeout=20)
    got = {r["task_id"]: r for r in rows(tmp_path / "tasks.db")}
    first, second, third = (got[t["task_id"]] for t in tasks)
    assert first["status"] == "dead" and first["error_class"] == "DamagedRow" and "'abc'" in first["last_error"]
    assert second["status"] == "success" and second["attempts"] == 2        # its due time unreadable: due now
    assert third["status"] == "dead" and third["error_class"] == "DamagedRow" and "'-3'" in third["last_error"]
