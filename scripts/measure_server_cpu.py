#!/usr/bin/env python3
"""The HTTP object server's own CPU per task: one GET of a source and one PUT of its variant, keyed as the
workload keys them (`img/<seed>/<n>.jpg`, `variants/img/<seed>/<n>.jpg@200x200`).

    .venv/bin/python scripts/measure_server_cpu.py [--tasks 3000] [--repeats 5] [--bytes 2048]

Starts the server as a child process (runners.server_process, no latency), drives it from one thread with
HttpObjectStore (stdlib client) and reads the server process's user + system CPU from /proc (Linux) before
and after each repeat. Prints the CPU per task of each repeat and their median. Everything lives in a
temporary folder under the benchmarks' scratch root (runners.envinfo: /dev/shm, or $TQ_SCRATCH_DIR),
removed at the end.
"""
import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from runners.envinfo import scratch_root  # noqa: E402 (after the path is set)
from runners.server_process import start_server_process  # noqa: E402
from tqengine.objects.http import HttpObjectStore  # noqa: E402


def process_cpu_s(pid):
    """User + system CPU seconds of process `pid` (fields 14 and 15 of /proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=3000, help="GET + PUT pairs per repeat (default 3000)")
    parser.add_argument("--repeats", type=int, default=5, help="repeats (default 5)")
    parser.add_argument("--bytes", type=int, default=2048, help="size of each source and variant (default 2048)")
    args = parser.parse_args(argv)
    if args.tasks < 1 or args.repeats < 1 or args.bytes < 0:
        parser.error("--tasks and --repeats must be >= 1, --bytes >= 0")
    if not os.path.exists("/proc/self/stat"):
        print("measure_server_cpu: needs /proc (Linux)", file=sys.stderr)
        return 2
    work = tempfile.mkdtemp(prefix="tq-server-cpu-", dir=scratch_root()[0])
    payload = os.urandom(args.bytes)
    try:
        server = start_server_process(work)
        try:
            with HttpObjectStore(server.url, pool_size=1) as store:
                keys = [f"img/0/{n:06d}.jpg" for n in range(args.tasks)]
                for key in keys:
                    store.write_all(key, payload)
                per_task = []
                for repeat in range(args.repeats):
                    cpu0, wall0 = process_cpu_s(server.pid), time.perf_counter()
                    for key in keys:
                        data = store.read_all(key)
                        store.write_all(f"variants/{key}@200x200", data)
                    cpu, wall = process_cpu_s(server.pid) - cpu0, time.perf_counter() - wall0
                    per_task.append(cpu / args.tasks * 1e6)
                    print(f"repeat {repeat}: server CPU {per_task[-1]:.0f} us per task, "
                          f"wall {wall / args.tasks * 1e6:.0f} us per task", flush=True)
                print(f"median server CPU per task: {statistics.median(per_task):.0f} us "
                      f"({args.repeats} repeats of {args.tasks} tasks)")
        finally:
            server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
