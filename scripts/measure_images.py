#!/usr/bin/env python3
"""Measurements behind docs/IMAGES.md (issue 10), until the lab has a `workload`/`image_size` axis.

    .venv/bin/python scripts/measure_images.py cpu        # CPU ms per 200x200 thumbnail, small/large x JPEG/PNG/WebP
    .venv/bin/python scripts/measure_images.py gil        # the same work on 1 thread and on 2: does Pillow overlap?
    .venv/bin/python scripts/measure_images.py compare [--sizes small,large] [--stores local,http] [--repeats N]
                                                          # engine vs baseline, 100 clients, real thumbnails

`compare` runs each trial in a fresh interpreter through runners.trial.run_trial, the image size and the
number of distinct sources as trial parameters and the variant sizes given to make_tasks (the one thing
the trial cannot be told); sources are created once per size in a shared
workdir under the scratch root and reused by every trial of that size. Prints one line per trial and the
ratios; nothing is written outside the scratch directory, which is removed at the end.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

COUNTS = {"tiny": 600, "small": 300, "large": 24}
DISTINCT = {"tiny": None, "small": 30, "large": 6}     # large sources are slow to create: few, many sizes
SIZES = ("100x100", "160x120", "200x200", "240x180", "320x240", "400x300", "480x360", "640x480")


def _thumb(data, box=(200, 200)):
    from tqengine import transform
    made = transform.make_variant([data[i:i + 65536] for i in range(0, len(data), 65536)], *box)
    made.close()


def cmd_cpu(args):
    from runners.workload import draw_size, image_bytes
    print(f"{'size':6} {'format':6} {'source':>10} {'bytes':>9} {'cpu ms median':>14} {'wall ms median':>15}")
    for size in ("tiny", "small", "large"):
        for ext, fmt in (("jpg", "JPEG"), ("png", "PNG"), ("webp", "WebP")):
            key = f"measure/{size}.{ext}"
            w, h = draw_size(key, size)
            data = image_bytes(key, w, h)
            _thumb(data)
            n = 5 if size == "large" else 40
            cpu, wall = [], []
            for _ in range(n):
                c, t = time.process_time(), time.perf_counter()
                _thumb(data)
                cpu.append(time.process_time() - c)
                wall.append(time.perf_counter() - t)
            print(f"{size:6} {fmt:6} {f'{w}x{h}':>10} {len(data):9d} {statistics.median(cpu) * 1000:14.2f} "
                  f"{statistics.median(wall) * 1000:15.2f}")


def cmd_gil(args):
    from runners.workload import draw_size, image_bytes
    for size, ext, n in (("large", "jpg", 16), ("large", "png", 8), ("small", "jpg", 200), ("small", "webp", 100)):
        key = f"measure/gil.{ext}"
        data = image_bytes(key, *draw_size(key, size))
        _thumb(data)
        results = {}
        for threads in (1, 2):
            per = n // threads

            def work(per=per, data=data):
                for _ in range(per):
                    _thumb(data)

            pool = [threading.Thread(target=work) for _ in range(threads)]
            started, cpu = time.perf_counter(), time.process_time()
            for t in pool:
                t.start()
            for t in pool:
                t.join()
            wall = time.perf_counter() - started
            results[threads] = (n / wall, (time.process_time() - cpu) / wall)
        print(f"{size} {ext}: 1 thread {results[1][0]:.1f}/s, 2 threads {results[2][0]:.1f}/s, speed-up "
              f"{results[2][0] / results[1][0]:.2f}x; cores busy {results[1][1]:.2f} vs {results[2][1]:.2f} "
              f"(2.00 = both threads running at once all the time)")


TRIAL = r"""
import functools, json, sys
sys.path.insert(0, sys.argv[1])
import runners.trial as trial
from runners import workload
sizes = tuple(sys.argv[3].split(","))
trial.make_tasks = functools.partial(workload.make_tasks, sizes=sizes)
print(json.dumps(trial.run_trial(json.loads(sys.argv[2]))))
"""


def cmd_compare(args):
    from runners.envinfo import scratch_root
    base = tempfile.mkdtemp(prefix="tq-images-", dir=scratch_root()[0])
    try:
        rows = []
        for size in args.sizes.split(","):
            for store in args.stores.split(","):
                workdir = os.path.join(base, size)
                for repeat in range(args.repeats):
                    for impl in (("baseline", "engine") if repeat % 2 == 0 else ("engine", "baseline")):
                        params = {"impl": impl, "count": COUNTS[size], "clients": args.clients,
                                  "workers": args.workers, "queue_size": 256, "latency_ms": 0, "store": store,
                                  "server_latency_ms": 5 if store == "http" else 0, "seed": 1,
                                  "image_size": size, "distinct_images": DISTINCT[size], "workdir": workdir}
                        proc = subprocess.run([sys.executable, "-c", TRIAL, ROOT, json.dumps(params), ",".join(SIZES)],
                                              capture_output=True, text=True, timeout=600)
                        if proc.returncode != 0:
                            print(f"trial failed: {impl} {size} {store}: {proc.stderr[-800:]}", file=sys.stderr)
                            return 1
                        doc = json.loads(proc.stdout.strip().splitlines()[-1])
                        row = (size, store, impl, doc["throughput_tps"], doc["latency_ms"]["p95"],
                               doc["error_rate"], doc.get("peak_rss_mb"))
                        rows.append(row)
                        print(f"{size:6} {store:5} {impl:8} {row[3]:8.1f} tasks/s  P95 {row[4]:9.1f} ms  "
                              f"errors {row[5]:.3f}  peak RSS {row[6] or 0:.0f} MB", flush=True)
        print()
        for size in args.sizes.split(","):
            for store in args.stores.split(","):
                def mean(impl, col, size=size, store=store):
                    return statistics.fmean(r[col] for r in rows if r[:3] == (size, store, impl))
                print(f"{size:6} {store:5} engine/baseline throughput {mean('engine', 3) / mean('baseline', 3):.2f}x, "
                      f"P95 {mean('engine', 4) / mean('baseline', 4):.2f}x "
                      f"(engine {mean('engine', 3):.1f}/s, baseline {mean('baseline', 3):.1f}/s)")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(prog="measure_images.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("cpu", help="CPU per thumbnail")
    sub.add_parser("gil", help="1 thread vs 2 threads")
    c = sub.add_parser("compare", help="engine vs baseline on real thumbnails")
    c.add_argument("--sizes", default="small,large")
    c.add_argument("--stores", default="local,http")
    c.add_argument("--clients", type=int, default=100)
    c.add_argument("--workers", type=int, default=8)
    c.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)
    return {"cpu": cmd_cpu, "gil": cmd_gil, "compare": cmd_compare}[args.cmd](args) or 0


if __name__ == "__main__":
    sys.exit(main())
