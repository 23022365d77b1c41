"""benchmark.py: the engine beats the baseline by a wide margin through the shared harness; the report
files; --overhead and --memory; bad arguments exit 2."""
import argparse
import csv
import json
import os
import subprocess
import threading
import time

import pytest

from lab import benchmark, overhead
from runners import spawn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _engine_available():
    try:
        from tqengine import WorkerPool  # noqa: F401
        return True
    except Exception:
        return False


needs_engine = pytest.mark.skipif(not _engine_available(),
                                  reason="tqengine.WorkerPool not importable yet (the engine has not landed)")


def _bench(*args, timeout=50):
    return subprocess.run([spawn.default_python(), "benchmark.py", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=spawn.trial_env())


@needs_engine
@pytest.mark.timeout(55)
def test_engine_beats_baseline_at_50_and_100_clients(tmp_path):
    # 10 ms tasks: the baseline is bound by its lock (~100 tasks/s on any machine), the engine's 8 workers far
    # above it even where its CPU is short (a slow core shared with the suite's other workers)
    proc = _bench("--clients", "50", "100", "--count", "200", "--repeats", "1", "--latency-ms", "10",
                  "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads((tmp_path / "results.json").read_text())
    assert [r["status"] for r in doc["runs"]] == ["ok"] * 4
    _assert_code_of_this_checkout(doc["code"])      # which code produced the figures
    # alternation: baseline first in the first pair, engine first in the second
    assert [(r["impl"], r["clients"]) for r in doc["runs"]] == [
        ("baseline", 50), ("engine", 50), ("engine", 100), ("baseline", 100)]
    for ratio in doc["ratios"]:
        assert ratio["throughput_ratio"] > 1.5, ratio
        assert ratio["p95_ratio"] < 0.8, ratio
    for run in doc["runs"]:
        assert run["result"]["tasks_submitted"] == 200 and run["result"]["error_rate"] == 0
    with open(tmp_path / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    assert {"impl", "clients", "throughput_tps", "latency_ms.p95", "counters.retried", "queue_depth.max",
            "peak_rss_mb", "env.python"} <= set(rows[0])
    assert "clients 50: throughput" in proc.stdout and "P95" in proc.stdout and "95% CI" in proc.stdout
    assert "±" not in proc.stdout and "+-" not in proc.stdout        # no unlabelled spreads
    assert set(doc["verdicts"]) == {"50", "100"}
    for v in doc["verdicts"].values():
        # one run per side: no interval, so no verdict can be "met" from a point ratio
        assert v["throughput"] == v["p95"] == "inconclusive" and v["comparable"] is True
    assert doc["machine"]["cpu_count"] >= 1 and "cpu_model" in doc["machine"]
    for run in doc["runs"]:
        assert run["result"]["process"]["cpu_user_s"] >= 0
        assert run["result"]["latency_histogram"]["n"] == 200


@needs_engine
@pytest.mark.timeout(55)
@pytest.mark.parametrize("client", ["stdlib", "requests"])
def test_http_comparison_gives_both_implementations_the_same_client(tmp_path, client):
    # 15 ms per request, not 2 or 5: each task is a real thumbnail since issue 10 (1-2 ms of CPU on 2 shared,
    # slow cores), and the gap this checks is the I/O overlap, so the I/O must dominate the work (6.5x here
    # with 15 ms, 3.0x with 5 ms, against a bound of 2x)
    proc = _bench("--clients", "20", "--count", "120", "--repeats", "1", "--latency-ms", "5",
                  "--store-backend", "http", "--server-latency-ms", "15", "--http-client", client,
                  "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads((tmp_path / "results.json").read_text())
    assert sorted(r["impl"] for r in doc["runs"]) == ["baseline", "engine"]
    for run in doc["runs"]:
        assert run["status"] == "ok"
        assert run["params"]["store"] == "http" and run["params"]["http_client"] == client
        result = run["result"]
        assert result["counters"]["succeeded"] == 120 and result["error_rate"] == 0
        # two requests of 15 ms each per task: the ceiling is workers / 30 ms, not workers / latency_ms
        assert result["ceiling_tps"] == pytest.approx(8 * 1000 / 30.0, abs=0.001)    # recorded to 3 decimals
    assert f"client {client}" in proc.stderr and "effic." in proc.stdout
    # the engine's 8 workers against the baseline's one task at a time: a wide gap even at 20 clients
    assert doc["ratios"][0]["throughput_ratio"] > 2.0, doc["ratios"]


@needs_engine
@pytest.mark.timeout(50)
def test_overhead_reports_engine_bare_and_the_durable_floor(tmp_path):
    # --switch-interval near the interpreter's 0.005 s default: applied and recorded, but a long interval would
    # make a 1 ms sleeper wait that long for the GIL and two runs' efficiencies too far apart for a 2-run interval
    proc = _bench("--overhead", "--count", "300", "--repeats", "2", "--clients", "20", "--crowd", "60",
                  "--switch-interval", "0.006", "--floor", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads((tmp_path / "overhead.json").read_text())
    _assert_code_of_this_checkout(doc["code"])
    # --floor: a third implementation in every triple, each of the three first in turn
    firsts = {}
    for run in doc["runs"]:
        firsts.setdefault((run["kind"], run["repeat"]), run["impl"])
    assert {firsts[("noop", 0)], firsts[("noop", 1)]} == {"engine", "bare"}
    floor_runs = [r for r in doc["runs"] if r["impl"] == "floor"]
    assert len(floor_runs) == 2 * len(doc["summary"])
    for entry in doc["summary"].values():
        assert entry["floor"]["tasks_per_s_median"] > 0 and entry["floor_ratio"]["pairs"] == 2
    noop_pairs = {r["repeat"]: {} for r in doc["runs"]}
    for run in doc["runs"]:
        if run["kind"] == "noop":
            noop_pairs[run["repeat"]][run["impl"]] = run["tasks_per_s"]
    floor_ratios = sorted(p["engine"] / p["floor"] for p in noop_pairs.values())
    assert doc["summary"]["noop"]["floor_ratio"]["median"] == pytest.approx(sum(floor_ratios) / 2)
    assert all(r["succeeded"] == r["tasks"] for r in floor_runs)
    assert "engine/floor" in proc.stdout and "durable floor efficiency" in proc.stdout
    assert "2 interleaved triples" in proc.stdout
    assert set(doc["summary"]) == {"noop", "processor", "wait_1ms", "wait_5ms", "noop_crowd"}
    assert doc["args"]["switch_interval"] == 0.006 and "switch interval 0.006 s" in proc.stdout
    crowd = doc["summary"]["noop_crowd"]
    engine_cpu = {(r["kind"], r["repeat"]): r["cpu_us_per_task"] for r in doc["runs"] if r["impl"] == "engine"}
    growth = sorted(engine_cpu[("noop_crowd", n)] / engine_cpu[("noop", n)] for n in (0, 1))
    assert crowd["clients"] == 60 and crowd["cpu_over_main"]["median"] == pytest.approx(sum(growth) / 2)
    # as many tasks per client as the main level (300 / 20): the threads' start and end are not what it weighs
    assert {r["tasks"] for r in doc["runs"] if r["kind"] == "noop_crowd"} == {900}
    assert "(--crowd: 60, 900 tasks per run)" in proc.stdout
    assert list(crowd["verdicts"])[0] == "engine CPU/task <= 1.2x that at the main level"
    assert "60 clients: engine CPU/task" in proc.stdout
    bare_cpu = {(r["kind"], r["repeat"]): r["cpu_us_per_task"] for r in doc["runs"] if r["impl"] == "bare"}
    bare_growth = sorted(bare_cpu[("noop_crowd", n)] / bare_cpu[("noop", n)] for n in (0, 1))
    assert crowd["bare_cpu_over_main"]["median"] == pytest.approx(sum(bare_growth) / 2)
    assert "60 clients: bare pool CPU/task" in proc.stdout
    # and the durable floor's, target 5's control: the least durable queue under as many clients
    floor_cpu = {(r["kind"], r["repeat"]): r["cpu_us_per_task"] for r in doc["runs"] if r["impl"] == "floor"}
    floor_growth = sorted(floor_cpu[("noop_crowd", n)] / floor_cpu[("noop", n)] for n in (0, 1))
    assert crowd["floor_cpu_over_main"]["median"] == pytest.approx(sum(floor_growth) / 2)
    assert "60 clients: durable floor CPU/task" in proc.stdout
    for entry in doc["summary"].values():
        ratio = entry["ratio"]
        assert ratio["pairs"] == 2 and ratio["low"] <= ratio["geometric_mean"] <= ratio["high"], ratio
        assert entry["engine"]["cpu_us_per_task_median"] > 0 and entry["bare"]["tasks_per_s_median"] > 0
    # target 4's context: the bare pool's drift beside the engine's, and the engine's switches per task by run
    assert proc.stdout.count("the bare pool's runs: at most") == len(doc["summary"])
    for kind, entry in doc["summary"].items():
        switches = [r["voluntary_switches_per_task"] for r in doc["runs"]
                    if r["kind"] == kind and r["impl"] == "engine"]
        assert entry["engine"]["switches_per_task_range"] == [min(switches), max(switches)]
        assert all(v in ("met", "not met", "inconclusive") for v in entry["verdicts"].values()), entry
    pairs = {}
    for run in doc["runs"]:
        assert run["succeeded"] == run["tasks"] == (900 if run["kind"] == "noop_crowd" else 300)
        pairs.setdefault((run["kind"], run["repeat"]), {})[run["impl"]] = run["tasks_per_s"]
    ratios = sorted(p["engine"] / p["bare"] for (kind, _), p in pairs.items() if kind == "noop")
    assert doc["summary"]["noop"]["ratio"]["median"] == pytest.approx(sum(ratios) / 2)
    assert "engine/bare" in proc.stdout and "switches/task" in proc.stdout
    for kind, top in (("wait_1ms", 8000.0), ("wait_5ms", 1600.0)):      # 8 workers by default
        eff = doc["summary"][kind]["efficiency"]
        # two runs give a Student-t interval 12.7 standard errors wide: its low end may fall below zero when the
        # runs differ by ~15% (seen on a noisy VM, old code and new alike), so only its order is asserted
        assert eff["ceiling_tps"] == top and 0 < eff["median"] < 1.05, eff
        assert eff["low"] <= eff["median"] <= eff["high"], eff
        assert doc["summary"][kind]["engine"]["tasks_per_s_median"] == pytest.approx(eff["median"] * top)
        assert doc["summary"][kind]["bare"]["tasks_per_s_median"] == pytest.approx(eff["bare_median"] * top)
        # one sleep timed alone never lasts less than asked; what it lasts bounds any pool's efficiency
        ms = 8 * 1000.0 / top     # the ceiling is workers * 1000 / ms
        assert ms <= eff["sleep_ms"] < ms + 50 and eff["sleep_ceiling_share"] == pytest.approx(ms / eff["sleep_ms"])
    assert "bare pool efficiency" in proc.stdout and "sleep lasts" in proc.stdout


@needs_engine
@pytest.mark.timeout(50)
def test_memory_mode_runs_each_implementation_in_its_own_process(tmp_path):
    proc = _bench("--memory", "--memory-counts", "50", "120", "--clients", "10", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads((tmp_path / "memory.json").read_text())
    _assert_code_of_this_checkout(doc["code"])
    assert sorted((r["impl"], r["count"]) for r in doc["runs"]) == [
        ("baseline", 50), ("baseline", 120), ("engine", 50), ("engine", 120)]
    assert all(r["status"] == "ok" and r["peak_rss_mb"] > 1 for r in doc["runs"])


@pytest.mark.timeout(30)
@pytest.mark.parametrize("args", [["--clients", "0"], ["--count", "-5"], ["--repeats", "0"],
                                  ["--latency-ms", "-1"], ["--nope"], ["--clients", "x"],
                                  ["--overhead", "--memory"], ["--server-latency-ms", "5"],
                                  ["--http-client", "stdlib"], ["--store-backend", "http", "--memory"],
                                  ["--store-backend", "ftp"], ["--crowd", "100"], ["--overhead", "--crowd", "0"],
                                  ["--overhead", "--switch-interval", "0"], ["--switch-interval", "0.05"],
                                  ["--floor"]])
def test_bad_arguments_exit_2(args, tmp_path):
    proc = _bench(*args, "--out", str(tmp_path))
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not os.listdir(tmp_path)


def _result(tps, p95, retried=0, error_rate=0.0):
    return {"throughput_tps": tps, "latency_ms": {"mean": p95 / 2, "p50": p95 / 2, "p95": p95, "p99": p95 * 1.1},
            "error_rate": error_rate, "queue_depth": {"max": 7}, "counters": {"retried": retried, "rejected": 0},
            "efficiency": None, "peak_rss_mb": 20.0}


def _runs(clients, engine, baseline):
    return ([{"impl": "baseline", "clients": clients, "status": "ok", "result": r} for r in baseline]
            + [{"impl": "engine", "clients": clients, "status": "ok", "result": r} for r in engine])


def test_summarize_uses_the_lab_rule_with_intervals():
    runs = _runs(50, [_result(330, 100, retried=None), _result(340, 98), _result(335, 101)],
                 [_result(100, 500), _result(102, 505), _result(101, 495)])
    runs.append({"impl": "engine", "clients": 50, "status": "error", "result": None})     # failed: left out
    runs += _runs(100, [_result(150, 90), _result(152, 91), _result(149, 92)],
                  [_result(100, 100), _result(101, 101), _result(99, 99)])
    summary, comparisons = benchmark.summarize(runs, [50, 100])
    base50 = next(s for s in summary if s["impl"] == "baseline" and s["clients"] == 50)
    eng50 = next(s for s in summary if s["impl"] == "engine" and s["clients"] == 50)
    assert base50["throughput_tps"] == 101 and base50["p95_ms"] == 500 and base50["runs"] == 3
    assert eng50["runs"] == 3 and eng50["failed"] == 1
    assert eng50["throughput"]["ci_low"] < 335 < eng50["throughput"]["ci_high"]
    c50, c100 = comparisons
    assert c50["throughput_ratio"] == pytest.approx(335 / 101) and c50["throughput_verdict"] == "met"
    assert c50["throughput"]["low"] > 2.0 and c50["p95_verdict"] == "met"
    assert c100["throughput_verdict"] == "not met" and c100["p95_verdict"] == "not met"
    csv_text = benchmark.runs_csv([dict(r, run=i, repeat=0, order=0, wall_s=1.0) for i, r in enumerate(runs)])
    rows = list(csv.DictReader(csv_text.splitlines()))
    assert len(rows) == 13 and rows[0]["latency_ms.p95"] == "500" and rows[6]["throughput_tps"] == ""


def test_summarize_noisy_engine_is_not_met_from_a_point_ratio(capsys):
    """Issue 14: an engine row of 669, 1495, 1480 tasks/s was MET with no interval and no noise flag."""
    runs = _runs(100, [_result(669, 60), _result(1495, 61), _result(1480, 59)],
                 [_result(194, 500), _result(195, 502), _result(193.5, 498)])
    summary, comparisons = benchmark.summarize(runs, [100])
    assert comparisons[0]["throughput_verdict"] == "inconclusive"
    assert next(s for s in summary if s["impl"] == "engine")["noisy"] == ["throughput"]
    benchmark.print_table(summary, comparisons)
    out = capsys.readouterr().out
    assert "95% CI" in out and "Student-t" in out and "Fieller" in out
    assert "noisy: engine throughput" in out and "(target >= 2x: inconclusive)" in out


def test_summarize_rejecting_engine_is_not_comparable():
    runs = _runs(100, [_result(900, 20, error_rate=e) for e in (0.69, 0.86, 0.75)],
                 [_result(194, 500, error_rate=e) for e in (0.02, 0.019, 0.021)])
    _summary, comparisons = benchmark.summarize(runs, [100])
    c = comparisons[0]
    assert c["completion"]["comparable"] is False
    assert c["throughput_verdict"] == c["p95_verdict"] == "not comparable"


def test_summarize_drops_a_non_finite_run_and_counts_it():
    runs = _runs(10, [_result(300, 50), _result(float("nan"), 50), _result(310, 52)],
                 [_result(100, 200), _result(101, 201), _result(99, 199)])
    summary, comparisons = benchmark.summarize(runs, [10])
    eng = next(s for s in summary if s["impl"] == "engine")
    assert eng["runs"] == 2 and eng["failed"] == 1
    bad = [r for r in runs if r["status"] != "ok"]
    assert len(bad) == 1 and bad[0]["status"] == "invalid" and "throughput_tps = nan" in bad[0]["reason"]
    assert comparisons[0]["throughput"]["n_engine"] == 2


def test_summarize_zero_baseline_is_data_and_no_runs_is_no_data():
    runs = _runs(5, [_result(10, 5), _result(11, 5)], [_result(0, 5, error_rate=1.0), _result(0, 5, error_rate=1.0)])
    _summary, comparisons = benchmark.summarize(runs, [5])
    assert comparisons[0]["throughput_verdict"] == "inconclusive"
    assert "baseline's mean is 0" in comparisons[0]["throughput"]["note"]
    runs = [{"impl": "baseline", "clients": 5, "status": "timeout", "result": None}]
    _summary, comparisons = benchmark.summarize(runs, [5])
    assert comparisons[0]["throughput_ratio"] is None and comparisons[0]["throughput_verdict"] == "no data"


@pytest.mark.timeout(30)
def test_out_that_cannot_be_written_exits_2_before_any_run(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("mine\n")
    for out in (blocker / "results", "/proc/tq-benchmark-test"):
        proc = _bench("--clients", "5", "--count", "20", "--repeats", "1", "--out", str(out), timeout=25)
        assert proc.returncode == 2, proc.stderr[-500:]
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "--out" in lines[0] and "Traceback" not in proc.stderr
        assert "[1/" not in proc.stderr                               # no run started
    assert blocker.read_text() == "mine\n"


def test_pooled_p95_is_over_all_tasks_of_the_runs():
    from tqcontract.histogram import LatencyHistogram
    from tqcontract.metrics import percentile

    def with_hist(result, values):
        h = LatencyHistogram()
        h.record_many(values)
        return dict(result, latency_histogram=h.to_dict())

    engine = [with_hist(_result(300 + i, 50), [float(v) for v in range(1 + 100 * i, 101 + 100 * i)]) for i in range(3)]
    summary, _ = benchmark.summarize(_runs(10, engine, [_result(100, 200)] * 2), [10])
    eng = next(s for s in summary if s["impl"] == "engine")
    assert eng["pooled_p95_ms"] == pytest.approx(percentile([float(v) for v in range(1, 301)], 95), rel=0.01)
    assert next(s for s in summary if s["impl"] == "baseline")["pooled_p95_ms"] is None     # no histograms


def test_overhead_runs_alternate_who_goes_first():
    """Drift lands on every side of a ratio: a pair alternates, a triple (--floor) rotates."""
    from lab.overhead import run_order
    assert [run_order(("engine", "bare"), r) for r in range(3)] == [
        ("engine", "bare"), ("bare", "engine"), ("engine", "bare")]
    assert [run_order(("engine", "bare", "floor"), r)[0] for r in range(4)] == ["engine", "bare", "floor", "engine"]


def test_overhead_spread_target_catches_bimodal_runs_and_needs_five():
    """Target 4 of issue 11: five runs within +-15% of their median. The bimodal figures the issue reported
    (2.6-2.9k or 5.5-5.7k tasks/s for one configuration) must fail it; steady ones pass; four runs decide nothing."""
    from lab import overhead
    assert overhead.spread_verdict([5600, 2700, 5500, 2900, 5700]) == "not met"
    assert overhead.spread_verdict([8502, 8008, 8387, 8396, 8606]) == "met"
    assert overhead.spread_verdict([8502, 8008, 8387, 8396]) == "inconclusive"
    assert overhead.spread([100, 115, 85]) == pytest.approx(0.15)
    assert overhead.spread_verdict([100, 100, 116, 100, 100]) == "not met"


def test_overhead_spread_target_is_inconclusive_when_the_bare_pool_drifts_as_much():
    """On 2026-12-07 the engine's no-op runs spread 18.4% while the bare pool's, interleaved with them and with no
    second state to fall into, spread 16.3%: the machine, not the engine, and the verdict said `not met`. A
    control that drifts past the bound makes the target unable to tell; a real second state still fails it."""
    from lab import overhead
    engine = [12668, 11479, 10922, 13596, 10536]            # that run's figures
    bare = [27008, 28779, 27447, 33469, 30045]
    assert overhead.spread(engine) == pytest.approx(0.184, abs=0.001)
    assert overhead.spread(bare) == pytest.approx(0.163, abs=0.001)
    assert overhead.spread_verdict(engine, bare) == "inconclusive"
    assert overhead.spread_verdict(engine) == "not met"                       # no control: as before
    assert overhead.spread_verdict(engine, [30000, 30500, 29800, 30200, 29900]) == "not met"   # a steady control
    bimodal = [5600, 2700, 5500, 2900, 5700]                                 # 51% from their median
    assert overhead.spread_verdict(bimodal, bare) == "not met"               # far past the machine's drift
    assert overhead.spread_verdict([8502, 8008, 8387, 8396, 8606], bare) == "met"
    assert overhead.spread_verdict(engine, bare[:4]) == "not met"            # a control of four runs tells nothing


def _assert_code_of_this_checkout(code):
    """A results file's `code` names this checkout's commit (None outside a git checkout), as lab.provenance
    labels it."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
    commit = head.stdout.strip() if head.returncode == 0 else None
    assert code["git_commit"] == commit, code
    assert code["code"] is None if commit is None else code["code"].startswith(commit), code


def _run_script(name, *args, timeout):
    """One of scripts/ run on the project's interpreter from the checkout, as the README gives it."""
    return subprocess.run([spawn.default_python(), os.path.join(ROOT, "scripts", name), *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, env=spawn.trial_env())


@needs_engine
@pytest.mark.timeout(120)
def test_opcount_script_counts_the_engine_and_the_floor_per_thread_and_refuses_bad_input(tmp_path):
    """scripts/opcount.py (the README's interpreted-work meter): for a checkout, the bytecodes per task of each
    thread kind for the engine and the floor, their ratio (the engine does more than the floor) and its
    top functions; two checkouts give the engine's ratio; a directory that is no checkout, or zero tasks,
    exits 2 with one line."""
    def count(*args):
        return _run_script("opcount.py", *args, timeout=110)

    proc = count(ROOT, ROOT, "--tasks", "60", "--clients", "4", "--top", "3")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    engines = [line for line in lines if line.strip().startswith("engine client")]
    floors = [line for line in lines if line.strip().startswith("floor  client")]
    assert len(engines) == len(floors) == 2
    totals = [float(line.rsplit("all ", 1)[1]) for line in engines + floors]
    assert all(t > 0 for t in totals) and totals[0] > totals[2]       # the engine runs more than the floor
    ratio = [line for line in lines if "engine/floor" in line][0]
    assert float(ratio.split()[-1]) > 1.0
    assert sum(1 for line in lines if "admission.py" in line or "store.py" in line or "pool.py" in line) >= 1
    assert float(lines[-1].rsplit(" ", 1)[1]) == pytest.approx(1.0, abs=0.1)    # the same checkout twice
    for bad in ([str(tmp_path)], ["--tasks", "0"]):
        proc = count(*bad)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@needs_engine
@pytest.mark.timeout(60)
def test_ab_overhead_script_pairs_two_checkouts_and_refuses_bad_input(tmp_path):
    """scripts/ab_overhead.py (the README's before/after command): one pair of the same checkout gives both
    sides' medians and a B/A ratio; a directory that is no checkout, or zero pairs, exits 2 with one line."""
    def ab(*args):
        return _run_script("ab_overhead.py", *args, timeout=50)

    proc = ab(ROOT, ROOT, "--pairs", "1", "--tasks", "200", "--clients", "10")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "pair 1/1 A:" in proc.stderr and "pair 1/1 B:" in proc.stderr
    assert proc.stdout.count("medians") == 2 and "B/A tasks/s: median" in proc.stdout
    for bad in ([str(tmp_path), ROOT], [ROOT, ROOT, "--pairs", "0"]):
        proc = ab(*bad)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@needs_engine
@pytest.mark.timeout(90)
def test_gil_budget_script_spins_the_floor_and_places_the_engine_and_refuses_bad_input():
    """scripts/gil_budget.py (the README's account of target 3): the floor's runs with CPU spun on its clients
    show that CPU in their CPU per task, a slope is fitted over them and the engine placed on it; bad arguments
    exit 2 with one line."""
    proc = _run_script("gil_budget.py", "--rounds", "1", "--spins", "0", "300", "--tasks", "300", "--clients", "10",
                       timeout=80)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {line.split("  ", 2)[1].strip(): line for line in proc.stdout.splitlines() if line.startswith("  ")}
    assert set(rows) == {"engine", "floor +0 us", "floor +300 us"}, proc.stdout

    def cpu(row):
        return float(row.split(" us CPU/task")[0].rsplit(", ", 1)[1])
    assert cpu(rows["floor +300 us"]) >= cpu(rows["floor +0 us"]) + 150, proc.stdout    # the spin is CPU
    assert "of the ceiling lost per 10 us spun per task" in proc.stdout
    for bad in (["--rounds", "0"], ["--spins", "-1"], ["--wait-ms", "0"]):
        proc = _run_script("gil_budget.py", *bad, timeout=30)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.mark.timeout(90)
def test_processor_threads_script_runs_both_works_per_thread_count_and_refuses_bad_input():
    """scripts/processor_threads.py (the README's account of target 3 at latency 0): the engine's Processor and
    the baseline's per-task work, each in 1 and 2 threads on real tiny sources; two threads hand the GIL over
    (switches a task) where one does not; bad arguments exit 2 with one line."""
    proc = _run_script("processor_threads.py", "--threads", "1", "2", "--tasks", "60", "--rounds", "1", timeout=80)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("  ")]
    assert [line.split(" threads:")[0].split() for line in rows] == [
        ["engine", "Processor", "1"], ["engine", "Processor", "2"], ["baseline", "work", "1"],
        ["baseline", "work", "2"]]

    def switches(row):
        return float(row.split(" switches/task")[0].rsplit(", ", 1)[1])
    assert switches(rows[1]) > switches(rows[0]) and switches(rows[3]) > switches(rows[2]), proc.stdout
    assert rows[1].endswith("x one thread") and rows[3].endswith("x one thread")
    for bad in (["--threads", "0"], ["--tasks", "0"], ["--image-size", "huge"]):
        proc = _run_script("processor_threads.py", *bad, timeout=30)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@needs_engine
@pytest.mark.timeout(60)
def test_soak_mode_writes_the_wal_rss_and_database_figures_of_target_6(tmp_path):
    """`benchmark.py --soak N` (issue 11, target 6) had no test: a short soak writes soak.json with the WAL's
    high-water mark, RSS growth per task, database bytes per task and the code that ran; N < 1 exits 2."""
    proc = _bench("--soak", "3000", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads((tmp_path / "soak.json").read_text())
    assert doc["kind"] == "soak" and doc["tasks"] == 3000 and doc["elapsed_s"] > 0
    assert 0 < doc["wal_high_water_bytes"] <= 64 * 2**20
    assert 50 < doc["db_bytes_per_task"] < 10_000         # a row per task, a few hundred bytes
    assert "rss_growth_bytes_per_task" in doc and doc["rss_marks"]
    assert "WAL high-water" in proc.stdout and "bytes/task" in proc.stdout
    _assert_code_of_this_checkout(doc["code"])
    bad = _bench("--soak", "0", "--out", str(tmp_path / "bad"))
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr


class _SilentAdapter:
    """Takes every task and never answers (an implementation that lost them): run() waits out its timeout."""

    def __init__(self):
        self.never = threading.Event()

    def run(self, task, timeout=None):
        if not self.never.wait(timeout):
            raise TimeoutError("no answer")
        return {"status": "success"}


@pytest.mark.timeout(20)
def test_an_overhead_run_ends_at_its_timeout_with_the_rest_not_succeeded():
    """--timeout bounds a whole in-process run (--help says so). Before, it bounded each task's wait only: a run
    whose implementation answered nothing held each client --timeout seconds for every one of its tasks."""
    started = time.perf_counter()
    result = overhead.measure(_SilentAdapter(), [{"n": i} for i in range(200)], 4, 0.5)
    assert time.perf_counter() - started < 8
    assert result["tasks"] == 200 and result["succeeded"] == 0


@needs_engine
@pytest.mark.timeout(60)
def test_a_soak_stops_with_exit_1_when_tasks_of_a_chunk_did_not_succeed(tmp_path, monkeypatch):
    """A soak's figures mean nothing once its tasks fail. Before, run_soak never looked at what measure()
    counted: a soak that lost tasks printed its figures, wrote soak.json and exited 0."""
    real = overhead.measure

    def losing_one(adapter, tasks, clients, timeout_s):     # fault injection: one task of the chunk not done
        result = real(adapter, tasks, clients, timeout_s)
        result["succeeded"] -= 1
        return result
    monkeypatch.setattr(overhead, "measure", losing_one)
    args = argparse.Namespace(soak=2000, workers=4, queue_size=100, clients=[20], seed=0, timeout=60.0,
                              out=str(tmp_path))
    lines = []
    assert overhead.run_soak(args, str(tmp_path / "work"), lines.append) == 1
    assert any("1 of tasks 1-2000 did not succeed" in line for line in lines), lines
    assert not (tmp_path / "soak.json").exists()


@needs_engine
@pytest.mark.timeout(90)
def test_sleep_overrun_script_times_the_sleeps_inside_each_pool_and_refuses_bad_input():
    """scripts/sleep_overrun.py (the README's account of waking run() callers in turn): each pool's sleeping
    tasks are timed in their workers, every sleep at least as long as asked; bad arguments exit 2, one line."""
    proc = _run_script("sleep_overrun.py", "--rounds", "1", "--tasks", "300", "--clients", "10", "--wait-ms", "2",
                       timeout=80)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {line.split()[0]: line for line in proc.stdout.splitlines() if line.startswith("  ")}
    assert set(rows) == {"engine", "floor", "bare", "alone"}, proc.stdout
    for pool in ("engine", "floor", "bare"):
        p50 = float(rows[pool].split("sleep P50 ")[1].split()[0])
        assert p50 >= 2.0, rows[pool]                       # a 2 ms sleep never lasts less
        assert "% over 4 ms" in rows[pool]
    assert proc.stderr.count("round 1/1") == 3
    for bad in (["--rounds", "0"], ["--wait-ms", "0"], ["--tasks", "0"]):
        proc = _run_script("sleep_overrun.py", *bad, timeout=30)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
