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
