"""Every knob of the engine in one dataclass, and where each value comes from.

Precedence, highest first: command line > environment (TQ_<FIELD>) > .env file (python-dotenv) >
a caller's profile defaults (e.g. the benchmark's latency) > the dataclass defaults. Invalid values
raise ConfigError with one line naming the key; the command lines turn that into exit code 2.
"""
import dataclasses
import math
import os
from dataclasses import dataclass, fields

from .errors import ConfigError

MODES = ("block", "fail_fast")
STORES = ("local", "http")
HTTP_CLIENTS = ("stdlib", "requests")
DEFAULT_HTTP_CLIENT = "stdlib"     # why not requests: docs/HTTP_STORE.md, "Which client is the default"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass
class Config:
    max_workers: int = 8            # worker threads in the ThreadPoolExecutor
    queue_size: int = 200           # queue.Queue(maxsize=...): the bound that gives backpressure
    mode: str = "block"             # block: wait up to enqueue_timeout_s, then reject; fail_fast: reject at once
    enqueue_timeout_s: float = 10.0
    max_attempts: int = 3           # attempts per task, first one included
    backoff_base_s: float = 0.05    # full-jitter backoff: U(0, min(cap, base * 2**(n-1)))
    backoff_cap_s: float = 2.0
    db_path: str = "data/run/tasks.db"
    store_root: str = "data/run/store"
    store: str = "local"            # local directory, or http (lab objects serve)
    store_url: str = ""             # base URL of the HTTP object store when store=http
    # store=http transport: stdlib (http.client pool) or requests (one shared Session, stream=True); the
    # same behaviour and errors, stdlib with less CPU per call (docs/HTTP_STORE.md)
    http_client: str = DEFAULT_HTTP_CLIENT
    chunk_size: int = 64 * 1024     # streaming chunk, bytes
    latency_ms: float = 0.0         # injected mean service latency per attempt (slept like real I/O)
    latency_jitter_ms: float = 0.0  # uniform +- jitter around latency_ms
    transient_rate: float = 0.0     # share of attempts failing with a transient (retried) fault
    permanent_rate: float = 0.0     # share of tasks failing with a permanent fault
    seed: int = 0                   # seed of the fault model
    log_level: str = "WARNING"      # JSON-lines logs on stderr; WARNING keeps benchmarks quiet
    log_file: str = ""              # JSON-lines log file instead of stderr
    shutdown_timeout_s: float = 60.0  # graceful shutdown waits at most this long for queued work
    recover: bool = True            # resume tasks an earlier process left unfinished
    store_token: str = ""           # store=http: bearer token the object server wants (its --token), if any

    def validate(self):
        def need(cond, key, msg):
            if not cond:
                raise ConfigError(f"invalid {key}: {msg} (got {getattr(self, key)!r})")
        for f in fields(self):      # the right type first, so the checks below compare like with like
            value, kind = getattr(self, f.name), (f.type if isinstance(f.type, str) else f.type.__name__)
            if kind == "int":
                need(isinstance(value, int) and not isinstance(value, bool), f.name, "must be an integer")
            elif kind == "float":
                need(isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
                     f.name, "must be a finite number")
            elif kind == "str":
                need(isinstance(value, str), f.name, "must be text")
            elif kind == "bool":
                need(isinstance(value, bool), f.name, "must be true or false")
        need(self.max_workers >= 1, "max_workers", "must be a positive integer")
        need(self.max_workers <= 1024, "max_workers", "must be at most 1024")
        need(self.queue_size >= 1, "queue_size", "must be a positive integer")
        need(self.mode in MODES, "mode", f"must be one of {', '.join(MODES)}")
        need(self.enqueue_timeout_s >= 0, "enqueue_timeout_s", "must be >= 0")
        need(self.max_attempts >= 1, "max_attempts", "must be >= 1")
        need(self.backoff_base_s >= 0, "backoff_base_s", "must be >= 0")
        need(self.backoff_cap_s >= self.backoff_base_s, "backoff_cap_s", "must be >= backoff_base_s")
        need(bool(self.db_path), "db_path", "must not be empty")
        need(bool(self.store_root), "store_root", "must not be empty")
        need(self.store in STORES, "store", f"must be one of {', '.join(STORES)}")
        need(self.store != "http" or bool(self.store_url), "store_url", "is required when store=http")
        need(self.http_client in HTTP_CLIENTS, "http_client", f"must be one of {', '.join(HTTP_CLIENTS)}")
        need(self.chunk_size >= 1, "chunk_size", "must be a positive integer")
        need(self.latency_ms >= 0, "latency_ms", "must be >= 0")
        need(self.latency_jitter_ms >= 0, "latency_jitter_ms", "must be >= 0")
        for key in ("transient_rate", "permanent_rate"):
            need(0.0 <= getattr(self, key) <= 1.0, key, "must be within [0, 1]")
        need(self.log_level.upper() in LOG_LEVELS, "log_level", f"must be one of {', '.join(LOG_LEVELS)}")
        need(self.shutdown_timeout_s > 0, "shutdown_timeout_s", "must be > 0")
        return self

    @property
    def ceiling_tps(self):
        """The most successes per second the workers can give: workers / service time."""
        return self.max_workers * 1000.0 / self.latency_ms if self.latency_ms > 0 else None


FIELD_TYPES = {f.name: (f.type if isinstance(f.type, str) else f.type.__name__) for f in fields(Config)}
ENV_PREFIX = "TQ_"


def coerce(key, raw):
    """Turn a string (from the environment or .env) into the field's type, or ConfigError."""
    kind = FIELD_TYPES[key]
    text = str(raw).strip()
    try:
        if kind == "bool":
            lowered = text.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
        return text
    except ValueError:
        raise ConfigError(f"invalid {key}: expected {kind}, got {text!r}") from None


def env_values(environ=None, dotenv_path=".env"):
    """Settings from .env, overlaid by TQ_* environment variables (environment wins)."""
    values = {}
    if dotenv_path and os.path.isfile(dotenv_path):
        from dotenv import dotenv_values
        for name, raw in dotenv_values(dotenv_path).items():
            key = _field_for(name)
            if key and raw is not None:
                values[key] = coerce(key, raw)
    for name, raw in (os.environ if environ is None else environ).items():
        key = _field_for(name)
        if key:
            values[key] = coerce(key, raw)
    return values


def _field_for(name):
    if not name.startswith(ENV_PREFIX):
        return None
    key = name[len(ENV_PREFIX):].lower()
    return key if key in FIELD_TYPES else None


def load_config(cli=None, profile=None, environ=None, dotenv_path=".env"):
    """Build and validate a Config: cli > environment > .env > profile > defaults.

    `cli` and `profile` are dicts of field -> value; None values in `cli` mean "not given".
    """
    values = dict(profile or {})
    values.update(env_values(environ, dotenv_path))
    values.update({k: v for k, v in (cli or {}).items() if v is not None})
    unknown = sorted(set(values) - set(FIELD_TYPES))
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]}")
    for key, value in values.items():
        kind = FIELD_TYPES[key]
        if kind in ("int", "float") and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ConfigError(f"invalid {key}: expected {kind}, got {value!r}")
        if kind == "int" and isinstance(value, float):
            if not value.is_integer():
                raise ConfigError(f"invalid {key}: expected int, got {value!r}")
            values[key] = int(value)
    return Config(**values).validate()


def as_dict(config):
    return dataclasses.asdict(config)
