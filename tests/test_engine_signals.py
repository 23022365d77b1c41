"""The CLI under SIGTERM/SIGINT: the first signal drains gracefully, a second SIGINT stops at once; either
way a rerun of the same command finishes the work. Also: logs are JSON lines."""
import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from tests.conftest import ROOT


def _tasks_file(tmp_path, n):
    tasks = [{"task_id": f"s{i}", "image_key": f"sig/{i}.raw", "size": "10x10", "object_bytes": 500}
             for i in range(n)]
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps(tasks))
    return path


def _statuses(db):
    if not db.exists():
        return {}
    conn = sqlite3.connect(str(db))
    try:
        return dict(conn.execute("SELECT status, count(*) FROM tasks GROUP BY status").fetchall())
    except sqlite3.OperationalError:
        return {}
    finally:
        conn.close()


def _start(args):
    return subprocess.Popen([sys.executable, "task_queue_optimized.py", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_successes(db, proc, at_least, deadline_s=30):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if _statuses(db).get("success", 0) >= at_least:
            return
        assert proc.poll() is None, "the run ended before the signal could be sent"
        time.sleep(0.01)   # polling the database with a deadline, not waiting blindly
    raise AssertionError("no progress before the deadline")


@pytest.mark.timeout(90)
def test_sigterm_drains_what_was_accepted_and_a_rerun_finishes(tmp_path):
    db, store = tmp_path / "t.db", tmp_path / "store"
    args = ["--tasks", str(_tasks_file(tmp_path, 400)), "--store", str(store), "--db", str(db),
            "--create-objects", "--latency-ms", "20", "--workers", "4", "--queue-size", "16",
            "--json", str(tmp_path / "m.json")]
    proc = _start(args)
    _wait_for_successes(db, proc, 20)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert "SIGTERM" in err and "run the same command again" in err
    left = _statuses(db)
    assert set(left) == {"success"}, left                 # everything accepted was finished
    assert left["success"] < 400
    assert json.loads((tmp_path / "m.json").read_text())["counters"]["succeeded"] == left["success"]
    rerun = subprocess.run([sys.executable, "task_queue_optimized.py", *args], cwd=ROOT, capture_output=True,
                           text=True, timeout=60)
    assert rerun.returncode == 0, rerun.stderr
    assert _statuses(db) == {"success": 400}


@pytest.mark.timeout(90)
def test_second_sigint_stops_at_once_and_leaves_the_rest_for_the_next_start(tmp_path):
    db, store = tmp_path / "t.db", tmp_path / "store"
    args = ["--tasks", str(_tasks_file(tmp_path, 300)), "--store", str(store), "--db", str(db),
            "--create-objects", "--latency-ms", "50", "--workers", "2", "--queue-size", "200"]
    proc = _start(args)
    lines, first_handled = [], threading.Event()

    def read_stderr():
        for line in proc.stderr:
            lines.append(line)
            if "finishing queued" in line:
                first_handled.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    _wait_for_successes(db, proc, 4)
    proc.send_signal(signal.SIGINT)
    assert first_handled.wait(10), "".join(lines)   # two signals at once would be coalesced into one
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)
    reader.join(10)
    err = "".join(lines)
    assert proc.returncode == 1, err
    left = _statuses(db)
    assert left.get("queued", 0) + left.get("running", 0) > 0, left   # unfinished work left for later
    rerun_args = args[:args.index("--workers")] + ["--workers", "16"] + args[args.index("--workers") + 2:]
    # the rest at 16 workers: this checks the resume, not how long 290 tasks of 50 ms take on 2
    rerun = subprocess.run([sys.executable, "task_queue_optimized.py", *rerun_args], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming" in rerun.stderr
    assert _statuses(db) == {"success": 300}


def test_logs_are_json_lines_with_the_task_fields(tmp_path):
    tasks = _tasks_file(tmp_path, 3)
    proc = subprocess.run([sys.executable, "task_queue_optimized.py", "--tasks", str(tasks), "--store",
                           str(tmp_path / "store"), "--db", str(tmp_path / "t.db"), "--create-objects",
                           "--log-level", "INFO"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    finals = [e for e in events if e["event"] == "task_final"]
    assert len(finals) == 3
    assert {"time", "level", "event", "task_id", "idempotency_key", "status", "attempt"} <= set(finals[0])
