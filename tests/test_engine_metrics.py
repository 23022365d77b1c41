"""Metrics: exact counters under contention, percentiles against hand-computed values, lock-free export."""
import statistics
import threading
import time

import pytest

from tests.engine_helpers import engine_config, workload
from tqengine import WorkerPool, percentile
from tqengine.metrics import Metrics, latency_summary


def test_percentile_matches_hand_computed_reference():
    values = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    # rank (n-1)*q: p50 -> 4.5 -> 5.5; p95 -> 8.55 -> 9.55; p99 -> 8.91 -> 9.91
    assert percentile(values, 50) == pytest.approx(5.5)
    assert percentile(values, 95) == pytest.approx(9.55)
    assert percentile(values, 99) == pytest.approx(9.91)
    assert percentile([7], 95) == 7 and percentile([], 95) is None
    data = sorted([3.1, 0.2, 9.9, 4.4, 4.4, 12.0, 1.5])
    cuts = statistics.quantiles(data, n=100, method="inclusive")
    assert percentile(data, 95) == pytest.approx(cuts[94])
    summary = latency_summary([4, 1, 3, 2])
    assert summary["mean"] == 2.5 and summary["max"] == 4 and summary["p50"] == 2.5


def test_counters_are_exact_under_contention():
    metrics = Metrics(workers=4)
    threads = [threading.Thread(target=lambda: [metrics.count("retried") or metrics.depth_changed(+1)
                                                for _ in range(5000)]) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    snap = metrics.snapshot()
    assert snap["counters"]["retried"] == 16 * 5000
    assert snap["queue_depth"]["max"] == 16 * 5000


@pytest.mark.timeout(30)
def test_export_does_not_block_on_the_queue_or_its_own_lock(tmp_path):
    tasks = workload(tmp_path, 20)
    with WorkerPool(engine_config(tmp_path)) as pool:
        for h in pool.submit_many(tasks):
            assert h.result(10).status == "success"
        exported = threading.Event()
        with pool.queue._q.mutex:   # hold the task queue's own lock: export must not need it
            t = threading.Thread(target=lambda: (pool.metrics_snapshot(), exported.set()))
            t.start()
            assert exported.wait(5), "metrics export blocked on the queue lock"
        t.join(5)
        snap = pool.metrics_snapshot()
    assert snap["counters"]["succeeded"] == 20 and snap["counters"]["enqueued"] == 20
    assert 0 < snap["thread_utilization"] <= 1      # the workers' busy time reached the export
    assert set(snap) >= {"impl", "params", "tasks_submitted", "elapsed_s", "throughput_tps", "latency_ms",
                         "error_rate", "counters", "queue_depth", "rates", "thread_utilization", "ceiling_tps",
                         "efficiency", "peak_rss_mb", "env"}


@pytest.mark.timeout(30)
def test_queue_depth_covers_the_runs_window_not_the_engines_idle_time(tmp_path):
    """Regression: depth mean/P95 were averaged from the engine's construction to the export, so idle time
    before the first submission and after the last result diluted them (0.75, then 0.41, for this run)."""
    tasks = workload(tmp_path, 10, object_bytes=100)
    with WorkerPool(engine_config(tmp_path, max_workers=1, latency_ms=20)) as pool:
        time.sleep(0.3)                     # idle before the run: not part of it
        for handle in pool.submit_many(tasks):
            handle.result(10)
        first = pool.metrics_snapshot()
        time.sleep(0.3)                     # idle after the run: not part of it either
        second = pool.metrics_snapshot()
    # one worker drains 10 queued tasks: the queue holds 9, 8, ... 0 for a task's time each (mean ~4.5)
    assert 3.5 <= first["queue_depth"]["mean"] <= 5.5, first["queue_depth"]
    assert second["queue_depth"] == first["queue_depth"] and second["elapsed_s"] == first["elapsed_s"]
