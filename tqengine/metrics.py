"""Exact, thread-safe engine metrics and their JSON export.

Counters and queue depth are updated under one short lock that is never held while calling out, so
export cannot deadlock on it and never touches the task queue's own lock. Queue depth is tracked as a
time-weighted histogram (seconds spent at each depth), which gives its mean and P95 over time exactly
without a sampling thread. Latencies (submit to final result, perf_counter) go into a fixed-bucket histogram
(tqcontract.histogram: every percentile within 1%), so memory stays flat however many tasks run.
"""
from __future__ import annotations

import collections
import threading
import time
from typing import Any

from tqcontract.environment import env_info, peak_rss_mb
from tqcontract.histogram import LatencyHistogram
from tqcontract.metrics import COUNTERS, ENGINE, latency_summary, percentile

_FINAL_COUNTER = {"success": "succeeded", "dead": "dead_lettered", "rejected": "rejected"}

__all__ = ["Metrics", "COUNTERS", "latency_summary", "percentile"]

_clock = time.perf_counter


def _depth_percentile(time_at_depth: dict[int, float], q: float) -> float | None:
    total = sum(time_at_depth.values())
    if total <= 0:
        return None
    target = total * q / 100.0
    running = 0.0
    for depth in sorted(time_at_depth):
        running += time_at_depth[depth]
        if running >= target:
            return float(depth)
    return float(max(time_at_depth))


class Metrics:
    """Counters, latency, queue depth and worker busy time for one engine run."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(COUNTERS, 0)
        self._latency = LatencyHistogram()     # fixed buckets: memory does not grow with the tasks
        self._busy_s = 0.0
        self._busy_cells: list[list[float]] = []    # one per worker thread: busy_cell()
        self._depth = 0
        self._depth_max = 0
        self._depth_since = time.perf_counter()
        self._time_at_depth: collections.defaultdict[int, float] = collections.defaultdict(float)
        self._enqueued = 0          # the task queue's own counts (put_one, took_one), added to `enqueued` and
        self._dequeued = 0          # `dequeued` when read: an int attribute is cheaper to add to than a dict entry
        self.started = time.perf_counter()
        self.first_submit: float | None = None
        self.last_final: float | None = None

    # -- written by the engine -------------------------------------------------------------
    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def submitted(self, now: float | None = None) -> None:
        """The first submission opens the run's window: queue-depth time before it (an engine idle since
        construction) is not counted, so depth mean and P95 cover the same window as elapsed_s."""
        if self.first_submit is not None:
            return
        now = time.perf_counter() if now is None else now
        with self._lock:
            if self.first_submit is None:
                self._time_at_depth = collections.defaultdict(float)
                self._depth_since = now
                self.first_submit = now

    def depth_changed(self, delta: int, dequeued: bool = False, enqueued: bool = False) -> None:
        """Queue depth moved by delta (+1 put, -1 get); optionally count the put or get."""
        now = _clock()
        with self._lock:
            depth = self._depth
            self._time_at_depth[depth] += now - self._depth_since
            self._depth_since = now
            depth += delta
            self._depth = depth
            if depth > self._depth_max:
                self._depth_max = depth
            if enqueued:
                self._enqueued += 1
            if dequeued:
                self._dequeued += 1

    # put_one and took_one are depth_changed(+1, enqueued=...) and depth_changed(-1, dequeued=True) for the task
    # queue, which calls them once a task each (inside its own mutex): without the general one's keyword
    # arguments and branches (~20 of ~66 bytecodes a call, scripts/opcount.py)
    def put_one(self, enqueued: bool) -> None:
        """A task went into the queue; `enqueued`: a newly accepted one (counted)."""
        now = _clock()
        with self._lock:
            depth = self._depth
            self._time_at_depth[depth] += now - self._depth_since
            self._depth_since = now
            self._depth = depth = depth + 1
            if depth > self._depth_max:
                self._depth_max = depth
            if enqueued:
                self._enqueued += 1

    def took_one(self) -> None:
        """A task was taken out of the queue (counted `dequeued`)."""
        now = _clock()
        with self._lock:
            depth = self._depth
            self._time_at_depth[depth] += now - self._depth_since
            self._depth_since = now
            self._depth = depth - 1
            self._dequeued += 1

    def busy(self, seconds: float) -> None:
        with self._lock:
            self._busy_s += seconds

    def busy_cell(self) -> list[float]:
        """A worker thread's own busy-time total, `cell[0] += seconds` after each attempt with no lock (only
        that thread writes it; export reads it whole): busy() took the metrics lock once a task."""
        cell = [0.0]
        with self._lock:
            self._busy_cells.append(cell)
        return cell

    def final(self, status: str, latency_ms: float | None = None) -> None:
        """A primary submission reached its final state."""
        self.last_final = time.perf_counter()
        key = _FINAL_COUNTER.get(status)
        with self._lock:
            if latency_ms is not None:
                self._latency.record(latency_ms)
            if key:
                self._counts[key] += 1

    # -- read by export ---------------------------------------------------------------------
    def counters(self) -> dict[str, int]:
        with self._lock:
            return self._counters()

    def _counters(self) -> dict[str, int]:
        """The counters (call with the lock held)."""
        counts = dict(self._counts)
        counts["enqueued"] += self._enqueued
        counts["dequeued"] += self._dequeued
        return counts

    def snapshot(self, params: dict[str, Any] | None = None, impl: str = ENGINE, tasks_submitted: int | None = None,
                 latency_ms: float | None = None, idle: bool = False) -> dict[str, Any]:
        """The metrics JSON (docs/CONTRACTS.md) as the engine sees it. When the engine is idle the
        wall-time window ends at the last final result, else now."""
        now = time.perf_counter()
        start = self.first_submit if self.first_submit is not None else self.started
        end = self.last_final if (idle and self.last_final is not None) else now
        with self._lock:
            counts = self._counters()
            busy = self._busy_s + sum(cell[0] for cell in self._busy_cells)
            time_at_depth = dict(self._time_at_depth)
            depth = self._depth
            # the current depth counts up to the end of the window (the last result, once idle)
            time_at_depth[depth] = time_at_depth.get(depth, 0.0) + max(0.0, end - self._depth_since)
            depth_max = self._depth_max
        elapsed = max(end - start, 1e-9)
        with self._lock:
            lat = self._latency.summary()
            histogram = self._latency.to_dict()
        total_time = sum(time_at_depth.values())
        mean_depth = (sum(d * t for d, t in time_at_depth.items()) / total_time) if total_time > 0 else None
        submitted = tasks_submitted
        if submitted is None:
            submitted = counts["succeeded"] + counts["dead_lettered"] + counts["rejected"] + counts["duplicates"]
        finals_not_success = counts["dead_lettered"] + counts["rejected"]
        throughput = counts["succeeded"] / elapsed
        ceiling = self.workers * 1000.0 / latency_ms if latency_ms else None
        return {
            "impl": impl,
            "params": params or {},
            "tasks_submitted": submitted,
            "elapsed_s": elapsed,
            "throughput_tps": throughput,
            "latency_ms": lat,
            "error_rate": (finals_not_success / submitted) if submitted else None,
            "counters": counts,
            "queue_depth": {"max": depth_max, "mean": mean_depth, "p95": _depth_percentile(time_at_depth, 95)},
            "rates": {"enqueue_per_s": counts["enqueued"] / elapsed, "dequeue_per_s": counts["dequeued"] / elapsed},
            "thread_utilization": min(1.0, busy / (self.workers * elapsed)),
            "ceiling_tps": ceiling,
            "efficiency": (throughput / ceiling) if ceiling else None,
            "peak_rss_mb": peak_rss_mb(),
            "latency_histogram": histogram,
            "env": env_info(),
        }
