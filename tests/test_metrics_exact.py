"""Exact values of the metrics: percentiles of a known list, utilisation of a known busy time, and the
derived fields of the engine's Metrics.snapshot() for a run whose window is known (issue 15, points 3-4).

Values are chosen so that neighbouring definitions differ: P95 is not P90 or P99, linear interpolation is
not nearest rank, the window is not the engine's lifetime, busy time is divided by the worker count.
"""
import random
import threading
import time

import pytest

from tests.engine_helpers import engine_config, workload
from tqcontract.metrics import COUNTERS, LATENCY_FIELDS, latency_summary, percentile
from tqengine import WorkerPool
from tqengine.metrics import Metrics, _depth_percentile

EXACT = dict(abs=1e-9)
# 1..100 shuffled: P50 50.5, P90 90.1, P95 95.05, P99 99.01 (rank (n-1)q/100, linear interpolation)
HUNDRED = random.Random(5).sample(range(1, 101), 100)
# a skewed sample where every percentile lands between two different values
SKEWED = [2.0] * 80 + [10.0] * 10 + [50.0] * 5 + [200.0] * 4 + [1000.0]


def test_latency_summary_of_a_known_list_is_exact():
    summary = latency_summary(HUNDRED)
    assert set(summary) == set(LATENCY_FIELDS)
    assert summary["mean"] == pytest.approx(50.5, **EXACT)
    assert summary["p50"] == pytest.approx(50.5, **EXACT)
    assert summary["p95"] == pytest.approx(95.05, **EXACT)      # P90 would be 90.1, nearest rank 95
    assert summary["p99"] == pytest.approx(99.01, **EXACT)      # P95 would be 95.05, nearest rank 99
    assert summary["max"] == 100.0
    assert HUNDRED != sorted(HUNDRED)                            # input left as it was (not sorted in place)


def test_latency_summary_of_a_skewed_list_is_exact():
    summary = latency_summary(list(reversed(SKEWED)))
    # n = 100: P50 at rank 49.5 (2, 2); P95 at rank 94.05 (50 | 200); P99 at rank 98.01 (200 | 1000)
    assert summary["p50"] == pytest.approx(2.0, **EXACT)
    assert summary["p95"] == pytest.approx(50.0 + 0.05 * 150.0, **EXACT)
    assert summary["p99"] == pytest.approx(200.0 + 0.01 * 800.0, **EXACT)
    assert summary["mean"] == pytest.approx((160 + 100 + 250 + 800 + 1000) / 100, **EXACT)
    assert summary["max"] == 1000.0


def test_latency_summary_small_samples():
    assert latency_summary([]) == dict.fromkeys(LATENCY_FIELDS)
    assert latency_summary([7.5]) == {"mean": 7.5, "p50": 7.5, "p95": 7.5, "p99": 7.5, "max": 7.5}
    two = latency_summary([30.0, 10.0])
    assert two == pytest.approx({"mean": 20.0, "p50": 20.0, "p95": 29.0, "p99": 29.8, "max": 30.0}, **EXACT)


def test_percentile_edges():
    values = [10.0, 20.0, 40.0]
    assert percentile(values, 0) == 10.0 and percentile(values, 100) == 40.0
    assert percentile(values, 75) == pytest.approx(30.0, **EXACT)     # rank 1.5
    assert percentile(values, 25) == pytest.approx(15.0, **EXACT)     # rank 0.5
    for bad in (-0.1, 100.1):
        with pytest.raises(ValueError):
            percentile(values, bad)


def _known_window_metrics(workers, window_s=10.0):
    """A Metrics whose run window is `window_s` long and ends now (first submit `window_s` ago)."""
    metrics = Metrics(workers)
    metrics.submitted(now=time.perf_counter() - window_s)
    return metrics


def test_engine_snapshot_percentiles_are_within_the_histograms_one_percent():
    """The engine keeps latencies in a fixed-bucket histogram (flat memory): every percentile within 1% of
    the exact one, which still tells P95 (95.05) from P90 (90.1) and P99 (99.01) from P95; mean and max exact."""
    metrics = _known_window_metrics(workers=4)
    for value in HUNDRED:
        metrics.final("success", float(value))
    snap = metrics.snapshot(idle=True)
    lat = snap["latency_ms"]
    assert lat["mean"] == pytest.approx(50.5, **EXACT) and lat["max"] == 100.0
    assert lat == pytest.approx({"mean": 50.5, "p50": 50.5, "p95": 95.05, "p99": 99.01, "max": 100.0}, rel=0.01)
    assert snap["latency_histogram"]["n"] == 100


def test_thread_utilisation_is_busy_time_over_workers_times_the_window():
    metrics = _known_window_metrics(workers=4, window_s=10.0)
    metrics.busy(12.0)
    metrics.busy(8.0)                       # 20 busy seconds over 4 workers x 10 s = 0.5
    metrics.final("success", 1.0)           # the window ends at the last result
    snap = metrics.snapshot(idle=True)
    assert snap["elapsed_s"] == pytest.approx(10.0, abs=0.05)
    assert snap["thread_utilization"] == pytest.approx(0.5, abs=0.005)
    # one worker's worth of busy time on 8 workers
    other = _known_window_metrics(workers=8, window_s=10.0)
    other.busy(10.0)
    other.final("success", 1.0)
    assert other.snapshot(idle=True)["thread_utilization"] == pytest.approx(0.125, abs=0.002)


@pytest.mark.timeout(30)
def test_engine_utilisation_with_one_client_on_four_workers_is_about_a_quarter(tmp_path):
    """One task at a time on 4 workers keeps one worker busy: utilisation near 1/4, never near 1."""
    tasks = workload(tmp_path, 25, object_bytes=200)
    with WorkerPool(engine_config(tmp_path, max_workers=4, latency_ms=8.0)) as pool:
        for task in tasks:
            assert pool.submit(task).result(10).status == "success"
        snap = pool.metrics_snapshot()
    assert 0.08 <= snap["thread_utilization"] <= 0.27, snap["thread_utilization"]
    # and the busy time it stands for is at least the injected service time of every task
    assert snap["thread_utilization"] * 4 * snap["elapsed_s"] >= 25 * 0.008 * 0.95


def test_snapshot_derived_fields_over_a_known_window():
    metrics = _known_window_metrics(workers=4, window_s=10.0)
    for _ in range(30):
        metrics.final("success", 5.0)
    for _ in range(6):
        metrics.final("dead", 50.0)
    for _ in range(4):
        metrics.final("rejected")           # no latency: a refusal is not a processed task
    metrics.count("duplicates", 10)
    metrics.count("enqueued", 36)
    for _ in range(20):
        metrics.depth_changed(-1, dequeued=True)
    snap = metrics.snapshot(idle=True, latency_ms=5.0)
    c = snap["counters"]
    assert set(c) == set(COUNTERS)
    assert (c["succeeded"], c["dead_lettered"], c["rejected"], c["duplicates"]) == (30, 6, 4, 10)
    assert (c["enqueued"], c["dequeued"]) == (36, 20)
    assert snap["tasks_submitted"] == 50                     # successes + dead + rejected + duplicates
    assert snap["error_rate"] == pytest.approx(10 / 50, **EXACT)
    assert snap["throughput_tps"] == pytest.approx(3.0, rel=0.005)
    assert snap["rates"]["enqueue_per_s"] == pytest.approx(3.6, rel=0.005)
    assert snap["rates"]["dequeue_per_s"] == pytest.approx(2.0, rel=0.005)
    assert snap["ceiling_tps"] == pytest.approx(800.0, **EXACT)
    assert snap["efficiency"] == pytest.approx(3.0 / 800.0, rel=0.005)
    assert snap["latency_ms"]["mean"] == pytest.approx((30 * 5.0 + 6 * 50.0) / 36, **EXACT)
    assert snap["latency_ms"]["max"] == 50.0
    assert snap["impl"] == "engine"
    told = metrics.snapshot(idle=True, tasks_submitted=80)
    assert told["tasks_submitted"] == 80 and told["error_rate"] == pytest.approx(10 / 80, **EXACT)
    assert metrics.snapshot(idle=True)["ceiling_tps"] is None and metrics.snapshot()["efficiency"] is None


def test_the_window_ends_at_the_last_result_once_idle_and_now_while_busy():
    metrics = _known_window_metrics(workers=2, window_s=1.0)
    metrics.final("success", 1.0)
    idle = metrics.snapshot(idle=True)["elapsed_s"]
    threading.Event().wait(0.1)             # time passing after the run is what is measured here
    assert metrics.snapshot(idle=True)["elapsed_s"] == idle
    assert metrics.snapshot(idle=False)["elapsed_s"] >= idle + 0.09


def test_the_first_submission_opens_the_window_once():
    metrics = Metrics(2)
    start = time.perf_counter() - 5.0
    metrics.submitted(now=start)
    metrics.submitted(now=start + 4.0)      # later submissions do not move the start
    metrics.final("success", 1.0)
    assert metrics.snapshot(idle=True)["elapsed_s"] == pytest.approx(5.0, abs=0.05)


def test_queue_depth_percentile_of_a_known_histogram():
    assert _depth_percentile({}, 95) is None
    assert _depth_percentile({0: 96.0, 5: 4.0}, 95) == 0.0       # 96% of the time at depth 0
    assert _depth_percentile({0: 94.0, 5: 6.0}, 95) == 5.0
    assert _depth_percentile({0: 95.0, 5: 5.0}, 95) == 0.0       # exactly 95%: the lower depth
    assert _depth_percentile({7: 1.0, 2: 1.0, 3: 98.0}, 95) == 3.0   # depths in order, not insertion order
    assert _depth_percentile({7: 3.0, 2: 1.0, 3: 96.0}, 50) == 3.0
    assert _depth_percentile({1: 1.0, 9: 1.0}, 100) == 9.0


def test_queue_depth_max_mean_and_p95_of_a_timed_sequence():
    metrics = Metrics(1)
    metrics.submitted()
    for _ in range(3):
        metrics.depth_changed(+1)           # depth 3 ...
    threading.Event().wait(0.2)             # ... held for 0.2 s: the time at a depth is what is measured
    for _ in range(3):
        metrics.depth_changed(-1, dequeued=True)
    metrics.final("success", 1.0)
    depth = metrics.snapshot(idle=True)["queue_depth"]
    assert depth["max"] == 3
    assert depth["p95"] == 3.0
    assert 2.5 <= depth["mean"] <= 3.0, depth
    assert metrics.counters()["dequeued"] == 3 and metrics.counters()["enqueued"] == 0


def test_depth_changed_counts_what_it_is_told_to():
    metrics = Metrics(1)
    metrics.depth_changed(+1, enqueued=True)
    metrics.depth_changed(+1)
    metrics.depth_changed(-1, dequeued=True)
    c = metrics.counters()
    assert (c["enqueued"], c["dequeued"]) == (1, 1)
    assert metrics.snapshot()["queue_depth"]["max"] == 2


def test_final_statuses_map_to_their_counters_and_only_processed_tasks_have_latency():
    metrics = _known_window_metrics(workers=1)
    metrics.final("success", 10.0)
    metrics.final("dead", 20.0)
    metrics.final("rejected")
    metrics.final("failed")                 # the state store failed: no final counter of its own
    c = metrics.counters()
    assert (c["succeeded"], c["dead_lettered"], c["rejected"]) == (1, 1, 1)
    assert sum(c.values()) == 3
    assert metrics.snapshot(idle=True)["latency_ms"]["mean"] == pytest.approx(15.0, **EXACT)


def test_queue_depth_held_until_the_end_of_the_window_counts():
    """The depth the queue is at when the window ends counts up to that end (it is most of this run)."""
    metrics = Metrics(1)
    metrics.submitted()
    metrics.depth_changed(+1)
    metrics.depth_changed(+1)
    threading.Event().wait(0.2)             # two tasks queued for 0.2 s: the time at a depth is measured
    metrics.final("success", 1.0)
    depth = metrics.snapshot(idle=True)["queue_depth"]
    assert depth["max"] == 2 and depth["p95"] == 2.0
    assert 1.9 <= depth["mean"] <= 2.0, depth


def test_queue_depth_before_the_first_submission_is_not_part_of_the_window():
    """Depth moves before any submission (recovered tasks at start) do not count in the run's window."""
    metrics = Metrics(1)
    for _ in range(5):
        metrics.depth_changed(+1)           # recovery queues five tasks ...
    threading.Event().wait(0.15)            # ... which wait 0.15 s before the run begins
    for _ in range(5):
        metrics.depth_changed(-1, dequeued=True)
    metrics.submitted()
    threading.Event().wait(0.05)            # the run itself: an empty queue
    metrics.final("success", 1.0)
    depth = metrics.snapshot(idle=True)["queue_depth"]
    assert depth["mean"] == pytest.approx(0.0, abs=0.05) and depth["p95"] == 0.0, depth


def test_trial_columns_read_the_field_their_name_says():
    from tqcontract.metrics import TRIAL_COLUMNS

    def path_from_name(column):
        if column.startswith("latency_") and column.endswith("_ms"):
            return ("latency_ms", column[len("latency_"):-len("_ms")])
        if column in COUNTERS:
            return ("counters", column)
        if column.startswith("queue_depth_"):
            return ("queue_depth", column[len("queue_depth_"):])
        if column.startswith(("cpu_", "ctx_")):          # the trial process's own usage
            return ("process", column)
        return (column,)

    assert len({c for c, _ in TRIAL_COLUMNS}) == len(TRIAL_COLUMNS)
    for column, path in TRIAL_COLUMNS:
        assert path == path_from_name(column), (column, path)
    names = {c for c, _ in TRIAL_COLUMNS}
    assert set(COUNTERS) <= names and {f"latency_{f}_ms" for f in LATENCY_FIELDS} <= names


def test_dig_walks_dicts_only():
    from tqcontract.metrics import dig
    doc = {"a": {"b": {"c": 3}}, "n": 5, "l": [1]}
    assert dig(doc, ("a", "b", "c")) == 3
    assert dig(doc, ("a", "x")) is None
    assert dig(doc, ("n", "b")) is None          # a number is not a level
    assert dig(doc, ("l", "0")) is None
    assert dig(None, ("a",)) is None
    assert dig(doc, ()) == doc


def test_unknown_metrics_has_every_implementation_field_as_null():
    from tqcontract.metrics import IMPLEMENTATION_FIELDS, unknown_metrics
    block = unknown_metrics()
    assert tuple(block) == IMPLEMENTATION_FIELDS
    assert block["counters"] == dict.fromkeys(COUNTERS)
    assert block["queue_depth"] == {"max": None, "mean": None, "p95": None}
    assert block["rates"] == {"enqueue_per_s": None, "dequeue_per_s": None}
    assert block["thread_utilization"] is None
    shape = Metrics(1).snapshot()
    for field in IMPLEMENTATION_FIELDS:     # the engine fills the same shape the unknown block stands for
        if isinstance(block[field], dict):
            assert set(shape[field]) == set(block[field]), field


def test_utilisation_is_capped_at_one_and_unknowns_are_null():
    metrics = _known_window_metrics(workers=1, window_s=10.0)
    metrics.busy(50.0)                      # busy time of attempts begun before the window opened
    metrics.final("success", 1.0)
    assert metrics.snapshot(idle=True)["thread_utilization"] == 1.0
    empty = Metrics(2).snapshot()
    assert empty["error_rate"] is None      # no task: unknown, not 0
    assert empty["latency_ms"] == dict.fromkeys(LATENCY_FIELDS)
    assert empty["ceiling_tps"] is None and empty["efficiency"] is None
    assert empty["queue_depth"]["max"] == 0


def test_every_number_of_the_metrics_json_has_a_trial_column():
    from tqcontract.metrics import TOP_FIELDS, TRIAL_COLUMNS
    columns = {c for c, _ in TRIAL_COLUMNS}
    blocks = {"impl", "params", "latency_ms", "counters", "queue_depth", "rates", "env"}
    assert {f for f in TOP_FIELDS if f not in blocks} <= columns


def test_busy_time_of_worker_cells_counts_like_busy_calls():
    """A worker adds its attempts' busy time to its own cell without the lock (busy_cell); export sums the
    cells with what busy() recorded: three threads x 500 attempts of 0.01 s, and 5 s through busy(), make
    20 s over 4 workers x 10 s."""
    metrics = _known_window_metrics(workers=4, window_s=10.0)

    def worker():
        cell = metrics.busy_cell()
        for _ in range(500):
            cell[0] += 0.01
    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    metrics.busy(5.0)                       # the fourth worker's share, the old way
    metrics.final("success", 1.0)
    assert metrics.snapshot(idle=True)["thread_utilization"] == pytest.approx(0.5, abs=0.005)


def test_the_queues_put_one_and_took_one_record_what_depth_changed_records():
    """The task queue's lean calls (once a task each) must keep the counts and depth the general call keeps."""
    lean, general = Metrics(1), Metrics(1)
    for enqueued in (True, False, True):
        lean.put_one(enqueued)
        general.depth_changed(+1, enqueued=enqueued)
    lean.took_one()
    general.depth_changed(-1, dequeued=True)
    lean.count("enqueued", 5)               # counted through count() too: both add up
    general.count("enqueued", 5)
    assert lean.counters() == general.counters()
    assert (lean.counters()["enqueued"], lean.counters()["dequeued"]) == (7, 1)
    assert lean.snapshot()["counters"] == general.snapshot()["counters"]
    assert lean.snapshot()["queue_depth"]["max"] == general.snapshot()["queue_depth"]["max"] == 3
    assert lean._depth == general._depth == 2
