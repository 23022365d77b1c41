"""`python -m lab sweep` end to end in subprocesses, with tests/fake_trial.py standing in for runners.trial:
the output folder, resume (also after a kill), timeouts and crashes, refusal of a changed grid."""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAKE = "tests.fake_trial"


def write_grid(path, axes, repeats=1, timeout_s=20, count=10, implementations=("baseline", "engine"),
               name="t", **fixed):
    fixed = dict({"count": count, "latency_ms": 5, "queue_size": 16}, **fixed)
    raw = {"name": name, "implementations": list(implementations), "repeats": repeats, "seed": 3,
           "timeout_s": timeout_s, "fixed": {k: v for k, v in fixed.items() if k not in axes}, "axes": axes}
    path.write_text(json.dumps(raw))
    return str(path)


def sweep_argv(grid, out, *extra):
    return [sys.executable, "-m", "lab", "sweep", grid, "--out", str(out), "--trial-module", FAKE, *extra]


def scratch_env(argv):
    """Trials' scratch folders inside the sweep folder (TQ_SCRATCH_DIR), so the fake trial can find it."""
    env = dict(os.environ)
    if "--out" in argv:
        env["TQ_SCRATCH_DIR"] = str(argv[argv.index("--out") + 1])
    return env


def run(argv, timeout=60):
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=scratch_env(argv))


def records(out):
    folder = os.path.join(out, "trials")
    result = {}
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name)) as f:
            rec = json.load(f)
        result[rec["id"]] = rec
    return result


def csv_rows(out):
    with open(os.path.join(out, "trials.csv"), newline="") as f:
        return list(csv.DictReader(f))


def process_gone(pid):
    """True when pid no longer runs (gone, or a zombie nobody has reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False


def wait_for(predicate, deadline_s=30.0, what="condition"):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def test_two_trial_sweep_outputs_and_resume(tmp_path):
    grid = write_grid(tmp_path / "grid.json", {"workers": [4], "clients": [100]})
    out = tmp_path / "sweep"
    proc = run(sweep_argv(grid, out))
    assert proc.returncode == 0, proc.stderr

    meta = json.loads((out / "sweep.json").read_text())
    assert meta["grid"]["axes"] == {"workers": [4], "clients": [100]}
    assert len(meta["grid_hash"]) == 16
    assert meta["machine"]["cpu_count"] >= 1 and meta["machine"]["platform"]
    assert meta["machine"]["cpu_reference_ms"] > 0       # single-core speed, for comparing machines
    assert meta["trial_python"]["python_version"].count(".") == 2
    assert "git_commit" in meta and "started_at" in meta
    assert meta["trial_env"]["PYTHONHASHSEED"] == "0"

    recs = records(out)
    assert len(recs) == 2
    assert sorted(r["impl"] for r in recs.values()) == ["baseline", "engine"]
    for rec in recs.values():
        assert rec["status"] == "ok" and rec["result"]["throughput_tps"] > 0
        assert rec["params"]["workdir"].startswith(str(out))
        assert rec["wall_s"] > 0 and "stderr_tail" in rec
        assert rec["argv"][1:3] == ["-m", FAKE]
    assert not list(out.glob("tq-sweep-*"))       # every trial's workdir was cleaned
    assert not [n for n in os.listdir(out) if n.endswith(".tq-tmp")]

    rows = csv_rows(out)
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert {r["id"] for r in rows} == set(recs)
    for column in ("impl", "repeat", "workers", "clients", "throughput_tps", "latency_p50_ms", "latency_p95_ms",
                   "latency_p99_ms", "latency_mean_ms", "error_rate", "efficiency", "peak_rss_mb", "succeeded",
                   "rejected", "wall_s"):
        assert column in rows[0], column
    assert float(rows[0]["throughput_tps"]) == pytest.approx(recs[rows[0]["id"]]["result"]["throughput_tps"])

    lines = proc.stderr.strip().splitlines()
    assert any(line.startswith("[1/2] ") and "workers=4 clients=100" in line and "left ~" in line for line in lines)
    assert any(line.startswith("[2/2] ") for line in lines)

    # same command again: nothing reruns
    again = run(sweep_argv(grid, out))
    assert again.returncode == 0, again.stderr
    assert "2 already ok, 0 to run" in again.stderr
    assert {k: v["result"]["env"]["pid"] for k, v in records(out).items()} == \
           {k: v["result"]["env"]["pid"] for k, v in recs.items()}

    # more repeats extend the sweep; a different grid is refused
    more = run(sweep_argv(grid, out, "--repeats", "2"))
    assert more.returncode == 0 and "2 already ok, 2 to run" in more.stderr
    assert len(records(out)) == 4
    other = run(sweep_argv(grid, out, "--seed", "4"))
    assert other.returncode == 2
    assert len(other.stderr.strip().splitlines()) == 1 and "another --out" in other.stderr


def test_hang_is_timed_out_crash_is_recorded_and_sweep_goes_on(tmp_path):
    # fake trial: latency_ms 666 crashes, 777 hangs (with a child in its process group)
    grid = write_grid(tmp_path / "grid.json", {"latency_ms": [5, 666, 777]}, timeout_s=1.5,
                      implementations=["engine"], workers=2, clients=4)
    out = tmp_path / "sweep"
    proc = run(sweep_argv(grid, out))
    assert proc.returncode == 1, proc.stderr
    assert "2 of 3 trials failed (1 error, 1 timeout)" in proc.stderr
    by_latency = {r["params"]["latency_ms"]: r for r in records(out).values()}
    assert by_latency[5]["status"] == "ok"
    assert by_latency[666]["status"] == "error"
    assert "simulated crash in the fake trial" in by_latency[666]["stderr_tail"]
    assert by_latency[666]["returncode"] == 1
    assert by_latency[777]["status"] == "timeout"
    assert 1.4 < by_latency[777]["wall_s"] < 15
    assert "killed with its process group" in by_latency[777]["stderr_tail"]
    # the hanging trial and the child it started are both gone
    pids = [int(p) for p in (out / "hang-pids.txt").read_text().split()]
    assert len(pids) == 2
    wait_for(lambda: all(process_gone(p) for p in pids), 10, "the hung trial's process group to die")
    statuses = sorted(r["status"] for r in csv_rows(out))
    assert statuses == ["error", "ok", "timeout"]
    assert not list(out.glob("tq-sweep-*"))

    # rerun: the ok trial is kept, the failed ones are tried again (and fail again)
    again = run(sweep_argv(grid, out))
    assert again.returncode == 1 and "1 already ok, 2 to run" in again.stderr


def test_resume_after_kill(tmp_path):
    grid = write_grid(tmp_path / "grid.json", {"workers": [1, 2, 3]}, count=300)   # 6 trials of ~0.3 s
    out = tmp_path / "sweep"
    argv = sweep_argv(grid, out)
    sweep = subprocess.Popen(argv, cwd=ROOT, env=scratch_env(argv), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        trials_dir = out / "trials"
        wait_for(lambda: trials_dir.is_dir() and any(n.endswith(".json") for n in os.listdir(trials_dir)),
                 30, "the first trial file")
        sweep.kill()        # SIGKILL: no chance to clean up
        sweep.wait(timeout=10)
    finally:
        if sweep.poll() is None:
            sweep.kill()
            sweep.wait()
    first = records(out)
    assert 1 <= len(first) < 6
    assert all(r["status"] == "ok" for r in first.values())

    proc = run(sweep_argv(grid, out))
    assert proc.returncode == 0, proc.stderr
    assert f"{len(first)} already ok, {6 - len(first)} to run" in proc.stderr
    final = records(out)
    assert len(final) == 6 and all(r["status"] == "ok" for r in final.values())
    for rid, rec in first.items():     # not rerun: the very same record
        assert final[rid] == rec
    rows = csv_rows(out)
    assert len(rows) == 6 and {r["status"] for r in rows} == {"ok"}
    meta = json.loads((out / "sweep.json").read_text())
    assert len(meta["runs"]) == 2 and meta["runs"][1]["already_ok"] == len(first)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_kills_the_trial_in_flight(tmp_path, signum):
    """SIGTERM, and SIGHUP (a closed terminal), stop the sweep and the trial's whole process group."""
    grid = write_grid(tmp_path / "grid.json", {"workers": [2]}, timeout_s=120, implementations=["engine"],
                      latency_ms=777)
    out = tmp_path / "sweep"
    argv = sweep_argv(grid, out)
    sweep = subprocess.Popen(argv, cwd=ROOT, env=scratch_env(argv), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        pid_file = out / "hang-pids.txt"
        wait_for(lambda: pid_file.exists() and len(pid_file.read_text().split()) == 2, 30, "the hanging trial")
        sweep.send_signal(signum)
        _, err = sweep.communicate(timeout=20)
    finally:
        if sweep.poll() is None:
            sweep.kill()
            sweep.wait()
    assert sweep.returncode == 1
    assert "interrupted" in err and "rerun the same command to resume" in err
    pids = [int(p) for p in pid_file.read_text().split()]
    wait_for(lambda: all(process_gone(p) for p in pids), 10, "the trial's process group to die")


def test_user_mistakes_are_one_line_exit_2(tmp_path):
    bad_bytes = tmp_path / "latin1.json"
    bad_bytes.write_bytes(b"\xff\xfe{}")
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    grid = write_grid(tmp_path / "grid.json", {"workers": [2]}, implementations=["engine"])
    done = tmp_path / "done"
    assert run(sweep_argv(grid, done)).returncode == 0
    db = tmp_path / "other.db"
    import sqlite3
    sqlite3.connect(str(db)).execute("CREATE TABLE t(x)").connection.close()
    cases = [
        ([sys.executable, "-m", "lab", "sweep", str(bad_bytes), "--out", str(tmp_path / "o1")], "not UTF-8"),
        (sweep_argv(grid, a_file / "sub"), "--out"),
        ([sys.executable, "-m", "lab", "report", str(done), "--out", str(done / "sweep.json")], "own records"),
        ([sys.executable, "-m", "lab", "report", str(done), "--out", str(done / "trials" / "x.md")], "own records"),
        ([sys.executable, "-m", "lab", "report", str(done), "--out", str(tmp_path)], "is a folder"),
        ([sys.executable, "-m", "lab", "dlq", "list", "--db", str(db)], "not a task database"),
        ([sys.executable, "-m", "lab", "dlq", "requeue", "--all", "--db", str(db)], "not a task database"),
        ([sys.executable, "-m", "lab", "objects", "serve", "--root", str(a_file)], "must be a folder"),
    ]
    for argv, says in cases:
        proc = run(argv)
        assert proc.returncode == 2, (argv, proc.returncode, proc.stderr[-1500:])
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and says in lines[0] and "Traceback" not in proc.stderr, (argv, proc.stderr)
    # the refused report targets left the sweep usable
    assert run([sys.executable, "-m", "lab", "report", str(done)]).returncode == 0
    assert not (tmp_path / "summary.csv").exists() and not (tmp_path / "charts").exists()


@pytest.mark.timeout(120)
def test_run_all_reads_the_grid_from_where_it_is_typed_and_takes_out(tmp_path):
    """`../run_all.sh quick.json` from experiments/ (or any folder) finds the grid; --out is honoured."""
    grid = write_grid(tmp_path / "mine.json", {"workers": [2]}, implementations=["baseline", "engine"],
                      count=20, name="mine")
    proc = subprocess.run([os.path.join(ROOT, "run_all.sh"), "mine.json", "--out", "res"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=110,
                          env=dict(os.environ, TQ_SCRATCH_DIR=str(tmp_path)))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "res" / "report.md").is_file() and (tmp_path / "res" / "trials.csv").is_file()
    assert os.path.basename(grid) == "mine.json"
    bad = subprocess.run([os.path.join(ROOT, "run_all.sh"), "mine.json", "--bogus"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "usage: ./run_all.sh" in bad.stderr


def test_a_rerun_with_fewer_repeats_keeps_the_rounds_already_run(tmp_path):
    grid = write_grid(tmp_path / "grid.json", {"workers": [2]}, implementations=["engine"])
    out = tmp_path / "sweep"
    assert run(sweep_argv(grid, out, "--repeats", "2")).returncode == 0
    again = run(sweep_argv(grid, out))              # the grid file says 1 repeat
    assert again.returncode == 0, again.stderr
    assert "2 already ok, 0 to run" in again.stderr, again.stderr
    assert json.loads((out / "sweep.json").read_text())["grid"]["repeats"] == 2


def test_metadata_cpu_memory_and_load_are_recorded(tmp_path):
    grid = write_grid(tmp_path / "grid.json", {"workers": [2]}, implementations=["engine"])
    out = tmp_path / "sweep"
    assert run(sweep_argv(grid, out)).returncode == 0
    machine = json.loads((out / "sweep.json").read_text())["machine"]
    assert {"cpu_model", "cpu_count", "cpu_usable", "memory_total_mb", "load_average"} <= set(machine)
    assert machine["memory_total_mb"] > 64 and len(machine["load_average"]) == 3
    (rec,) = records(out).values()
    assert len(rec["load_before"]) == 3 and len(rec["load_after"]) == 3
    (row,) = csv_rows(out)
    assert float(row["load1_before"]) == rec["load_before"][0] and float(row["load1_after"]) == rec["load_after"][0]
    assert {"cpu_user_s", "cpu_sys_s", "cpu_ms_per_task", "ctx_voluntary", "ctx_involuntary"} <= set(row)


def test_a_trial_with_a_non_finite_metric_is_recorded_as_failed(tmp_path, monkeypatch):
    from lab import grid as gridmod
    from lab import sweep
    from runners import spawn

    def fake_spawn(params, python=None, timeout_s=None, module=None):
        result = {"throughput_tps": float("nan"), "error_rate": 0.0, "tasks_submitted": 10,
                  "latency_ms": {"mean": 1.0, "p50": 1.0, "p95": 2.0, "p99": 2.0, "max": 3.0}}
        return {"status": "ok", "result": result, "returncode": 0, "stderr_tail": "", "wall_s": 0.1,
                "argv": ["python"]}

    monkeypatch.setattr(spawn, "spawn_trial", fake_spawn)
    grid = gridmod.load(write_grid(tmp_path / "grid.json", {"workers": [2]}, implementations=["engine"]))
    (trial,) = gridmod.plan(grid)
    rec = sweep.run_one(trial, grid, "python", "x", str(tmp_path / "work"))
    assert rec["status"] == "invalid"
    assert "throughput_tps = nan" in rec["reason"] and rec["reason"] in rec["stderr_tail"]
    assert "INVALID" in sweep._outcome(rec) and "throughput_tps = nan" in sweep._outcome(rec)
    row = sweep.csv_text(["workers"], [rec]).splitlines()[1]
    assert ",invalid," in row


def test_out_in_proc_is_refused_before_any_work(tmp_path):
    grid = write_grid(tmp_path / "grid.json", {"workers": [2]}, implementations=["engine"])
    proc = run(sweep_argv(grid, "/proc/tq-sweep-test"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --out /proc/tq-sweep-test") and "sweep t" not in proc.stderr


@pytest.mark.timeout(90)
def test_target_halfwidth_adds_interleaved_rounds_until_the_intervals_are_narrow(tmp_path):
    """The fake trial's noise is 2% in block mode and 15% for the engine in fail_fast: block reaches +-5%
    after a few rounds, fail_fast never does and stops at the cap."""
    grid = write_grid(tmp_path / "grid.json", {"mode": ["block", "fail_fast"]}, repeats=3, workers=8, clients=1)
    out = tmp_path / "sweep"
    proc = run(sweep_argv(grid, out, "--target-halfwidth", "5%", "--max-repeats", "6"), timeout=80)
    assert proc.returncode == 0, proc.stderr
    meta = json.loads((out / "sweep.json").read_text())
    recs = list(records(out).values())
    repeats = {}
    for r in recs:
        repeats.setdefault(r["config"]["mode"], set()).add(r["repeat"])
    assert repeats["fail_fast"] == set(range(6))                     # up to the cap
    assert 3 < len(repeats["block"]) < 6 and repeats["block"] == set(range(len(repeats["block"])))
    by_id = {r["config"]["mode"]: r["config_id"] for r in recs}
    assert meta["adaptive"]["target_halfwidth"] == 0.05 and meta["adaptive"]["max_repeats"] == 6
    assert meta["adaptive"]["not_reached"] == [by_id["fail_fast"]]
    assert meta["planned_trials"] == len(recs) == 2 * (6 + len(repeats["block"]))
    # interleaved as the planned rounds: both implementations of a configuration back to back
    pairs = {}
    for r in recs:
        pairs.setdefault((r["config_id"], r["repeat"]), []).append(r["order"])
    assert all(sorted(o)[1] - sorted(o)[0] == 1 for o in pairs.values())
    assert "target +-5%: 1 of 2 configurations within it" in proc.stderr

    again = run(sweep_argv(grid, out, "--target-halfwidth", "5%", "--max-repeats", "6"))
    assert again.returncode == 0 and "(0 run now" in again.stderr
    report = run([sys.executable, "-m", "lab", "report", str(out)])
    assert report.returncode == 0, report.stderr
    md = (out / "report.md").read_text()
    assert "- Target precision ±5% (`--target-halfwidth`): both ratio intervals within it in 1 of 2" in md
    assert f"of {len(recs)} planned have run" in md and "Incomplete sweep" not in md
    assert run(sweep_argv(grid, out, "--max-repeats", "4")).returncode == 2      # needs --target-halfwidth


@pytest.mark.timeout(120)
def test_real_sweep_with_a_fail_fast_cell_that_rejects_most_tasks(tmp_path):
    """Issue 14's done-when: the engine on 1 worker, queue 1, fail_fast, 30 clients rejects most of its
    submissions; its cell must read 'not comparable', never 'met'."""
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps({
        "name": "reject", "implementations": ["baseline", "engine"], "repeats": 2, "seed": 1, "timeout_s": 60,
        "fixed": {"count": 60, "latency_ms": 5, "workers": 1, "queue_size": 1, "clients": 30},
        "axes": {"mode": ["fail_fast"]}}))
    out = tmp_path / "sweep"
    argv = [sys.executable, "-m", "lab", "sweep", str(grid), "--out", str(out)]
    proc = run(argv, timeout=110)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = csv_rows(out)
    engine_errors = [float(r["error_rate"]) for r in rows if r["impl"] == "engine"]
    assert min(engine_errors) > 0.5, engine_errors
    report = run([sys.executable, "-m", "lab", "report", str(out)])
    assert report.returncode == 0, report.stderr
    assert "throughput ratio >= 2: 1 not comparable" in report.stderr
    md = (out / "report.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| fail_fast | 2/2 |"))
    assert row.count("not comparable") >= 2 and "engine did not complete" in row and "**met**" not in row


def test_a_resumed_sweep_says_which_code_measured_which_trials(tmp_path):
    """A sweep resumed after a code change kept the trials the old code had measured, and its report named one
    commit, the newest, for all of them. Now each trial records the code that measured it (trials.csv
    git_commit), the resume says that it keeps other code's trials, and the report lists the trials of each."""
    grid = write_grid(tmp_path / "grid.json", {"workers": [4], "clients": [100]})
    out = tmp_path / "sweep"
    assert run(sweep_argv(grid, out)).returncode == 0
    meta = json.loads((out / "sweep.json").read_text())
    if meta["git_commit"] is None:
        pytest.skip("not a git checkout: no commit to record")
    recs = records(out)
    current = {rec["git_commit"] for rec in recs.values()}
    assert len(current) == 1 and next(iter(current)).startswith(meta["git_commit"])
    current = next(iter(current))
    old = "0" * 40
    baseline = next(rec for rec in recs.values() if rec["impl"] == "baseline")
    engine = next(rec for rec in recs.values() if rec["impl"] == "engine")
    baseline["git_commit"] = old                    # as if an earlier commit had measured it
    (out / "trials" / f"{baseline['id']}.json").write_text(json.dumps(baseline))
    (out / "trials" / f"{engine['id']}.json").unlink()        # this one runs again, with this checkout
    proc = run(sweep_argv(grid, out))
    assert proc.returncode == 0, proc.stderr
    assert "note: the trials already ok (1) include some measured with code" in proc.stderr, proc.stderr
    assert old[:12] in proc.stderr
    rows = csv_rows(out)
    assert {row["impl"]: row["git_commit"] for row in rows} == {"baseline": old, "engine": current}
    setup = {row["measured_on"] for row in rows}
    assert len(setup) == 1 and "CPUs; CPython 3." in next(iter(setup))       # the same machine, both times
    setup = next(iter(setup))
    report = subprocess.run([sys.executable, "-m", "lab", "report", str(out)], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert report.returncode == 0, report.stderr
    text = (out / "report.md").read_text()
    assert "Trials measured with different code" in text and f"`{old}` on {setup} (1 trial)" in text
    assert f"`{current}` on {setup} (1 trial)" in text and "- Git commit:" not in text


def test_a_sweep_resumed_on_another_machine_or_interpreter_says_so_in_the_report(tmp_path):
    """Trials kept from another machine or trial interpreter (a data/ folder moved, a .venv rebuilt) are pooled
    with the new ones: the resume says so and the report lists where each was measured."""
    grid = write_grid(tmp_path / "grid.json", {"workers": [4], "clients": [100]})
    out = tmp_path / "sweep"
    assert run(sweep_argv(grid, out)).returncode == 0
    recs = records(out)
    here = {rec["measured_on"] for rec in recs.values()}
    assert len(here) == 1
    here = next(iter(here))
    elsewhere = "Other CPU, 64 CPUs; CPython 3.12.1"
    baseline = next(rec for rec in recs.values() if rec["impl"] == "baseline")
    engine = next(rec for rec in recs.values() if rec["impl"] == "engine")
    baseline["measured_on"] = elsewhere
    (out / "trials" / f"{baseline['id']}.json").write_text(json.dumps(baseline))
    (out / "trials" / f"{engine['id']}.json").unlink()
    proc = run(sweep_argv(grid, out))
    assert proc.returncode == 0, proc.stderr
    assert f"{elsewhere} (now: {here})" in proc.stderr, proc.stderr
    report = subprocess.run([sys.executable, "-m", "lab", "report", str(out)], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert report.returncode == 0, report.stderr
    text = (out / "report.md").read_text()
    assert "on different machines" in text and f"on {elsewhere} (1 trial)" in text and f"on {here} (1 trial)" in text


@pytest.mark.timeout(60)
def test_two_different_sets_of_uncommitted_changes_are_two_code_labels(tmp_path):
    """`-dirty` alone could not tell two sets of edits on one commit apart, so a sweep resumed after further
    uncommitted edits pooled their trials unannounced: the label now carries a digest of `git diff HEAD`."""
    from lab.provenance import code_label, uncommitted_digest

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True, timeout=30)
    git("init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    git("add", "a.py")
    git("commit", "-q", "-m", "one")
    clean = uncommitted_digest(tmp_path)
    (tmp_path / "a.py").write_text("x = 2\n")
    first = uncommitted_digest(tmp_path)
    assert first == uncommitted_digest(tmp_path)            # the same edits, the same digest
    (tmp_path / "a.py").write_text("x = 3\n")
    second = uncommitted_digest(tmp_path)
    assert len({clean, first, second}) == 3 and all(len(d) == 12 for d in (clean, first, second))
    assert code_label("c0ffee", True, first) != code_label("c0ffee", True, second)
    assert code_label("c0ffee", True, first) == f"c0ffee-dirty.{first}"
    assert code_label("c0ffee", False, first) == "c0ffee" and code_label(None, True, first) is None
    assert uncommitted_digest(tmp_path / "missing") is None  # not a checkout (git cannot run there)


@pytest.mark.timeout(60)
def test_a_new_untracked_python_source_makes_the_code_label_dirty(tmp_path):
    """A module created but not yet added runs in the trials, yet `git diff HEAD` does not show it: the label
    called such a checkout clean. Untracked, not ignored Python sources now count, by path and content; other
    untracked files (a user's notes) and ignored ones do not."""
    from lab.provenance import code_now

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True, timeout=30)
    git("init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / ".gitignore").write_text("scratch_*.py\n")
    git("add", "a.py", ".gitignore")
    git("commit", "-q", "-m", "one")
    clean = code_now(tmp_path)
    assert clean["git_dirty"] is False and clean["code"] == clean["git_commit"]
    (tmp_path / "notes.txt").write_text("a user's notes\n")
    (tmp_path / "scratch_1.py").write_text("ignored = True\n")
    assert code_now(tmp_path) == clean                      # neither is code that the label tracks
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "b.py").write_text("y = 1\n")
    first = code_now(tmp_path)
    assert first["git_dirty"] is True and first["code"].startswith(clean["git_commit"] + "-dirty.")
    assert code_now(tmp_path) == first                      # the same files, the same label
    (tmp_path / "pkg" / "b.py").write_text("y = 2\n")
    second = code_now(tmp_path)
    assert second["git_dirty"] is True and second["code"] != first["code"]
    (tmp_path / "pkg" / "b.py").unlink()
    (tmp_path / "pkg" / "c.py").write_text("y = 2\n")       # the same content under another name
    assert code_now(tmp_path)["code"] not in {first["code"], second["code"]}
