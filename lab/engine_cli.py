"""task_queue_optimized.py: the command-line face of the engine (tqengine).

  python task_queue_optimized.py --benchmark [--count 2000 --clients 100 ...] [--json OUT]
      a built-in workload through the same load harness as benchmark.py and the lab trials
  python task_queue_optimized.py --tasks FILE --store DIR --db PATH [--json OUT]
      process a task file; running it again on the same database resumes whatever is unfinished
  python task_queue_optimized.py --db PATH --store DIR
      resume only (for example after `python -m lab dlq requeue`)

Exit codes: 0 ok, 1 the run failed or was interrupted, 2 bad input or configuration.
SIGINT/SIGTERM: stop taking tasks, finish queued and running ones, write the metrics; a second SIGINT
stops at once and leaves unfinished tasks in the database for the next start.
"""
import argparse
import collections
import contextlib
import os
import signal
import sys
import threading
import time

from lab.taskfile import TaskFile, TaskFileError
from runners import params as trial_params
from runners.workload import ensure_objects
from tqcontract.files import write_json
from tqcontract.metrics import ENGINE
from tqengine import WorkerPool, load_config
from tqengine.config import DEFAULTS, SETTINGS
from tqengine.errors import ConfigError

BENCHMARK_PROFILE = trial_params.LAB_PROFILE
# flag -> Config field; type, choices and help come from the field's Setting (tqengine/config.py)
ENGINE_FLAG_NAMES = {
    "--workers": "max_workers", "--queue-size": "queue_size", "--mode": "mode",
    "--enqueue-timeout": "enqueue_timeout_s", "--max-attempts": "max_attempts", "--backoff-base": "backoff_base_s",
    "--backoff-cap": "backoff_cap_s", "--chunk-size": "chunk_size", "--latency-ms": "latency_ms",
    "--latency-jitter-ms": "latency_jitter_ms", "--transient-rate": "transient_rate",
    "--permanent-rate": "permanent_rate", "--seed": "seed", "--log-level": "log_level",
    "--store-url": "store_url", "--http-client": "http_client", "--log-file": "log_file",
    "--max-source-bytes": "max_source_bytes", "--attempt-timeout": "attempt_timeout_s",
    "--retention": "retention_s",
}
SUBMIT_BATCH = 64
HANDLE_WINDOW = 4096


def build_parser():
    p = argparse.ArgumentParser(
        prog="task_queue_optimized.py",
        description="The optimized task queue engine: run a benchmark workload, or process a task file "
                    "with durable state (resumable after a crash).",
        epilog="Settings not given here come from TQ_* environment variables, then .env, then defaults "
               "(see .env.example).")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--benchmark", action="store_true",
                      help="run the built-in workload (closed loop of --clients) and print the figures")
    what.add_argument("--tasks", metavar="FILE", help="process the tasks in this JSON list file")
    p.add_argument("--store", metavar="DIR", help="object store root (source objects and variants/)")
    p.add_argument("--db", metavar="PATH", help="SQLite database for task state")
    p.add_argument("--json", metavar="OUT", help="write the metrics JSON here (atomically)")
    p.add_argument("--create-objects", action="store_true",
                   help="with --tasks: create the missing source objects (deterministic images at the "
                        "task's source_size, else tiny ones; an existing object is never touched) before "
                        "processing")
    b = p.add_argument_group("benchmark workload")
    b.add_argument("--count", type=int, help="tasks to submit (default 2000)")
    b.add_argument("--repeats", type=int, default=3,
                   help="runs of the benchmark, each verdict judged on their interval (default 3)")
    b.add_argument("--clients", type=int, help="closed-loop clients (default 100)")
    b.add_argument("--workload", choices=tuple(trial_params.WORKLOAD_PRESETS),
                   help="synthetic (default): tiny JPEG sources and a 5 ms service time; image: real thumbnails of "
                        "640x480 sources, latency 0")
    b.add_argument("--image-size", help="source images: tiny, small (640x480), large (4000x3000) or WxH "
                                         "(default: the workload's)")
    b.add_argument("--duplicate-rate", type=float, help="share of duplicate tasks (default 0)")
    b.add_argument("--load", choices=("closed", "open"), help="load model (default closed)")
    b.add_argument("--rate", type=float, help="open loop: arrivals per second")
    b.add_argument("--store-backend", choices=("local", "http"), default=None,
                   help="benchmark against a local directory (default) or an HTTP object store started "
                        "for the run (TQ_STORE and TQ_STORE_URL are not used by --benchmark)")
    b.add_argument("--server-latency-ms", type=float, default=None,
                   help="with --store-backend http: service time of each request at the server (default 0)")
    e = p.add_argument_group("engine (default: TQ_* environment, .env, then built-in)")
    for flag, name in ENGINE_FLAG_NAMES.items():
        spec = SETTINGS[name]
        default = BENCHMARK_PROFILE.get(name)
        shown = f"{DEFAULTS[name]!r}" + (f"; --benchmark {default!r}" if default is not None else "")
        e.add_argument(flag, dest=name, metavar=name.upper() if spec.choices is None else None,
                       type={"int": int, "float": float}.get(spec.kind, str),
                       choices=spec.choices if spec.choices and not spec.upper else None,
                       help=f"{spec.help} (TQ_{name.upper()}; default {shown})")
    return p


WORKLOAD_DEFAULTS = {"count": 2000, "clients": 100, "duplicate_rate": 0.0, "load": "closed", "workload": "synthetic"}
WORKLOAD_FLAGS = ("count", "clients", "image_size", "duplicate_rate", "load", "rate", "workload")

ENGINE_FLAGS = tuple(ENGINE_FLAG_NAMES.values())


class UsageError(Exception):
    pass


def engine_config(args, profile=None, benchmark=False):
    cli = {k: getattr(args, k) for k in ENGINE_FLAGS}
    if args.db:
        cli["db_path"] = args.db
    if args.store:
        cli["store_root"] = args.store
    if args.store_url:
        cli["store"] = "http"
    elif args.store:
        cli["store"] = "local"      # --store DIR on the command line beats TQ_STORE=http from the environment
    if benchmark:       # the benchmark picks its store with --store-backend and starts its own server
        cli["store"], cli["store_url"] = "local", ""
    cfg = load_config(cli=cli, profile=profile)
    http = args.store_backend == "http" if benchmark else cfg.store == "http"
    if args.http_client and not http:
        raise UsageError("--http-client needs an HTTP store: --store-backend http with --benchmark, "
                         "--store-url URL with --tasks")
    return cfg


# -- benchmark ------------------------------------------------------------------------------
def run_benchmark(args):
    from runners.trial import ParamError, run_trial, validate
    for name, default in WORKLOAD_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    if args.store_url:
        raise UsageError("--store-url is for --tasks; --benchmark starts its own server with --store-backend http")
    if args.store or args.db or args.create_objects:
        raise UsageError("--store, --db and --create-objects are for --tasks; --benchmark uses scratch files of "
                         "its own (TQ_SCRATCH_DIR chooses where)")
    if args.server_latency_ms and args.store_backend != "http":
        raise UsageError("--server-latency-ms needs --store-backend http")
    preset = trial_params.WORKLOAD_PRESETS[args.workload]
    if args.image_size is None:
        args.image_size = preset["image_size"]
    cfg = engine_config(args, {"latency_ms": preset["latency_ms"]}, benchmark=True)
    if args.json:
        check_output_path(args.json, "--json")
    for name, value, low in (("--count", args.count, 1), ("--clients", args.clients, 1),
                             ("--repeats", args.repeats, 1)):
        if value < low:
            raise UsageError(f"{name} must be >= {low} (got {value})")
    params = trial_params.from_engine_config(cfg)
    params.update(impl=ENGINE, count=args.count, clients=args.clients, duplicate_rate=args.duplicate_rate,
                  image_size=args.image_size, workload=args.workload, load=args.load, rate=args.rate,
                  store=args.store_backend or "local",
                  server_latency_ms=args.server_latency_ms or 0.0)
    try:
        params = validate(params)       # a bad value is one line, before the banner
    except ParamError as exc:
        raise UsageError(str(exc)) from None
    print(f"benchmark, workload {args.workload} ({args.image_size} sources): {args.count} tasks, {args.clients} "
          f"clients ({args.load} loop), {cfg.max_workers} workers, "
          f"queue {cfg.queue_size} ({cfg.mode}), {cfg.latency_ms:g} ms per task, store {params['store']}"
          + (f" ({params['server_latency_ms']:g} ms per request, {cfg.http_client} client)"
             if params["store"] == "http" else ""),
          file=sys.stderr)
    results = []
    for run in range(args.repeats):
        try:
            result = run_trial(params)
        except ParamError as exc:
            raise UsageError(str(exc)) from None
        results.append(result)
        print(f"run {run + 1}/{args.repeats}: {_fmt(result['throughput_tps'], '.1f')} tasks/s, P95 "
              f"{_fmt(result['latency_ms']['p95'])} ms, error rate {_fmt(result['error_rate'], '.3f')}",
              file=sys.stderr)
    median = sorted(results, key=lambda r: r["throughput_tps"] or 0.0)[len(results) // 2]
    print(f"figures of the median run of {len(results)} (by throughput):")
    print_figures(median)
    checks = benchmark_verdicts(results, params)
    for line in checks["lines"]:
        print(line)
    if args.json:
        write_json(args.json, dict(median, benchmark={"runs": len(results), "targets": checks["targets"]}))
        print(f"metrics written to {args.json}", file=sys.stderr)
    if all(r.get("counters", {}).get("succeeded", 0) > 0 for r in results):
        return 0
    print(f"benchmark: a run had no successful task (error rate {median.get('error_rate')}); --log-level INFO "
          f"shows each attempt's error", file=sys.stderr)
    return 1


EFFICIENCY_TARGET = 0.95


def benchmark_verdicts(results, params):
    """The engine's own targets over the runs, with the lab's interval and verdict rule (analysis.verdicts):
    efficiency >= 0.95 of the ceiling workers / service time, and P95 no more than 10% over the ideal
    closed-loop latency (each client waits ceil(clients / workers) service times) plus 1 ms. Neither has a
    target when the service time is 0 (the real work alone sets the pace: there is no ceiling to hold
    it to)."""
    from analysis import verdicts
    service_ms = (results[0].get("harness") or {}).get("service_time_ms") or 0.0
    lines, targets = [], {}
    if not service_ms:
        lines.append("targets: none for a run without a service time (latency 0: the real work sets the pace)")
        return {"lines": lines, "targets": targets}
    effs = [r["efficiency"] for r in results if r.get("efficiency") is not None]
    eff = verdicts.against_target(effs, EFFICIENCY_TARGET, ">=")
    ideal = service_ms * -(-params["clients"] // params["workers"])
    p95_target = 1.1 * ideal + 1.0
    p95 = verdicts.against_target([r["latency_ms"]["p95"] for r in results], p95_target, "<=")
    lines.append(verdicts.format_against_target("efficiency", eff))
    lines.append(verdicts.format_against_target("P95", p95, unit="ms") +
                 f"  [target: 1.1 x the ideal {ideal:g} ms (ceil(clients / workers) x {service_ms:g} ms) + 1 ms]")
    targets = {"efficiency": eff, "p95_ms": p95}
    return {"lines": lines, "targets": targets}


def _fmt(value, spec=".2f"):
    return "n/a" if value is None else format(value, spec)


def print_figures(m):
    lat, c, depth = m["latency_ms"], m["counters"], m["queue_depth"]
    rows = [
        ("throughput", f"{_fmt(m['throughput_tps'], '.1f')} tasks/s"
                       + (f"  (ceiling {m['ceiling_tps']:.0f}, efficiency {m['efficiency']:.3f})"
                          if m.get("ceiling_tps") else "")),
        ("latency mean", f"{_fmt(lat['mean'])} ms"),
        ("latency P50", f"{_fmt(lat['p50'])} ms"),
        ("latency P95", f"{_fmt(lat['p95'])} ms"),
        ("latency P99", f"{_fmt(lat['p99'])} ms"),
        ("error rate", f"{_fmt(m['error_rate'] * 100 if m['error_rate'] is not None else None)} %"),
        ("queue depth", f"max {_fmt(depth['max'], '.0f')}, mean {_fmt(depth['mean'], '.1f')}, "
                        f"P95 {_fmt(depth['p95'], '.0f')}"),
        ("succeeded", c.get("succeeded")), ("retries", c.get("retried")), ("rejections", c.get("rejected")),
        ("duplicates", c.get("duplicates")), ("dead letters", c.get("dead_lettered")),
        ("thread utilisation", _fmt(m.get("thread_utilization"), ".3f")),
        ("peak RSS", f"{_fmt(m.get('peak_rss_mb'), '.1f')} MB"),
        ("tasks", m["tasks_submitted"]), ("elapsed", f"{m['elapsed_s']:.3f} s"),
        ("scratch files on", (m.get("harness") or {}).get("scratch_fs") or "n/a"),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


# -- task files -----------------------------------------------------------------------------
class Interrupts:
    """First SIGINT or SIGTERM: stop intake and finish what is queued, for at most shutdown_timeout_s.
    A second one (either kind): stop at once; unfinished tasks stay in the database for the next start."""

    def __init__(self):
        self.stop_intake = threading.Event()
        self.abort = threading.Event()
        self.stop_at = None
        self.pool = None

    def install(self):
        signal.signal(signal.SIGINT, self._handle)
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, _frame):
        if self.stop_intake.is_set():
            self.abort.set()
            if self.pool is not None:
                self.pool.abort()
            print(f"second {signal.Signals(signum).name}: stopping now; unfinished tasks resume at the next start",
                  file=sys.stderr)
            return
        self.stop_at = time.perf_counter()
        self.stop_intake.set()
        print(f"{signal.Signals(signum).name}: finishing queued and running tasks (a second signal stops now)",
              file=sys.stderr)


def run_tasks(args, interrupts):
    given = [f"--{name.replace('_', '-')}" for name in WORKLOAD_FLAGS if getattr(args, name) is not None]
    if given:
        raise UsageError(f"{', '.join(given)}: benchmark workload flags, for --benchmark only (a task file "
                         f"brings its own tasks)")
    if args.store_backend or args.server_latency_ms is not None:
        raise UsageError("--store-backend and --server-latency-ms are for --benchmark; a task file uses "
                         "--store DIR, or an HTTP object store with --store-url URL")
    cfg = engine_config(args)
    if not args.db or (cfg.store == "local" and not args.store):
        raise UsageError(f"{'--tasks' if args.tasks else 'resuming'} needs --db PATH and --store DIR (or "
                         f"--store-url URL): the database does not record where the objects are")
    if args.create_objects and not args.tasks:
        raise UsageError("--create-objects needs --tasks FILE (the tasks name the objects)")
    if args.json:
        check_output_path(args.json, "--json")
    with contextlib.ExitStack() as stack:
        task_file = stack.enter_context(TaskFile(args.tasks)) if args.tasks else None   # checked once
        return _run_tasks(args, interrupts, cfg, task_file)


def _run_tasks(args, interrupts, cfg, task_file):
    total = task_file.count if task_file is not None else 0
    statuses = collections.Counter()
    failures = []
    duplicates = 0
    started = time.perf_counter()
    show = Progress(sys.stderr)
    with WorkerPool(cfg) as pool:       # opens the database first: an unusable one stops us before any write
        interrupts.pool = pool

        def stopping():
            return interrupts.abort.is_set() or pool.fatal_error is not None

        if task_file is not None and args.create_objects:
            ensure_objects(iter(task_file), cfg.store_root,
                           store=pool.objects if cfg.store == "http" else None)
        recovered = getattr(pool, "recovered", 0)
        if recovered:
            print(f"resuming {recovered} unfinished task(s) from {cfg.db_path}", file=sys.stderr)
        window = collections.deque()
        submitted = 0

        def settle(handle):
            """Count a handle's result; False (uncounted) if the run stops before it has one."""
            nonlocal duplicates
            while True:
                try:
                    result = handle.result(0.5)
                    break
                except TimeoutError:
                    if stopping():
                        return False
            statuses[result.status] += 1
            duplicates += result.duplicate
            if result.status == "failed" and len(failures) < 3:
                failures.append(result.error)
            return True

        if args.tasks:
            batch = []
            for task in task_file:
                if interrupts.stop_intake.is_set() or stopping():
                    break
                batch.append(task)
                if len(batch) == SUBMIT_BATCH:
                    window.extend(pool.submit_many(batch))
                    submitted += len(batch)
                    batch = []
                    while len(window) > HANDLE_WINDOW and settle(window[0]):
                        window.popleft()
                    show(submitted, total, pool)
            if batch and not interrupts.stop_intake.is_set() and not stopping():
                window.extend(pool.submit_many(batch))
                submitted += len(batch)
        while not pool.drain(timeout=0.5):
            if stopping():
                break
            if interrupts.stop_at is not None and time.perf_counter() - interrupts.stop_at >= cfg.shutdown_timeout_s:
                print(f"shutdown_timeout_s ({cfg.shutdown_timeout_s:g} s) passed: stopping; unfinished tasks resume "
                      f"at the next start", file=sys.stderr)
                interrupts.abort.set()
                pool.abort()
                break
            show(submitted, total, pool)
        while window and not stopping() and settle(window[0]):
            window.popleft()
        clean = pool.shutdown(graceful=not stopping(), timeout=5.0 if interrupts.stop_at else None)
        metrics = pool.metrics_snapshot()
    show.end()
    elapsed = time.perf_counter() - started
    c = metrics["counters"]
    print(f"submitted {submitted} of {total} task(s) in {elapsed:.2f} s: success {statuses['success']}, "
          f"dead {statuses['dead']}, rejected {statuses['rejected']}; {duplicates} of them duplicates answered "
          f"without running again; resumed {recovered}{_outcomes(pool.recovered_outcomes) if recovered else ''}; "
          f"retries {c['retried']}; dead letters {c['dead_lettered']}")
    if args.json:
        write_json(args.json, metrics)
        print(f"metrics written to {args.json}", file=sys.stderr)
    if pool.fatal_error is not None:
        err = pool.fatal_error
        print(f"error: stopped: {getattr(err, 'cause', type(err).__name__)}: {str(err)[:300]}; the unfinished tasks "
              f"stay queued in {cfg.db_path}: fix that and run the same command again", file=sys.stderr)
        return 1
    if statuses["failed"]:
        print(f"{statuses['failed']} task(s) could not be recorded ({failures[0][:300]}); their state is "
              f"unknown: run the same command again to resume", file=sys.stderr)
        return 1
    if not clean or interrupts.stop_intake.is_set():
        print("stopped before all tasks finished; run the same command again to resume", file=sys.stderr)
        return 1
    return 0


def check_output_path(path, flag):
    """UsageError (exit 2, before any work) when `path` cannot become a file: its folder is missing and
    cannot be made, is a file, or is not writable, or `path` is a folder."""
    target = os.path.abspath(path)
    if os.path.isdir(target):
        raise UsageError(f"{flag} {path}: is a folder; give a file name")
    folder = os.path.dirname(target)
    probe = folder
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise UsageError(f"{flag} {path}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK):
        raise UsageError(f"{flag} {path}: cannot write in {probe}")


def _outcomes(counter):
    return " (" + ", ".join(f"{status} {n}" for status, n in sorted(counter.items())) + ")" if counter else ""


class Progress:
    """A one-line progress display on stderr, only when stderr is a terminal: never in a log stream (the
    JSON log lines on a redirected stderr stay whole) and never between a pipe's lines."""

    def __init__(self, stream):
        self.stream = stream
        self.enabled = stream.isatty()
        self.last = 0.0
        self.shown = False

    def __call__(self, done, total, pool):
        now = time.monotonic()
        if not self.enabled or now - self.last < 0.5:
            return
        self.last = now
        c = pool.metrics.counters()
        self.stream.write(f"\rsubmitted {done}/{total}  success {c['succeeded']}  dead {c['dead_lettered']}  "
                          f"rejected {c['rejected']}  retries {c['retried']}\x1b[K")
        self.stream.flush()
        self.shown = True

    def end(self):
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()


def main(argv=None):
    code = _main(argv)
    _exit_when_stuck(code)
    return code


def _exit_when_stuck(code, grace_s=5.0):
    """Every stop is bounded: if a worker thread is still alive (stuck in a system call no signal
    interrupts) once the run is over, wait `grace_s` for it, then leave without it: the interpreter would
    otherwise wait for it forever at exit. Its task stays in the database for the next start."""
    deadline = time.monotonic() + grace_s
    for thread in threading.enumerate():
        if thread is threading.current_thread() or thread.daemon:
            continue
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            print(f"a worker thread ({thread.name}) did not stop; exiting without it", file=sys.stderr)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code if code else 1)


def _main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    interrupts = Interrupts()
    try:
        if args.benchmark:
            return run_benchmark(args)
        if not args.tasks and not args.db:
            parser.print_usage(sys.stderr)
            print("task_queue_optimized.py: error: give --benchmark, or --tasks FILE --store DIR --db PATH, "
                  "or --db PATH to resume", file=sys.stderr)
            return 2
        interrupts.install()
        return run_tasks(args, interrupts)
    except (ConfigError, TaskFileError, UsageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
