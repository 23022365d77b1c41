"""Interleaved A/B of the engine's durable path between two checkouts (before/after figures of a change).

    python scripts/ab_overhead.py DIR_A DIR_B [--pairs 6] [--tasks 20000] [--clients 100] [--wait-ms 0 | --real]

Each run is a fresh process that imports the engine and the lab from one checkout (DIR_A or DIR_B, e.g. a
`git worktree add ../before <commit>`) and pushes --tasks tasks through the engine's closed loop, the one of
`benchmark.py --overhead` (lab.overhead.measure: --clients clients, 8 workers, queue 200, a no-op processor,
one that sleeps --wait-ms, or with --real the engine's own Processor making thumbnails of tiny JPEGs), on
scratch that is removed afterwards. Runs alternate A and B, the order inside a pair alternating too, so the
machine's drift lands on both; the summary gives each side's medians and the median of the pairwise B/A
ratios with their range. Progress on stderr, the summary on stdout.
Exit codes: 0 ok, 1 a run failed, 2 bad arguments.
"""
import os
import shutil
import statistics
import sys
import tempfile

from scriptkit import MEASURE_AND_PRINT, SCRATCH_AND_TASKS, Parser, run_child

CHILD = r"""
import json, os, shutil, sys, tempfile
checkout, scratch, real = sys.argv[1], sys.argv[5], sys.argv[6] == "real"
tasks_n, clients, wait_ms = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
sys.path.insert(0, checkout)
os.chdir(checkout)
from lab.overhead import NoopProcessor, WaitProcessor, measure
from runners.adapters import EngineAdapter
from runners.workload import ensure_objects, make_tasks
""" + SCRATCH_AND_TASKS + r"""
    processor = None if real else WaitProcessor(wait_ms) if wait_ms > 0 else NoopProcessor()
    adapter = EngineAdapter(processor=processor, max_workers=8, queue_size=200, latency_ms=0.0,
                            db_path=os.path.join(work, "db", "tasks.db"), store_root=os.path.join(work, "store"),
                            log_level="WARNING")
""" + MEASURE_AND_PRINT
KEYS = (("tasks_per_s", "tasks/s", ".0f"), ("cpu_us_per_task", "us CPU/task", ".1f"),
        ("voluntary_switches_per_task", "switches/task", ".2f"), ("p95_ms", "P95 ms", ".1f"))


def run_one(checkout, args, scratch):
    kind = "real" if args.real else "stub"
    return run_child(CHILD, (checkout, args.tasks, args.clients, args.wait_ms, scratch, kind), f"a run in {checkout}",
                     900)


def main(argv=None):
    p = Parser(description=__doc__.split("\n\n")[0])
    p.add_argument("a", help="checkout A (before)")
    p.add_argument("b", help="checkout B (after)")
    p.add_argument("--pairs", type=int, default=6, help="interleaved pairs (default 6)")
    p.add_argument("--tasks", type=int, default=20000, help="tasks per run (default 20000)")
    p.add_argument("--clients", type=int, default=100, help="closed-loop clients (default 100)")
    p.add_argument("--wait-ms", type=float, default=0.0, help="each task sleeps this long (default 0: no-op)")
    p.add_argument("--real", action="store_true", help="the engine's real Processor on tiny JPEG sources "
                   "(thumbnails) instead of a stand-in")
    args = p.parse_args(argv)
    for checkout in (args.a, args.b):
        if not os.path.isfile(os.path.join(checkout, "lab", "overhead.py")):
            p.error(f"{checkout} is not a checkout of this project (no lab/overhead.py)")
    if args.pairs < 1 or args.tasks < 1 or args.clients < 1 or not args.wait_ms >= 0:
        p.error("--pairs, --tasks and --clients must be >= 1, --wait-ms >= 0")
    if args.real and args.wait_ms:
        p.error("--real and --wait-ms exclude each other")
    scratch = tempfile.mkdtemp(prefix="tq-ab-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    runs = {"a": [], "b": []}
    try:
        for pair in range(args.pairs):
            for side in (("a", "b") if pair % 2 == 0 else ("b", "a")):
                result = run_one(getattr(args, side), args, scratch)
                runs[side].append(result)
                print(f"pair {pair + 1}/{args.pairs} {side.upper()}: " + ", ".join(
                    f"{format(result[key], spec)} {label}" for key, label, spec in KEYS), file=sys.stderr, flush=True)
    except RuntimeError as exc:
        print(f"ab_overhead.py: error: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for side in ("a", "b"):
        print(f"{side.upper()} {getattr(args, side)}: medians " + ", ".join(
            f"{format(statistics.median(r[key] for r in runs[side]), spec)} {label}" for key, label, spec in KEYS))
    for key, label, _spec in KEYS[:2]:
        ratios = [b[key] / a[key] for a, b in zip(runs["a"], runs["b"], strict=True)]
        print(f"B/A {label}: median {statistics.median(ratios):.3f} (pairs {min(ratios):.3f}-{max(ratios):.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
