"""The metrics JSON: one shape for the engine, the baseline, benchmark.py, --benchmark and every trial.

This module owns the names (implementations, counters, fields), the one percentile definition (linear
interpolation between closest ranks, q in percent), the latency summary and the columns a trial has in
trials.csv. docs/CONTRACTS.md describes each field.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

BASELINE = "baseline"
ENGINE = "engine"
IMPLEMENTATIONS = (BASELINE, ENGINE)
# names older trial files used for an implementation, read as the current name
LEGACY_IMPLEMENTATIONS = {"optimized": ENGINE}

COUNTERS = ("enqueued", "dequeued", "succeeded", "failed", "retried", "rejected", "duplicates",
            "dead_lettered")
LATENCY_FIELDS = ("mean", "p50", "p95", "p99", "max")
TOP_FIELDS = ("impl", "params", "tasks_submitted", "elapsed_s", "throughput_tps", "latency_ms",
              "error_rate", "counters", "queue_depth", "rates", "thread_utilization", "ceiling_tps",
              "efficiency", "peak_rss_mb", "env")
# fields the harness adds beside the contract's (older results lack them): the answered tasks'
# tqcontract.histogram form, and the process's CPU time, context switches and load around the run
# the part of the metrics an implementation reports about itself (the harness measures the rest)
IMPLEMENTATION_FIELDS = ("counters", "queue_depth", "rates", "thread_utilization")


def canonical_impl(name: str) -> str:
    """The current name of an implementation (old trial files said `optimized` for the engine)."""
    return LEGACY_IMPLEMENTATIONS.get(name, name)


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (q in percent, 0..100) of already sorted values: linear interpolation between
    closest ranks, the same cut points as statistics.quantiles(method="inclusive"). None when empty."""
    n = len(sorted_values)
    if n == 0:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"q must be within 0..100, not {q}")
    if n == 1:
        return float(sorted_values[0])
    pos = (n - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    return float(sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac)


def latency_summary(latencies_ms: Iterable[float]) -> dict[str, float | None]:
    """mean, p50, p95, p99 and max of a sample of latencies (ms); every field None for no values."""
    values = sorted(latencies_ms)
    if not values:
        return dict.fromkeys(LATENCY_FIELDS)
    return {"mean": math.fsum(values) / len(values), "p50": percentile(values, 50),
            "p95": percentile(values, 95), "p99": percentile(values, 99), "max": float(values[-1])}


def unknown_metrics() -> dict[str, Any]:
    """The implementation-side block with every field unknown (null, never invented)."""
    return {"counters": dict.fromkeys(COUNTERS),
            "queue_depth": {"max": None, "mean": None, "p95": None},
            "rates": {"enqueue_per_s": None, "dequeue_per_s": None},
            "thread_utilization": None}


# (CSV column, path into the metrics JSON): trials.csv has one row per trial with these columns, and the
# report reads them, so every number behind an interval in report.md is in trials.csv.
TRIAL_COLUMNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("throughput_tps", ("throughput_tps",)),
    ("latency_p50_ms", ("latency_ms", "p50")),
    ("latency_p95_ms", ("latency_ms", "p95")),
    ("latency_p99_ms", ("latency_ms", "p99")),
    ("latency_mean_ms", ("latency_ms", "mean")),
    ("latency_max_ms", ("latency_ms", "max")),
    ("error_rate", ("error_rate",)),
    ("efficiency", ("efficiency",)),
    ("ceiling_tps", ("ceiling_tps",)),
    ("thread_utilization", ("thread_utilization",)),
    ("peak_rss_mb", ("peak_rss_mb",)),
    ("elapsed_s", ("elapsed_s",)),
    ("tasks_submitted", ("tasks_submitted",)),
    ("enqueued", ("counters", "enqueued")),
    ("dequeued", ("counters", "dequeued")),
    ("succeeded", ("counters", "succeeded")),
    ("failed", ("counters", "failed")),
    ("retried", ("counters", "retried")),
    ("rejected", ("counters", "rejected")),
    ("duplicates", ("counters", "duplicates")),
    ("dead_lettered", ("counters", "dead_lettered")),
    ("queue_depth_max", ("queue_depth", "max")),
    ("queue_depth_mean", ("queue_depth", "mean")),
    # the trial process's own cost around the run (runners.load `process`; blank for older trials)
    ("cpu_user_s", ("process", "cpu_user_s")),
    ("cpu_sys_s", ("process", "cpu_sys_s")),
    ("cpu_ms_per_task", ("process", "cpu_ms_per_task")),
    ("ctx_voluntary", ("process", "ctx_voluntary")),
    ("ctx_involuntary", ("process", "ctx_involuntary")),
)


def dig(obj: Any, path: Iterable[str]) -> Any:
    """obj[path[0]][path[1]]...; None where a level is missing or not a dict."""
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj
