"""What threads do to short image work: the per-task work alone (no queue, no database) in 1, 2, ... threads.

    python scripts/processor_threads.py [--threads 1 2 8] [--tasks 2000] [--rounds 3] [--image-size tiny]

Issue 11, target 3 asks the engine for 1.5x the baseline's throughput at latency 0 on tiny thumbnails. There
the work of a task is mostly Python inside Pillow (its marker parsing, plugin and encoder set-up; the C decode
and encode are a small part), so it holds the GIL, and the baseline, which runs one task at a time under its
global lock, gets the best schedule there is for it. This shows that without any queue: `--threads` threads
take `--tasks` tasks from a shared iterator and run, each in turn, the engine's Processor (tqengine.processor)
and the baseline's own per-task work (input_new/baseline_task_queue_v2.py: BaselineTaskQueue._process,
without its queue), on sources made by runners.workload in scratch under /dev/shm, every run after a warm-up
of 50 tasks. Rounds repeat every (work, threads) run in a rotated order.
Output on stdout: per work and thread count, the medians of tasks/s, CPU us per task (getrusage) and
voluntary context switches per task, and each thread count's tasks/s against one thread. Progress on stderr.
Exit codes: 0 ok, 1 a run failed, 2 bad arguments.
"""
import argparse
import os
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, HERE)

WARM_UP = 50


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        print(f"processor_threads.py: error: {message}", file=sys.stderr)
        sys.exit(2)


def _usage():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime, r.ru_nvcsw


def run_threads(work, tasks, threads):
    """`tasks` through `work(task)` in `threads` threads sharing one iterator: tasks/s, CPU us and switches a task.
    A task that raises fails the run (RuntimeError naming it)."""
    it = iter(tasks)
    take = threading.Lock()
    errors = []

    def loop():
        while True:
            with take:
                task = next(it, None)
            if task is None:
                return
            try:
                work(task)
            except Exception as exc:        # reported once the threads are joined
                errors.append(f"{task.get('image_key')!r}: {type(exc).__name__}: {exc}")
                return

    cpu0, sw0 = _usage()
    started = time.perf_counter()
    pool = [threading.Thread(target=loop, name=f"work-{n}") for n in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    elapsed = time.perf_counter() - started
    cpu1, sw1 = _usage()
    if errors:
        raise RuntimeError(f"a task failed: {errors[0]}"[:300])
    n = len(tasks)
    return {"tasks_per_s": n / elapsed, "cpu_us": (cpu1 - cpu0) * 1e6 / n, "switches": (sw1 - sw0) / n}


def main(argv=None):
    p = _Parser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2, 8], help="thread counts (default 1 2 8)")
    p.add_argument("--tasks", type=int, default=2000, help="tasks per run (default 2000)")
    p.add_argument("--rounds", type=int, default=3, help="rounds, each running every kind once (default 3)")
    p.add_argument("--image-size", default="tiny",
                   help="sources: tiny (default), small (640x480), large (4000x3000) or WxH (runners.workload)")
    args = p.parse_args(argv)
    if args.tasks < 1 or args.rounds < 1 or any(not 1 <= t <= 256 for t in args.threads):
        p.error("--tasks and --rounds must be >= 1, --threads each in 1..256")
    from runners.workload import ensure_objects, make_tasks
    try:
        tasks = make_tasks(args.tasks + WARM_UP, seed=1, image_size=args.image_size)
    except ValueError as exc:
        p.error(f"--image-size: {exc}")
    from input_new.baseline_task_queue_v2 import BaselineTaskQueue
    from tqengine.objects.local import LocalObjectStore
    from tqengine.processor import Processor

    scratch = tempfile.mkdtemp(prefix="tq-threads-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    try:
        store_root = os.path.join(scratch, "store")
        ensure_objects(tasks, store_root, image_size=args.image_size)
        processor = Processor(LocalObjectStore(store_root))
        baseline = BaselineTaskQueue(store_root, workers=1, latency_ms=0.0)

        def engine_work(task):
            processor.process(task["image_key"], task["size"], f"{task['image_key']}#{task['size']}", 1)

        works = {"engine Processor": engine_work, "baseline work": baseline._process}
        kinds = [(name, threads) for name in works for threads in dict.fromkeys(args.threads)]
        runs = {kind: [] for kind in kinds}
        for round_ in range(args.rounds):
            shift = round_ % len(kinds)
            for name, threads in kinds[shift:] + kinds[:shift]:
                run_threads(works[name], tasks[:WARM_UP], threads)
                result = run_threads(works[name], tasks[WARM_UP:], threads)
                runs[(name, threads)].append(result)
                print(f"round {round_ + 1}/{args.rounds} {name}, {threads} threads: {result['tasks_per_s']:.0f} "
                      f"tasks/s, {result['cpu_us']:.0f} us CPU/task, {result['switches']:.2f} switches/task",
                      file=sys.stderr, flush=True)
    except (RuntimeError, OSError) as exc:
        print(f"processor_threads.py: error: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"{args.tasks} tasks of {args.image_size} sources, {args.rounds} rounds (medians)")
    for name in works:
        one = None
        for threads in dict.fromkeys(args.threads):
            m = {key: statistics.median(r[key] for r in runs[(name, threads)]) for key in ("tasks_per_s", "cpu_us",
                                                                                            "switches")}
            one = m["tasks_per_s"] if threads == 1 else one
            against = f", {m['tasks_per_s'] / one:.2f}x one thread" if one and threads != 1 else ""
            print(f"  {name:<17} {threads:>3} threads: {m['tasks_per_s']:.0f} tasks/s, {m['cpu_us']:.0f} us CPU/task, "
                  f"{m['switches']:.2f} switches/task{against}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
