"""The one load harness: drives any adapter (runners/adapters.py) and produces the metrics JSON.

Closed loop: `clients` threads; each takes the next task from the shared list, submits it, waits for its
final result, and repeats until all `count` tasks have been issued. At most `clients` tasks are ever in
flight, so the offered load adapts to the system under test. A client submits and waits through the
adapter's `run(task, timeout)` where the implementation offers one call for both (the engine's
WorkerPool.run, which wakes its caller once per task instead of twice), else submit() then result(): each
implementation is driven the way its own API serves a caller that submits and waits.

Open loop: a dispatcher issues task i at its intended time t0 + i/rate whatever happens to earlier tasks.
It never skips a task to catch up; when submit() blocks, the late tasks are issued as soon as it returns.
Every latency is measured from the task's INTENDED start, so a stalled queue shows its stall in the
latency instead of hiding it by delaying the arrivals (coordinated omission). Results are collected by
waiter threads: each outstanding task has a waiter reserved for it, so a slow task never delays the
timestamp of a fast one.

All timing is time.perf_counter(), client-side, identical for every implementation.

Besides the latency summary, every result carries `latency_histogram` (the answered tasks' latencies in
the fixed log-linear buckets of tqcontract.histogram, so a report can pool trials into percentiles over
all their tasks) and `process`: CPU time (user, sys) and context switches of this process from just
before the adapter starts to just after it stops (getrusage; an HTTP object server child is not
included), CPU ms per submitted task, and the load average before and after.
"""
import queue as queue_module
import threading
import time

from tqcontract.environment import current_rss_mb, env_info, load_average, peak_rss_mb, process_usage, usage_delta
from tqcontract.histogram import LatencyHistogram
from tqcontract.metrics import latency_summary, unknown_metrics

OK = "success"
NOT_ANSWERED = ("timeout", "submit_error", "error")   # no final answer from the implementation
MAX_WAITERS = 4096
JOIN_SLACK_S = 5.0      # run_closed with a run deadline: how long after it a client may take to return


# ------------------------------------------------------------------------------------------ records

class Record:
    """One task as the client saw it. `intended` is when it should have started (closed loop: when the
    client issued it); `issued` when submit() was called; `end` when the final answer arrived."""
    __slots__ = ("index", "intended", "issued", "accepted", "end", "status", "error")

    def __init__(self, index, intended, issued):
        self.index = index
        self.intended = intended
        self.issued = issued
        self.accepted = None
        self.end = None
        self.status = None
        self.error = None

    @property
    def latency_ms(self):
        if self.end is None:
            return None
        return (self.end - self.intended) * 1000.0


def _finish(record, handle, timeout):
    _answered(record, lambda: handle.result(timeout), "error")


def _run(run, task, record, timeout):
    """Submit and wait in one call (an adapter's `run`); the record as _submit and _finish would leave it."""
    _answered(record, lambda: run(task, timeout), "submit_error")


def _answered(record, wait, error_status):
    """Fill in the record from `wait()`, the final outcome dict; `error_status` when it raises."""
    try:
        outcome = wait()
    except TimeoutError:
        record.status = "timeout"
        return
    except Exception as exc:
        record.status, record.error = error_status, f"{type(exc).__name__}: {exc}"[:300]
        return
    record.end = time.perf_counter()
    status = outcome.get("status") if isinstance(outcome, dict) else None
    record.status = status if isinstance(status, str) else "error"
    if record.status != OK and isinstance(outcome, dict):
        record.error = outcome.get("error")


def _submit(adapter, task, record):
    try:
        handle = adapter.submit(task)
    except Exception as exc:
        record.status, record.error = "submit_error", f"{type(exc).__name__}: {exc}"[:300]
        return None
    record.accepted = time.perf_counter()
    return handle


# ------------------------------------------------------------------------------------------ closed loop

def run_closed(adapter, tasks, clients, result_timeout_s=60.0, run_timeout_s=None):
    """Closed loop; returns (records, t_start, info). The adapter must already be started. Each task's wait is
    bounded by result_timeout_s; with run_timeout_s the whole run is too: at its deadline the clients take no
    more tasks (their records stay None), a wait in progress ends there (`timeout`), and this returns within
    JOIN_SLACK_S of it even if an adapter ignores its timeout."""
    if clients < 1:
        raise ValueError("clients must be >= 1")
    count = len(tasks)
    records = [None] * count
    lock = threading.Lock()
    state = {"next": 0}
    gate = threading.Event()
    run = getattr(adapter, "run", None)
    clock = time.perf_counter
    deadline = [None]       # set when the clients start

    def client():
        gate.wait()
        end = deadline[0]
        while True:
            with lock:
                index = state["next"]
                if index >= count:
                    return
                state["next"] = index + 1
            now = clock()
            wait_s = result_timeout_s
            if end is not None:
                if now >= end:
                    return
                wait_s = min(wait_s, end - now)
            record = records[index] = Record(index, now, now)
            if run is not None:
                _run(run, tasks[index], record, wait_s)
                continue
            handle = _submit(adapter, tasks[index], record)
            if handle is not None:
                _finish(record, handle, wait_s)

    threads = [threading.Thread(target=client, name=f"client-{i}", daemon=True)
               for i in range(min(clients, max(count, 1)))]
    for thread in threads:
        thread.start()
    t_start = clock()
    if run_timeout_s is not None:
        deadline[0] = t_start + run_timeout_s
    gate.set()
    for thread in threads:
        thread.join(None if run_timeout_s is None else max(0.0, deadline[0] + JOIN_SLACK_S - clock()))
    return records, t_start, {"clients": clients}


# ------------------------------------------------------------------------------------------ open loop

class _Waiters:
    """Threads that wait for results. Every job gets a waiter reserved for it at dispatch time (an idle
    one, else a new thread), so no job queues behind a slow one unless MAX_WAITERS is reached."""

    def __init__(self, timeout_s, max_threads=MAX_WAITERS):
        self.timeout_s = timeout_s
        self.max_threads = max_threads
        self.jobs = queue_module.SimpleQueue()
        self.lock = threading.Lock()
        self.idle = 0
        self.threads = []
        self.saturated = 0

    def dispatch(self, record, handle):
        with self.lock:
            if self.idle > 0:
                self.idle -= 1
            elif len(self.threads) < self.max_threads:
                thread = threading.Thread(target=self._run, name=f"waiter-{len(self.threads)}",
                                          daemon=True)
                self.threads.append(thread)
                thread.start()
            else:
                self.saturated += 1
        self.jobs.put((record, handle))

    def _run(self):
        while True:
            job = self.jobs.get()
            if job is None:
                return
            _finish(job[0], job[1], self.timeout_s)
            with self.lock:
                self.idle += 1

    def close(self):
        with self.lock:
            threads = list(self.threads)
        for _ in threads:
            self.jobs.put(None)
        for thread in threads:
            thread.join()


def run_open(adapter, tasks, rate, result_timeout_s=60.0, lead_s=0.005):
    """Open loop at `rate` tasks/s; returns (records, t0, info). The adapter must already be started."""
    if not rate or rate <= 0:
        raise ValueError("rate must be > 0 for the open loop")
    count = len(tasks)
    records = [None] * count
    waiters = _Waiters(result_timeout_s)
    interval = 1.0 / rate
    t0 = time.perf_counter() + lead_s
    max_lag = 0.0
    first_issue = last_issue = None
    try:
        for index, task in enumerate(tasks):
            intended = t0 + index * interval
            delay = intended - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            issued = time.perf_counter()
            if first_issue is None:
                first_issue = issued
            last_issue = issued
            max_lag = max(max_lag, issued - intended)
            record = records[index] = Record(index, intended, issued)
            handle = _submit(adapter, task, record)
            if handle is not None:
                waiters.dispatch(record, handle)
    finally:
        waiters.close()
    issue_span = (last_issue - first_issue) if count > 1 else 0.0
    info = {"rate": rate,
            "offered_rate": round((count - 1) / issue_span, 3) if issue_span > 0 else None,
            "issue_span_s": round(issue_span, 6),
            "max_dispatch_lag_ms": round(max_lag * 1000.0, 3),
            "waiter_threads": len(waiters.threads),
            "waiter_saturated": waiters.saturated}
    return records, t0, info


# ------------------------------------------------------------------------------------------ metrics

def _num(value):
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def process_block(usage_before, usage_after, tasks, load_before=None, load_after=None):
    """The `process` field: CPU time and context switches between two process_usage() snapshots, CPU ms
    per submitted task, load averages around the run."""
    out = usage_delta(usage_before, usage_after)
    cpu = (out["cpu_user_s"] or 0.0) + (out["cpu_sys_s"] or 0.0) if out["cpu_user_s"] is not None else None
    out["cpu_ms_per_task"] = round(cpu * 1000.0 / tasks, 6) if cpu is not None and tasks else None
    out["load_before"], out["load_after"] = load_before, load_after
    out["scope"] = "this process (all threads), adapter start to stop"
    return out


def build_metrics(records, t_start, impl, params, impl_metrics, workers, latency_ms, harness_info=None,
                  process=None):
    """The metrics JSON of docs/CONTRACTS.md from the client-side records and the adapter's metrics;
    `process` is the process_block() of the run (all fields None when not given)."""
    count = len(records)
    ends = [r.end for r in records if r is not None and r.end is not None]
    elapsed = (max(ends) - t_start) if ends else 0.0
    statuses = {}
    for r in records:
        status = r.status if r is not None else "not_issued"
        statuses[status] = statuses.get(status, 0) + 1
    successes = statuses.get(OK, 0)
    answered = [r.latency_ms for r in records if r is not None and r.end is not None]
    histogram = LatencyHistogram()
    histogram.record_many(max(v, 0.0) for v in answered)   # perf_counter is monotonic: >= 0 anyway
    ok_latencies = [r.latency_ms for r in records if r is not None and r.status == OK and r.end is not None]
    throughput = successes / elapsed if elapsed > 0 else None

    base = unknown_metrics()
    impl_metrics = impl_metrics or {}
    for key, default in base.items():
        value = impl_metrics.get(key, default)
        if isinstance(default, dict):
            value = {**default, **(value if isinstance(value, dict) else {})}
        base[key] = value

    latency_ms = _num(latency_ms)
    ceiling = workers * 1000.0 / latency_ms if workers and latency_ms else None
    errors = {}
    for r in records:
        if r is not None and r.status != OK and r.error and len(errors) < 5:
            errors.setdefault(r.status, r.error)
    harness = {"load": None, "statuses": statuses, "timeouts": statuses.get("timeout", 0),
               "not_answered": sum(statuses.get(s, 0) for s in NOT_ANSWERED),
               "latency_scope": "tasks with a final answer, from intended start",
               "latency_success_ms": latency_summary(ok_latencies),
               "clock": "time.perf_counter", "sample_errors": errors}
    harness.update(harness_info or {})
    extras = {k: v for k, v in impl_metrics.items() if k not in base}
    return {
        "impl": impl,
        "params": params,
        "tasks_submitted": count,
        "elapsed_s": round(elapsed, 6),
        "throughput_tps": round(throughput, 3) if throughput is not None else None,
        "latency_ms": latency_summary(answered),
        "latency_histogram": histogram.to_dict(),
        "error_rate": round((count - successes) / count, 6) if count else None,
        "counters": base["counters"],
        "queue_depth": base["queue_depth"],
        "rates": base["rates"],
        "thread_utilization": base["thread_utilization"],
        "ceiling_tps": round(ceiling, 3) if ceiling else None,
        "efficiency": round(throughput / ceiling, 4) if ceiling and throughput is not None else None,
        "peak_rss_mb": peak_rss_mb(),
        "env": env_info(),
        "process": process if process is not None else process_block(None, None, count),
        "harness": harness,
        **({"impl_extra": extras} if extras else {}),
    }


def run_load(adapter, tasks, load="closed", clients=100, rate=None, result_timeout_s=60.0, params=None,
             latency_ms=None, impl=None):
    """Start the adapter, drive it, collect metrics, stop it; return the metrics JSON dict."""
    rss_before = current_rss_mb()       # the workload and the harness, before the implementation runs
    load_before = load_average()
    usage_before = process_usage()
    adapter.start()
    stopped = False
    try:
        if load == "closed":
            records, t_start, info = run_closed(adapter, tasks, clients, result_timeout_s)
        elif load == "open":
            records, t_start, info = run_open(adapter, tasks, rate, result_timeout_s)
        else:
            raise ValueError(f"unknown load {load!r} (closed | open)")
        impl_metrics = adapter.metrics()
        stop_started = time.perf_counter()
        adapter.stop()
        stopped = True
        process = process_block(usage_before, process_usage(), len(tasks), load_before, load_average())
        info = dict(info, load=load, stop_s=round(time.perf_counter() - stop_started, 6),
                    rss_before_start_mb=rss_before)
    finally:
        if not stopped:
            adapter.stop()
    return build_metrics(records, t_start, impl or adapter.impl, params, impl_metrics,
                         getattr(adapter, "workers", None), latency_ms, info, process)
