"""How long a worker's sleep really lasts inside each pool: the engine, the durable floor and the bare pool,
each running tasks that only sleep, timed inside the task (issue 11, target 3: 1 ms tasks at 0.85 of the
ceiling).

    python scripts/sleep_overrun.py [--rounds 3] [--wait-ms 1] [--clients 100] [--tasks 12000]

A task that sleeps --wait-ms is over when its worker has the GIL back: how long that takes depends on what the
other threads do meanwhile (woken callers queueing for the GIL, a writer's long stretch), so the time the
sleep took, measured in the worker around time.sleep, shows what a pool costs its workers beyond the sleep.
Each round runs every pool once, in rotating order, each run a fresh process pushing --tasks tasks through
the closed loop of `benchmark.py --overhead` (lab.overhead.measure: --clients clients, 8 workers, queue 200,
scratch in /dev/shm). The same sleep alone in one thread is timed first: the machine's own overrun.
Output on stdout: per pool, the medians over its runs of tasks/s and of the sleep's P50, P90 and P99 (ms) and
the share of sleeps that took over twice --wait-ms. Progress on stderr.
Exit codes: 0 ok, 1 a run failed, 2 bad arguments.
"""
import os
import shutil
import statistics
import sys
import tempfile
import time

from scriptkit import MEASURE_AND_PRINT, SCRATCH_AND_TASKS, Parser, run_child

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, HERE)
from tqcontract.metrics import percentile  # noqa: E402  (the checkout's, the one these runs measure)

POOLS = ("engine", "floor", "bare")

CHILD = r"""
import json, os, shutil, sys, tempfile, time
impl, scratch = sys.argv[1], sys.argv[5]
tasks_n, clients, wait_ms = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
from lab.overhead import measure
from runners.workload import ensure_objects, make_tasks
seconds, clock, took = wait_ms / 1000.0, time.perf_counter, []


def timed_sleep(task=None):
    started = clock()
    time.sleep(seconds)
    took.append(clock() - started)      # list.append: atomic under the GIL, one per task


class TimedSleep:
    def process(self, image_key, variant, key, attempt):
        timed_sleep()
        return f"variants/{image_key}@{variant}", "", 0

    def completed_output(self, image_key, variant):
        return None


""" + SCRATCH_AND_TASKS + r"""
    db = os.path.join(work, "db", "tasks.db")
    if impl == "engine":
        from runners.adapters import EngineAdapter
        adapter = EngineAdapter(processor=TimedSleep(), max_workers=8, queue_size=200, latency_ms=0.0,
                                db_path=db, store_root=os.path.join(work, "store"), log_level="WARNING")
    elif impl == "floor":
        from runners.floor import DurableFloorAdapter
        adapter = DurableFloorAdapter(db, workers=8, queue_size=200, fn=timed_sleep)
    else:
        from runners.adapters import BareQueueAdapter
        adapter = BareQueueAdapter(workers=8, queue_size=200, fn=timed_sleep)
    EXTRA = {"sleeps_s": took}         # printed with measure()'s result, the list full by then
""" + MEASURE_AND_PRINT


def summary(sleeps_ms, wait_ms):
    """P50, P90, P99 (ms) and the share over twice `wait_ms` of one run's sleeps."""
    ordered = sorted(sleeps_ms)
    return {"p50": percentile(ordered, 50), "p90": percentile(ordered, 90), "p99": percentile(ordered, 99),
            "over_2x": sum(1 for t in ordered if t > 2 * wait_ms) / len(ordered)}


def alone(wait_ms, count=200):
    """The median time (ms) of the same sleep in this thread alone."""
    took = []
    for _ in range(count):
        started = time.perf_counter()
        time.sleep(wait_ms / 1000.0)
        took.append((time.perf_counter() - started) * 1000.0)
    return statistics.median(took)


def main(argv=None):
    p = Parser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3, help="rounds, each running every pool once (default 3)")
    p.add_argument("--wait-ms", type=float, default=1.0, help="each task sleeps this long (default 1)")
    p.add_argument("--clients", type=int, default=100, help="closed-loop clients (default 100)")
    p.add_argument("--tasks", type=int, default=12000, help="tasks per run (default 12000)")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.clients < 1 or args.tasks < 1 or not 0 < args.wait_ms <= 1000:
        p.error("--rounds, --clients and --tasks must be >= 1, --wait-ms in (0, 1000]")
    by_itself = alone(args.wait_ms)
    scratch = tempfile.mkdtemp(prefix="tq-sleep-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    runs = {pool: [] for pool in POOLS}
    try:
        for round_ in range(args.rounds):
            shift = round_ % len(POOLS)
            for pool in POOLS[shift:] + POOLS[:shift]:
                result = run_child(CHILD, (pool, args.tasks, args.clients, args.wait_ms, scratch), f"a {pool} run",
                                   900, cwd=HERE, env={**os.environ, "PYTHONPATH": HERE})
                if not result.get("sleeps_s") or not result["tasks_per_s"]:
                    raise RuntimeError(f"a {pool} run finished no task")
                sleeps_ms = [t * 1000.0 for t in result["sleeps_s"]]
                row = {"tasks_per_s": result["tasks_per_s"], **summary(sleeps_ms, args.wait_ms)}
                runs[pool].append(row)
                print(f"round {round_ + 1}/{args.rounds} {pool}: {row['tasks_per_s']:.0f} tasks/s, sleep P50 "
                      f"{row['p50']:.3f} P90 {row['p90']:.3f} P99 {row['p99']:.3f} ms, "
                      f"{100 * row['over_2x']:.2f}% over {2 * args.wait_ms:g} ms", file=sys.stderr, flush=True)
    except RuntimeError as exc:
        print(f"sleep_overrun.py: error: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"{args.clients} clients, 8 workers, tasks of {args.wait_ms:g} ms, {args.rounds} rounds (medians over "
          f"the runs); each sleep timed in its worker")
    print(f"  alone   the same sleep in one thread with no pool: {by_itself:.3f} ms (median)")
    for pool, rows in runs.items():
        m = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
        print(f"  {pool:<7} {m['tasks_per_s']:>7.0f} tasks/s, sleep P50 {m['p50']:.3f} P90 {m['p90']:.3f} "
              f"P99 {m['p99']:.3f} ms, {100 * m['over_2x']:.2f}% over {2 * args.wait_ms:g} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
