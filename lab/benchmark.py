"""Baseline vs engine on the same task set, each run in a fresh process through the one load harness.

    python benchmark.py [--clients 50 100] [--count N] [--repeats R] [--workers N] [--latency-ms MS]
                        [--store-backend local|http [--server-latency-ms MS] [--http-client C]] [--out DIR]
    python benchmark.py --overhead      engine vs a bare queue.Queue + ThreadPoolExecutor under a closed loop
                                        of clients, no-op work and the real Processor (lab/overhead.py)
                        [--crowd 1000]  ... and the no-op kind under 1000 clients (target 5)
                        [--floor]       ... and a minimal durable queue beside both (runners/floor.py)
                        [--switch-interval S]   sys.setswitchinterval(S) first (--overhead, --soak)
    python benchmark.py --soak N        N no-op tasks through the durable path: WAL, RSS and DB growth
    python benchmark.py --memory        peak RSS of each implementation at 1k, 10k, 100k tasks

Runs alternate baseline and engine (the order inside each pair alternates too), so drift of the machine
hits both alike. Every figure comes from runners.trial -> runners.load, the same code the lab sweep uses.
Writes results.json and results.csv (one row per run) atomically in --out (default data/benchmark/).
The comparison's statistics and verdicts are the lab report's (analysis.verdicts): 95% Student-t intervals
of the means over the runs, Fieller 95% intervals of the engine/baseline ratios, met / not met /
inconclusive, and "not comparable" when the engine completes a smaller share of its submissions than the
baseline; cells with CV > 10% are flagged noisy. --out is checked (created, written to) before any run.
Exit codes: 0 all runs ok (targets are reported, not exit codes), 1 a run failed, 2 bad arguments or an
--out that cannot be written.

Why one module of ~450 lines: the comparison's plan, its runs, its table and the statistics it prints are
one job; --overhead and --soak live in lab/overhead.py.
"""
import argparse
import csv
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

from analysis import stats, verdicts
from analysis import trials as trialcheck
from lab.outpaths import OutputPathError, ensure_output_dir
from lab.provenance import code_now
from runners.envinfo import scratch_root
from runners.params import WORKLOAD_PRESETS
from runners.params import check as check_param
from runners.spawn import spawn_trial
from tqcontract.environment import REFERENCE_LOOP, machine_info, process_reference_ms
from tqcontract.files import write_text
from tqcontract.histogram import LatencyHistogram
from tqcontract.metrics import ENGINE, IMPLEMENTATIONS, dig

IMPLS = IMPLEMENTATIONS
TARGET = {t["key"]: t for t in verdicts.TARGETS}     # the lab's targets: throughput >= 2x, P95 <= 0.6x
DEFAULT_COUNT = 2000
OVERHEAD_COUNT = 10000            # per run: fewer would time scheduler noise


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        print(f"benchmark.py: error: {message}", file=sys.stderr)
        sys.exit(2)


def build_parser():
    p = _Parser(prog="benchmark.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, nargs="+", default=[50, 100], help="closed-loop concurrency levels")
    p.add_argument("--count", type=int, default=None,
                   help="tasks per run (default 2000; --overhead: 10000)")
    p.add_argument("--repeats", type=int, default=3, help="runs per implementation and concurrency (default 3)")
    p.add_argument("--workers", type=int, default=8, help="worker threads of both implementations (default 8)")
    p.add_argument("--workload", choices=tuple(WORKLOAD_PRESETS), default="synthetic",
                   help="synthetic (default): tiny JPEG sources and a 5 ms service time per task, the queue-"
                        "mechanics model; image: real thumbnails of 640x480 sources, latency 0 (the real work "
                        "sets the pace)")
    p.add_argument("--latency-ms", type=float, default=None,
                   help="service time per task in ms, the real work padded to it (default: the workload's, 5 or 0)")
    p.add_argument("--image-size", default=None,
                   help="source images: tiny, small (640x480), large (4000x3000) or WxH (default: the workload's)")
    p.add_argument("--queue-size", type=int, default=200, help="engine queue bound (default 200)")
    p.add_argument("--seed", type=int, default=0, help="task set and fault seed (default 0)")
    p.add_argument("--timeout", type=float, default=600.0,
                   help="seconds one run may take (default 600): a run in its own process is killed then; an "
                        "--overhead run, or a --soak chunk of up to 10,000 tasks, stops taking tasks and what is "
                        "not done counts as failed (exit 1)")
    p.add_argument("--store-backend", choices=("local", "http"), default="local",
                   help="object store of both implementations: a local directory (default) or an HTTP object "
                        "server each run starts for itself")
    p.add_argument("--server-latency-ms", type=float, default=0.0,
                   help="with --store-backend http: service time of each request at the server (default 0; "
                        "a task makes two requests, so the ceiling uses max(latency, 2 x this))")
    p.add_argument("--http-client", choices=("stdlib", "requests"), default=None,
                   help="with --store-backend http: the client both implementations use (default: the "
                        "engine's default, stdlib; TQ_* settings and .env are not read by benchmark.py)")
    p.add_argument("--out", default=os.path.join("data", "benchmark"), help="output directory")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--overhead", action="store_true",
                      help="engine vs a bare ThreadPoolExecutor running the same per-task function (latency 0)")
    mode.add_argument("--memory", action="store_true", help="peak RSS per implementation at several task counts")
    mode.add_argument("--soak", type=int, metavar="N", default=None,
                      help="push N no-op tasks through the engine's durable path (e.g. 1000000): WAL high-water, "
                           "RSS growth per task, database bytes per task")
    p.add_argument("--memory-counts", type=int, nargs="+", default=[1000, 10000, 100000],
                   help="task counts for --memory (default 1000 10000 100000)")
    p.add_argument("--crowd", type=int, metavar="N", default=None,
                   help="--overhead: also run the no-op kind under N clients (e.g. 1000), as many tasks per "
                        "client as the main level, and judge target 5 (CPU per task at N clients <= 1.2x that "
                        "at the main level)")
    p.add_argument("--floor", action="store_true",
                   help="--overhead: run the durable floor too (runners/floor.py: the engine's schema and "
                        "statements, one writer thread, nothing else), interleaved with engine and bare pool")
    p.add_argument("--switch-interval", type=float, metavar="S", default=None,
                   help="--overhead, --soak: sys.setswitchinterval(S) for this process, engine and bare pool "
                        "alike (the interpreter's default is 0.005 s)")
    return p


def check_args(args):
    if any(c < 1 for c in args.clients):
        return "--clients values must be >= 1"
    if args.count is None:
        args.count = OVERHEAD_COUNT if args.overhead else DEFAULT_COUNT
    if args.count < 1 or args.repeats < 1 or args.workers < 1 or args.queue_size < 1:
        return "--count, --repeats, --workers and --queue-size must be >= 1"
    preset = WORKLOAD_PRESETS[args.workload]
    if args.latency_ms is None:
        args.latency_ms = preset["latency_ms"]
    if args.image_size is None:
        args.image_size = preset["image_size"]
    if not args.latency_ms >= 0:
        return "--latency-ms must be >= 0"
    problem = check_param("image_size", args.image_size)
    if problem:
        return f"--image-size {problem}"
    if not args.timeout > 0:
        return "--timeout must be > 0"
    if any(c < 1 for c in args.memory_counts):
        return "--memory-counts values must be >= 1"
    if not args.server_latency_ms >= 0:
        return "--server-latency-ms must be >= 0"
    if args.store_backend != "http" and (args.server_latency_ms or args.http_client):
        return "--server-latency-ms and --http-client need --store-backend http"
    if args.store_backend == "http" and (args.overhead or args.memory or args.soak):
        return "--store-backend http is for the comparison (not --overhead, --soak or --memory)"
    if args.soak is not None and args.soak < 1:
        return "--soak must be >= 1"
    if args.crowd is not None and (not args.overhead or args.crowd < 1):
        return "--crowd N needs --overhead and N >= 1"
    if args.floor and not args.overhead:
        return "--floor needs --overhead"
    if args.switch_interval is not None and (not (args.overhead or args.soak) or
                                             not 0 < args.switch_interval <= 1.0):
        return "--switch-interval S needs --overhead or --soak and 0 < S <= 1"
    return None


def log(message):
    print(message, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ output

def flatten(value, prefix=""):
    out = {}
    if isinstance(value, dict):
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}{key}."))
    else:
        out[prefix[:-1]] = value if not isinstance(value, (list, tuple)) else json.dumps(value)
    return out


LEAD_COLUMNS = ["run", "impl", "clients", "repeat", "order", "status", "wall_s"]


def runs_csv(runs):
    rows = []
    for run in runs:
        row = {k: run.get(k) for k in LEAD_COLUMNS}
        result = run.get("result") or {}
        row.update(flatten({k: v for k, v in result.items() if k not in ("harness", "impl_extra")}))
        rows.append(row)
    columns = list(LEAD_COLUMNS)
    for row in rows:
        columns += [k for k in sorted(row) if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buf.getvalue()


def fmt(value, spec=".1f"):
    return "-" if value is None else format(value, spec)


def mean_of(values):
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


# ------------------------------------------------------------------------------------------ comparison

def _describe_runs(results, path):
    return stats.describe([dig(r, path) for r in results])


def usable_results(runs, impl, clients):
    """The results the statistics use: ok runs whose metrics are all finite (analysis.trials); an ok run
    with a NaN/inf or missing metric is marked `invalid` with its reason (in place) and left out."""
    out = []
    for run in runs:
        if run["impl"] != impl or run["clients"] != clients or run["status"] != "ok":
            continue
        why = trialcheck.result_problem(run.get("result"))
        if why:
            run["status"], run["reason"] = trialcheck.INVALID, why
            continue
        out.append(run["result"])
    return out


def _pooled_p95(results):
    h = LatencyHistogram.pooled(r.get("latency_histogram") for r in results)
    return h.percentile(95) if h is not None else None


def _trial_view(result):
    return {"throughput_tps": result["throughput_tps"], "latency_p95_ms": result["latency_ms"]["p95"],
            "error_rate": result["error_rate"]}


def summarize(runs, clients_levels):
    """Per (impl, clients): statistics over the usable runs (n, mean, stdev, 95% t interval, CV); per
    clients: the engine/baseline comparison under the lab's verdict rule (analysis.verdicts.compare)."""
    summary, comparisons = [], []
    for clients in clients_levels:
        by_impl = {}
        for impl in IMPLS:
            results = usable_results(runs, impl, clients)
            failed = sum(1 for r in runs if r["impl"] == impl and r["clients"] == clients and r["status"] != "ok")
            tps = _describe_runs(results, ("throughput_tps",))
            p95 = _describe_runs(results, ("latency_ms", "p95"))
            row = {
                "impl": impl, "clients": clients, "runs": len(results), "failed": failed,
                "throughput": tps, "throughput_tps": tps["mean"], "throughput_sd": tps["stdev"],
                "p95": p95, "p95_ms": p95["mean"],
                "mean_ms": mean_of([r["latency_ms"]["mean"] for r in results]),
                "p99_ms": mean_of([r["latency_ms"]["p99"] for r in results]),
                "pooled_p95_ms": _pooled_p95(results),
                "error_rate": mean_of([r["error_rate"] for r in results]),
                "queue_depth_max": max((r["queue_depth"]["max"] for r in results
                                        if r["queue_depth"]["max"] is not None), default=None),
                "retries": mean_of([r["counters"]["retried"] for r in results]),
                "rejections": mean_of([r["counters"]["rejected"] for r in results]),
                "efficiency": mean_of([r["efficiency"] for r in results]),
                "peak_rss_mb": mean_of([r["peak_rss_mb"] for r in results]),
                "cpu_ms_per_task": mean_of([dig(r, ("process", "cpu_ms_per_task")) for r in results]),
                "noisy": [label for label, d in (("throughput", tps), ("P95", p95))
                          if d["cv"] is not None and d["cv"] > verdicts.NOISE_CV],
            }
            by_impl[impl] = (row, results)
            summary.append(row)
        (_base, base_results), (_eng, eng_results) = by_impl["baseline"], by_impl[ENGINE]
        result = verdicts.compare([_trial_view(r) for r in eng_results], [_trial_view(r) for r in base_results])
        thr, p95 = result["throughput"], result["p95"]
        comparisons.append({
            "clients": clients, "completion": result["completion"], "throughput": thr, "p95": p95,
            "throughput_ratio": thr["ratio"], "p95_ratio": p95["ratio"],
            "throughput_target": _target_text("throughput"), "p95_target": _target_text("p95"),
            "throughput_verdict": thr["verdict"], "p95_verdict": p95["verdict"],
        })
    return summary, comparisons


def _target_text(key):
    return f"{TARGET[key]['direction']} {TARGET[key]['target']:g}x"


def _ci_text(d, digits=".1f"):
    if d["ci_low"] is not None:
        return f"[{d['ci_low']:{digits}}, {d['ci_high']:{digits}}]"
    return "no spread" if d["note"] == stats.NO_SPREAD else "-"


def _cv_text(d):
    if d["cv"] is None:
        return "-"
    return f"{100 * d['cv']:.1f}%" + ("!" if d["cv"] > verdicts.NOISE_CV else "")


def _ratio_text(r, digits):
    if r["ratio"] is None:
        return "-"
    ci = (f" [95% CI {r['low']:{digits}}, {r['high']:{digits}}]"
          if r["low"] is not None and r["bounded"] else " (no interval)")
    return f"{r['ratio']:{digits}}x{ci}"


def print_table(summary, comparisons):
    print("mean over the ok runs; 95% CI: Student-t interval of the mean over the runs (n); CV: sample stdev / "
          f"mean, ! when > {100 * verdicts.NOISE_CV:g}% (noisy)")
    header = (f"{'impl':<9} {'clients':>7} {'n':>2} {'tasks/s':>9} {'95% CI':>19} {'CV':>7} {'effic.':>6} "
              f"{'mean ms':>8} {'P95 ms':>8} {'95% CI':>17} {'CV':>7} {'P99 ms':>8} {'pooled P95':>10} "
              f"{'err rate':>8} {'CPU ms/t':>8} {'qdepth max':>10} {'retries':>7} {'rejects':>7}")
    print(header)
    print("-" * len(header))
    for row in summary:
        t, p = row["throughput"], row["p95"]
        print(f"{row['impl']:<9} {row['clients']:>7} {row['runs']:>2} {fmt(t['mean']):>9} {_ci_text(t):>19} "
              f"{_cv_text(t):>7} {fmt(row['efficiency'], '.3f'):>6} {fmt(row['mean_ms']):>8} {fmt(p['mean']):>8} "
              f"{_ci_text(p):>17} {_cv_text(p):>7} {fmt(row['p99_ms']):>8} {fmt(row['pooled_p95_ms']):>10} "
              f"{fmt(row['error_rate'], '.3f'):>8} {fmt(row['cpu_ms_per_task'], '.3f'):>8} "
              f"{fmt(row['queue_depth_max'], '.0f'):>10} {fmt(row['retries'], '.0f'):>7} "
              f"{fmt(row['rejections'], '.0f'):>7}")
    print()
    print("verdicts (analysis/verdicts.py, as the lab report): Fieller 95% interval of the ratio of means over the "
          "runs; met when the whole interval clears the target, not met when it misses it, else inconclusive; "
          "not comparable when the engine completes a smaller share of its submissions than the baseline")
    for c in comparisons:
        comp = c["completion"]
        noisy = [f"{row['impl']} {', '.join(row['noisy'])}" for row in summary
                 if row["clients"] == c["clients"] and row["noisy"]]
        print(f"clients {c['clients']}: throughput {_ratio_text(c['throughput'], '.2f')} "
              f"(target {c['throughput_target']}: {c['throughput_verdict']}), "
              f"P95 {_ratio_text(c['p95'], '.3f')} (target {c['p95_target']}: {c['p95_verdict']}); "
              f"not completed: engine {fmt(comp['engine_share'], '.3f')}, baseline {fmt(comp['baseline_share'], '.3f')}"
              + (f"; noisy: {'; '.join(noisy)}" if noisy else ""))
        for key in ("throughput", "p95"):
            note = verdicts.full_note(c[key])
            if note:
                print(f"  {key}: {note}")


# ------------------------------------------------------------------------------------------ modes

def trial_params(args, impl, clients, count, workdir, latency_ms=None):
    params = {"impl": impl, "count": count, "clients": clients, "workers": args.workers,
              "queue_size": args.queue_size, "latency_ms": args.latency_ms if latency_ms is None else latency_ms,
              "image_size": args.image_size, "workload": args.workload, "seed": args.seed,
              "load": "closed", "workdir": workdir}
    if getattr(args, "store_backend", "local") == "http":
        params.update(store="http", server_latency_ms=args.server_latency_ms)
        if args.http_client:
            params["http_client"] = args.http_client
    return params


def run_comparison(args, workdir):
    code = code_now()       # the code that ran (taken first: the checkout may change during a long run)
    log(f"workload {args.workload}: {args.image_size} sources, {args.latency_ms:g} ms of service time per task, "
        f"{args.count} tasks, {args.workers} workers")
    if args.store_backend == "http":
        log(f"store: HTTP object server per run, {args.server_latency_ms:g} ms per request, client "
            f"{args.http_client or 'default (stdlib)'}; both implementations use the same client")
    plan = []
    pair = 0
    for clients in args.clients:
        for repeat in range(args.repeats):
            order = IMPLS if pair % 2 == 0 else IMPLS[::-1]
            for position, impl in enumerate(order):
                plan.append((impl, clients, repeat, position))
            pair += 1
    machine = machine_info()
    runs = []
    for number, (impl, clients, repeat, position) in enumerate(plan, 1):
        params = trial_params(args, impl, clients, args.count, workdir)
        outcome = spawn_trial(params, timeout_s=args.timeout)
        run = {"run": number, "impl": impl, "clients": clients, "repeat": repeat, "order": position,
               "status": outcome["status"], "returncode": outcome["returncode"], "wall_s": outcome["wall_s"],
               "params": params, "result": outcome["result"]}
        if outcome["status"] != "ok":
            run["stderr_tail"] = outcome["stderr_tail"]
            log(f"[{number}/{len(plan)}] {impl} clients={clients} repeat={repeat}: {outcome['status'].upper()} "
                f"(exit {outcome['returncode']}): {outcome['stderr_tail'].strip().splitlines()[-1:]}")
        elif why := trialcheck.result_problem(outcome["result"]):
            run["status"] = trialcheck.INVALID
            run["reason"] = why
            log(f"[{number}/{len(plan)}] {impl} clients={clients} repeat={repeat}: INVALID ({run['reason']})")
        else:
            r = outcome["result"]
            log(f"[{number}/{len(plan)}] {impl:<9} clients={clients:<4} repeat={repeat}: "
                f"{r['throughput_tps']:.1f} tasks/s (efficiency {fmt(r.get('efficiency'), '.3f')}), "
                f"mean {r['latency_ms']['mean']:.1f} ms, P95 {r['latency_ms']['p95']:.1f} ms, "
                f"errors {r['error_rate']:.3f} ({outcome['wall_s']:.1f} s)")
        runs.append(run)
    summary, comparisons = summarize(runs, args.clients)
    print_table(summary, comparisons)
    document = {"kind": "comparison", "created_unix": time.time(), "args": vars(args), "machine": machine,
                "code": code,
                "targets": {"throughput_ratio_min": TARGET["throughput"]["target"],
                            "p95_ratio_max": TARGET["p95"]["target"]},
                "method": verdicts.RULE_TEXT, "level": verdicts.LEVEL,
                "runs": runs, "summary": summary, "ratios": comparisons,
                "verdicts": {str(c["clients"]): {"throughput": c["throughput_verdict"], "p95": c["p95_verdict"],
                                                 "comparable": c["completion"]["comparable"]}
                             for c in comparisons}}
    write_text(os.path.join(args.out, "results.json"), json.dumps(document, indent=2, sort_keys=True) + "\n")
    write_text(os.path.join(args.out, "results.csv"), runs_csv(runs))
    log(f"wrote {os.path.join(args.out, 'results.json')} and results.csv")
    return 0 if all(r["status"] == "ok" for r in runs) else 1


def run_memory(args, workdir):
    code = code_now()
    clients = max(args.clients)
    runs = []
    plan = [(count, impl) for i, count in enumerate(args.memory_counts)
            for impl in (IMPLS if i % 2 == 0 else IMPLS[::-1])]
    for number, (count, impl) in enumerate(plan, 1):
        params = trial_params(args, impl, clients, count, workdir, latency_ms=0.0)
        outcome = spawn_trial(params, timeout_s=args.timeout)
        result = outcome["result"] or {}
        run = {"impl": impl, "count": count, "clients": clients, "status": outcome["status"],
               "wall_s": outcome["wall_s"], "peak_rss_mb": result.get("peak_rss_mb"),
               "throughput_tps": result.get("throughput_tps"), "error_rate": result.get("error_rate"),
               "queue_depth_max": (result.get("queue_depth") or {}).get("max"),
               "rss_before_start_mb": (result.get("harness") or {}).get("rss_before_start_mb")}
        if outcome["status"] != "ok":
            run["stderr_tail"] = outcome["stderr_tail"]
        runs.append(run)
        log(f"[{number}/{len(plan)}] memory {impl:<9} {count:>7} tasks: {outcome['status']}, "
            f"peak RSS {fmt(run['peak_rss_mb'])} MB ({outcome['wall_s']:.1f} s)")
    print(f"peak RSS (MB), closed loop, {clients} clients, latency 0, {args.image_size} sources, "
          f"fresh process per run")
    print("(setup = RSS of the task list and the harness just before the implementation starts; the peak "
          "includes it, so peak - setup is what running the implementation added)")
    print(f"{'tasks':>8} {'baseline peak':>14} {'setup':>7} {'engine peak':>12} {'setup':>7}")
    for count in args.memory_counts:
        cells = {r["impl"]: r for r in runs if r["count"] == count}
        b, e = cells["baseline"], cells[ENGINE]
        print(f"{count:>8} {fmt(b['peak_rss_mb']):>14} {fmt(b['rss_before_start_mb']):>7} "
              f"{fmt(e['peak_rss_mb']):>12} {fmt(e['rss_before_start_mb']):>7}")
    document = {"kind": "memory", "created_unix": time.time(), "args": vars(args), "code": code, "runs": runs}
    write_text(os.path.join(args.out, "memory.json"), json.dumps(document, indent=2, sort_keys=True) + "\n")
    return 0 if all(r["status"] == "ok" for r in runs) else 1


def main(argv=None):
    args = build_parser().parse_args(argv)
    problem = check_args(args)
    if problem:
        print(f"benchmark.py: error: {problem}", file=sys.stderr)
        return 2
    try:        # before any run: results that cannot be written must not cost the runs
        args.out = ensure_output_dir(args.out)
    except OutputPathError as exc:
        print(f"benchmark.py: error: {exc}", file=sys.stderr)
        return 2
    scratch, kind = scratch_root()
    workdir = tempfile.mkdtemp(prefix="tq-bench-", dir=scratch)
    log(f"scratch files in {workdir} ({kind or 'unknown filesystem'}; set TQ_SCRATCH_DIR to change)")
    log(f"single-core speed: {REFERENCE_LOOP} in {process_reference_ms()} ms (lower is faster: the engine's "
        f"CPU per task scales with it, the baseline's lock-bound rate does not)")
    switch_interval = sys.getswitchinterval()
    if args.switch_interval is not None:
        log(f"interpreter switch interval {args.switch_interval:g} s (default {switch_interval:g} s)")
        sys.setswitchinterval(args.switch_interval)
    try:
        if args.overhead:
            from lab.overhead import run_overhead
            return run_overhead(args, workdir, log)
        if args.soak:
            from lab.overhead import run_soak
            return run_soak(args, workdir, log)
        if args.memory:
            return run_memory(args, workdir)
        return run_comparison(args, workdir)
    except KeyboardInterrupt:
        log("benchmark.py: interrupted")
        return 1
    finally:
        sys.setswitchinterval(switch_interval)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
