"""A stand-in for runners.trial in the sweep tests: `python -m tests.fake_trial '<params json>'`.

It prints one metrics JSON (the contract's shape) computed from the params, with seeded noise, after
simulating count/1000 s of work. Special values of latency_ms select a failure:
  666  crash: a traceback on stderr, exit 1
  777  hang: start a child process (same process group) that sleeps too, write both pids to
       <sweep>/hang-pids.txt, then sleep far past any test timeout
"""
import json
import os
import random
import subprocess
import sys
import time


def metrics(params):
    impl = params["impl"]
    workers, clients = params["workers"], params["clients"]
    key = f"{params['seed']}|{impl}|{workers}|{clients}|{params['mode']}|{params['queue_size']}"
    rng = random.Random(key)
    sigma = 0.15 if impl == "engine" and params["mode"] == "fail_fast" else 0.02
    parallel = 1 if impl == "baseline" else min(workers, clients)
    thr = 200.0 * parallel * (1 + rng.gauss(0, sigma))
    p95 = (params["latency_ms"] * clients / parallel + params["latency_ms"]) * (1 + rng.gauss(0, sigma))
    count = params["count"]
    rejected = int(count * 0.1) if impl == "engine" and params["mode"] == "fail_fast" and clients > 1 else 0
    succeeded = count - rejected
    return {"impl": impl, "params": params, "tasks_submitted": count, "elapsed_s": succeeded / thr,
            "throughput_tps": thr,
            "latency_ms": {"mean": p95 * 0.6, "p50": p95 * 0.5, "p95": p95, "p99": p95 * 1.2, "max": p95 * 1.5},
            "error_rate": rejected / count,
            "counters": {"enqueued": succeeded, "dequeued": succeeded, "succeeded": succeeded, "failed": 0,
                         "retried": 0, "rejected": rejected, "duplicates": 0, "dead_lettered": 0},
            "queue_depth": {"max": None, "mean": None, "p95": None},
            "rates": {"enqueue_per_s": None, "dequeue_per_s": None}, "thread_utilization": None,
            "ceiling_tps": None, "efficiency": None, "peak_rss_mb": 12.5,
            "env": {"pid": os.getpid(), "python": sys.version.split()[0]}}


def main(argv):
    params = json.loads(argv[1])
    workdir = params.get("workdir")
    if not workdir or not os.path.isdir(workdir):
        print(f"fake trial: workdir missing: {workdir}", file=sys.stderr)
        return 2
    with open(os.path.join(workdir, "scratch.bin"), "wb") as f:
        f.write(b"x" * 1024)
    print(f"fake trial {params['impl']} starting", file=sys.stderr)
    if params["latency_ms"] == 666:
        raise RuntimeError("simulated crash in the fake trial")
    if params["latency_ms"] == 777:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        sweep_dir = os.path.dirname(os.path.dirname(workdir))
        with open(os.path.join(sweep_dir, "hang-pids.txt"), "a") as f:
            f.write(f"{os.getpid()} {child.pid}\n")
        time.sleep(600)
        return 1
    time.sleep(params["count"] / 1000.0)
    print(json.dumps(metrics(params)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
