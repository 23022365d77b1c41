"""End to end through the real queue -> worker -> store chain: faults, backpressure, shutdown, restart."""
import os
import sqlite3
import threading
import time

import pytest

from runners.workload import image_chunks, source_size_of
from tests.engine_helpers import engine_config, output_path, workload
from tqengine import WorkerPool
from tqengine.transform import verify_output


def _rows(tmp_path):
    db = sqlite3.connect(str(tmp_path / "tasks.db"))
    return db.execute("SELECT status, attempts, output_key, output_digest FROM tasks").fetchall()


@pytest.mark.timeout(60)
def test_end_to_end_with_latency_and_injected_faults(tmp_path):
    tasks = workload(tmp_path, 300, seed=3, object_bytes=3000)
    cfg = engine_config(tmp_path, max_workers=8, latency_ms=2.0, latency_jitter_ms=1.0, transient_rate=0.3,
                        permanent_rate=0.05, seed=11, max_attempts=4)
    with WorkerPool(cfg) as pool:
        results = [h.result(30) for h in pool.submit_many(tasks)]
        snap = pool.metrics_snapshot()
    by_status = {}
    for r in results:
        by_status[r.status] = by_status.get(r.status, 0) + 1
    assert set(by_status) <= {"success", "dead"} and by_status["dead"] >= 1
    c = snap["counters"]
    assert c["succeeded"] == by_status["success"] and c["dead_lettered"] == by_status.get("dead", 0)
    assert c["retried"] > 0 and c["failed"] == c["retried"] + c["dead_lettered"]
    assert c["dequeued"] == c["enqueued"] + c["retried"]
    for task, r in zip(tasks, results, strict=True):
        assert 1 <= r.attempts <= 4
        if r.status == "success":
            with open(output_path(tmp_path, r.output_key), "rb") as f:
                assert verify_output(iter(lambda: f.read(4096), b""), task["size"],
                                     image_chunks(task["image_key"], *source_size_of(task))) is None
        elif r.error_class == "InjectedTransient":
            assert r.attempts == 4
    db = sqlite3.connect(str(tmp_path / "tasks.db"))
    assert db.execute("SELECT count(*) FROM dead_letters").fetchone()[0] == by_status["dead"]
    assert not [row for row in _rows(tmp_path) if row[0] not in ("success", "dead")]


@pytest.mark.timeout(30)
def test_fail_fast_overflow_rejects_exactly_what_does_not_fit(tmp_path):
    tasks = workload(tmp_path, 20)
    gate = threading.Event()
    cfg = engine_config(tmp_path, max_workers=2, queue_size=5, mode="fail_fast")
    with WorkerPool(cfg) as pool:
        real = pool.processor.process
        started = threading.Semaphore(0)

        def gated(*args):
            started.release()
            gate.wait(20)
            return real(*args)

        pool.processor.process = gated
        first = pool.submit_many(tasks[:2])
        assert started.acquire(timeout=10) and started.acquire(timeout=10)   # both workers busy
        rest = pool.submit_many(tasks[2:])                                   # 5 fit, 13 do not
        rejected = [h.result(10) for h in rest[5:]]
        gate.set()
        accepted = [h.result(10) for h in first + rest[:5]]
        snap = pool.metrics_snapshot()
    assert all(r.status == "rejected" and r.error_class == "QueueFull" for r in rejected)
    assert all(r.status == "success" for r in accepted)
    assert snap["counters"]["rejected"] == 13 and snap["counters"]["succeeded"] == 7
    assert snap["queue_depth"]["max"] == 5
    assert sorted(s for s, *_ in _rows(tmp_path)).count("rejected") == 13


@pytest.mark.timeout(30)
def test_block_mode_waits_for_room_then_rejects_after_the_timeout(tmp_path):
    tasks = workload(tmp_path, 4)
    gate = threading.Event()
    cfg = engine_config(tmp_path, max_workers=1, queue_size=1, mode="block", enqueue_timeout_s=0.2)
    with WorkerPool(cfg) as pool:
        real = pool.processor.process
        pool.processor.process = lambda *a: (gate.wait(20), real(*a))[1]
        t0 = time.perf_counter()
        handles = pool.submit_many(tasks[:3])      # one running, one queued, one waits 0.2 s then rejected
        waited = time.perf_counter() - t0
        gate.set()
        results = [h.result(10) for h in handles]
    assert waited >= 0.2
    assert [r.status for r in results].count("rejected") == 1


@pytest.mark.timeout(30)
def test_graceful_shutdown_finishes_queued_and_running_tasks(tmp_path):
    tasks = workload(tmp_path, 40)
    pool = WorkerPool(engine_config(tmp_path, max_workers=4, latency_ms=20.0)).start()
    handles = pool.submit_many(tasks)
    assert pool.shutdown(graceful=True, timeout=20) is True
    assert all(h.result(0).status == "success" for h in handles)
    with pytest.raises(RuntimeError):
        pool.submit(tasks[0])
    assert all(s == "success" for s, *_ in _rows(tmp_path))


@pytest.mark.timeout(30)
def test_restart_resumes_what_an_aborted_engine_left(tmp_path):
    tasks = workload(tmp_path, 60)
    cfg = engine_config(tmp_path, max_workers=2, latency_ms=20.0)
    pool = WorkerPool(cfg).start()
    pool.submit_many(tasks)
    deadline = time.monotonic() + 10
    while pool.metrics.counters()["succeeded"] < 5 and time.monotonic() < deadline:
        pool.drain(timeout=0.02)
    pool.abort()
    assert pool.shutdown(graceful=False) is False
    left = [r for r in _rows(tmp_path) if r[0] != "success"]
    assert left, "the abort should leave unfinished tasks behind"
    with WorkerPool(cfg) as again:
        assert again.recovered == len(left)
        assert again.drain(20)
    rows = _rows(tmp_path)
    assert len(rows) == 60 and all(r[0] == "success" and 1 <= r[1] <= 3 for r in rows)
    for _status, _attempts, output_key, _digest in rows:
        assert os.path.exists(output_path(tmp_path, output_key))


_SUBMIT_DURING_SHUTDOWN = r"""
import sys, threading, time
sys.path.insert(0, sys.argv[1])
from tqengine import Config, WorkerPool
pool = WorkerPool(Config(max_workers=2, db_path=sys.argv[2] + "/t.db", store_root=sys.argv[2] + "/s",
                         log_level="ERROR")).start()
stopped = []
def submitter(n):
    i = 0
    while True:
        try:
            pool.submit({"image_key": f"k{n}-{i}", "size": "1x1"})
        except RuntimeError:
            stopped.append(n)
            return
        i += 1
threads = [threading.Thread(target=submitter, args=(n,)) for n in range(3)]
for t in threads:
    t.start()
time.sleep(0.05)
clean = pool.shutdown(timeout=5)
for t in threads:
    t.join(10)
print("clean", clean, "stopped", len(stopped))
"""


@pytest.mark.timeout(60)
def test_submitting_while_the_engine_shuts_down_never_crashes_and_does_not_stall_it(tmp_path):
    """Regression: shutdown() closed the SQLite connection under a claim in a submitting thread
    (segmentation fault), and shutdown refusals counted as work, so a graceful shutdown waited out its
    whole timeout while clients kept submitting."""
    import subprocess
    import sys

    from tests.conftest import ROOT
    for attempt in range(3):
        proc = subprocess.run([sys.executable, "-c", _SUBMIT_DURING_SHUTDOWN, ROOT, str(tmp_path / str(attempt))],
                              capture_output=True, text=True, timeout=50)
        assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
        assert "clean True stopped 3" in proc.stdout, proc.stdout


@pytest.mark.timeout(30)
def test_tasks_json_cannot_hold_are_dead_letters_and_never_strand_their_batch(tmp_path):
    cfg = engine_config(tmp_path)
    good = workload(tmp_path, 1)[0]
    looped = {"image_key": "a.raw", "size": "1x1"}
    looped["self"] = looped
    deep = {"image_key": "b.raw", "size": "1x1"}
    node = deep
    for _ in range(5000):
        node["x"] = {}
        node = node["x"]
    bad = [{1: 2, "image_key": "c.raw", "size": "1x1"}, {(1, 2): 3, "image_key": "d.raw", "size": "1x1"}, looped, deep]
    with WorkerPool(cfg) as pool:
        handles = pool.submit_many([good] + bad)
        results = [h.result(10) for h in handles]
        assert pool.drain(5)
    assert results[0].status == "success"
    assert [r.status for r in results[1:]] == ["dead"] * 4
    assert all(r.error_class == "ValidationError" for r in results[1:])


@pytest.mark.timeout(30)
def test_an_invalid_task_never_holds_a_key_a_valid_task_needs(tmp_path):
    """Regression: invalid tasks were keyed `invalid:<image>#<variant>`, which is also the key of a valid
    task whose image_key starts with `invalid:`."""
    cfg = engine_config(tmp_path)
    from runners.workload import ensure_objects
    valid = {"task_id": "v", "image_key": "invalid:y", "size": "1x1", "object_bytes": 100}
    ensure_objects([valid], str(tmp_path / "store"))
    with WorkerPool(cfg) as pool:
        bad = pool.submit({"task_id": "b", "image_key": "y", "size": "1x1", "object_bytes": -1}).result(10)
        good = pool.submit(valid).result(10)
        again = pool.submit({"task_id": "b2", "image_key": "y", "size": "1x1", "object_bytes": -1}).result(10)
    assert bad.status == "dead" and good.status == "success", (bad, good)
    assert again.duplicate and again.status == "dead"
