"""One interface over every implementation the load harness drives.

    adapter.start()
    handle = adapter.submit(task)        # may block (backpressure) or raise (rejection)
    outcome = handle.result(timeout)     # dict with at least "status"; TimeoutError if not final in time
    outcome = adapter.run(task, timeout) # optional: submit and wait in one call, where the implementation
                                         # has one (the closed loop then uses it)
    adapter.metrics()                    # implementation-side fields, None where unknown (never invented)
    adapter.stop()

The harness (runners/load.py) measures latency and throughput itself, client-side and identically for
every adapter; `metrics()` only contributes what the harness cannot see from outside: counters, queue
depth, enqueue/dequeue rates and thread utilisation.

Why one module of ~430 lines: the adapter interface and its four implementations (baseline, engine, two
bare floors) share the handle and outcome bookkeeping that makes their figures comparable; reading them
apart would hide what they must have in common.
"""
import collections
import importlib.util
import os
import queue as queue_module
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

from tqcontract.metrics import BASELINE, ENGINE, IMPLEMENTATION_FIELDS, percentile, unknown_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASELINE_PATH = os.path.join(ROOT, "input_new", "baseline_task_queue_v2.py")
BASELINE_MODULE = "baseline_task_queue_v2"

ENGINE_VIEW_KEYS = ("tasks_submitted", "elapsed_s", "throughput_tps", "latency_ms", "error_rate")


class Adapter:
    """Base class: the interface the load harness relies on."""
    impl = "abstract"
    workers = None          # for ceiling_tps; None when the implementation has no fixed pool

    def start(self):
        raise NotImplementedError

    def submit(self, task):
        raise NotImplementedError

    def stop(self):
        raise NotImplementedError

    def metrics(self):
        return unknown_metrics()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        return False


class _Outcomes:
    """Counts final outcomes as the harness observes them (each handle counted once)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.enqueued = 0
        self.rejected = 0
        self.statuses = collections.Counter()
        self.started_at = None
        self.last_at = None

    def submitted(self):
        with self.lock:
            self.enqueued += 1
            now = time.perf_counter()
            if self.started_at is None:
                self.started_at = now

    def refused(self):
        with self.lock:
            self.rejected += 1

    def resolved(self, status):
        with self.lock:
            self.statuses[status] += 1
            self.last_at = time.perf_counter()

    def counters(self):
        """What the harness saw: enqueued, rejected, and final outcomes (dequeued = tasks that ended)."""
        with self.lock:
            succeeded = self.statuses.get("success", 0)
            finals = sum(self.statuses.values())
            return {"enqueued": self.enqueued, "rejected": self.rejected, "succeeded": succeeded,
                    "failed": finals - succeeded, "dequeued": finals}

    def window_s(self):
        with self.lock:
            if self.started_at is None or self.last_at is None:
                return None
            return self.last_at - self.started_at


class _Handle:
    """Wraps an implementation's ticket/future: result() returns a dict and is counted once."""
    __slots__ = ("_inner", "_convert", "_outcomes", "_done", "_value", "_lock")

    def __init__(self, inner, convert, outcomes):
        self._inner = inner
        self._convert = convert
        self._outcomes = outcomes
        self._done = False
        self._value = None
        self._lock = threading.Lock()

    def result(self, timeout=None):
        if self._done:
            return self._value
        value = self._convert(self._inner.result(timeout))   # TimeoutError propagates
        with self._lock:
            if not self._done:
                self._value, self._done = value, True
                self._outcomes.resolved(value.get("status"))
        return self._value


# ---------------------------------------------------------------------------------------------- baseline

_baseline_module = None
_baseline_lock = threading.Lock()


def load_baseline(path=BASELINE_PATH):
    """Import the standalone baseline file once per process (it is not a package module)."""
    global _baseline_module
    with _baseline_lock:
        if _baseline_module is None:
            if not os.path.isfile(path):
                raise ImportError(f"baseline not found at {path}")
            spec = importlib.util.spec_from_file_location(BASELINE_MODULE, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[BASELINE_MODULE] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                sys.modules.pop(BASELINE_MODULE, None)
                raise
            _baseline_module = module
        return _baseline_module


def _depth_probe(obj):
    """A zero-argument callable returning the number of tasks waiting in `obj`'s own queue, or None.

    Only structures that hold *waiting* tasks count (a queue.Queue, or a list/deque the workers pop
    from); anything else would report something that is not queue depth, so the depth stays unknown.
    """
    candidates = []
    for name, value in sorted(vars(obj).items()):
        lowered = name.lower()
        if not any(word in lowered for word in ("queue", "pending", "backlog")):
            continue
        if isinstance(value, queue_module.Queue):
            candidates.append(value.qsize)
        elif isinstance(value, (list, collections.deque)):
            candidates.append(lambda v=value: len(v))
    return candidates[0] if len(candidates) == 1 else None


class DepthSampler:
    """Samples a depth probe on its own thread every `interval_s` (an event wait, not a busy loop)."""

    def __init__(self, probe, interval_s=0.005):
        self.probe = probe
        self.interval_s = interval_s
        self.samples = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="depth-sampler", daemon=True)

    def start(self):
        self._thread.start()

    def _run(self):
        while True:
            try:
                self.samples.append(int(self.probe()))
            except Exception:       # the probed structure is mid-update; skip this sample
                pass
            if self._stop.wait(self.interval_s):
                return

    def stop(self):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def summary(self):
        values = sorted(self.samples)
        if not values:
            return {"max": None, "mean": None, "p95": None}
        return {"max": values[-1], "mean": round(sum(values) / len(values), 3),
                "p95": percentile(values, 95)}


class BaselineAdapter(Adapter):
    """input_new/baseline_task_queue_v2.py. What it cannot report is counted from outside where the
    harness sees it honestly (enqueued = accepted submits, rejected = refused submits, succeeded/failed
    = final ticket statuses, dequeued = tickets that reached a final status, so every one of them left
    the queue); retries, duplicates and dead letters are invisible from outside and stay None."""
    impl = BASELINE

    def __init__(self, store_root, workers=8, latency_ms=5.0, latency_jitter_ms=0.0, transient_rate=0.0,
                 permanent_rate=0.0, seed=0, store=None, sample_depth=True, baseline_path=BASELINE_PATH):
        self.module = load_baseline(baseline_path)
        self.workers = workers
        self.queue = self.module.BaselineTaskQueue(
            store_root, workers=workers, latency_ms=latency_ms, latency_jitter_ms=latency_jitter_ms,
            transient_rate=transient_rate, permanent_rate=permanent_rate, seed=seed, store=store)
        self.outcomes = _Outcomes()
        self.sampler = None
        if sample_depth:
            probe = _depth_probe(self.queue)
            if probe is not None:
                self.sampler = DepthSampler(probe)
        self._started = False

    def start(self):
        self.queue.start()
        self._started = True
        if self.sampler:
            self.sampler.start()

    def submit(self, task):
        try:
            ticket = self.queue.submit(task)
        except Exception:
            self.outcomes.refused()
            raise
        self.outcomes.submitted()
        return _Handle(ticket, _as_dict, self.outcomes)

    def stop(self, timeout=30.0):
        if self.sampler:
            self.sampler.stop()
        if self._started:
            self._started = False
            self.queue.stop(timeout)
        close = getattr(self.queue.store, "close", None)
        if close is not None:
            close()                     # an HTTP client session we created for it

    def metrics(self):
        out = unknown_metrics()
        counts = self.outcomes.counters()
        out["counters"].update(counts)
        window = self.outcomes.window_s()
        if window:
            out["rates"] = {"enqueue_per_s": round(counts["enqueued"] / window, 3),
                            "dequeue_per_s": round(counts["dequeued"] / window, 3)}
        if self.sampler:
            out["queue_depth"] = self.sampler.summary()
        # the baseline's own counters, kept beside ours for cross-checking
        out["impl_counters"] = {"processed": getattr(self.queue, "processed", None),
                                "failed": getattr(self.queue, "failed", None)}
        return out


def _as_dict(value):
    if isinstance(value, dict):
        return value
    if hasattr(value, "as_dict"):
        return value.as_dict()
    return {"status": getattr(value, "status", None)}


# ---------------------------------------------------------------------------------------------- engine

class EngineAdapter(Adapter):
    """tqengine.WorkerPool. Final statuses are success / dead / rejected; a duplicate resolves to the
    same outcome as the original. Metrics come from the engine's own snapshot."""
    impl = ENGINE

    def __init__(self, processor=None, **config):
        from tqengine import Config, WorkerPool
        if config.get("store_url") is None:
            config.pop("store_url", None)
        self.config = Config(**config)
        if hasattr(self.config, "validate"):
            self.config.validate()          # ConfigError (exit 2) before anything starts
        self.workers = getattr(self.config, "max_workers", config.get("max_workers"))
        self.pool = WorkerPool(self.config, processor=processor)
        self._entered = False
        self.final_snapshot = None

    def start(self):
        self.pool.__enter__()
        self._entered = True

    def submit(self, task):
        return _Handle(self.pool.submit(task), _as_dict, _NullOutcomes)

    def submit_many(self, tasks):
        return [_Handle(h, _as_dict, _NullOutcomes) for h in self.pool.submit_many(tasks)]

    def run(self, task, timeout=None):
        """Submit and wait in one call (WorkerPool.run: one wake-up per task); the outcome dict."""
        return _as_dict(self.pool.run(task, timeout))

    def drain(self, timeout=None):
        return self.pool.drain(timeout)

    def stop(self):
        if self._entered:
            self._entered = False
            self.pool.__exit__(None, None, None)
            try:
                self.final_snapshot = self.pool.metrics_snapshot()
            except Exception:
                pass

    def metrics(self):
        snap = self.pool.metrics_snapshot() if self._entered or self.final_snapshot is None \
            else self.final_snapshot
        out = unknown_metrics()
        for key in IMPLEMENTATION_FIELDS:
            if key in snap:
                value = snap[key]
                if isinstance(out[key], dict) and isinstance(value, dict):
                    out[key] = {**out[key], **value}
                else:
                    out[key] = value
        # the engine's own view of the run, for cross-checking the client-side figures
        out["engine_view"] = {k: snap.get(k) for k in ENGINE_VIEW_KEYS}
        return out


class _NullOutcomesType:
    """The engine counts for itself; its handles need no outside bookkeeping."""

    def resolved(self, status):
        pass


_NullOutcomes = _NullOutcomesType()


# ---------------------------------------------------------------------------------------------- bare

def noop(task):
    return None


class BareExecutorAdapter(Adapter):
    """A bare concurrent.futures.ThreadPoolExecutor running `fn(task)`: the floor any queue adds to.
    Counters are what the adapter itself sees; queue depth is the executor's work queue size."""
    impl = "bare"

    def __init__(self, workers=8, fn=noop):
        self.workers = workers
        self.fn = fn
        self.executor = None
        self.outcomes = _Outcomes()

    def _call(self, task):
        try:
            value = self.fn(task)
        except Exception as exc:
            return {"status": "failed", "error": f"{type(exc).__name__}: {exc}"[:300]}
        if isinstance(value, dict) and "status" in value:
            return value
        return {"status": "success"}

    def start(self):
        self.executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="bare")

    def submit(self, task):
        future = self.executor.submit(self._call, task)
        self.outcomes.submitted()
        return _Handle(future, lambda v: v, self.outcomes)

    def stop(self):
        if self.executor is not None:
            self.executor.shutdown(wait=True)
            self.executor = None

    def metrics(self):
        out = unknown_metrics()
        out["counters"].update(self.outcomes.counters(), rejected=0, retried=0, duplicates=0, dead_lettered=0)
        return out


class BareQueueAdapter(Adapter):
    """What the engine is built of and nothing more: a queue.Queue(maxsize) feeding `workers` loops in a
    ThreadPoolExecutor, each running `fn(task)` and completing a Future. No validation, idempotency,
    durability or metrics: the floor the engine's overhead is measured against (benchmark.py --overhead)."""
    impl = "bare"

    def __init__(self, workers=8, queue_size=200, fn=noop):
        self.workers, self.queue_size, self.fn = workers, queue_size, fn
        self.queue = None
        self.executor = None

    def _loop(self):
        get, fn = self.queue.get, self.fn
        while True:
            item = get()
            if item is None:
                return
            task, future = item
            try:
                fn(task)
            except Exception as exc:
                future.set_result({"status": "failed", "error": f"{type(exc).__name__}: {exc}"[:300]})
            else:
                future.set_result(_SUCCESS)

    def start(self):
        self.queue = queue_module.Queue(self.queue_size)
        self.executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="bare")
        for _ in range(self.workers):
            self.executor.submit(self._loop)

    def submit(self, task):
        future = Future()
        self.queue.put((task, future))
        return _Handle(future, lambda v: v, _NullOutcomes)

    def stop(self):
        if self.executor is not None:
            for _ in range(self.workers):
                self.queue.put(None)
            self.executor.shutdown(wait=True)
            self.executor = None


_SUCCESS = {"status": "success"}
