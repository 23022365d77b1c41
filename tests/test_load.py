"""The load harness: closed-loop concurrency bound, open-loop arrival rate, latency from the intended
start (coordinated omission), percentiles, and the metrics JSON shape."""
import os
import statistics
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from runners.adapters import Adapter, BareExecutorAdapter
from runners.load import run_closed, run_load, run_open
from tqcontract.metrics import percentile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METRIC_KEYS = {"impl", "params", "tasks_submitted", "elapsed_s", "throughput_tps", "latency_ms", "error_rate",
               "counters", "queue_depth", "rates", "thread_utilization", "ceiling_tps", "efficiency",
               "peak_rss_mb", "env"}


class _Handle:
    def __init__(self, adapter, future):
        self.adapter = adapter
        self.future = future
        self.counted = False

    def result(self, timeout=None):
        value = self.future.result(timeout)
        with self.adapter.lock:
            if not self.counted:
                self.counted = True
                self.adapter.in_flight -= 1     # in flight until the client HAS the answer
        return value


class InstrumentedAdapter(Adapter):
    """Counts submissions and the number of tasks in flight (submit .. result delivered to the client)."""
    impl = "instrumented"

    def __init__(self, workers=16, work_s=0.001, fail_every=0):
        self.workers = workers
        self.work_s = work_s
        self.fail_every = fail_every
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.submitted = []
        self.submit_times = []
        self.executor = None

    def start(self):
        self.executor = ThreadPoolExecutor(self.workers)

    def _work(self, task):
        if self.work_s:
            time.sleep(self.work_s)             # simulated I/O inside the fake implementation
        if self.fail_every and task["n"] % self.fail_every == 0:
            return {"status": "dead", "error": "injected"}
        return {"status": "success"}

    def submit(self, task):
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.submitted.append(task["n"])
            self.submit_times.append(time.perf_counter())
        return _Handle(self, self.executor.submit(self._work, task))

    def stop(self):
        self.executor.shutdown(wait=True)


def _tasks(n):
    return [{"n": i} for i in range(n)]


@pytest.mark.timeout(20)
def test_closed_loop_issues_exactly_count_and_bounds_in_flight():
    adapter = InstrumentedAdapter(workers=32, work_s=0.002)
    adapter.start()
    try:
        records, _t0, info = run_closed(adapter, _tasks(300), clients=7, result_timeout_s=10)
    finally:
        adapter.stop()
    assert sorted(adapter.submitted) == list(range(300))          # each task exactly once
    assert len(adapter.submitted) == 300
    assert adapter.max_in_flight <= 7
    assert adapter.max_in_flight >= 5                              # and the clients really ran at once
    assert all(r.status == "success" for r in records)
    assert info["clients"] == 7


@pytest.mark.timeout(20)
def test_closed_loop_takes_tasks_in_order_and_more_clients_than_tasks():
    adapter = InstrumentedAdapter(workers=4, work_s=0)
    adapter.start()
    try:
        records, _t0, _info = run_closed(adapter, _tasks(5), clients=50, result_timeout_s=10)
    finally:
        adapter.stop()
    assert sorted(adapter.submitted) == [0, 1, 2, 3, 4]
    assert [r.index for r in records] == [0, 1, 2, 3, 4]


@pytest.mark.timeout(20)
def test_open_loop_issues_at_the_requested_rate():
    adapter = InstrumentedAdapter(workers=8, work_s=0)
    adapter.start()
    try:
        records, t0, info = run_open(adapter, _tasks(100), rate=200.0, result_timeout_s=10)
    finally:
        adapter.stop()
    times = adapter.submit_times
    assert len(times) == 100
    span = times[-1] - times[0]
    assert 0.495 - 0.03 <= span <= 0.495 + 0.08, span          # 99 intervals of 5 ms
    assert 180 <= info["offered_rate"] <= 220
    for i, r in enumerate(records):                             # never before its intended time
        assert r.issued >= t0 + i / 200.0 - 1e-6
    gaps = sorted(b - a for a, b in zip(times, times[1:], strict=False))   # neighbours: one shorter
    assert 0.003 <= statistics.median(gaps) <= 0.007


class StallingAdapter(InstrumentedAdapter):
    """submit() of task `stall_at` blocks for `stall_s` (a stalled queue); everything else is instant."""

    def __init__(self, stall_at, stall_s):
        super().__init__(workers=4, work_s=0)
        self.stall_at = stall_at
        self.stall_s = stall_s

    def submit(self, task):
        if task["n"] == self.stall_at:
            threading.Event().wait(self.stall_s)       # the stall being measured, not a test wait
        return super().submit(task)


@pytest.mark.timeout(20)
def test_open_loop_latency_counts_from_intended_start():
    adapter = StallingAdapter(stall_at=10, stall_s=0.3)
    adapter.start()
    try:
        records, _t0, info = run_open(adapter, _tasks(60), rate=200.0, result_timeout_s=10)
    finally:
        adapter.stop()
    lat = [r.latency_ms for r in records]
    assert all(r.status == "success" for r in records)
    assert lat[10] >= 290                   # the stalled task itself
    assert lat[11] >= 250                   # issued late: its delay is charged, not hidden
    assert lat[20] >= 200
    assert max(lat[:10]) < 100              # before the stall: fast
    # measured from the actual issue time the stall would vanish for task 11; the harness does not
    assert (records[11].end - records[11].issued) * 1000 < 100
    assert info["max_dispatch_lag_ms"] >= 250
    assert adapter.submitted == list(range(60))   # nothing skipped to catch up


class SlowFirstAdapter(InstrumentedAdapter):
    """Task 0 resolves only when released; the others resolve at once."""

    def __init__(self):
        super().__init__(workers=2, work_s=0)
        self.release = threading.Event()

    def submit(self, task):
        if task["n"] == 0:
            future = Future()

            def finish():
                self.release.wait(10)
                future.set_result({"status": "success"})
            threading.Thread(target=finish, daemon=True).start()
            with self.lock:
                self.in_flight += 1
            return _Handle(self, future)
        if task["n"] == 19:
            self.release.set()
        return super().submit(task)


@pytest.mark.timeout(20)
def test_open_loop_slow_task_does_not_delay_fast_ones():
    adapter = SlowFirstAdapter()
    adapter.start()
    try:
        records, _t0, _info = run_open(adapter, _tasks(20), rate=100.0, result_timeout_s=10)
    finally:
        adapter.stop()
    assert records[0].latency_ms >= 150            # released when task 19 arrives (~190 ms)
    assert max(r.latency_ms for r in records[1:]) < 60


def test_percentile_hand_computed():
    sample = sorted([15, 20, 35, 40, 50])
    assert percentile(sample, 0) == 15
    assert percentile(sample, 50) == 35
    assert percentile(sample, 100) == 50
    assert percentile(sample, 40) == pytest.approx(29.0)       # pos 1.6 -> 20 + 0.6*15
    assert percentile(sample, 95) == pytest.approx(48.0)       # pos 3.8 -> 40 + 0.8*10
    ten = list(range(1, 11))
    assert percentile(ten, 50) == pytest.approx(5.5)
    assert percentile(ten, 95) == pytest.approx(9.55)
    assert percentile(ten, 99) == pytest.approx(9.91)
    assert percentile([7], 99) == 7
    assert percentile([], 50) is None
    cuts = statistics.quantiles([3.0, 1.0, 4.0, 1.5, 9.0, 2.6, 5.3], n=100, method="inclusive")
    values = sorted([3.0, 1.0, 4.0, 1.5, 9.0, 2.6, 5.3])
    for q in (1, 25, 50, 90, 95, 99):
        assert percentile(values, q) == pytest.approx(cuts[q - 1])


@pytest.mark.timeout(20)
def test_run_load_metrics_shape_and_error_rate():
    adapter = InstrumentedAdapter(workers=8, work_s=0.001, fail_every=10)
    result = run_load(adapter, _tasks(100), load="closed", clients=8, params={"x": 1}, latency_ms=1.0)
    assert METRIC_KEYS <= set(result)
    assert result["impl"] == "instrumented"
    assert result["tasks_submitted"] == 100
    assert result["error_rate"] == pytest.approx(0.10)
    assert result["throughput_tps"] == pytest.approx(90 / result["elapsed_s"], rel=1e-3)
    assert result["ceiling_tps"] == pytest.approx(8000.0)
    assert result["efficiency"] == pytest.approx(result["throughput_tps"] / 8000.0, rel=1e-3)
    assert set(result["latency_ms"]) == {"mean", "p50", "p95", "p99", "max"}
    assert result["latency_ms"]["p50"] <= result["latency_ms"]["p95"] <= result["latency_ms"]["max"]
    assert result["counters"]["enqueued"] is None           # the fake adapter reports nothing: nulls
    assert result["queue_depth"] == {"max": None, "mean": None, "p95": None}
    assert result["thread_utilization"] is None
    assert result["env"]["pid"] == os.getpid()
    assert result["peak_rss_mb"] is None or result["peak_rss_mb"] > 1
    assert result["harness"]["statuses"] == {"success": 90, "dead": 10}


@pytest.mark.timeout(20)
def test_ceiling_null_without_latency_and_bare_adapter_counts():
    result = run_load(BareExecutorAdapter(workers=4), _tasks(50), load="closed", clients=4, latency_ms=0)
    assert result["ceiling_tps"] is None and result["efficiency"] is None
    assert result["counters"]["enqueued"] == 50 and result["counters"]["succeeded"] == 50
    assert result["error_rate"] == 0


class RefusingAdapter(InstrumentedAdapter):
    def submit(self, task):
        if task["n"] % 5 == 0:
            raise RuntimeError("full")
        return super().submit(task)


@pytest.mark.timeout(20)
def test_submit_errors_and_timeouts_count_as_errors_not_latency():
    adapter = RefusingAdapter(workers=4, work_s=0)
    result = run_load(adapter, _tasks(20), load="closed", clients=2)
    assert result["harness"]["statuses"] == {"success": 16, "submit_error": 4}
    assert result["error_rate"] == pytest.approx(0.2)

    class Never:
        def result(self, timeout=None):
            raise TimeoutError("never")

    class NeverAdapter(InstrumentedAdapter):
        def submit(self, task):
            return Never()

    result = run_load(NeverAdapter(), _tasks(3), load="open", rate=1000, result_timeout_s=0.01)
    assert result["harness"]["timeouts"] == 3
    assert result["latency_ms"]["mean"] is None and result["error_rate"] == 1.0


@pytest.mark.timeout(30)
@pytest.mark.skipif(not os.path.isfile(os.path.join(ROOT, "input_new", "baseline_task_queue_v2.py")),
                    reason="baseline file not present")
def test_baseline_adapter_counts_from_outside(tmp_path):
    from runners.adapters import BaselineAdapter
    from runners.workload import ensure_objects, make_tasks
    tasks = make_tasks(40, seed=3, object_bytes=1024)
    ensure_objects(tasks, str(tmp_path))
    adapter = BaselineAdapter(str(tmp_path), workers=4, latency_ms=1.0, permanent_rate=0.25, seed=3)
    result = run_load(adapter, tasks, load="closed", clients=10, latency_ms=1.0)
    c = result["counters"]
    failed = result["harness"]["statuses"].get("failed", 0)
    assert failed > 0
    assert c["enqueued"] == 40 and c["dequeued"] == 40 and c["rejected"] == 0
    assert c["succeeded"] == 40 - failed and c["failed"] == failed
    assert c["retried"] is None and c["duplicates"] is None and c["dead_lettered"] is None
    assert result["impl_extra"]["impl_counters"] == {"processed": 40 - failed, "failed": failed}
    assert result["queue_depth"]["max"] is not None and result["queue_depth"]["max"] <= 10
    assert result["error_rate"] == pytest.approx(failed / 40)


class _SilentAdapter(Adapter):
    """Takes every task and never answers: run() waits out its timeout (an engine or floor that lost them)."""
    impl = "silent"

    def __init__(self):
        self.never = threading.Event()
        self.runs = 0

    def start(self):
        pass

    def stop(self):
        pass

    def run(self, task, timeout=None):
        self.runs += 1
        if not self.never.wait(timeout):
            raise TimeoutError("no answer")
        return {"status": "success"}


@pytest.mark.timeout(20)
def test_a_closed_loop_run_stops_at_its_own_deadline_whatever_each_wait_allows():
    """run_timeout_s bounds the whole run: clients stop taking tasks at its deadline and a wait in progress ends
    there. Before, only each task's wait was bounded (result_timeout_s), so an implementation that answered
    nothing held every client that long for each of its tasks in turn (benchmark.py --overhead: 600 s a task)."""
    adapter = _SilentAdapter()
    started = time.perf_counter()
    records, _t0, _info = run_closed(adapter, _tasks(50), clients=5, result_timeout_s=60, run_timeout_s=0.5)
    took = time.perf_counter() - started
    assert took < 5
    assert adapter.runs == 5                                  # each client's first task, then the deadline
    assert [r.status for r in records if r is not None] == ["timeout"] * 5
    assert records.count(None) == 45                          # never started: not counted as done
