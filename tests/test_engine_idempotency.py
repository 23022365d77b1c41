"""Idempotency: one key is processed once, however many submit it and whenever they do."""
import sqlite3
import threading

import pytest

from tests.engine_helpers import engine_config, workload
from tqengine import WorkerPool
from tqengine import processor as processor_module


class CountingProcessor(processor_module.Processor):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.calls = []
        self._lock = threading.Lock()

    def process(self, image_key, variant, key, attempt):
        with self._lock:
            self.calls.append(key)
        return super().process(image_key, variant, key, attempt)


def _counting(pool):
    pool.processor = CountingProcessor(pool.objects, latency_ms=20.0)
    return pool.processor


@pytest.mark.timeout(60)
def test_100_threads_submitting_one_key_at_once_run_it_exactly_once(tmp_path):
    task = workload(tmp_path, 1)[0]
    barrier = threading.Barrier(100)
    results = [None] * 100
    with WorkerPool(engine_config(tmp_path)) as pool:
        counting = _counting(pool)

        def client(i):
            barrier.wait(10)
            results[i] = pool.submit(dict(task, task_id=f"c{i}")).result(30)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(100)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        snap = pool.metrics_snapshot()
    assert counting.calls == [f"{task['image_key']}#{task['size']}"]
    assert all(r.status == "success" for r in results)
    assert sum(not r.duplicate for r in results) == 1
    assert snap["counters"]["duplicates"] == 99 and snap["counters"]["succeeded"] == 1
    assert len({r.output_digest for r in results}) == 1
    rows = sqlite3.connect(str(tmp_path / "tasks.db")).execute("SELECT count(*) FROM tasks").fetchone()[0]
    assert rows == 1


def test_duplicate_after_success_returns_the_stored_result_even_after_a_restart(tmp_path):
    task = workload(tmp_path, 1)[0]
    with WorkerPool(engine_config(tmp_path)) as pool:
        first = pool.submit(task).result(10)
    with WorkerPool(engine_config(tmp_path)) as pool:
        counting = _counting(pool)
        again = pool.submit(dict(task, task_id="later")).result(10)
        snap = pool.metrics_snapshot()
    assert counting.calls == []
    assert again.duplicate and again.status == "success"
    assert (again.output_key, again.output_digest, again.attempts) == \
        (first.output_key, first.output_digest, first.attempts)
    assert snap["counters"]["duplicates"] == 1 and snap["counters"]["succeeded"] == 0


def test_same_key_with_a_different_payload_is_a_conflict_never_merged(tmp_path):
    task = workload(tmp_path, 1)[0]
    with WorkerPool(engine_config(tmp_path, latency_ms=30.0)) as pool:
        first = pool.submit(task)
        clash_in_flight = pool.submit(dict(task, quality=10)).result(10)
        assert first.result(10).status == "success"
        clash_after = pool.submit(dict(task, quality=20)).result(10)
    for clash in (clash_in_flight, clash_after):
        assert clash.status == "rejected" and "conflict" in clash.error and not clash.duplicate
    db = sqlite3.connect(str(tmp_path / "tasks.db"))
    statuses = sorted(r[0] for r in db.execute("SELECT status FROM tasks"))
    assert statuses == ["rejected", "rejected", "success"]


def test_a_rejected_key_can_be_submitted_again(tmp_path):
    tasks = workload(tmp_path, 6)
    cfg = engine_config(tmp_path, max_workers=1, queue_size=1, mode="fail_fast", latency_ms=40.0)
    with WorkerPool(cfg) as pool:
        handles = pool.submit_many(tasks)
        results = [h.result(10) for h in handles]
        rejected = [t for t, r in zip(tasks, results, strict=True) if r.status == "rejected"]
        assert rejected
        pool.drain(10)
        retry = [h.result(10) for h in pool.submit_many(rejected[:1])]
    assert retry[0].status in ("success", "rejected") and not retry[0].duplicate
