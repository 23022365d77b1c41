"""Interpreted work per task: the bytecodes each kind of thread runs per task, engine against the durable floor.

    python scripts/opcount.py [DIR ...] [--tasks 2000] [--clients 10] [--top 15] [--wait-ms 0]

The VM's speed moves 2-4x from hour to hour; a count of bytecodes does not (two runs of one checkout agree
within 0.5%). Each DIR (default: this checkout) runs in fresh processes: the engine, then the durable floor
(runners/floor.py, when the checkout has it), each pushing --tasks tasks through the closed loop of
`benchmark.py --overhead` (lab.overhead.measure: --clients clients, 8 workers, queue 200, a no-op processor or
one that sleeps --wait-ms) while sys.settrace counts every bytecode run, per thread: the clients, the workers,
the writer. Tracing makes everything ~30x slower, so these are counts, not times; C code (SQLite, the json
encoder, lock calls) is not counted. What the engine runs beyond the floor is its features' interpreted cost,
the part of its overhead that code changes move (README, Results: how it tracks tasks/s).
Output on stdout: per checkout, opcodes per task by thread kind and in all, engine/floor, the engine's --top
functions; with two or more DIRs, each engine total against the first. Progress on stderr.
Exit codes: 0 ok, 1 a run failed, 2 bad arguments.
"""
import os
import shutil
import sys
import tempfile

from scriptkit import Parser, run_child

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KINDS = ("client", "worker", "writer")

CHILD = r"""
import collections, json, os, shutil, sys, tempfile, threading, time
checkout, impl, scratch = sys.argv[1], sys.argv[2], sys.argv[6]
tasks_n, clients, wait_ms, top = int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[7])
sys.path.insert(0, checkout)
os.chdir(checkout)
from lab.overhead import NoopProcessor, WaitProcessor, measure
from runners.workload import ensure_objects, make_tasks
work = tempfile.mkdtemp(prefix="tq-ops-", dir=scratch)
per_thread, names, counting = {}, {}, [False]
get_ident = threading.get_ident

def count(frame, event, arg):
    if event == "opcode" and counting[0]:
        per_thread[get_ident()][frame.f_code] += 1
    return count

def start(frame, event, arg):
    me = get_ident()
    if me not in per_thread:
        per_thread[me], names[me] = collections.Counter(), threading.current_thread().name
    frame.f_trace_opcodes = True
    return count

def kind(name):
    return ("client" if name.startswith("client") else "writer" if "writer" in name else
            "worker" if "worker" in name or "ThreadPool" in name else "other")

try:
    tasks = make_tasks(tasks_n, seed=1, object_bytes=0)
    ensure_objects(tasks, os.path.join(work, "store"))
    db = os.path.join(work, "db", "tasks.db")
    if impl == "floor":
        from runners.floor import DurableFloorAdapter
        seconds = wait_ms / 1000.0
        adapter = DurableFloorAdapter(db, fn=(lambda task: time.sleep(seconds)) if wait_ms else (lambda task: None))
    else:
        from runners.adapters import EngineAdapter
        adapter = EngineAdapter(processor=WaitProcessor(wait_ms) if wait_ms else NoopProcessor(), max_workers=8,
                                queue_size=200, latency_ms=0.0, db_path=db,
                                store_root=os.path.join(work, "store"), log_level="WARNING")
    threading.settrace(start)       # every thread started from here on: the engine's and the clients
    adapter.start()
    counting[0] = True
    try:
        result = measure(adapter, tasks, clients, 900.0)
    finally:
        counting[0] = False
        adapter.stop()
        threading.settrace(None)
    by_kind, by_function = collections.Counter(), collections.Counter()
    for ident, counts in per_thread.items():
        k = kind(names[ident])
        for code, n in counts.items():
            by_kind[k] += n
            by_function[(k, f"{os.path.basename(code.co_filename)}:{code.co_firstlineno} {code.co_name}")] += n
    print(json.dumps({"succeeded": result["succeeded"], "tasks": tasks_n,
                      "by_kind": {k: n / tasks_n for k, n in by_kind.items()},
                      "top": [[k, where, n / tasks_n] for (k, where), n in by_function.most_common(top)]}))
finally:
    shutil.rmtree(work, ignore_errors=True)
"""


def run_one(checkout, impl, args, scratch):
    result = run_child(CHILD, (checkout, impl, args.tasks, args.clients, args.wait_ms, scratch, args.top),
                       f"the {impl} run in {checkout}", 1800)
    if result["succeeded"] != args.tasks:
        raise RuntimeError(f"the {impl} run in {checkout} finished {result['succeeded']} of {args.tasks} tasks")
    result["total"] = sum(n for k, n in result["by_kind"].items() if k in KINDS)
    return result


def main(argv=None):
    p = Parser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkouts", nargs="*", metavar="DIR", help="checkouts to count (default: this one)")
    p.add_argument("--tasks", type=int, default=2000, help="tasks per run (default 2000)")
    p.add_argument("--clients", type=int, default=10, help="closed-loop clients (default 10)")
    p.add_argument("--wait-ms", type=float, default=0.0, help="each task sleeps this long (default 0: no-op)")
    p.add_argument("--top", type=int, default=15, help="the engine's functions to list (default 15)")
    args = p.parse_args(argv)
    checkouts = args.checkouts or [HERE]
    for checkout in checkouts:
        if not os.path.isfile(os.path.join(checkout, "lab", "overhead.py")):
            p.error(f"{checkout} is not a checkout of this project (no lab/overhead.py)")
    if args.tasks < 1 or args.clients < 1 or args.top < 0 or not args.wait_ms >= 0:
        p.error("--tasks and --clients must be >= 1, --top >= 0, --wait-ms >= 0")
    scratch = tempfile.mkdtemp(prefix="tq-ops-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    results = []
    try:
        for checkout in checkouts:
            impls = ["engine"] + (["floor"] if os.path.isfile(os.path.join(checkout, "runners", "floor.py")) else [])
            found = {}
            for impl in impls:
                print(f"counting {impl} in {checkout} ({args.tasks} tasks, {args.clients} clients)", file=sys.stderr,
                      flush=True)
                found[impl] = run_one(checkout, impl, args, scratch)
            results.append((checkout, found))
    except RuntimeError as exc:
        print(f"opcount.py: error: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for checkout, found in results:
        print(f"{checkout}: bytecodes per task ({args.tasks} tasks, {args.clients} clients, "
              f"{args.wait_ms:g} ms tasks)")
        for impl, r in found.items():
            print(f"  {impl:6s} " + ", ".join(f"{k} {r['by_kind'].get(k, 0.0):.0f}" for k in KINDS) +
                  f", all {r['total']:.0f}")
        if "floor" in found:
            print(f"  engine/floor {found['engine']['total'] / found['floor']['total']:.2f}")
        for kind, where, n in found["engine"]["top"]:
            print(f"    {n:7.1f} {kind:6s} {where}")
    first = results[0][1]["engine"]["total"]
    for checkout, found in results[1:]:
        print(f"engine {checkout} / {results[0][0]}: {found['engine']['total'] / first:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
