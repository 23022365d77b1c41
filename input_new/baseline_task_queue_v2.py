#!/usr/bin/env python3
"""The "before" task queue: a naive thread-pool image-variant queue, kept honest as the baseline.

Every gain of the engine (tqengine) is measured against this file, so it does the same work per task
(read the source object, header + zlib level 1, write the variant, seeded latency and faults) and keeps
the defects a first version really has, no worse:

  * one global threading.Lock held around dequeue, processing (I/O and the injected latency) and
    bookkeeping, so the workers run one task at a time whatever their number;
  * an unbounded queue (a deque) that idle workers poll with a short sleep;
  * no idempotency (a duplicate task is processed again), no retries (a transient error is final);
  * whole objects read into memory, output written straight to its final path (not atomic);
  * no metrics beyond the counters `processed` and `failed`; main() measures around it.

See input_new/notes.md for where each defect lives and what it costs. Standard library only, and it
does not import `lab`: the object content, the transform and the fault plan below are deliberate copies
of docs/CONTRACTS.md so the file stays standalone.

Run `python input_new/baseline_task_queue_v2.py --help` for the command line.
"""
import argparse
import collections
import json
import os
import platform
import random
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
import zlib

POLL_INTERVAL_S = 0.002     # how long an idle worker sleeps before looking at the queue again
BLOCK = 65536               # object content block (docs/CONTRACTS.md)
MAGIC = b"TQLAB1 "
_VARIANT = re.compile(r"([0-9]{1,5})x([0-9]{1,5})")


# ---------------------------------------------------------------------------------------------------
# Deliberate copies of the shared contract (docs/CONTRACTS.md, lab/workload.py, tqengine/faults.py,
# tqengine/tasks.py), so this file runs alone. tests/test_baseline.py checks they agree with lab.

def object_chunks(image_key, nbytes):
    """Yield the deterministic content of source object `image_key` with `nbytes` bytes, block by block."""
    index = 0
    while nbytes > 0:
        block = random.Random(f"{image_key}|{index}").randbytes(BLOCK)
        yield block[:min(BLOCK, nbytes)]
        nbytes -= BLOCK
        index += 1


def transform(variant, source):
    """Output bytes of a variant: header line + zlib stream (level 1) of the source."""
    return MAGIC + variant.encode("ascii") + b"\n" + zlib.compress(source, 1)


def plan(seed, key, attempt, latency_ms, jitter_ms, transient_rate, permanent_rate):
    """Return (latency_s, fault) for one attempt; fault is None, "transient" or "permanent"."""
    latency = float(latency_ms)
    if jitter_ms:
        latency += random.Random(f"{seed}|{key}|{attempt}|lat").uniform(-jitter_ms, jitter_ms)
    latency_s = max(0.0, latency) / 1000.0
    if permanent_rate and random.Random(f"{seed}|{key}|perm").random() < permanent_rate:
        return latency_s, "permanent"
    if transient_rate and random.Random(f"{seed}|{key}|{attempt}").random() < transient_rate:
        return latency_s, "transient"
    return latency_s, None


class TaskFailed(Exception):
    """Why one task failed; its message becomes the result's "error"."""


def check_task(task):
    """Return (image_key, variant) of a well-formed task, else raise TaskFailed with the reason."""
    if not isinstance(task, dict):
        raise TaskFailed(f"invalid task: a task must be a JSON object, not {type(task).__name__}")
    key = task.get("image_key")
    if "image_key" not in task:
        raise TaskFailed("invalid task: missing field image_key")
    if not isinstance(key, str) or not key or len(key) > 1024 or "\x00" in key or "\\" in key:
        raise TaskFailed("invalid task: image_key must be a string of 1..1024 chars without NUL or backslash")
    parts = key.split("/")
    if key.startswith("/") or any(part in ("", ".", "..") for part in parts) or parts[0] == "variants":
        raise TaskFailed("invalid task: image_key escapes the store (absolute, '..', '.', empty part or variants/)")
    if "size" not in task and "variant" not in task:
        raise TaskFailed("invalid task: missing field size (or variant)")
    variant = task.get("size", task.get("variant"))
    match = _VARIANT.fullmatch(variant) if isinstance(variant, str) else None
    if not match or not all(1 <= int(side) <= 8192 for side in match.groups()):
        raise TaskFailed(f"invalid task: size {str(variant)[:40]!r} is not WxH with 1 <= W,H <= 8192")
    nbytes = task.get("object_bytes", 0)
    if not isinstance(nbytes, int) or isinstance(nbytes, bool) or nbytes < 0:
        raise TaskFailed("invalid task: object_bytes must be a non-negative integer")
    return key, variant

# --------------------------------------------------------------------------------------------------


class Ticket:
    """What submit() returns: wait for one task's result."""

    def __init__(self, task):
        self.task = task
        self.submitted = time.perf_counter()
        self._event = threading.Event()
        self._result = None

    def _resolve(self, status, error=None, output_key=None):
        task_id = self.task.get("task_id") if isinstance(self.task, dict) else None
        self._result = {"task_id": task_id, "status": status, "error": error, "output_key": output_key,
                        "latency_ms": (time.perf_counter() - self.submitted) * 1000.0}
        self._event.set()

    def done(self):
        return self._event.is_set()

    def result(self, timeout=None):
        """{"task_id","status": "success"|"failed","error","output_key","latency_ms"}; TimeoutError on timeout."""
        if not self._event.wait(timeout):
            raise TimeoutError(f"task {self.task!r:.80} has no result after {timeout} s")
        return self._result


class BaselineTaskQueue:
    """A list of tasks, N worker threads and one lock. `processed` counts successes, `failed` failures.

    `store`, when given, is any object with read_all(key) -> bytes and write_all(key, data) (or, failing
    that, the lab store interface read_chunks/write_chunks); otherwise files under `store_root` are used.
    """

    def __init__(self, store_root, workers=8, latency_ms=5.0, latency_jitter_ms=0.0, transient_rate=0.0,
                 permanent_rate=0.0, seed=0, store=None):
        self.store_root = store_root
        self.workers = workers
        self.latency_ms = latency_ms
        self.latency_jitter_ms = latency_jitter_ms
        self.transient_rate = transient_rate
        self.permanent_rate = permanent_rate
        self.seed = seed
        self.store = store
        self.queue = collections.deque()     # unbounded: submit() never blocks and never says no
        self.lock = threading.Lock()         # the one lock: dequeue + processing + bookkeeping
        self.processed = 0
        self.failed = 0
        self._threads = []
        self._stopping = False

    def start(self):
        for n in range(self.workers):
            thread = threading.Thread(target=self._worker, name=f"baseline-worker-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def submit(self, task):
        ticket = Ticket(task)
        if self._stopping:
            ticket._resolve("failed", error="queue is stopped")
            return ticket
        self.queue.append((task, ticket))    # deque.append is atomic; the queue has no bound
        return ticket

    def stop(self, timeout=10.0):
        """Stop the workers (join with a deadline); tasks still queued are dropped and fail. True if all stopped."""
        self._stopping = True
        deadline = time.perf_counter() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.perf_counter()))
        stopped = not any(thread.is_alive() for thread in self._threads)
        while True:
            try:
                _task, ticket = self.queue.popleft()
            except IndexError:
                break
            ticket._resolve("failed", error="queue stopped before the task was processed")
        return stopped

    def _worker(self):
        while not self._stopping:
            self.lock.acquire()
            try:
                if not self.queue:
                    item = None
                else:
                    item = self.queue.popleft()
                    task, ticket = item
                    try:
                        output_key = self._process(task)
                    except Exception as exc:  # noqa: BLE001 - any failure is this task's final failure
                        self.failed += 1
                        ticket._resolve("failed", error=str(exc) or type(exc).__name__)
                    else:
                        self.processed += 1
                        ticket._resolve("success", output_key=output_key)
            finally:
                self.lock.release()
            if item is None:
                time.sleep(POLL_INTERVAL_S)   # idle: poll the queue again shortly

    def _process(self, task):
        """One attempt of one task (there is never a second). latency_ms is the attempt's service time,
        as in the engine: a fault sleeps it and raises; otherwise the real work (read, transform, write)
        runs and a sleep pads it to the latency. All of it while holding the global lock."""
        started = time.perf_counter()
        image_key, variant = check_task(task)
        latency_s, fault = plan(self.seed, f"{image_key}#{variant}", 1, self.latency_ms,
                                self.latency_jitter_ms, self.transient_rate, self.permanent_rate)
        if fault is not None:
            time.sleep(latency_s)             # the injected I/O latency, slept while holding the lock
            if fault == "permanent":
                raise TaskFailed("injected permanent fault")
            raise TaskFailed("injected transient fault (not retried)")
        output_key = f"variants/{image_key}@{variant}"
        source = self._read(image_key)        # the whole object in memory
        self._write(output_key, transform(variant, source))
        remaining = started + latency_s - time.perf_counter()
        if remaining > 0:
            time.sleep(remaining)             # the rest of the I/O latency, still holding the lock
        return output_key

    def _path(self, key):
        root = os.path.realpath(self.store_root)
        path = os.path.join(root, *key.split("/"))
        if not os.path.realpath(path).startswith(root + os.sep):
            raise TaskFailed(f"invalid task: {key[:200]!r} resolves outside the store")
        return path

    def _read(self, key):
        if self.store is not None:
            if hasattr(self.store, "read_all"):
                return self.store.read_all(key)
            return b"".join(self.store.read_chunks(key))
        try:
            with open(self._path(key), "rb") as f:
                return f.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise TaskFailed(f"source object {key[:200]!r} does not exist") from None

    def _write(self, key, data):
        if self.store is not None:
            if hasattr(self.store, "write_all"):
                self.store.write_all(key, data)
            else:
                self.store.write_chunks(key, [data])
            return
        path = self._path(key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:           # straight to the final name: a reader can see half of it
            f.write(data)


# --------------------------------------------------------------------------------------------------
# The command line: a closed-loop load (each client submits a task, waits for its result, repeats).

class _Parser(argparse.ArgumentParser):
    def error(self, message):
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


class BadInput(Exception):
    """Bad input or configuration: one line on stderr, exit code 2."""


def build_parser():
    p = _Parser(prog="baseline_task_queue_v2.py",
                description="The baseline task queue (one global lock, unbounded polled queue, no retries, "
                            "no idempotency) under a closed-loop load: each client thread submits a task, "
                            "waits for its result and submits the next. Prints throughput (successes/s), "
                            "mean and P95 latency (submit to result) and the error rate.")
    p.add_argument("--tasks", metavar="FILE",
                   help="JSON list of tasks to process (missing source objects are created in the store); "
                        "default: --count generated tasks")
    p.add_argument("--count", type=int, default=500, help="number of generated tasks without --tasks (default 500)")
    p.add_argument("--clients", type=int, default=100, help="closed-loop client threads (default 100)")
    p.add_argument("--workers", type=int, default=8, help="worker threads (default 8)")
    p.add_argument("--latency-ms", type=float, default=5.0, help="injected latency per task in ms (default 5)")
    p.add_argument("--latency-jitter-ms", type=float, default=0.0,
                   help="uniform +/- jitter on the latency in ms (default 0)")
    p.add_argument("--transient-rate", type=float, default=0.0,
                   help="probability of a transient fault per attempt; never retried here (default 0)")
    p.add_argument("--permanent-rate", type=float, default=0.0,
                   help="probability that a task always fails (default 0)")
    p.add_argument("--object-kib", type=int, default=16,
                   help="size of generated source objects, and of --tasks objects without object_bytes (default 16)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated tasks and of the fault model (default 0)")
    p.add_argument("--json", metavar="OUT", help="also write the metrics JSON (docs/CONTRACTS.md shape) to OUT")
    p.add_argument("--store", metavar="DIR",
                   help="object store directory (kept); default: a temporary directory removed at the end")
    p.add_argument("--result-timeout", type=float, default=60.0,
                   help="seconds a client waits for one result before the run counts as failed (default 60)")
    return p


def check_args(args):
    if args.count < 0:
        raise BadInput("--count must be >= 0")
    if args.clients < 1 or args.workers < 1:
        raise BadInput("--clients and --workers must be >= 1")
    if not (args.latency_ms >= 0 and args.latency_jitter_ms >= 0):
        raise BadInput("--latency-ms and --latency-jitter-ms must be >= 0")
    for name in ("transient_rate", "permanent_rate"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            raise BadInput(f"--{name.replace('_', '-')} must be within 0..1")
    if args.object_kib < 0:
        raise BadInput("--object-kib must be >= 0")
    if not args.result_timeout > 0:
        raise BadInput("--result-timeout must be > 0")


def load_tasks(path):
    try:
        with open(path, "rb") as f:
            tasks = json.loads(f.read())
    except OSError as exc:
        raise BadInput(f"cannot read tasks file {path}: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadInput(f"tasks file {path} is not valid JSON: {exc}") from None
    if not isinstance(tasks, list):
        raise BadInput(f"tasks file {path} must hold a JSON list of tasks, not {type(tasks).__name__}")
    return tasks


def generate_tasks(count, seed, object_bytes, sizes=("100x100", "200x200", "400x300", "800x600")):
    return [{"task_id": f"t{i:06d}", "image_key": f"img/{seed}/{i:06d}.raw", "size": sizes[i % len(sizes)],
             "object_bytes": object_bytes} for i in range(count)]


def create_objects(tasks, root, default_bytes):
    """Write every source object the tasks name (if missing or of another size); skip unusable keys."""
    seen = set()
    for task in tasks:
        key = task.get("image_key") if isinstance(task, dict) else None
        if not isinstance(key, str) or key in seen:
            continue
        try:
            check_task(dict(task, size="1x1", object_bytes=0))
        except TaskFailed:
            continue
        seen.add(key)
        nbytes = task.get("object_bytes", default_bytes)
        if not isinstance(nbytes, int) or isinstance(nbytes, bool) or nbytes < 0:
            nbytes = default_bytes
        path = os.path.join(root, *key.split("/"))
        if os.path.isfile(path) and os.path.getsize(path) == nbytes:
            continue
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tq-tmp"
        with open(tmp, "wb") as f:             # block by block, so peak RSS is the queue's, not this setup's
            for chunk in object_chunks(key, nbytes):
                f.write(chunk)
        os.replace(tmp, path)


def percentile(sorted_values, q):
    """Linear interpolation between closest ranks (statistics.quantiles(method="inclusive")); q in 0..1."""
    if not sorted_values:
        return None
    pos = (len(sorted_values) - 1) * q
    low = int(pos)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (pos - low)


def peak_rss_mb():
    try:
        import resource
    except ImportError:
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def run_closed_loop(queue, tasks, clients, result_timeout):
    """Each client takes the next task, submits it, waits for its result; return (results, elapsed_s, errors)."""
    results = [None] * len(tasks)
    errors = []
    next_index = iter(range(len(tasks)))
    take = threading.Lock()

    def client():
        while True:
            with take:
                i = next(next_index, None)
            if i is None:
                return
            try:
                results[i] = queue.submit(tasks[i]).result(timeout=result_timeout)
            except Exception as exc:  # noqa: BLE001 - a lost result fails the run, reported by main
                errors.append(f"task {i}: {exc}")
                return

    threads = [threading.Thread(target=client, name=f"client-{n}", daemon=True) for n in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, time.perf_counter() - start, errors


def build_metrics(args, tasks, results, elapsed, queue):
    done = [r for r in results if r is not None]
    latencies = sorted(r["latency_ms"] for r in done)
    succeeded = sum(1 for r in done if r["status"] == "success")
    submitted = len(done)
    ceiling = args.workers * 1000.0 / args.latency_ms if args.latency_ms else None
    throughput = succeeded / elapsed if elapsed > 0 else 0.0
    return {
        "impl": "baseline",
        "params": {"impl": "baseline", "tasks_file": args.tasks, "count": len(tasks), "clients": args.clients,
                   "workers": args.workers, "latency_ms": args.latency_ms,
                   "latency_jitter_ms": args.latency_jitter_ms, "transient_rate": args.transient_rate,
                   "permanent_rate": args.permanent_rate, "object_kib": args.object_kib, "load": "closed",
                   "seed": args.seed, "store": "local"},
        "tasks_submitted": submitted,
        "elapsed_s": elapsed,
        "throughput_tps": throughput,
        "latency_ms": {"mean": statistics.fmean(latencies) if latencies else None,
                       "p50": percentile(latencies, 0.50), "p95": percentile(latencies, 0.95),
                       "p99": percentile(latencies, 0.99), "max": latencies[-1] if latencies else None},
        "error_rate": (submitted - succeeded) / submitted if submitted else None,
        "counters": {"enqueued": submitted, "dequeued": queue.processed + queue.failed,
                     "succeeded": queue.processed, "failed": queue.failed, "retried": None, "rejected": 0,
                     "duplicates": None, "dead_lettered": None},
        "queue_depth": {"max": None, "mean": None, "p95": None},
        "rates": {"enqueue_per_s": submitted / elapsed if elapsed > 0 else None,
                  "dequeue_per_s": (queue.processed + queue.failed) / elapsed if elapsed > 0 else None},
        "thread_utilization": None,
        "ceiling_tps": ceiling,
        "efficiency": throughput / ceiling if ceiling else None,
        "peak_rss_mb": peak_rss_mb(),
        "env": {"python": platform.python_version(), "implementation": platform.python_implementation(),
                "platform": platform.platform(), "cpu_count": os.cpu_count()},
    }


def write_json_atomic(path, document):
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".baseline-", suffix=".tq-tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(document, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        check_args(args)
        if args.tasks:
            tasks = load_tasks(args.tasks)
        else:
            tasks = generate_tasks(args.count, args.seed, args.object_kib * 1024)
    except BadInput as exc:
        print(f"baseline_task_queue_v2.py: error: {exc}", file=sys.stderr)
        return 2

    store_root = args.store or tempfile.mkdtemp(prefix="tq-baseline-")
    queue = None
    try:
        os.makedirs(store_root, exist_ok=True)
        create_objects(tasks, store_root, args.object_kib * 1024)
        queue = BaselineTaskQueue(store_root, workers=args.workers, latency_ms=args.latency_ms,
                                  latency_jitter_ms=args.latency_jitter_ms, transient_rate=args.transient_rate,
                                  permanent_rate=args.permanent_rate, seed=args.seed)
        queue.start()
        results, elapsed, errors = run_closed_loop(queue, tasks, args.clients, args.result_timeout)
        queue.stop()
        metrics = build_metrics(args, tasks, results, elapsed, queue)
        if args.json:
            write_json_atomic(args.json, metrics)
    except Exception as exc:  # noqa: BLE001 - one line, exit 1
        print(f"baseline_task_queue_v2.py: run failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        if queue is not None:
            queue.stop(timeout=1.0)
        if not args.store:
            shutil.rmtree(store_root, ignore_errors=True)

    lat = metrics["latency_ms"]
    fmt = lambda v: "n/a" if v is None else f"{v:.1f}"  # noqa: E731
    print(f"baseline: {metrics['tasks_submitted']} tasks, {args.clients} clients, {args.workers} workers, "
          f"latency {args.latency_ms:g} ms: {elapsed:.2f} s")
    print(f"throughput {metrics['throughput_tps']:.1f} successes/s   latency mean {fmt(lat['mean'])} ms   "
          f"p95 {fmt(lat['p95'])} ms   error rate "
          f"{'n/a' if metrics['error_rate'] is None else format(metrics['error_rate'], '.3f')}")
    if errors:
        print(f"baseline_task_queue_v2.py: run failed: {len(errors)} results lost, first: {errors[0]}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
