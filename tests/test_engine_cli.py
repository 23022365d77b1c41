"""task_queue_optimized.py and `python -m lab dlq`: the command-line faces of the engine."""
import json
import sqlite3
import subprocess
import sys

import pytest

from tests.conftest import ROOT

METRIC_KEYS = {"impl", "params", "tasks_submitted", "elapsed_s", "throughput_tps", "latency_ms", "error_rate",
               "counters", "queue_depth", "rates", "thread_utilization", "ceiling_tps", "efficiency",
               "peak_rss_mb", "env"}


def run(args, timeout=120):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.mark.timeout(120)
def test_benchmark_prints_the_figures_and_writes_the_metrics_json(tmp_path):
    out = tmp_path / "out.json"
    proc = run(["task_queue_optimized.py", "--benchmark", "--count", "300", "--clients", "20",
                "--transient-rate", "0.1", "--json", str(out)])
    assert proc.returncode == 0, proc.stderr
    for label in ("throughput", "latency mean", "latency P95", "latency P99", "error rate", "queue depth",
                  "retries", "rejections", "duplicates", "dead letters"):
        assert label in proc.stdout
    metrics = json.loads(out.read_text())
    assert METRIC_KEYS <= set(metrics)
    assert metrics["impl"] == "optimized" and metrics["tasks_submitted"] == 300
    assert set(metrics["latency_ms"]) == {"mean", "p50", "p95", "p99", "max"}
    assert set(metrics["counters"]) >= {"enqueued", "dequeued", "succeeded", "failed", "retried", "rejected",
                                        "duplicates", "dead_lettered"}
    assert metrics["counters"]["retried"] > 0
    assert metrics["ceiling_tps"] == pytest.approx(8 * 1000 / 5)
    assert metrics["efficiency"] == pytest.approx(metrics["throughput_tps"] / metrics["ceiling_tps"], rel=1e-3)


@pytest.mark.timeout(120)
def test_task_file_run_then_rerun_is_all_duplicates_and_dlq_requeue_runs_again(tmp_path):
    tasks = [{"task_id": f"t{i}", "image_key": f"cli/{i}.raw", "size": "10x10", "object_bytes": 1000}
             for i in range(30)]
    tasks.append({"task_id": "bad", "image_key": "cli/0.raw", "size": "0x0"})
    task_file = tmp_path / "tasks.json"
    task_file.write_text(json.dumps(tasks))
    common = ["task_queue_optimized.py", "--tasks", str(task_file), "--store", str(tmp_path / "store"),
              "--db", str(tmp_path / "t.db")]
    first = run(common + ["--create-objects", "--json", str(tmp_path / "m.json")])
    assert first.returncode == 0, first.stderr
    assert "success 30, dead 1" in first.stdout
    again = run(common)
    assert again.returncode == 0 and "31 of them duplicates" in again.stdout
    listing = run(["-m", "lab", "dlq", "list", "--db", str(tmp_path / "t.db")])
    assert listing.returncode == 0 and "ValidationError" in listing.stdout and "0x0" in listing.stdout
    requeue = run(["-m", "lab", "dlq", "requeue", "--db", str(tmp_path / "t.db"), "--all"])
    assert requeue.returncode == 0 and "requeued 1" in requeue.stdout
    db = sqlite3.connect(str(tmp_path / "t.db"))
    assert db.execute("SELECT status FROM tasks WHERE task_id='bad'").fetchone()[0] == "queued"
    resumed = run(["task_queue_optimized.py", "--db", str(tmp_path / "t.db"), "--store", str(tmp_path / "store")])
    assert resumed.returncode == 0 and "resumed 1" in resumed.stdout
    assert db.execute("SELECT status FROM tasks WHERE task_id='bad'").fetchone()[0] == "dead"
    assert run(["-m", "lab", "dlq", "requeue", "--db", str(tmp_path / "t.db"), "--id", "999"]).returncode == 2


def test_help_is_available_and_no_mode_is_a_usage_error():
    assert run(["task_queue_optimized.py", "--help"]).returncode == 0
    proc = run(["task_queue_optimized.py"])
    assert proc.returncode == 2 and "--benchmark" in proc.stderr
    assert run(["task_queue_optimized.py", "--tasks", "x.json"]).returncode == 2
