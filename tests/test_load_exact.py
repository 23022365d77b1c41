"""The load harness's figures checked against what a scripted fake implementation is known to do: the
window, the offered rate, latency scopes, the open-loop schedule, waiter reuse, and the adapter's life."""
import threading
import time
from concurrent.futures import Future

import pytest

from runners.adapters import Adapter
from runners.load import run_closed, run_load, run_open


class ScriptedAdapter(Adapter):
    """Each task says how it ends: {"n", "status", "delay_s", "raise"}; results come from timer threads."""
    impl = "scripted"

    def __init__(self, workers=4, metrics=None):
        self.workers = workers
        self.started = 0
        self.stopped = 0
        self._metrics = metrics

    def start(self):
        self.started += 1

    def stop(self):
        self.stopped += 1

    def metrics(self):
        return self._metrics if self._metrics is not None else super().metrics()

    def submit(self, task):
        if task.get("raise"):
            raise RuntimeError("refused")
        future = Future()
        if task.get("broken"):
            future.set_exception(OSError("connection to the implementation lost"))
            return _Handle(future)
        outcome = {"status": task.get("status", "success"), "error": task.get("error")}
        delay = task.get("delay_s", 0.0)
        if delay:
            timer = threading.Timer(delay, future.set_result, args=(outcome,))
            timer.daemon = True
            timer.start()
        else:
            future.set_result(outcome)
        return _Handle(future)


class _Handle:
    def __init__(self, future):
        self.future = future

    def result(self, timeout=None):
        return self.future.result(timeout)


def _tasks(n, **fields):
    return [{"n": i, **fields} for i in range(n)]


@pytest.mark.timeout(20)
def test_elapsed_runs_from_the_start_to_the_last_answer():
    tasks = _tasks(6) + [{"n": 6, "delay_s": 0.3}]
    t0 = time.perf_counter()
    result = run_load(ScriptedAdapter(), tasks, load="closed", clients=2)
    wall = time.perf_counter() - t0
    assert 0.29 <= result["elapsed_s"] <= wall, result["elapsed_s"]
    assert result["throughput_tps"] == pytest.approx(7 / result["elapsed_s"], rel=1e-3)
    # every task answered together after 0.2 s: the window still starts at the start, not the first answer
    together = run_load(ScriptedAdapter(), _tasks(4, delay_s=0.2), load="closed", clients=4)
    assert together["elapsed_s"] >= 0.19, together["elapsed_s"]


@pytest.mark.timeout(20)
def test_latency_covers_every_answer_and_the_success_scope_only_successes():
    tasks = [{"n": i, "status": "dead", "error": "no", "delay_s": 0.2} if i % 4 == 0 else {"n": i}
             for i in range(12)]
    result = run_load(ScriptedAdapter(), tasks, load="closed", clients=12)
    assert result["latency_ms"]["max"] >= 190                          # the dead ones are answers too
    success = result["harness"]["latency_success_ms"]
    assert success["max"] < 150, success                               # but not successes
    assert result["harness"]["statuses"] == {"success": 9, "dead": 3}
    assert result["error_rate"] == pytest.approx(3 / 12)
    assert result["harness"]["sample_errors"] == {"dead": "no"}


@pytest.mark.timeout(20)
def test_refused_submissions_and_broken_handles_are_not_answered_and_have_no_latency():
    tasks = [{"n": i, "raise": i % 3 == 0, "broken": i % 3 == 1} for i in range(9)]
    result = run_load(ScriptedAdapter(), tasks, load="closed", clients=3)
    h = result["harness"]
    assert h["statuses"] == {"success": 3, "submit_error": 3, "error": 3}
    assert h["not_answered"] == 6 and h["timeouts"] == 0
    assert result["error_rate"] == pytest.approx(6 / 9)
    assert "connection to the implementation lost" in h["sample_errors"]["error"]


@pytest.mark.timeout(20)
def test_offered_rate_is_intervals_over_the_issue_span():
    records, t0, info = run_open(ScriptedAdapter(), _tasks(3), rate=10.0)
    assert info["issue_span_s"] == pytest.approx(0.2, abs=0.03)
    assert info["offered_rate"] == pytest.approx(10.0, rel=0.15)        # 2 intervals in 0.2 s, not 3
    assert info["max_dispatch_lag_ms"] >= 0


@pytest.mark.timeout(20)
def test_open_loop_task_i_is_intended_at_t0_plus_i_over_rate():
    records, t0, _info = run_open(ScriptedAdapter(), _tasks(5), rate=10.0)
    for i, record in enumerate(records):
        assert record.intended == pytest.approx(t0 + i / 10.0, abs=1e-9)
        assert record.issued >= record.intended - 1e-6
    assert records[0].issued - t0 < 0.06        # the first one goes at t0, not an interval (0.1 s) later


@pytest.mark.timeout(20)
def test_open_loop_reuses_idle_waiters():
    _records, _t0, info = run_open(ScriptedAdapter(), _tasks(100), rate=500.0)
    assert info["waiter_threads"] <= 10, info


@pytest.mark.timeout(20)
def test_open_loop_a_waiter_busy_with_a_slow_task_is_not_counted_idle():
    """Task 0 is answered at once (its waiter goes idle), task 1 takes 0.4 s and takes that waiter; the fast
    tasks after it need waiters of their own, not a place in the queue behind task 1."""
    tasks = [{"n": 0}, {"n": 1, "delay_s": 0.4}] + _tasks(10)
    records, _t0, _info = run_open(ScriptedAdapter(), tasks, rate=100.0)
    assert records[1].latency_ms >= 390
    fast = [r.latency_ms for r in records[2:]]
    assert max(fast) < 150, fast


@pytest.mark.timeout(20)
def test_run_load_starts_and_stops_the_adapter_once_and_keeps_its_metrics():
    own = {"counters": {"enqueued": 5}, "queue_depth": {"max": 3}, "thread_utilization": 0.5, "extra": 1}
    adapter = ScriptedAdapter(metrics=own)
    result = run_load(adapter, _tasks(5), load="closed", clients=2)
    assert (adapter.started, adapter.stopped) == (1, 1)
    assert result["counters"]["enqueued"] == 5 and result["counters"]["succeeded"] is None
    assert result["queue_depth"] == {"max": 3, "mean": None, "p95": None}
    assert result["thread_utilization"] == 0.5 and result["impl_extra"] == {"extra": 1}
    assert result["harness"]["load"] == "closed" and result["harness"]["clients"] == 2
    failing = ScriptedAdapter()
    with pytest.raises(ValueError):
        run_load(failing, _tasks(2), load="sideways")
    assert (failing.started, failing.stopped) == (1, 1)                # stopped on the error path too


def test_waiter_threads_stop_at_their_cap_and_count_the_overflow():
    from runners.load import Record, _Waiters
    waiters = _Waiters(timeout_s=5.0, max_threads=2)
    slow = [ScriptedAdapter().submit({"n": i, "delay_s": 0.3}) for i in range(3)]
    records = [Record(i, time.perf_counter(), time.perf_counter()) for i in range(3)]
    for record, handle in zip(records, slow, strict=True):
        waiters.dispatch(record, handle)
    assert len(waiters.threads) == 2 and waiters.saturated == 1
    waiters.close()
    assert [r.status for r in records] == ["success"] * 3


def test_closed_loop_needs_a_client_and_the_open_loop_a_rate():
    for clients in (0, -1):
        with pytest.raises(ValueError):
            run_closed(ScriptedAdapter(), _tasks(2), clients)
    for rate in (0, -5, None):
        with pytest.raises(ValueError):
            run_open(ScriptedAdapter(), _tasks(2), rate)


@pytest.mark.timeout(20)
def test_ceiling_and_efficiency_from_workers_and_service_time():
    result = run_load(ScriptedAdapter(workers=4), _tasks(20), load="closed", clients=4, latency_ms=10.0)
    assert result["ceiling_tps"] == pytest.approx(400.0)
    assert result["efficiency"] == pytest.approx(result["throughput_tps"] / 400.0, rel=1e-3)
