"""`python -m lab sweep GRID`: run every trial of a grid, each in its own interpreter, resumably.

Output folder (default data/sweeps/<name>/):
  sweep.json        the effective grid, its hash, machine (CPU model, cores, memory, load average) and
                    interpreter metadata, git commit, start time, trials planned, the adaptive rounds
  trials/<id>.json  one per trial (status, params, metrics, stderr tail, wall time, load average before
                    and after), written atomically
  trials.csv        one row per recorded trial, rewritten atomically after every trial
  work/<id>/        a trial's scratch folder (`workdir`), removed when the trial ends

A trial whose process succeeded but whose metrics are missing or not finite (analysis.trials) is recorded
as `invalid` with its reason, like a failed one. With --target-halfwidth H the sweep keeps adding rounds
(interleaved as the planned ones, over the configurations not yet there) until both engine/baseline ratio
intervals of every configuration lie within +-H of their estimate, or --max-repeats rounds have run.

Why one module of ~550 lines: planning, running, resuming and the adaptive rounds work on one plan and one
output folder, and must agree on both; the grid is lab/grid.py, the report lab/reporting.py.
"""
import argparse
import csv
import io
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime

from analysis import trials as trialcheck
from analysis import verdicts
from lab import grid as gridmod
from lab.outpaths import OutputPathError, ensure_output_dir
from lab.provenance import code_now, setup_label
from runners import spawn
from runners.envinfo import scratch_root
from tqcontract.environment import load_average, machine_info
from tqcontract.files import write_text
from tqcontract.metrics import ENGINE, TRIAL_COLUMNS, dig

ROOT = spawn.ROOT
DEFAULT_SWEEPS = os.path.join(ROOT, "data", "sweeps")
TRIAL_MODULE = "runners.trial"

try:
    import fcntl
except ImportError:  # not POSIX: no lock, one sweep per folder is then the user's job
    fcntl = None

METRIC_COLUMNS = TRIAL_COLUMNS


class SweepError(Exception):
    """Bad input or a folder that must not be used; str(error) is the one line to print (exit 2)."""


def register(subparsers):
    p = subparsers.add_parser(
        "sweep", help="run a grid of trials, each in its own process (resumable)",
        description="Run every trial of GRID (every configuration x implementation x repeat) in its own "
                    "interpreter process, in seeded shuffled rounds with the baseline and engine trials of "
                    "a configuration back to back. Rerunning the same command resumes: trials already "
                    "recorded as ok are skipped. Exit 0 when all trials are ok, 1 when any failed or timed "
                    "out, 2 for a bad grid or an output folder holding a different grid.")
    p.add_argument("grid", metavar="GRID", help="grid JSON file (see experiments/grid.json)")
    p.add_argument("--out", metavar="DIR",
                   help="output folder (default: data/sweeps/<grid name>/ in the project)")
    p.add_argument("--repeats", type=int, metavar="N",
                   help="rounds over all configurations (overrides the grid's repeats; raising it on a "
                        "finished sweep adds rounds)")
    p.add_argument("--python", metavar="PATH",
                   help="interpreter that runs the trials (default: the project's .venv python)")
    p.add_argument("--seed", type=int, metavar="S",
                   help="seed of the trial order and of the workloads (overrides the grid's seed; another "
                        "seed is another sweep, so give it another --out)")
    p.add_argument("--target-halfwidth", type=halfwidth_arg, metavar="H",
                   help="after the planned rounds, keep adding rounds (only for configurations not there "
                        "yet) until both ratio intervals (throughput, P95) of every configuration are within "
                        "+-H of the estimate, e.g. 5%% or 0.05; the report says which configurations got there")
    p.add_argument("--max-repeats", type=int, metavar="N",
                   help=f"with --target-halfwidth: at most N rounds in all (default {DEFAULT_MAX_REPEATS})")
    p.add_argument("--trial-module", default=TRIAL_MODULE, help=argparse.SUPPRESS)
    p.set_defaults(func=run_command)


DEFAULT_MAX_REPEATS = 10


def halfwidth_arg(text):
    """'5%' or '0.05' -> 0.05; within (0, 1)."""
    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100.0 if raw.endswith("%") else float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a share: {text!r} (give e.g. 5% or 0.05)") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 100%, not {text!r}")
    return value


def run_command(args):
    if args.max_repeats is not None and args.target_halfwidth is None:
        print("error: --max-repeats needs --target-halfwidth", file=sys.stderr)
        return 2
    if args.max_repeats is not None and args.max_repeats < 1:
        print("error: --max-repeats must be >= 1", file=sys.stderr)
        return 2
    try:
        return run_sweep(args.grid, out=args.out, repeats=args.repeats, python=args.python, seed=args.seed,
                         trial_module=args.trial_module, target_halfwidth=args.target_halfwidth,
                         max_repeats=args.max_repeats)
    except (gridmod.GridError, SweepError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


# ---------------------------------------------------------------------------------------------- files

def write_json(path, obj):
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def csv_columns(axes):
    return (["id", "order", "impl", "repeat", "config_id"] + list(axes)
            + ["seed", "status", "returncode", "wall_s", "load1_before", "load1_after", "git_commit", "measured_on"]
            + [c for c, _ in METRIC_COLUMNS])


def _load1(load):
    return load[0] if isinstance(load, list) and load else None


def csv_text(axes, records):
    """trials.csv: one row per recorded trial, in run order; metrics empty for failed trials."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(csv_columns(axes))
    for rec in sorted(records, key=lambda r: (r.get("order", 1 << 30), r["id"])):
        params = rec.get("params", {})
        result = rec.get("result") if rec.get("status") == "ok" else None
        row = [rec["id"], rec.get("order", ""), rec.get("impl", ""), rec.get("repeat", ""),
               rec.get("config_id", "")]
        row += [_csv_value(params.get(axis)) for axis in axes]
        row += [params.get("seed", ""), rec.get("status", ""), _csv_value(rec.get("returncode")),
                _csv_value(rec.get("wall_s")), _csv_value(_load1(rec.get("load_before"))),
                _csv_value(_load1(rec.get("load_after"))), rec.get("git_commit") or "", rec.get("measured_on") or ""]
        row += [_csv_value(dig(result, path)) if result else "" for _, path in METRIC_COLUMNS]
        writer.writerow(row)
    return buf.getvalue()


def _csv_value(v):
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    return str(v)


_RECORD_TYPES = {"id": str, "impl": str, "config_id": str, "status": str, "config": dict, "params": dict}
_RECORD_OPTIONAL = {"order": int, "repeat": int, "result": dict, "returncode": int, "stderr_tail": str,
                    "wall_s": (int, float), "load_before": list, "load_after": list, "reason": str,
                    "git_commit": str, "measured_on": str}


def record_problem(rec):
    """Why a trial record read back from trials/ cannot be used, or None: not an object, or a field missing
    or of the wrong type (a damaged or hand-edited file made `lab report` end in a traceback)."""
    if not isinstance(rec, dict):
        return "not a JSON object"
    for name, kind in _RECORD_TYPES.items():
        if not isinstance(rec.get(name), kind):
            return f"{name} missing or not a {kind.__name__}"
    for name, kinds in _RECORD_OPTIONAL.items():
        value = rec.get(name)
        if value is not None and (not isinstance(value, kinds) or isinstance(value, bool)):
            return f"{name} of the wrong type"
    return None


def load_records(trials_dir):
    """Every usable trial JSON in trials/ (unreadable or damaged ones, record_problem(), are ignored: they
    will be rerun)."""
    records = {}
    if not os.path.isdir(trials_dir):
        return records
    for name in os.listdir(trials_dir):
        if not name.endswith(".json"):
            continue
        try:
            with open(os.path.join(trials_dir, name), encoding="utf-8") as f:
                rec = json.load(f)
        except (OSError, ValueError):
            continue
        if record_problem(rec) is None:
            records[rec["id"]] = rec
    return records


def write_csv(out, grid, records):
    write_text(os.path.join(out, "trials.csv"), csv_text(list(grid["axes"]), records.values()))


# ------------------------------------------------------------------------------------------- metadata

_PROBE = ("import json, os, platform, sys; print(json.dumps({'python_version': platform.python_version(), "
          "'implementation': platform.python_implementation(), 'executable': sys.executable, "
          "'gil_enabled': getattr(sys, '_is_gil_enabled', lambda: True)()}))")


def probe_python(python):
    """Version of the interpreter that will run the trials (it may differ from this one)."""
    try:
        proc = subprocess.run([python, "-c", _PROBE], capture_output=True, text=True, timeout=60,
                              env=spawn.trial_env(), stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as exc:
        raise SweepError(f"--python: cannot run {python}: {exc}") from None
    if proc.returncode != 0:
        raise SweepError(f"--python: {python} exited {proc.returncode}")
    try:
        return json.loads(proc.stdout)
    except ValueError:
        raise SweepError(f"--python: {python} did not answer the version probe") from None


def now_iso():
    return datetime.now(UTC).isoformat(timespec="seconds")


# ------------------------------------------------------------------------------------------- progress

def fmt_duration(seconds):
    seconds = int(round(max(0.0, seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}"


def describe(grid, config):
    names = grid.get("axis_names", {})
    return " ".join(f"{names.get(k, k)}={v}" for k, v in config.items())


def estimate_left(walls, remaining_impls):
    """Seconds left: per-implementation mean wall time of this run's trials times what remains."""
    if not walls:
        return None
    everything = [w for ws in walls.values() for w in ws]
    overall = sum(everything) / len(everything)
    left = 0.0
    for impl in remaining_impls:
        ws = walls.get(impl)
        left += sum(ws) / len(ws) if ws else overall
    return left


# ---------------------------------------------------------------------------------------------- sweep

class _Lock:
    """An exclusive lock on <out>/.lock for the sweep's lifetime (released by the OS if it dies)."""

    def __init__(self, out):
        self.path = os.path.join(out, ".lock")
        self.f = None

    def __enter__(self):
        self.f = open(self.path, "a+")
        if fcntl is not None:
            try:
                fcntl.flock(self.f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                self.f.close()
                raise SweepError(f"another sweep is running in {os.path.dirname(self.path)}") from None
        return self

    def __exit__(self, *exc):
        self.f.close()


def _check_out(out, meta_path, ghash):
    """The previous sweep.json of this folder (None for a new one); SweepError when the folder holds a
    sweep of another grid or something that is not a sweep."""
    if os.path.exists(meta_path):
        try:
            with open(meta_path, encoding="utf-8") as f:
                previous = json.load(f)
        except (OSError, ValueError):
            raise SweepError(f"{meta_path} is unreadable; use another --out") from None
        if not isinstance(previous, dict) or previous.get("grid_hash") != ghash:
            old = previous.get("grid_hash") if isinstance(previous, dict) else None
            raise SweepError(f"{out} holds a sweep of a different grid (hash {old}, this grid {ghash}); "
                             f"use another --out or remove that folder")
        return previous
    if os.path.isdir(out):
        # A sweep killed before its first sweep.json leaves at most these behind.
        extra = [n for n in os.listdir(out) if n not in ("trials", "work", ".lock")]
        trials = os.path.join(out, "trials")
        if extra or (os.path.isdir(trials) and os.listdir(trials)):
            raise SweepError(f"{out} is not empty and holds no sweep.json; use another --out")
    elif os.path.exists(out):
        raise SweepError(f"--out: {out} is not a folder")
    return None


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def run_sweep(grid_path, out=None, repeats=None, python=None, seed=None, trial_module=TRIAL_MODULE,
              log=None, target_halfwidth=None, max_repeats=None):
    """Run (or resume) a sweep; return the exit code. GridError/SweepError for bad input.
    target_halfwidth / max_repeats: the adaptive rounds (see the module docstring)."""
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    grid = gridmod.load(grid_path, repeats=repeats, seed=seed)
    ghash = gridmod.grid_hash(grid)
    out = os.path.abspath(out or os.path.join(DEFAULT_SWEEPS, grid["name"]))
    if python is None:
        python = spawn.default_python()
    elif not (os.path.isfile(python) and os.access(python, os.X_OK)):
        found = shutil.which(python)
        if not found:
            raise SweepError(f"--python: not an executable: {python}")
        python = found
    if target_halfwidth is None and max_repeats is not None:
        raise SweepError("--max-repeats needs --target-halfwidth")
    if target_halfwidth is not None:
        max_repeats = DEFAULT_MAX_REPEATS if max_repeats is None else max_repeats

    meta_path = os.path.join(out, "sweep.json")
    trials_dir = os.path.join(out, "trials")
    _check_out(out, meta_path, ghash)      # before any work: a folder that cannot take the results is exit 2
    try:
        ensure_output_dir(out)
        ensure_output_dir(trials_dir, what="--out trials folder")
    except OutputPathError as exc:
        raise SweepError(str(exc)) from None
    trial_python = probe_python(python)
    scratch, scratch_fs = scratch_root()
    work_root = os.path.join(scratch, f"tq-sweep-{os.path.basename(os.path.abspath(out))}-{ghash[:12]}")

    with _Lock(out):
        previous = _check_out(out, meta_path, ghash)  # again, now that no other sweep can write here
        earlier_repeats = ((previous or {}).get("grid") or {}).get("repeats") or 0
        if earlier_repeats > grid["repeats"]:     # a sweep never shrinks: rounds already run stay counted
            grid = dict(grid, repeats=earlier_repeats)
        provenance = code_now()
        commit, dirty, code = provenance["git_commit"], provenance["git_dirty"], provenance["code"]
        started = now_iso()
        meta = {
            "name": grid["name"], "grid_file": os.path.abspath(grid_path), "grid": grid, "grid_hash": ghash,
            "started_at": previous.get("started_at", started) if previous else started,
            "runs": (previous.get("runs", []) if previous else []),
            "git_commit": commit, "git_dirty": dirty,
            "machine": machine_info(),
            "sweep_python": {"python_version": platform.python_version(),
                             "implementation": platform.python_implementation(),
                             "executable": sys.executable},
            "trial_python": trial_python, "trial_module": trial_module,
            "trial_env": spawn.trial_env(),
            "scratch": {"path": work_root, "filesystem": scratch_fs},
            "csv_columns": csv_columns(list(grid["axes"])),
        }
        plan = gridmod.plan(grid)
        records = load_records(trials_dir)
        todo = [t for t in plan if records.get(t["id"], {}).get("status") != "ok"]
        done_before = len(plan) - len(todo)
        setup = setup_label(meta["machine"], trial_python)
        kept = [r for r in records.values() if r.get("status") == "ok"]
        kept_codes = sorted({r.get("git_commit") or "unknown" for r in kept} - {code})
        kept_setups = sorted({r.get("measured_on") or "unknown" for r in kept} - {setup})
        others = []
        if kept_codes:
            others.append(f"code {', '.join(c[:12] for c in kept_codes)} (this checkout: {code or 'unknown'})")
        if kept_setups:
            others.append(f"{' / '.join(kept_setups)} (now: {setup})")
        if done_before and others:
            log(f"note: the trials already ok ({done_before}) include some measured with {'; '.join(others)}: "
                f"they are kept and the report lists the trials of each (--out DIR measures this one alone)")
        adaptive = dict((previous or {}).get("adaptive") or {})
        if target_halfwidth is not None:
            adaptive.update(target_halfwidth=target_halfwidth, max_repeats=max_repeats)
        adaptive_ids = set(adaptive.get("scheduled_ids") or [])
        if adaptive:
            meta["adaptive"] = adaptive

        def planned_now():
            return len(plan) + len(adaptive_ids)

        meta["planned_trials"] = planned_now()
        meta["runs"].append({"started_at": started, "repeats": grid["repeats"], "seed": grid["seed"],
                             "python": python, "git_commit": commit, "planned": len(plan),
                             "already_ok": done_before, "target_halfwidth": target_halfwidth,
                             "max_repeats": max_repeats})
        write_json(meta_path, meta)
        write_csv(out, grid, records)

        log(f"sweep {grid['name']} ({ghash}): {len(gridmod.configurations(grid))} configurations x "
            f"{len(grid['implementations'])} implementations x {grid['repeats']} repeats = {len(plan)} "
            f"trials; {done_before} already ok, {len(todo)} to run; out {out}"
            + (f"; then rounds until every ratio interval is within +-{100 * target_halfwidth:g}% (at most "
               f"{max_repeats} rounds)" if target_halfwidth is not None else ""))

        # SIGTERM, and SIGHUP (a closed terminal or a dropped SSH session), stop the sweep as Ctrl-C does:
        # the running trial's process group is killed, so no trial is left running unsupervised
        previous_handlers = {}
        for signum in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
            if signum is None:
                continue
            try:
                previous_handlers[signum] = signal.signal(signum, _raise_interrupt)
            except ValueError:  # not the main thread (tests calling run_sweep directly)
                pass
        t0 = time.perf_counter()
        walls = {}
        failed = []
        ran = 0
        progress = {"k": 0, "of": len(todo)}

        def run_batch(batch, rounds_label):
            nonlocal ran
            for i, trial in enumerate(batch, 1):
                progress["k"] = i
                rec = run_one(trial, grid, python, trial_module, work_root)
                if code is not None:
                    rec["git_commit"] = code        # which code measured it: a resumed sweep may mix commits
                rec["measured_on"] = setup          # and where: a data/ folder may move, a .venv be rebuilt
                records[rec["id"]] = rec
                write_json(os.path.join(trials_dir, rec["id"] + ".json"), rec)
                write_csv(out, grid, records)
                walls.setdefault(trial["impl"], []).append(rec["wall_s"])
                ran += 1
                if rec["status"] != "ok":
                    failed.append(rec)
                elapsed = time.perf_counter() - t0
                left = estimate_left(walls, [t["impl"] for t in batch[i:]])
                log(f"[{i}/{len(batch)}] {trial['impl']} {describe(grid, trial['config'])} "
                    f"rep {trial['repeat'] + 1}/{rounds_label}: {_outcome(rec)} | elapsed "
                    f"{fmt_duration(elapsed)}, left ~{fmt_duration(left) if left is not None else '?'}")

        try:
            run_batch(todo, grid["repeats"])
            if target_halfwidth is not None:
                for repeat in range(grid["repeats"], max_repeats):
                    unreached = configs_not_within(grid, records, target_halfwidth)
                    adaptive["not_reached"] = sorted(unreached)
                    if not unreached:
                        break
                    round_trials = [t for t in gridmod.plan(dict(grid, repeats=repeat + 1))
                                    if t["repeat"] == repeat and t["config_id"] in unreached]
                    adaptive_ids.update(t["id"] for t in round_trials)
                    adaptive["scheduled_ids"] = sorted(adaptive_ids)
                    adaptive["rounds"] = repeat + 1
                    meta["planned_trials"] = planned_now()
                    write_json(meta_path, meta)
                    batch = [t for t in round_trials if records.get(t["id"], {}).get("status") != "ok"]
                    log(f"round {repeat + 1}: {len(unreached)} configurations not yet within "
                        f"+-{100 * target_halfwidth:g}%: {len(batch)} trials")
                    progress["of"] = len(batch)
                    run_batch(batch, f"{max_repeats} max")
                else:
                    unreached = configs_not_within(grid, records, target_halfwidth)
                    adaptive["not_reached"] = sorted(unreached)
                total_configs = len(gridmod.configurations(grid))
                log(f"target +-{100 * target_halfwidth:g}%: {total_configs - len(adaptive['not_reached'])} of "
                    f"{total_configs} configurations within it")
        except KeyboardInterrupt:
            log(f"interrupted during trial {progress['k']} of {progress['of']} (its process group was killed); "
                f"rerun the same command to resume")
            return 1
        finally:
            for signum, handler in previous_handlers.items():
                signal.signal(signum, handler)
            try:
                os.rmdir(work_root)
            except OSError:
                pass

        meta["finished_at"] = now_iso()
        meta["runs"][-1]["finished_at"] = meta["finished_at"]
        meta["runs"][-1]["failed"] = len(failed)
        meta["planned_trials"] = planned_now()
        write_json(meta_path, meta)
    total = time.perf_counter() - t0
    if failed:
        kinds = {}
        for rec in failed:
            kinds[rec["status"]] = kinds.get(rec["status"], 0) + 1
        detail = ", ".join(f"{n} {s}" for s, n in sorted(kinds.items()))
        log(f"{len(failed)} of {ran} trials failed ({detail}) in {fmt_duration(total)}; see "
            f"{os.path.join(out, 'trials.csv')}; rerun the same command to retry them")
        return 1
    log(f"all {planned_now()} trials ok ({ran} run now, {planned_now() - ran} before) in {fmt_duration(total)}; "
        f"results in {out}")
    return 0


def configs_not_within(grid, records, halfwidth):
    """config_ids whose throughput or P95 ratio interval (the report's, analysis.verdicts) is not yet within
    +-halfwidth of its estimate, from the ok trials recorded so far."""
    by_config = {}
    for rec in records.values():
        if rec.get("status") != "ok" or trialcheck.result_problem(rec.get("result")):
            continue
        values = {c: dig(rec.get("result"), path) for c, path in TRIAL_COLUMNS}
        side = by_config.setdefault(rec.get("config_id"), {})
        side.setdefault("engine" if rec.get("impl") == ENGINE else rec.get("impl"), []).append(values)
    out = set()
    for config in gridmod.configurations(grid):
        cid = gridmod.config_id(config)
        sides = by_config.get(cid, {})
        comparison = verdicts.compare(sides.get(ENGINE, []), sides.get("baseline", []))
        if not all(verdicts.within_halfwidth(comparison[t["key"]], halfwidth) for t in verdicts.TARGETS):
            out.add(cid)
    return out


def _outcome(rec):
    if rec.get("reason"):
        return f"{rec['status'].upper()} after {rec['wall_s']:.2f}s ({rec['reason'][:120]})"
    if rec["status"] != "ok":
        last = [line for line in (rec.get("stderr_tail") or "").splitlines() if line.strip()]
        why = f" ({last[-1].strip()[:120]})" if last else ""
        return f"{rec['status'].upper()} after {rec['wall_s']:.2f}s{why}"
    result = rec.get("result") or {}
    thr = result.get("throughput_tps")
    p95 = dig(result, ("latency_ms", "p95"))
    parts = [f"ok {rec['wall_s']:.2f}s"]
    if isinstance(thr, (int, float)):
        parts.append(f"{thr:.1f} tasks/s")
    if isinstance(p95, (int, float)):
        parts.append(f"p95 {p95:.1f} ms")
    return ", ".join(parts)


def run_one(trial, grid, python, trial_module, work_root):
    """Run one trial in its own process and scratch folder; return its record."""
    workdir = os.path.join(work_root, trial["id"])
    shutil.rmtree(workdir, ignore_errors=True)  # left over by a killed sweep
    os.makedirs(workdir)
    params = dict(trial["params"], workdir=workdir)
    started = now_iso()
    load_before = load_average()
    try:
        outcome = spawn.spawn_trial(params, python=python, timeout_s=grid["timeout_s"], module=trial_module)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    load_after = load_average()
    status = outcome["status"]
    tail = outcome.get("stderr_tail") or ""
    reason = None
    if status == "timeout":
        tail = (tail + f"\n[killed with its process group after the {grid['timeout_s']} s timeout]")[-2000:]
    elif status == "ok":
        reason = trialcheck.result_problem(outcome.get("result"))
        if reason:      # the process succeeded, but its figures cannot be used: a failed trial, with why
            status = trialcheck.INVALID
            tail = (tail + f"\n[{reason}]")[-2000:]
    rec = {"id": trial["id"], "order": trial["order"], "impl": trial["impl"], "repeat": trial["repeat"],
           "config_id": trial["config_id"], "config": trial["config"], "status": status,
           "params": params, "result": outcome.get("result"), "returncode": outcome.get("returncode"),
           "stderr_tail": tail, "wall_s": outcome.get("wall_s"), "started_at": started,
           "finished_at": now_iso(), "argv": outcome.get("argv"), "timeout_s": grid["timeout_s"],
           "load_before": load_before, "load_after": load_after}
    if reason:
        rec["reason"] = reason
    return rec
