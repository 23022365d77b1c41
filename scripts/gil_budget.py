"""What interpreter time per task costs short tasks: the durable floor with CPU added on its client threads,
against the engine, on waiting tasks (issue 11, target 3: 1 ms tasks at 0.85 of the ceiling).

    python scripts/gil_budget.py [--spins 0 20 40 60] [--rounds 3] [--wait-ms 1] [--clients 100] [--tasks N]

With tasks that only wait (sleep --wait-ms), the workers' throughput is set by how soon each one gets the GIL
back after its sleep, and that depends on how much interpreter time the other threads hold per task, not on
whose it is. This measures the slope: each round runs the engine once and the durable floor (runners/floor.py)
once per --spins value, each run a fresh process pushing --tasks tasks through the closed loop of
`benchmark.py --overhead` (lab.overhead.measure: --clients clients, 8 workers, queue 200, on scratch in
/dev/shm); a floor run's clients each spin (a busy loop holding the GIL) that many microseconds before every
task. Runs rotate inside a round, so the machine's drift lands on all of them.
Output on stdout: per run kind, the medians of tasks/s, share of the ceiling (8 x 1000 / --wait-ms), CPU us per
task and switches per task; then the floor's loss of ceiling share per 10 us spun (a least-squares line over
the spins), and how many microseconds spun give the floor the engine's throughput: the engine's interpreter
time per task beyond the floor's, as the workers feel it. Progress on stderr.
Exit codes: 0 ok, 1 a run failed, 2 bad arguments.
"""
import os
import shutil
import statistics
import sys
import tempfile

from scriptkit import MEASURE_AND_PRINT, SCRATCH_AND_TASKS, Parser, run_child

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKERS = 8

CHILD = r"""
import json, os, shutil, sys, tempfile, time
impl, tasks_n, clients, wait_ms, spin_us, scratch = (sys.argv[1], int(sys.argv[2]), int(sys.argv[3]),
                                                     float(sys.argv[4]), float(sys.argv[5]), sys.argv[6])
from lab.overhead import WaitProcessor, measure
from runners.workload import ensure_objects, make_tasks
""" + SCRATCH_AND_TASKS + r"""
    db = os.path.join(work, "db", "tasks.db")
    if impl == "engine":
        from runners.adapters import EngineAdapter
        adapter = EngineAdapter(processor=WaitProcessor(wait_ms), max_workers=8, queue_size=200, latency_ms=0.0,
                                db_path=db, store_root=os.path.join(work, "store"), log_level="WARNING")
    else:
        from runners.floor import DurableFloorAdapter
        seconds, spin_s, clock = wait_ms / 1000.0, spin_us / 1e6, time.perf_counter

        class SpinningFloor(DurableFloorAdapter):
            def run(self, task, timeout=None):
                end = clock() + spin_s      # interpreter time on the client's thread, the GIL held throughout
                while clock() < end:
                    pass
                return super().run(task, timeout)
        adapter = SpinningFloor(db, workers=8, queue_size=200, fn=lambda task: time.sleep(seconds))
""" + MEASURE_AND_PRINT
KEYS = (("tasks_per_s", "tasks/s", ".0f"), ("share", "of ceiling", ".3f"), ("cpu_us_per_task", "us CPU/task", ".1f"),
        ("voluntary_switches_per_task", "switches/task", ".2f"))


def run_one(kind, spin_us, args, scratch):
    """One run in a fresh process: `kind` engine or floor; its measure() result with its share of the ceiling."""
    result = run_child(CHILD, (kind, args.tasks, args.clients, args.wait_ms, spin_us, scratch), f"a {kind} run",
                       900, cwd=HERE, env={**os.environ, "PYTHONPATH": HERE})
    if result["tasks_per_s"] is None:
        raise RuntimeError(f"a {kind} run finished no task")
    result["share"] = result["tasks_per_s"] / (WORKERS * 1000.0 / args.wait_ms)
    return result


def slope(points):
    """Least-squares line through (x, y) points: (intercept, slope); None with fewer than two distinct x."""
    xs = [x for x, _y in points]
    if len(set(xs)) < 2:
        return None
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(y for _x, y in points)
    b = sum((x - mean_x) * (y - mean_y) for x, y in points) / sum((x - mean_x) ** 2 for x in xs)
    return mean_y - b * mean_x, b


def main(argv=None):
    p = Parser(description=__doc__.split("\n\n")[0])
    p.add_argument("--spins", type=float, nargs="+", default=[0.0, 20.0, 40.0, 60.0],
                   help="microseconds each floor client spins before a task, one floor run kind each "
                        "(default 0 20 40 60)")
    p.add_argument("--rounds", type=int, default=3, help="rounds, each running every kind once (default 3)")
    p.add_argument("--wait-ms", type=float, default=1.0, help="each task sleeps this long (default 1)")
    p.add_argument("--clients", type=int, default=100, help="closed-loop clients (default 100)")
    p.add_argument("--tasks", type=int, default=None,
                   help="tasks per run (default: 1.5 s at the ceiling, as benchmark.py --overhead)")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.clients < 1 or not 0 < args.wait_ms <= 1000:
        p.error("--rounds and --clients must be >= 1, --wait-ms in (0, 1000]")
    if any(not 0 <= s <= 10_000 for s in args.spins):
        p.error("--spins must be in [0, 10000] microseconds")
    if args.tasks is None:
        args.tasks = max(100, int(WORKERS * 1000.0 / args.wait_ms * 1.5))
    elif args.tasks < 1:
        p.error("--tasks must be >= 1")
    kinds = [("engine", 0.0)] + [("floor", s) for s in dict.fromkeys(args.spins)]
    scratch = tempfile.mkdtemp(prefix="tq-gil-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    runs = {kind: [] for kind in kinds}
    try:
        for round_ in range(args.rounds):
            shift = round_ % len(kinds)
            for kind, spin in kinds[shift:] + kinds[:shift]:
                result = run_one(kind, spin, args, scratch)
                runs[(kind, spin)].append(result)
                label = kind if kind == "engine" else f"floor +{spin:g} us"
                print(f"round {round_ + 1}/{args.rounds} {label}: " + ", ".join(
                    f"{format(result[key], spec)} {name}" for key, name, spec in KEYS), file=sys.stderr, flush=True)
    except RuntimeError as exc:
        print(f"gil_budget.py: error: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    medians = {kind: {key: statistics.median(r[key] for r in rs) for key, _n, _s in KEYS} for kind, rs in runs.items()}
    print(f"{args.clients} clients, {WORKERS} workers, tasks of {args.wait_ms:g} ms, {args.rounds} rounds (medians)")
    for (kind, spin), m in medians.items():
        label = kind if kind == "engine" else f"floor +{spin:g} us"
        print(f"  {label:<16} " + ", ".join(f"{format(m[key], spec)} {name}" for key, name, spec in KEYS))
    line = slope([(spin, r["share"]) for (kind, spin), rs in runs.items() if kind == "floor" for r in rs])
    if line is None:
        print("floor: one spin only, no slope")
        return 0
    a, b = line
    print(f"floor: {-b * 10:.4f} of the ceiling lost per 10 us spun per task (least squares over every floor run)")
    engine = medians[("engine", 0.0)]["share"]
    if b < 0:
        print(f"engine: the floor's throughput with {(engine - a) / b:.0f} us spun per task")
    return 0


if __name__ == "__main__":
    sys.exit(main())
