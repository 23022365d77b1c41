"""task_queue_optimized.py: the command-line face of the engine (tqengine): task files, resume, signals.
The flags live in lab/engine_args.py, --benchmark in lab/engine_bench.py.

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
import collections
import contextlib
import os
import signal
import sys
import threading
import time

from lab.engine_args import WORKLOAD_FLAGS, UsageError, build_parser, check_output_path, engine_config
from lab.engine_bench import run_benchmark
from lab.taskfile import TaskFile, TaskFileError
from runners.workload import ensure_objects
from tqcontract.files import write_json
from tqengine import WorkerPool
from tqengine.errors import ConfigError

SUBMIT_BATCH = 64
HANDLE_WINDOW = 4096

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
