"""The command line of task_queue_optimized.py: its flags (the engine's come from each Config field's
Setting), the refusal of flags where they do not apply, and the Config they make."""
import argparse
import sys

from lab.outpaths import OutputPathError, ensure_output_file
from runners import params as trial_params
from runners.envinfo import SCRATCH_ENV
from tqengine import load_config
from tqengine.config import DEFAULTS, SETTINGS, unknown_env_names

BENCHMARK_PROFILE = trial_params.LAB_PROFILE
# flag -> Config field; type, choices and help come from the field's Setting (tqengine/config.py)
ENGINE_FLAG_NAMES = {
    "--workers": "max_workers", "--queue-size": "queue_size", "--mode": "mode",
    "--enqueue-timeout": "enqueue_timeout_s", "--max-attempts": "max_attempts", "--backoff-base": "backoff_base_s",
    "--backoff-cap": "backoff_cap_s", "--chunk-size": "chunk_size", "--latency-ms": "latency_ms",
    "--latency-jitter-ms": "latency_jitter_ms", "--transient-rate": "transient_rate",
    "--permanent-rate": "permanent_rate", "--seed": "seed", "--log-level": "log_level",
    "--store-url": "store_url", "--http-client": "http_client", "--log-file": "log_file",
    "--max-source-bytes": "max_source_bytes", "--attempt-timeout": "attempt_timeout_s",
    "--retention": "retention_s",
}


def build_parser():
    p = argparse.ArgumentParser(
        prog="task_queue_optimized.py",
        description="The optimized task queue engine: run a benchmark workload, or process a task file "
                    "with durable state (resumable after a crash).",
        epilog="Settings not given here come from TQ_* environment variables, then .env, then defaults "
               "(see .env.example).")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--benchmark", action="store_true",
                      help="run the built-in workload (closed loop of --clients) and print the figures")
    what.add_argument("--tasks", metavar="FILE", help="process the tasks in this JSON list file")
    p.add_argument("--store", metavar="DIR", help="object store root (source objects and variants/)")
    p.add_argument("--db", metavar="PATH", help="SQLite database for task state")
    p.add_argument("--json", metavar="OUT", help="write the metrics JSON here (atomically)")
    p.add_argument("--create-objects", action="store_true",
                   help="with --tasks: create the missing source objects (deterministic images at the "
                        "task's source_size, else tiny ones; an existing object is never touched) before "
                        "processing")
    b = p.add_argument_group("benchmark workload")
    b.add_argument("--count", type=int, help="tasks to submit (default 2000)")
    b.add_argument("--repeats", type=int, default=3,
                   help="runs of the benchmark, each verdict judged on their interval (default 3)")
    b.add_argument("--clients", type=int, help="closed-loop clients (default 100)")
    b.add_argument("--workload", choices=tuple(trial_params.WORKLOAD_PRESETS),
                   help="synthetic (default): tiny JPEG sources and a 5 ms service time; image: real thumbnails of "
                        "640x480 sources, latency 0")
    b.add_argument("--image-size", help="source images: tiny, small (640x480), large (4000x3000) or WxH "
                                         "(default: the workload's)")
    b.add_argument("--duplicate-rate", type=float, help="share of duplicate tasks (default 0)")
    b.add_argument("--load", choices=("closed", "open"), help="load model (default closed)")
    b.add_argument("--rate", type=float, help="open loop: arrivals per second")
    b.add_argument("--store-backend", choices=("local", "http"), default=None,
                   help="benchmark against a local directory (default) or an HTTP object store started "
                        "for the run (TQ_STORE and TQ_STORE_URL are not used by --benchmark)")
    b.add_argument("--server-latency-ms", type=float, default=None,
                   help="with --store-backend http: service time of each request at the server (default 0)")
    e = p.add_argument_group("engine (default: TQ_* environment, .env, then built-in)")
    for flag, name in ENGINE_FLAG_NAMES.items():
        spec = SETTINGS[name]
        default = BENCHMARK_PROFILE.get(name)
        shown = f"{DEFAULTS[name]!r}" + (f"; --benchmark {default!r}" if default is not None else "")
        e.add_argument(flag, dest=name, metavar=name.upper() if spec.choices is None else None,
                       type={"int": int, "float": float}.get(spec.kind, str),
                       choices=spec.choices if spec.choices and not spec.upper else None,
                       help=f"{spec.help} (TQ_{name.upper()}; default {shown})")
    return p


WORKLOAD_DEFAULTS = {"count": 2000, "clients": 100, "duplicate_rate": 0.0, "load": "closed", "workload": "synthetic"}
WORKLOAD_FLAGS = ("count", "clients", "image_size", "duplicate_rate", "load", "rate", "workload")

ENGINE_FLAGS = tuple(ENGINE_FLAG_NAMES.values())


class UsageError(Exception):
    pass


def engine_config(args, profile=None, benchmark=False):
    cli = {k: getattr(args, k) for k in ENGINE_FLAGS}
    if args.db:
        cli["db_path"] = args.db
    if args.store:
        cli["store_root"] = args.store
    if args.store_url:
        cli["store"] = "http"
    elif args.store:
        cli["store"] = "local"      # --store DIR on the command line beats TQ_STORE=http from the environment
    if benchmark:       # the benchmark picks its store with --store-backend and starts its own server
        cli["store"], cli["store_url"] = "local", ""
    cfg = load_config(cli=cli, profile=profile)
    for name in unknown_env_names(also_known=frozenset((SCRATCH_ENV,))):
        print(f"note: {name} (in the environment or .env) is not a setting; it is ignored", file=sys.stderr)
    http = args.store_backend == "http" if benchmark else cfg.store == "http"
    if args.http_client and not http:
        raise UsageError("--http-client needs an HTTP store: --store-backend http with --benchmark, "
                         "--store-url URL with --tasks")
    return cfg




def check_output_path(path, flag):
    """UsageError (exit 2, before any work) when `path` cannot take the results (lab/outpaths.py)."""
    try:
        ensure_output_file(path, flag)
    except OutputPathError as exc:
        raise UsageError(str(exc)) from None
