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

from tqengine.config import DEFAULT_HTTP_CLIENT, HTTP_CLIENTS
from tqengine.errors import ConfigError
from runners.workload import ensure_objects, make_tasks
from tqcontract.metrics import ENGINE, IMPLEMENTATIONS
from runners.envinfo import filesystem_kind, scratch_root
from runners.load import run_load

IMPLS = IMPLEMENTATIONS
LOADS = ("closed", "open")
MODES = ("block", "fail_fast")
STORES = ("local", "http")

DEFAULTS = {
    "impl": ENGINE, "count": 2000, "clients": 100, "workers": 8, "queue_size": 200, "mode": "block",
    "latency_ms": 5.0, "latency_jitter_ms": 0.0, "transient_rate": 0.0, "permanent_rate": 0.0,
    "duplicate_rate": 0.0, "object_kib": 16, "load": "closed", "rate": None, "seed": 0, "store": "local",
    "server_latency_ms": 0.0, "server_error_rate": 0.0, "workdir": None,
    # optional extras (not in the contract's list; defaults leave the implementations' own defaults)
    "max_attempts": None, "enqueue_timeout_s": None, "backoff_base_s": None, "backoff_cap_s": None,
    "chunk_size": None, "log_level": None, "result_timeout_s": 120.0, "label": None,
    "http_client": DEFAULT_HTTP_CLIENT,     # HttpObjectStore transport for store=http (engine and baseline)
}

_INT = "int"
_NUM = "number"
_RATE = "rate"


def _spec():
    return {
        "impl": ("choice", IMPLS), "count": (_INT, 1), "clients": (_INT, 1), "workers": (_INT, 1),
        "queue_size": (_INT, 1), "mode": ("choice", MODES), "latency_ms": (_NUM, 0),
        "latency_jitter_ms": (_NUM, 0), "transient_rate": (_RATE,), "permanent_rate": (_RATE,),
        "duplicate_rate": (_RATE,), "object_kib": (_NUM, 0), "load": ("choice", LOADS),
        "rate": ("optnum", 0), "seed": (_INT, None), "store": ("choice", STORES),
        "server_latency_ms": (_NUM, 0), "server_error_rate": (_RATE,), "workdir": ("optstr",), "max_attempts": ("optint", 1),
        "enqueue_timeout_s": ("optnum", 0), "backoff_base_s": ("optnum", 0), "backoff_cap_s": ("optnum", 0),
        "chunk_size": ("optint", 1), "log_level": ("optstr",), "result_timeout_s": (_NUM, 0), "label": ("optstr",),
        "http_client": ("choice", HTTP_CLIENTS),
    }


class ParamError(ValueError):
    """Bad trial params: exit 2."""


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value \
        and value not in (float("inf"), float("-inf"))


def validate(params):
    """Return the complete params (defaults filled in) or raise ParamError with a one-line reason."""
    if not isinstance(params, dict):
        raise ParamError("params must be a JSON object")
    spec = _spec()
    unknown = sorted(set(params) - set(spec))
    if unknown:
        raise ParamError(f"unknown param(s): {', '.join(map(str, unknown))}")
    out = dict(DEFAULTS)
    for key, value in params.items():
        kind = spec[key][0]
        if kind == "choice":
            if value not in spec[key][1]:
                raise ParamError(f"{key} must be one of {', '.join(spec[key][1])}, not {value!r}")
        elif kind in (_INT, "optint"):
            if value is None and kind == "optint":
                pass
            elif not isinstance(value, int) or isinstance(value, bool):
                raise ParamError(f"{key} must be an integer, not {value!r}")
            elif spec[key][1] is not None and value < spec[key][1]:
                raise ParamError(f"{key} must be >= {spec[key][1]}, not {value}")
        elif kind in (_NUM, "optnum"):
            if value is None and kind == "optnum":
                pass
            elif not _is_number(value):
                raise ParamError(f"{key} must be a finite number, not {value!r}")
            elif value < spec[key][1] or (kind == "optnum" and value == spec[key][1]):
                raise ParamError(f"{key} must be {'>' if kind == 'optnum' else '>='} {spec[key][1]}, "
                                 f"not {value}")
        elif kind == _RATE:
            if not _is_number(value) or not 0 <= value <= 1:
                raise ParamError(f"{key} must be a number within 0..1, not {value!r}")
        elif kind == "optstr":
            if value is not None and (not isinstance(value, str) or not value):
                raise ParamError(f"{key} must be a non-empty string, not {value!r}")
        out[key] = value
    if out["load"] == "open" and out["rate"] is None:
        raise ParamError("load 'open' needs a rate (tasks/s)")
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
    config = dict(max_workers=p["workers"], queue_size=p["queue_size"], mode=p["mode"],
                  latency_ms=p["latency_ms"], latency_jitter_ms=p["latency_jitter_ms"],
                  transient_rate=p["transient_rate"], permanent_rate=p["permanent_rate"], seed=p["seed"],
                  db_path=os.path.join(run_dir, "engine.sqlite3"), store_root=store_root,
                  store="http" if store_url else "local", store_url=store_url, http_client=p["http_client"],
                  log_level="WARNING")
    for key in ("max_attempts", "enqueue_timeout_s", "backoff_base_s", "backoff_cap_s", "chunk_size", "log_level"):
        if p[key] is not None:
            config[key] = p[key]
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
        tasks = make_tasks(p["count"], seed=p["seed"], object_bytes=int(p["object_kib"] * 1024),
                           duplicate_rate=p["duplicate_rate"])
        ensure_objects(tasks, store_root)
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
