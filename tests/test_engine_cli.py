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
    assert set(metrics["benchmark"]["code"]) == {"git_commit", "git_dirty", "code"}    # which code ran it
    assert metrics["impl"] == "engine" and metrics["tasks_submitted"] == 300
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
    assert resumed.returncode == 0 and "resumed 1 (dead 1)" in resumed.stdout, resumed.stdout
    assert db.execute("SELECT status FROM tasks WHERE task_id='bad'").fetchone()[0] == "dead"
    assert run(["-m", "lab", "dlq", "requeue", "--db", str(tmp_path / "t.db"), "--id", "999"]).returncode == 2


def test_help_is_available_and_no_mode_is_a_usage_error():
    assert run(["task_queue_optimized.py", "--help"]).returncode == 0
    proc = run(["task_queue_optimized.py"])
    assert proc.returncode == 2 and "--benchmark" in proc.stderr
    assert run(["task_queue_optimized.py", "--tasks", "x.json"]).returncode == 2


@pytest.mark.timeout(60)
@pytest.mark.parametrize("args, says", [
    (["--benchmark", "--server-latency-ms", "5"], "--server-latency-ms needs --store-backend http"),
    (["--benchmark", "--http-client", "requests"], "--http-client needs an HTTP store"),
    (["--benchmark", "--store-url", "http://127.0.0.1:1"], "--store-url is for --tasks"),
    (["--tasks", "t.json", "--store", "s", "--db", "d.db", "--store-backend", "http"], "are for --benchmark"),
    (["--tasks", "t.json", "--store", "s", "--db", "d.db", "--http-client", "requests"],
     "--http-client needs an HTTP store"),
    (["--tasks", "t.json", "--db", "d.db"], "--tasks needs --db PATH and --store DIR (or --store-url URL)"),
    (["--db", "d.db"], "resuming needs --db PATH and --store DIR (or --store-url URL)"),
    (["--tasks", "t.json", "--store", "s", "--db", "d.db", "--count", "5", "--clients", "2"],
     "--count, --clients: benchmark workload flags, for --benchmark only"),
    (["--db", "d.db", "--store", "s", "--create-objects"], "--create-objects needs --tasks FILE"),
    (["--benchmark", "--store", "s"], "are for --tasks; --benchmark uses scratch files of its own"),
    (["--benchmark", "--db", "d.db"], "are for --tasks; --benchmark uses scratch files of its own"),
    (["--benchmark", "--image-size", "huge"], "image_size must be tiny, small, large or WxH"),
    (["--benchmark", "--store-backend", "http", "--server-latency-ms", "-1"], "server_latency_ms must be >= 0"),
    (["--tasks", "t.json", "--db", "d.db", "--store-url", "http://127.0.0.1:1"],
     "cannot reach the object store at http://127.0.0.1:1"),
], ids=["latency-local", "client-local-benchmark", "url-benchmark", "backend-tasks", "client-local-tasks",
        "no-store", "resume-no-store", "workload-on-tasks", "create-on-resume", "benchmark-store", "benchmark-db",
        "bad-kib", "bad-server-latency", "unreachable-store"])
def test_http_flags_where_they_do_not_apply_are_usage_errors(tmp_path, args, says):
    """A flag that would be silently ignored is refused instead: exit 2, one line, nothing written."""
    (tmp_path / "t.json").write_text('[{"task_id": 1, "image_key": "a.raw", "size": "8x8"}]')
    proc = subprocess.run([sys.executable, ROOT + "/task_queue_optimized.py", *args], cwd=tmp_path, capture_output=True,
                          text=True, timeout=50, env={**_clean_env(), "PYTHONPATH": ROOT})
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and says in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    if "cannot reach" not in says:      # (the unreachable store is found after the database is opened)
        assert [p.name for p in tmp_path.iterdir()] == ["t.json"]


def _clean_env(**extra):
    import os
    env = {k: v for k, v in os.environ.items() if not k.startswith("TQ_")}
    env.update(extra)
    return env


@pytest.mark.timeout(60)
def test_benchmark_over_http_ignores_a_tq_store_setting_for_the_engine(tmp_path):
    # TQ_STORE=http without a URL would be a configuration error for the engine; the benchmark picks its
    # store with --store-backend and starts its own server, so it runs
    proc = subprocess.run([sys.executable, ROOT + "/task_queue_optimized.py", "--benchmark", "--count", "60",
                           "--clients", "10", "--store-backend", "http", "--server-latency-ms", "1",
                           "--http-client", "requests"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=50, env=_clean_env(TQ_STORE="http", PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "store http (1 ms per request, requests client)" in proc.stderr
    assert "succeeded           60" in proc.stdout


@pytest.mark.timeout(60)
def test_task_file_against_an_http_store_creates_its_objects_on_the_server(tmp_path):
    from runners.server_process import start_server_process
    from runners.workload import image_chunks, source_size_of
    from tqengine.objects.http import HttpObjectStore
    tasks = [{"task_id": f"h{i}", "image_key": f"remote/{i}.raw", "size": "10x10", "object_bytes": 3000 + i}
             for i in range(12)]
    task_file = tmp_path / "tasks.json"
    task_file.write_text(json.dumps(tasks))
    server_root = tmp_path / "server"
    with start_server_process(str(server_root)) as srv:
        args = [sys.executable, ROOT + "/task_queue_optimized.py", "--tasks", str(task_file),
                "--store-url", srv.url, "--db", str(tmp_path / "t.db"), "--create-objects"]
        proc = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=50,
                              env=_clean_env(PYTHONPATH=ROOT))
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "success 12, dead 0" in proc.stdout, proc.stdout
        with HttpObjectStore(srv.url) as remote:
            for task in tasks:   # the sources were created on the server, with their deterministic content
                assert remote.read_all(task["image_key"]) == b"".join(
                    image_chunks(task["image_key"], *source_size_of(task)))
                assert remote.size(f"variants/{task['image_key']}@10x10") > 0
    assert not (tmp_path / "data").exists(), "nothing may be written to the local default store"
    assert sorted(p.name for p in (server_root / "store" / "remote").iterdir()) == sorted(
        f"{i}.raw" for i in range(12))


@pytest.mark.timeout(60)
def test_benchmark_passes_every_engine_knob_to_the_engine(tmp_path):
    out = tmp_path / "m.json"
    proc = subprocess.run([sys.executable, ROOT + "/task_queue_optimized.py", "--benchmark", "--count", "40",
                           "--clients", "8", "--backoff-base", "0.2", "--backoff-cap", "0.4", "--chunk-size", "4096",
                           "--max-attempts", "2", "--json", str(out)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=50, env=_clean_env(PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stderr[-2000:]
    params = json.loads(out.read_text())["params"]
    assert (params["backoff_base_s"], params["backoff_cap_s"], params["chunk_size"], params["max_attempts"]) == (
        0.2, 0.4, 4096, 2)


@pytest.mark.timeout(60)
def test_store_dir_on_the_command_line_beats_tq_store_from_the_environment(tmp_path):
    tasks = [{"task_id": f"e{i}", "image_key": f"env/{i}.raw", "size": "10x10", "object_bytes": 800}
             for i in range(5)]
    task_file = tmp_path / "tasks.json"
    task_file.write_text(json.dumps(tasks))
    proc = subprocess.run([sys.executable, ROOT + "/task_queue_optimized.py", "--tasks", str(task_file), "--store",
                           str(tmp_path / "store"), "--db", str(tmp_path / "t.db"), "--create-objects"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=50,
                          env=_clean_env(PYTHONPATH=ROOT, TQ_STORE="http", TQ_STORE_URL="http://127.0.0.1:1"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "success 5, dead 0" in proc.stdout
    assert len(list((tmp_path / "store" / "variants" / "env").iterdir())) == 5


def test_benchmark_verdicts_judge_the_engines_targets_over_the_runs():
    from lab.engine_bench import benchmark_verdicts

    def run(eff, p95):
        return {"efficiency": eff, "latency_ms": {"p95": p95}, "harness": {"service_time_ms": 5.0}}

    saturated = benchmark_verdicts([run(0.96, 66.0), run(0.97, 67.0), run(0.965, 66.5)],
                                   {"clients": 100, "workers": 8})
    assert saturated["targets"]["efficiency"]["verdict"] == "met"
    assert saturated["targets"]["p95_ms"]["target"] == pytest.approx(1.1 * 65 + 1)      # 13 rounds of 5 ms
    assert saturated["targets"]["p95_ms"]["verdict"] == "met"
    slow = benchmark_verdicts([run(0.60, 150.0), run(0.62, 160.0), run(0.61, 155.0)], {"clients": 100, "workers": 8})
    assert slow["targets"]["efficiency"]["verdict"] == "not met" and slow["targets"]["p95_ms"]["verdict"] == "not met"
    few = benchmark_verdicts([run(0.86, 6.2), run(0.85, 6.3)], {"clients": 8, "workers": 8})
    assert "efficiency" not in few["targets"] and any("no target with 8 clients" in line for line in few["lines"])
    none = benchmark_verdicts([{"efficiency": None, "latency_ms": {"p95": 9.0}, "harness": {"service_time_ms": 0}}],
                              {"clients": 100, "workers": 8})
    assert none["targets"] == {}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("where", ["folder", "missing-folder"])
def test_a_log_file_that_cannot_be_opened_is_one_line_and_exit_2_before_any_work(tmp_path, where):
    """--log-file naming a folder (or a file in a missing folder) ended in a traceback and exit 1."""
    log_file = tmp_path if where == "folder" else tmp_path / "no" / "such" / "engine.log"
    task_file = tmp_path / "tasks.json"
    task_file.write_text(json.dumps([{"image_key": "a.jpg", "size": "1x1"}]))
    proc = run(["task_queue_optimized.py", "--tasks", str(task_file), "--store", str(tmp_path / "store"),
                "--db", str(tmp_path / "t.db"), "--log-file", str(log_file)])
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot open log file" in lines[0] and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "t.db").exists()         # stopped before the database was opened


@pytest.mark.timeout(60)
def test_dlq_list_and_requeue_read_hand_edited_rows(tmp_path):
    """A dead letter whose dead_at is not a time ended `dlq list` in a traceback; one whose task row is gone
    was counted as requeued though nothing was. Now the stored value is shown, and the stale entry is closed
    and named, not counted."""
    task_file = tmp_path / "tasks.json"
    task_file.write_text(json.dumps([{"task_id": "x", "image_key": "a.jpg", "size": "0x0"},
                                     {"task_id": "y", "image_key": "b.jpg", "size": "0x0"}]))
    db = tmp_path / "t.db"
    assert run(["task_queue_optimized.py", "--tasks", str(task_file), "--store", str(tmp_path / "store"),
                "--db", str(db)]).returncode == 0
    conn = sqlite3.connect(str(db))
    conn.execute("UPDATE dead_letters SET dead_at='yesterday', attempts='many' WHERE task_id='x'")
    conn.execute("UPDATE dead_letters SET dead_at=-1e300, task_row=999 WHERE task_id='y'")
    conn.commit()
    conn.close()
    listing = run(["-m", "lab", "dlq", "list", "--db", str(db)])
    assert listing.returncode == 0 and "Traceback" not in listing.stderr, listing.stderr
    assert "yesterday" in listing.stdout and "many" in listing.stdout and "2 dead letter(s)" in listing.stdout
    requeue = run(["-m", "lab", "dlq", "requeue", "--db", str(db), "--all"])
    assert requeue.returncode == 0, requeue.stderr
    assert "requeued 1 task(s)" in requeue.stdout and "closed 1 dead letter(s)" in requeue.stderr
    conn = sqlite3.connect(str(db))
    assert conn.execute("SELECT status FROM tasks WHERE task_id='x'").fetchone()[0] == "queued"
    assert conn.execute("SELECT COUNT(*) FROM dead_letters WHERE requeued_at IS NULL").fetchone()[0] == 0
