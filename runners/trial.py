"""One trial: `python -m runners.trial '<params json>'` (or run_trial(params) in-process).

Validates the params, builds the deterministic workload, creates the implementation, drives it with the
load harness and prints exactly one JSON document (the metrics JSON) on stdout. Anything an
implementation prints goes to stderr, so stdout stays one document.
Exit codes: 0 ok, 1 the run failed, 2 bad params.
"""
import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
import uuid

from runners import params as trial_params
from runners.envinfo import filesystem_kind, scratch_root
from runners.load import run_load
from runners.workload import ensure_objects, make_tasks
from tqengine.errors import ConfigError


class ParamError(ValueError):
    """Bad trial params: exit 2."""


def validate(params):
    """Return the complete params (defaults filled in) or raise ParamError with a one-line reason."""
    if not isinstance(params, dict):
        raise ParamError("params must be a JSON object")
    unknown = sorted(set(params) - set(trial_params.SPECS))
    if unknown:
        raise ParamError(f"unknown param(s): {', '.join(map(str, unknown))}")
    out = dict(trial_params.DEFAULTS)
    for key, value in params.items():
        problem = trial_params.check(key, value)
        if problem:
            raise ParamError(f"{key} {problem}, not {value!r}")
        out[key] = value
    if out["load"] == "open" and out["rate"] is None:
        raise ParamError("load 'open' needs a rate (tasks/s)")
    if out["backoff_cap_s"] < out["backoff_base_s"]:
        raise ParamError(f"backoff_cap_s must be >= backoff_base_s, not {out['backoff_cap_s']!r}")
    # a rate given with the closed loop is ignored (a sweep grid may cross load and rate)
    return out


def make_adapter(p, store_root, run_dir, store_url=None, http_store_cls=None):
    if p["impl"] == "baseline":
        from runners.adapters import BaselineAdapter
        store = (http_store_cls(store_url, pool_size=p["workers"], client=p["http_client"])
                 if store_url else None)
        return BaselineAdapter(store_root, workers=p["workers"], latency_ms=p["latency_ms"],
                               latency_jitter_ms=p["latency_jitter_ms"], transient_rate=p["transient_rate"],
                               permanent_rate=p["permanent_rate"], seed=p["seed"], store=store)
    from runners.adapters import EngineAdapter
    config = trial_params.engine_config(p)
    config.update(db_path=os.path.join(run_dir, "engine.sqlite3"), store_root=store_root,
                  store="http" if store_url else "local", store_url=store_url or "")
    return EngineAdapter(**config)


def service_time_ms(p):
    """The per-task service time the ceiling uses: latency_ms, except over HTTP, where an attempt cannot
    finish before its GET and its PUT have each taken server_latency_ms (the server's per-request service
    time, see docs/HTTP_STORE.md): max(latency_ms, 2 * server_latency_ms). The processor still pads each
    attempt to latency_ms; when the two requests take longer than that, it pads nothing."""
    if p["store"] == "http":
        return max(p["latency_ms"], 2.0 * p["server_latency_ms"])
    return p["latency_ms"]


def run_trial(params):
    """Run one trial in this process and return its metrics dict (ParamError for bad params; any other
    exception means the run failed). `params` in the result is the params as given, defaults filled in."""
    p = validate(params)
    server_factory = http_store_cls = None
    if p["store"] == "http":
        from runners.server_process import bucket_root, start_server_process
        from tqengine.objects.http import HttpObjectStore
        server_factory, http_store_cls = start_server_process, HttpObjectStore
    own_workdir = p["workdir"] is None
    workdir = tempfile.mkdtemp(prefix="tq-trial-", dir=scratch_root()[0]) if own_workdir \
        else os.path.abspath(p["workdir"])
    run_dir = os.path.join(workdir, "runs", f"{p['impl']}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    # source objects live in <workdir>/store; an HTTP server started on <workdir> serves that directory
    # as its bucket, so local and http trials in one workdir share the same objects
    store_root = bucket_root(workdir) if server_factory else os.path.join(workdir, "store")
    server = None
    try:
        os.makedirs(run_dir, exist_ok=True)
        os.makedirs(store_root, exist_ok=True)
        tasks = make_tasks(p["count"], seed=p["seed"], duplicate_rate=p["duplicate_rate"],
                           distinct_images=p["distinct_images"], image_size=p["image_size"])
        copy_sources(tasks, store_root, p["image_size"])
        if server_factory is not None:
            server = server_factory(workdir, latency_ms=p["server_latency_ms"],
                                    error_rate=p["server_error_rate"], seed=p["seed"])
        adapter = make_adapter(p, store_root, run_dir, server.url if server else None, http_store_cls)
        service_ms = service_time_ms(p)
        result = run_load(adapter, tasks, load=p["load"], clients=p["clients"], rate=p["rate"],
                          result_timeout_s=p["result_timeout_s"], params=p, latency_ms=service_ms,
                          impl=p["impl"])
        harness = result.setdefault("harness", {})
        harness["service_time_ms"] = service_ms
        harness["scratch_fs"] = filesystem_kind(workdir)
        if service_ms != p["latency_ms"]:
            harness["service_time_basis"] = "2 * server_latency_ms (a GET and a PUT per task over http)"
        return result
    finally:
        if server is not None:
            server.stop()
        if own_workdir:
            shutil.rmtree(workdir, ignore_errors=True)


SOURCE_CACHE = "tq-source-cache-v1"


def copy_sources(tasks, store_root, image_size):
    """Put the tasks' source images into `store_root`, made once per machine: a large source takes seconds
    to encode, and every trial of a sweep needs the same deterministic ones. They are made in a cache
    beside the scratch folders (<scratch>/tq-source-cache-v1/<image_size>/) and copied (never linked: the
    store refuses hard links) into the trial's store."""
    cache = os.path.join(scratch_root()[0], SOURCE_CACHE, str(image_size).replace("/", "_"))
    ensure_objects(tasks, cache, image_size=image_size)
    seen = set()
    for task in tasks:
        key = task["image_key"]
        if key in seen:
            continue
        seen.add(key)
        target = os.path.join(store_root, *key.split("/"))
        if not os.path.exists(target):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copyfile(os.path.join(cache, *key.split("/")), target)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m runners.trial '<params json>'", file=sys.stderr)
        return 2
    try:
        params = json.loads(argv[0])
    except ValueError as exc:
        print(f"params are not valid JSON: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    real_stdout = sys.stdout
    try:
        with contextlib.redirect_stdout(sys.stderr):
            result = run_trial(params)
    except (ParamError, ConfigError) as exc:
        print(f"bad params: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        import traceback
        traceback.print_exc(file=sys.stderr)
        print(f"trial failed: {type(exc).__name__}: {exc}"[:500], file=sys.stderr)
        return 1
    real_stdout.write(json.dumps(result, sort_keys=True) + "\n")
    real_stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
