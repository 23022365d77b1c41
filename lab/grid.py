"""The sweep grid: load, validate, expand into configurations and order the trials.

A grid file is one JSON object:

    {"name": "default", "description": "...", "implementations": ["baseline", "engine"],
     "repeats": 3, "seed": 1, "timeout_s": 120,
     "fixed": {"count": 300, "latency_ms": 5, "image_size": "tiny", "load": "closed", ...},
     "axes":  {"workers": [2, 8, 32], "queue_size": [16, 256], "mode": ["block", "fail_fast"],
               "error_rate": [0, 0.05], "clients": [10, 100], "store": ["local"]}}

The trial parameters in PARAM_ORDER may be fixed or an axis, never both; `error_rate` is the grid's name
for the trial's `transient_rate`. Their types, ranges and defaults are the trial's (runners/params.py,
derived from the engine's Config), so a grid that validates runs. Validation raises GridError with a
one-line message that starts with the offending key.
"""
import hashlib
import itertools
import json
import math
import random
import re

from runners import params as param_specs
from tqcontract.metrics import IMPLEMENTATIONS, canonical_impl

# Trial parameters the grid may set, in the order they appear in configurations and CSV columns.
PARAM_ORDER = ("workers", "queue_size", "mode", "transient_rate", "permanent_rate", "clients", "store",
               "count", "latency_ms", "latency_jitter_ms", "duplicate_rate", "image_size", "distinct_images",
               "workload", "load", "rate", "server_latency_ms", "http_client")

# Parameters named in neither `fixed` nor `axes` take the trial's defaults (runners/params.py).
DEFAULTS = {k: param_specs.DEFAULTS[k] for k in PARAM_ORDER}

ALIASES = {"error_rate": "transient_rate"}

TOP_KEYS = {"name": "str", "description": "str", "implementations": "list", "repeats": "int",
            "seed": "int", "timeout_s": "number", "fixed": "dict", "axes": "dict"}
REQUIRED_TOP = ("name", "axes")


class GridError(ValueError):
    """A grid that must not run; str(error) is the one line to print."""


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v):
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def _problem(key, value):
    """Why a grid value is not valid for trial parameter `key` (None when it is), with the value shown."""
    problem = param_specs.check(key, value)
    return None if problem is None else f"{problem}, got {json.dumps(value)}"


_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def _canonical_param(key, where):
    canon = ALIASES.get(key, key)
    if canon not in PARAM_ORDER:
        allowed = ", ".join(sorted(set(PARAM_ORDER) | set(ALIASES)))
        raise GridError(f"{where}.{key}: unknown key (allowed: {allowed})")
    return canon


def validate(raw, repeats=None, seed=None):
    """Check a parsed grid; return the effective grid (aliases resolved, defaults filled, overrides applied).

    The effective grid: {"name", "description", "implementations", "repeats", "seed", "timeout_s",
    "fixed": {every parameter not on an axis}, "axes": {param: [values]} in PARAM_ORDER,
    "axis_names": {param: name as written in the grid}}.
    """
    if not isinstance(raw, dict):
        raise GridError("grid: must be a JSON object")
    for key in raw:
        if key not in TOP_KEYS:
            raise GridError(f"{key}: unknown key (allowed: {', '.join(sorted(TOP_KEYS))})")
    for key in REQUIRED_TOP:
        if key not in raw:
            raise GridError(f"{key}: missing")
    kinds = {"str": (str,), "list": (list,), "dict": (dict,)}
    for key, kind in TOP_KEYS.items():
        if key not in raw:
            continue
        value = raw[key]
        if kind == "int":
            ok = _is_int(value)
        elif kind == "number":
            ok = _is_number(value)
        else:
            ok = isinstance(value, kinds[kind])
        if not ok:
            raise GridError(f"{key}: must be {'an' if kind == 'int' else 'a'} {kind}, got {json.dumps(value)}")

    name = raw["name"]
    if not _NAME_RE.match(name):
        raise GridError(f"name: must be 1-100 of letters, digits, '_', '.', '-' (it names the output "
                        f"folder), got {json.dumps(name)}")
    impls = raw.get("implementations", list(IMPLEMENTATIONS))
    if not impls:
        raise GridError("implementations: must not be empty")
    impls = [canonical_impl(i) if isinstance(i, str) else i for i in impls]   # "optimized" is the engine
    for impl in impls:
        if impl not in IMPLEMENTATIONS:
            raise GridError(f"implementations: unknown implementation {json.dumps(impl)} "
                            f"(allowed: {', '.join(IMPLEMENTATIONS)})")
    if len(set(impls)) != len(impls):
        raise GridError("implementations: listed twice")
    impls = [i for i in IMPLEMENTATIONS if i in impls]  # canonical order: baseline first

    if repeats is None:
        repeats = raw.get("repeats", 3)
    if not _is_int(repeats) or not 1 <= repeats <= 1000:
        raise GridError(f"repeats: must be an integer between 1 and 1000, got {json.dumps(repeats)}")
    if seed is None:
        seed = raw.get("seed", 0)
    if not _is_int(seed) or not 0 <= seed < 2 ** 63:
        raise GridError(f"seed: must be a non-negative integer, got {json.dumps(seed)}")
    timeout_s = raw.get("timeout_s", 300)
    if not 0 < timeout_s <= 86_400:
        raise GridError(f"timeout_s: must be > 0 and <= 86400, got {timeout_s}")

    fixed = {}
    for key, value in raw.get("fixed", {}).items():
        canon = _canonical_param(key, "fixed")
        if canon in fixed:
            raise GridError(f"fixed.{key}: given twice (error_rate is transient_rate)")
        problem = _problem(canon, value)
        if problem:
            raise GridError(f"fixed.{key}: {problem}")
        fixed[canon] = value

    axes, axis_names = {}, {}
    if not raw["axes"]:
        raise GridError("axes: must name at least one axis")
    for key, values in raw["axes"].items():
        canon = _canonical_param(key, "axes")
        if canon in axes:
            raise GridError(f"axes.{key}: given twice (error_rate is transient_rate)")
        if canon in fixed:
            raise GridError(f"axes.{key}: also in fixed; put it in one place")
        if not isinstance(values, list):
            raise GridError(f"axes.{key}: must be a list of values, got {json.dumps(values)}")
        if not values:
            raise GridError(f"axes.{key}: empty axis")
        for value in values:
            problem = _problem(canon, value)
            if problem:
                raise GridError(f"axes.{key}: {problem}")
        if len({json.dumps(v) for v in values}) != len(values):
            raise GridError(f"axes.{key}: repeated value")
        axes[canon] = list(values)
        axis_names[canon] = key

    full_fixed = {k: v for k, v in DEFAULTS.items() if k not in axes}
    full_fixed.update(fixed)
    # Cross-parameter checks, over every value a trial can see.
    loads = axes.get("load", [full_fixed.get("load")])
    rates = axes.get("rate", [full_fixed.get("rate")])
    if "open" in loads and any(r is None for r in rates):
        raise GridError("rate: load 'open' needs a rate (tasks per second) > 0")
    if "open" not in loads and any(r is not None for r in rates):
        raise GridError("rate: applies to load 'open' only (this grid is closed loop)")
    stores = axes.get("store", [full_fixed.get("store")])
    if "http" not in stores:
        for key in ("http_client", "server_latency_ms"):
            if key in axes and len(axes[key]) > 1:
                raise GridError(f"axes.{axis_names[key]}: applies to store 'http' only (this grid uses the "
                                f"local store, so its trials would all be the same)")
    ordered_axes = {k: axes[k] for k in PARAM_ORDER if k in axes}
    return {"name": name, "description": raw.get("description", ""), "implementations": impls,
            "repeats": repeats, "seed": seed, "timeout_s": timeout_s,
            "fixed": {k: full_fixed[k] for k in PARAM_ORDER if k in full_fixed},
            "axes": ordered_axes,
            "axis_names": {k: axis_names[k] for k in ordered_axes}}


def load(path, repeats=None, seed=None):
    """Read and validate a grid file; GridError (one line) on any problem."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise GridError(f"grid: file not found: {path}") from None
    except OSError as exc:
        raise GridError(f"grid: cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise GridError(f"grid: {path} is not UTF-8 text (byte {exc.start})") from None
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise GridError(f"grid: {path} is not valid JSON ({exc})") from None
    return validate(raw, repeats=repeats, seed=seed)


def canonical_json(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def grid_hash(grid):
    """Identity of a grid for resuming: everything but `repeats` (more repeats extend a sweep)."""
    ident = {k: v for k, v in grid.items() if k not in ("repeats", "description")}
    return hashlib.sha256(canonical_json(ident).encode()).hexdigest()[:16]


def configurations(grid):
    """The cross product of the axes: a list of {param: value} dicts, in a stable order."""
    keys = list(grid["axes"])
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(grid["axes"][k] for k in keys))]


def config_id(config):
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()[:10]


def trial_seed(grid, repeat):
    """The workload/fault seed of one repeat: the same for both implementations of a configuration (so
    they see the same tasks and the same injected faults) and for every configuration of a round."""
    return grid["seed"] * 1000 + repeat


def trial_params(grid, config, impl, repeat):
    """The trial parameters (without `workdir`, which depends on where the sweep writes)."""
    params = dict(grid["fixed"])
    params.update(config)
    if params.get("rate") is None or params.get("load") != "open":
        params.pop("rate", None)  # the trial takes a rate for the open loop only
    params["impl"] = impl
    params["seed"] = trial_seed(grid, repeat)
    return params


def trial_id(params, repeat):
    """Stable id of a trial: hash of its full parameters (configuration + fixed settings + impl + seed)
    and its repeat index."""
    ident = {"params": params, "repeat": repeat}
    return hashlib.sha256(canonical_json(ident).encode()).hexdigest()[:16]


def plan(grid):
    """Every trial in run order: a list of dicts {id, impl, repeat, config, config_id, params, order}.

    Each repeat is one round over all configurations in an order shuffled with random.Random(seed);
    within a configuration the implementations run back to back, their order drawn from the same
    generator, so slow drift of the machine lands on both sides of a ratio alike.
    """
    rng = random.Random(grid["seed"])
    configs = configurations(grid)
    trials = []
    for repeat in range(grid["repeats"]):
        order = list(range(len(configs)))
        rng.shuffle(order)
        for index in order:
            config = configs[index]
            impls = list(grid["implementations"])
            rng.shuffle(impls)
            for impl in impls:
                params = trial_params(grid, config, impl, repeat)
                trials.append({"id": trial_id(params, repeat), "impl": impl, "repeat": repeat,
                               "config": config, "config_id": config_id(config), "params": params,
                               "order": len(trials)})
    return trials
