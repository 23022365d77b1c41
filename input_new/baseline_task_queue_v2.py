#!/usr/bin/env python3
"""The "before" task queue: a naive thread-pool image-variant queue, kept honest as the baseline.

Every gain of the engine (tqengine) is measured against this file, so it does the same work per task
(read the source image, make the same thumbnail as tqengine.transform: EXIF orientation, fit within WxH,
JPEG draft decoding, same filter and encoder settings, the source's sha256 recorded in the variant; write
it; seeded latency and faults) and keeps the defects a first version really has, no worse:

  * one global threading.Lock held around dequeue, processing (decode, resize, encode, I/O and the
    injected latency) and bookkeeping, so the workers run one task at a time whatever their number;
  * an unbounded queue (a deque) that idle workers poll with a short sleep;
  * no idempotency (a duplicate task is processed again), no retries (a transient error is final);
  * whole objects read into memory, output written straight to its final path (not atomic);
  * no metrics beyond the counters `processed` and `failed`; main() measures around it.

See input_new/notes.md for where each defect lives and what it costs. Standard library and Pillow only,
and it imports nothing of the project: the transform and the fault plan below are deliberate copies of
docs/CONTRACTS.md and tqengine.transform, and the sample images come from generate_tasks.py beside it
(loaded by path) so the file stays standalone.

Run `python input_new/baseline_task_queue_v2.py --help` for the command line.

Why one module of ~600 lines: the baseline is the user's single file by design (it stands alone, with its
own copies of what it needs), so it stays one file.
"""
import argparse
import collections
import hashlib
import importlib.util
import io
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

from PIL import Image, PngImagePlugin, UnidentifiedImageError

POLL_INTERVAL_S = 0.002     # how long an idle worker sleeps before looking at the queue again
_VARIANT = re.compile(r"([0-9]{1,5})x([0-9]{1,5})")
TINY = ((16, 12), (32, 24))  # the size range of generated sample images (runners.workload's "tiny", JPEG)


# ---------------------------------------------------------------------------------------------------
# Deliberate copies of the shared contract (docs/CONTRACTS.md, tqengine/transform.py, tqengine/faults.py,
# tqengine/tasks.py), so this file runs alone. tests/test_baseline.py checks they agree with the engine.

class TaskFailed(Exception):
    """Why one task failed; its message becomes the result's "error"."""


ACCEPTED_FORMATS = ["JPEG", "PNG", "WEBP", "GIF", "BMP"]
OUTPUT_FORMATS = {"JPEG": "JPEG", "MPO": "JPEG", "PNG": "PNG", "WEBP": "WEBP"}
SUPPORTED_MODES = {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"}
UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
           5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
           8: Image.Transpose.ROTATE_90}
XMP = ('<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
       '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about="" '
       'xmlns:tq="urn:task-queue-lab:1" tq:sourceSha256="{digest}"/></rdf:RDF></x:xmpmeta>'
       '<?xpacket end="r"?>')


def fit_within(width, height, box_w, box_h):
    scale = min(box_w / width, box_h / height, 1.0)
    if scale >= 1.0:
        return width, height
    out_w, out_h = round(width * scale), round(height * scale)
    if out_w < 1 or out_h < 1:
        raise TaskFailed(f"ZeroSizedVariant: a {width}x{height} source fitted within {box_w}x{box_h} would be "
                         f"{out_w}x{out_h} pixels")
    return min(out_w, box_w), min(out_h, box_h)


def _orientation(im):
    try:
        value = im.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - a damaged EXIF block says nothing about orientation
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _swap(size, orientation):
    return (size[1], size[0]) if orientation in (5, 6, 7, 8) else size


def transform(width, height, source, quality=85, max_pixels=89_478_485):
    """The variant's bytes for a source held whole in memory (the same steps as tqengine.transform)."""
    digest = hashlib.sha256(source).hexdigest()
    if not source:
        raise TaskFailed("NotAnImage: the source is empty (0 bytes)")
    try:
        im = Image.open(io.BytesIO(source), formats=ACCEPTED_FORMATS)
        if im.width * im.height > max_pixels:
            raise TaskFailed(f"DecompressionBomb: the source is {im.width}x{im.height} pixels, over {max_pixels}")
        if im.mode not in SUPPORTED_MODES:
            raise TaskFailed(f"UnsupportedImageMode: the source has pixel mode {im.mode!r}")
        fmt = im.format
        orientation = _orientation(im) if fmt in ("JPEG", "MPO") else 1
        target = _swap(fit_within(*_swap(im.size, orientation), width, height), orientation)
        if fmt in ("JPEG", "MPO") and target != im.size:
            im.draft(None, (int(target[0] * 2.0), int(target[1] * 2.0)))
        im.load()
        if fmt not in ("JPEG", "MPO"):
            orientation = _orientation(im)
            target = _swap(fit_within(*_swap(im.size, orientation), width, height), orientation)
    except TaskFailed:
        raise
    except UnidentifiedImageError:
        raise TaskFailed("NotAnImage: the source is not a JPEG, PNG, WebP, GIF or BMP image") from None
    except Image.DecompressionBombError as exc:
        raise TaskFailed(f"DecompressionBomb: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as exc:
        kind = "ImageTruncated" if isinstance(exc, EOFError) or "truncated" in str(exc) else "ImageCorrupt"
        raise TaskFailed(f"{kind}: {' '.join(str(exc).split())[:300]}") from None
    out_format = OUTPUT_FORMATS.get(fmt, "PNG")
    icc = im.info.get("icc_profile") if im.mode != "CMYK" else None
    if im.mode in ("P", "PA"):
        frame = im.convert("RGBA" if (im.mode == "PA" or "transparency" in im.info) else "RGB")
    elif im.mode in ("L", "LA", "RGB", "RGBA"):
        frame = im
    else:
        frame = im.convert({"1": "L", "La": "LA", "RGBa": "RGBA"}.get(im.mode, "RGB"))
    if frame.size != target:
        frame = frame.resize(target, Image.Resampling.BICUBIC, reducing_gap=2.0)
    if orientation in UPRIGHT:
        frame = frame.transpose(UPRIGHT[orientation])
    if out_format == "JPEG" and frame.mode in ("LA", "RGBA"):
        base = Image.new(frame.mode[:-1], frame.size, 255 if frame.mode == "LA" else (255, 255, 255))
        base.paste(frame, mask=frame.getchannel("A"))
        frame = base
    params = {"icc_profile": icc} if icc else {}
    if out_format == "JPEG":
        params.update(quality=quality, comment=f"tq:sourceSha256={digest}".encode("ascii"))
    elif out_format == "WEBP":
        params.update(quality=quality, method=2, xmp=XMP.format(digest=digest).encode("utf-8"))
    else:
        info = PngImagePlugin.PngInfo()
        info.add_text("tq:sourceSha256", digest)
        params.update(pnginfo=info, compress_level=3)
    out = io.BytesIO()
    frame.save(out, format=out_format, **params)
    return out.getvalue()


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
                 permanent_rate=0.0, seed=0, store=None, image_quality=85, max_image_pixels=89_478_485):
        self.store_root = store_root
        self.workers = workers
        self.latency_ms = latency_ms
        self.latency_jitter_ms = latency_jitter_ms
        self.transient_rate = transient_rate
        self.permanent_rate = permanent_rate
        self.seed = seed
        self.store = store
        self.image_quality = image_quality
        self.max_image_pixels = max_image_pixels
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
        width, height = (int(side) for side in variant.split("x"))
        self._write(output_key, transform(width, height, source, self.image_quality, self.max_image_pixels))
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
    p.add_argument("--image-quality", type=int, default=85,
                   help="JPEG/WebP quality of the variants, 1..100 (default 85, as the engine)")
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
    if not 1 <= args.image_quality <= 100:
        raise BadInput("--image-quality must be within 1..100")
    if not args.result_timeout > 0:
        raise BadInput("--result-timeout must be > 0")


def check_paths(args):
    """The output paths, before any work: one clear line now, not a run lost at its end."""
    if args.json:
        if os.path.isdir(args.json):
            raise BadInput(f"--json {args.json}: is a folder; give a file name")
        _check_folder(os.path.dirname(os.path.abspath(args.json)), "--json", args.json)
    if args.store:
        if os.path.exists(args.store) and not os.path.isdir(args.store):
            raise BadInput(f"--store {args.store}: exists and is not a folder")
        _check_folder(os.path.abspath(args.store), "--store", args.store)


def _check_folder(folder, flag, given):
    """`folder` is, or can be made under, a folder we may write in."""
    existing = folder
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise BadInput(f"{flag} {given}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise BadInput(f"{flag} {given}: cannot write in {existing}")


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


def _sibling(name):
    """The module `name`.py beside this file, loaded by path (it imports nothing of the project either)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"_baseline_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def generate_tasks(count, seed, sizes=("100x100", "200x200", "400x300", "800x600")):
    """The same tasks as runners.workload.make_tasks(count, seed): tiny real JPEGs."""
    gen = _sibling("generate_tasks")
    tasks = []
    for i in range(count):
        key = f"img/{seed}/{i:06d}.jpg"
        width, height = gen.draw_size(key, TINY)
        tasks.append({"task_id": f"t{i:06d}", "image_key": key, "size": sizes[i % len(sizes)],
                      "source_size": f"{width}x{height}"})
    return tasks


def create_objects(tasks, root, default_bytes=None):
    """Create the source image of every task whose object does not exist yet (at its source_size, else a
    tiny one); an existing file is never touched, whatever it holds. Skips unusable keys."""
    gen = _sibling("generate_tasks")
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
        path = os.path.join(root, *key.split("/"))
        real_root, real_dir = os.path.realpath(root), os.path.realpath(os.path.dirname(path))
        if os.path.lexists(path) or not (real_dir == real_root or real_dir.startswith(real_root + os.sep)):
            continue                           # a user's photo stays as it is; nothing is made through a link
        size = gen.parse_wxh(task["source_size"]) if isinstance(task.get("source_size"), str) else None
        width, height = size or gen.draw_size(key, TINY)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tq-tmp"
        with open(tmp, "wb") as f:
            f.write(gen.image_bytes(key, width, height))
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
                   "permanent_rate": args.permanent_rate, "image_quality": args.image_quality, "load": "closed",
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
        check_paths(args)
        if args.tasks:
            tasks = load_tasks(args.tasks)
        else:
            tasks = generate_tasks(args.count, args.seed)
    except BadInput as exc:
        print(f"baseline_task_queue_v2.py: error: {exc}", file=sys.stderr)
        return 2

    store_root = args.store or tempfile.mkdtemp(prefix="tq-baseline-")
    queue = None
    try:
        os.makedirs(store_root, exist_ok=True)
        create_objects(tasks, store_root)
        queue = BaselineTaskQueue(store_root, workers=args.workers, latency_ms=args.latency_ms,
                                  latency_jitter_ms=args.latency_jitter_ms, transient_rate=args.transient_rate,
                                  image_quality=args.image_quality,
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
