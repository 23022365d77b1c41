"""The parameters of one trial: their types, ranges and defaults, derived from the engine's Config.

A trial parameter is either an engine setting under a lab name (`workers` is Config.max_workers; its type,
range and help are the Setting of that field) or a lab-only setting (the workload, the load, the store
server), listed once in LAB_SETTINGS. LAB_PROFILE overrides a few engine defaults for measurements (a
5 ms service time, as the user's own benchmark). The sweep grid (lab/grid.py), the trial runner
(runners/trial.py), benchmark.py and `task_queue_optimized.py --benchmark` all validate through
`check()` and fill defaults from `DEFAULTS`.
"""
from __future__ import annotations

from typing import Any

from tqcontract.metrics import ENGINE, IMPLEMENTATIONS
from tqengine.config import DEFAULTS as ENGINE_DEFAULTS
from tqengine.config import SETTINGS as ENGINE_SETTINGS
from tqengine.config import Setting

# trial parameter -> Config field
ENGINE_PARAMS = {
    "workers": "max_workers", "queue_size": "queue_size", "mode": "mode", "latency_ms": "latency_ms",
    "latency_jitter_ms": "latency_jitter_ms", "transient_rate": "transient_rate",
    "permanent_rate": "permanent_rate", "seed": "seed", "store": "store", "http_client": "http_client",
    "max_attempts": "max_attempts", "enqueue_timeout_s": "enqueue_timeout_s",
    "backoff_base_s": "backoff_base_s", "backoff_cap_s": "backoff_cap_s", "chunk_size": "chunk_size",
    "log_level": "log_level",
}

LOADS = ("closed", "open")
WORKLOADS = ("synthetic", "image")
# what `--workload` means on the command lines (benchmark.py, task_queue_optimized.py --benchmark):
# synthetic = the queue-mechanics model (tiny JPEGs, 5 ms of service time); image = real thumbnails of
# 640x480 sources, the real work alone setting the pace
WORKLOAD_PRESETS = {"synthetic": {"image_size": "tiny", "latency_ms": 5.0},
                    "image": {"image_size": "small", "latency_ms": 0.0}}


def _image_size_problem(value: str) -> str | None:
    # runners.workload imports Pillow: only when an image_size is checked
    from runners.workload import size_range
    try:
        size_range(value)
    except ValueError:
        return "must be tiny, small, large or WxH (e.g. 640x480)"
    return None


LAB_SETTINGS: dict[str, Setting] = {
    "impl": Setting("str", "implementation under test", choices=IMPLEMENTATIONS),
    "count": Setting("int", "tasks submitted in the trial", low=1, high=10_000_000),
    "clients": Setting("int", "closed loop: client threads, each submitting and waiting", low=1, high=10_000),
    "duplicate_rate": Setting("float", "share of tasks repeating an earlier task's key", low=0, high=1),
    "image_size": Setting("str", "source images: tiny (16x12..32x24), small (640x480), large (4000x3000), WxH",
                          nonempty=True, extra=_image_size_problem),
    "distinct_images": Setting("int", "how many distinct source images the tasks share (default: one per task)",
                               low=1, high=10_000_000, optional=True),
    "workload": Setting("str", "what the trial stands for: synthetic (tiny images, service time from latency_ms) "
                        "or image (real thumbnails, latency_ms 0 as a rule); a label in results",
                        choices=WORKLOADS),
    "load": Setting("str", "closed (clients wait for each answer) or open (arrivals at `rate`)", choices=LOADS),
    "rate": Setting("float", "open loop: arrivals per second", low=0, low_open=True, high=10_000_000,
                    optional=True),
    "server_latency_ms": Setting("float", "store=http: service time of each request at the server, ms",
                                 low=0, high=600_000),
    "server_error_rate": Setting("float", "store=http: share of requests the server answers 503", low=0, high=1),
    "workdir": Setting("str", "scratch folder of the trial (default: a fresh one, removed afterwards)",
                       optional=True, nonempty=True),
    "result_timeout_s": Setting("float", "seconds a client waits for one answer", low=0, low_open=True,
                                high=86_400),
    "label": Setting("str", "free text recorded with the trial", optional=True, nonempty=True),
}

# engine defaults that measurements change: a 5 ms service time per attempt (the user's benchmark)
LAB_PROFILE = {"latency_ms": 5.0}

LAB_DEFAULTS: dict[str, Any] = {
    "impl": ENGINE, "count": 2000, "clients": 100, "duplicate_rate": 0.0, "image_size": "tiny",
    "distinct_images": None, "workload": "synthetic", "load": "closed",
    "rate": None, "server_latency_ms": 0.0, "server_error_rate": 0.0, "workdir": None,
    "result_timeout_s": 120.0, "label": None,
}

SPECS: dict[str, Setting] = {**{p: ENGINE_SETTINGS[f] for p, f in ENGINE_PARAMS.items()}, **LAB_SETTINGS}
DEFAULTS: dict[str, Any] = {**{p: LAB_PROFILE.get(f, ENGINE_DEFAULTS[f]) for p, f in ENGINE_PARAMS.items()},
                            **LAB_DEFAULTS}


def check(name: str, value: Any) -> str | None:
    """Why `value` is not a valid `name` (a phrase such as "must be >= 1"), or None; KeyError if unknown."""
    return SPECS[name].problem(value)


def engine_config(params: dict[str, Any]) -> dict[str, Any]:
    """The Config fields a trial's params set (params without a Config field are left out)."""
    return {field: params[param] for param, field in ENGINE_PARAMS.items() if param in params}


def from_engine_config(config: Any) -> dict[str, Any]:
    """The trial params of a Config's engine settings (the inverse of engine_config)."""
    return {param: getattr(config, field) for param, field in ENGINE_PARAMS.items()}
