"""Crash recovery for real: the CLI is SIGKILLed at chosen moments (picked by polling its SQLite database
read-only, never by sleeping blindly) and started again with the same arguments. The restart must finish
the work: every task final exactly once, every success with its complete, verified output, no temporary
files, attempts within max_attempts across the restarts, and nothing that was final before the crash
changed by the restart.
"""
import os
import re
import sqlite3
import time

import pytest
from helpers_crash import (
    CLI,
    PY,
    check_end_state,
    cli_args,
    count_where,
    kill_hard,
    rows,
    run_cli,
    start_cli,
    temp_files,
    wait_for,
    write_tasks,
)

from runners.workload import make_tasks
from tqengine import faults

N = 600
OBJECT_BYTES = 3000
RUN = ["--create-objects", "--latency-ms", "15", "--workers", "4", "--max-attempts", "3"]


def _setup(tmp_path, count=N, seed=11):
    tasks = make_tasks(count, seed=seed, object_bytes=OBJECT_BYTES)
    tasks_file = write_tasks(tmp_path / "tasks.json", tasks)
    return tasks, tasks_file, tmp_path / "store", tmp_path / "state" / "tasks.db"


def _final_rows(db):
    return {r["id"]: r for r in rows(db) if r["status"] in ("success", "dead", "rejected")}


def _assert_within_budget(db, max_attempts):
    over = [r for r in rows(db) if r["attempts"] > max_attempts]
    assert not over, f"attempts above max_attempts: {over[:3]}"


def _assert_unchanged(before, db):
    """What was final before a crash is still final, with the same outcome, after the restart."""
    after = {r["id"]: r for r in rows(db)}
    for row_id, old in before.items():
        new = after[row_id]
        for field in ("status", "attempts", "output_key", "output_digest", "output_bytes", "idempotency_key"):
            assert new[field] == old[field], f"row {row_id} changed {field} across the restart: {old} -> {new}"


def _summary(stdout):
    match = re.search(r"submitted (\d+) of (\d+) task\(s\).*success (\d+), dead (\d+), rejected (\d+)", stdout)
    assert match, stdout
    return tuple(int(g) for g in match.groups())


# Kill points: a condition on the database, polled with a deadline.
KILL_POINTS = {
    # the first claims are committed, (almost) nothing has run yet
    "early": lambda db: count_where(db, "1") >= 1,
    # a third of the work is done and the file is still being read
    "mid": lambda db: count_where(db, "status = 'success'") >= N // 3,
    # the whole file is submitted (every key claimed); the engine is draining what is left
    "drain": lambda db: count_where(db, "1") >= N and count_where(db, "status = 'success'") < N - 60,
}


@pytest.mark.timeout(40)
@pytest.mark.parametrize("point", sorted(KILL_POINTS))
def test_sigkill_at_a_point_then_restart_finishes_everything(tmp_path, point):
    tasks, tasks_file, store, db = _setup(tmp_path)
    args = cli_args(tasks_file, store, db, *RUN)
    proc = start_cli(args, tmp_path)
    try:
        wait_for(lambda: KILL_POINTS[point](db), 25, proc, what=f"kill point {point}")
    finally:
        kill_hard(proc)
    assert proc.returncode == -9

    # The crash really left work behind, and nothing is out of budget.
    finished = count_where(db, "status IN ('success','dead','rejected')")
    assert finished < N, "the run finished before the kill: the test proves nothing"
    unfinished_rows = count_where(db, "status IN ('queued','running','retrying')")
    _assert_within_budget(db, 3)
    before = _final_rows(db)
    print(f"kill at {point}: {finished} final, {unfinished_rows} unfinished rows, {N - finished - unfinished_rows} "
          f"never claimed")

    rerun = run_cli(args, tmp_path, timeout=35)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "Traceback" not in rerun.stderr
    if unfinished_rows:
        assert f"resuming {unfinished_rows} unfinished task(s)" in rerun.stderr
    submitted, total, success, dead, rejected = _summary(rerun.stdout)
    assert (submitted, total, success, dead, rejected) == (N, N, N, 0, 0)

    counts = check_end_state(db, store, tasks, max_attempts=3, default_bytes=OBJECT_BYTES)
    assert counts == {"success": N}
    _assert_unchanged(before, db)


def _source_files(store):
    count = 0
    for dirpath, _dirs, names in os.walk(store):
        if os.path.relpath(dirpath, store).split(os.sep)[0] == "variants":
            continue
        count += sum(1 for n in names if n.endswith((".jpg", ".png", ".webp")))
    return count


@pytest.mark.timeout(40)
def test_sigkill_while_creating_source_objects_then_restart(tmp_path):
    """Killed during --create-objects (the database is open but holds no task yet): the restart completes the
    objects (whole ones: each output verifies against the deterministic source), removes the writer's temp
    files and processes everything."""
    count, nbytes = 120, 192 * 1024     # the kill comes at ~20 made: 120 leaves a margin and a short rerun
    tasks = make_tasks(count, seed=13, object_bytes=nbytes, image_size=(320, 240))   # a few ms each to create
    tasks_file = write_tasks(tmp_path / "tasks.json", tasks)
    store, db = tmp_path / "store", tmp_path / "state" / "tasks.db"
    args = cli_args(tasks_file, store, db, *RUN)
    proc = start_cli(args, tmp_path)
    try:
        wait_for(lambda: store.is_dir() and _source_files(store) >= 20, 20, proc, what="objects being created",
                 interval=0.002)
    finally:
        kill_hard(proc)
    made = _source_files(store)
    no_rows = not db.exists() or sqlite3.connect(str(db)).execute("SELECT count(*) FROM tasks").fetchone()[0] == 0
    assert made < count and no_rows, "the kill came after the object phase: the test proves nothing"
    print(f"kill while creating objects: {made} of {count} made, temp files left: {len(temp_files(store))}")
    rerun = run_cli(args, tmp_path, timeout=30)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert _summary(rerun.stdout) == (count, count, count, 0, 0)
    assert check_end_state(db, store, tasks, max_attempts=3, default_bytes=nbytes) == {"success": count}


@pytest.mark.timeout(40)
def test_sigkill_during_retry_backoff_twice_then_restart(tmp_path):
    """Tasks sit in `retrying` (high transient rate, long backoff) when the process is killed; the restart is
    killed again while it is retrying; a third start finishes. Attempts never exceed max_attempts, and each
    recorded outcome agrees with the seeded fault model for the attempt number it was recorded at."""
    count, seed, rate = 200, 5, 0.6
    tasks, tasks_file, store, db = _setup(tmp_path, count=count, seed=seed)
    args = cli_args(tasks_file, store, db, "--create-objects", "--latency-ms", "5", "--workers", "4",
                    "--max-attempts", "3", "--transient-rate", rate, "--seed", seed,
                    "--backoff-base", "0.4", "--backoff-cap", "0.8")

    def sitting_in_backoff(since):
        return count_where(db, "status = 'retrying' AND next_attempt_at > ? AND updated_at > ?",
                           (time.time() + 0.05, since)) >= 5

    since = 0.0
    snapshots, attempts_at_kill = [], []
    for round_ in range(2):
        proc = start_cli(args, tmp_path)
        try:
            wait_for(lambda since=since: sitting_in_backoff(since), 25, proc,
                     what=f"tasks in backoff (round {round_})")
        finally:
            kill_hard(proc)
        since = time.time()
        assert count_where(db, "status = 'retrying'") >= 5
        _assert_within_budget(db, 3)
        snapshots.append(_final_rows(db))
        attempts_at_kill.append({r["id"]: r["attempts"] for r in rows(db)})

    done = run_cli(args, tmp_path, timeout=35)
    assert done.returncode == 0, done.stderr[-3000:]
    counts = check_end_state(db, store, tasks, max_attempts=3, allowed=("success", "dead"),
                             default_bytes=OBJECT_BYTES)
    assert sum(counts.values()) == count and counts.get("success", 0) > 0
    for snap in snapshots:
        _assert_unchanged(snap, db)
    final_attempts = {r["id"]: r["attempts"] for r in rows(db)}
    for seen in attempts_at_kill:  # attempts only ever grow: a restart never forgets a spent attempt
        assert all(final_attempts[row_id] >= n for row_id, n in seen.items())

    for row in rows(db):
        key = row["idempotency_key"]
        _lat, fault = faults.plan(seed, key, row["attempts"], 5, 0, rate, 0)
        if row["status"] == "success":
            assert fault is None, f"{key} recorded success at attempt {row['attempts']}, whose draw is {fault}"
        else:
            assert row["error_class"] in ("InjectedTransient", "Interrupted"), row
            if row["error_class"] == "InjectedTransient":
                assert row["attempts"] == 3 and fault == "transient", row


@pytest.mark.timeout(30)
def test_resume_only_command_finishes_what_a_killed_run_left(tmp_path):
    """`--db PATH --store DIR` without a task file resumes the unfinished rows of a killed run."""
    tasks, tasks_file, store, db = _setup(tmp_path, count=300, seed=12)
    proc = start_cli(cli_args(tasks_file, store, db, *RUN), tmp_path)
    try:
        wait_for(lambda: count_where(db, "status = 'success'") >= 50 and
                 count_where(db, "status IN ('queued','running')") >= 50, 25, proc, what="claimed, unfinished work")
    finally:
        kill_hard(proc)
    claimed = {r["idempotency_key"] for r in rows(db)}
    rerun = run_cli([PY, CLI, "--store", str(store), "--db", str(db), "--latency-ms", "15", "--workers", "4"],
                    tmp_path, timeout=25)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resuming" in rerun.stderr
    claimed_tasks = [t for t in tasks if f"{t['image_key']}#{t['size']}" in claimed]
    counts = check_end_state(db, store, claimed_tasks, max_attempts=3, default_bytes=OBJECT_BYTES)
    assert counts == {"success": len(claimed_tasks)}
    assert temp_files(store) == []
    assert not os.path.exists(str(db) + "-journal")
