"""Every knob of the engine in one dataclass, each with its type, range, default and help in one place.

`Config` fields carry a `Setting` (in the field's metadata) that says what values are valid; `validate()`,
the TQ_* environment and .env loader, the command line's help and the lab's grid and trial specs all read
those Settings, so a range or a default is written once (`SETTINGS`).

Precedence, highest first: command line > environment (TQ_<FIELD>) > .env file (python-dotenv) >
a caller's profile defaults (e.g. the benchmark's latency) > the dataclass defaults. Invalid values
raise ConfigError with one line naming the key; the command lines turn that into exit code 2.
"""
from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from .errors import ConfigError

MODES = ("block", "fail_fast")
STORES = ("local", "http")
HTTP_CLIENTS = ("stdlib", "requests")
DEFAULT_HTTP_CLIENT = "stdlib"     # why not requests: docs/HTTP_STORE.md, "Which client is the default"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
ENV_PREFIX = "TQ_"


@dataclass(frozen=True)
class Setting:
    """What one value may be: its kind ("int", "float", "str", "bool"), inclusive bounds (`low_open`: the
    low bound itself is refused), a list of choices, whether None is allowed, a further check of its own
    (`extra`: the phrase of what is wrong, or None), and a one-line help."""
    kind: str
    help: str = ""
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    choices: tuple[str, ...] | None = None
    optional: bool = False          # None is a valid value ("not set")
    nonempty: bool = False          # for str: "" is refused
    upper: bool = False             # for choices: compared case-insensitively, stored upper-case
    extra: Callable[[Any], str | None] | None = None   # a further check of a value that passed the above

    def problem(self, value: Any) -> str | None:
        """Why `value` is not valid (a phrase such as "must be an integer"), or None when it is."""
        if value is None:
            return None if self.optional else f"must be {self._kind_phrase()}"
        kind = self.kind
        if kind == "int":
            if not isinstance(value, int) or isinstance(value, bool):
                return "must be an integer"
        elif kind == "float":
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                return "must be a finite number"
        elif kind == "bool":
            if not isinstance(value, bool):
                return "must be true or false"
        elif kind == "str":
            if not isinstance(value, str):
                return "must be text"
            if self.nonempty and not value:
                return "must not be empty"
        if self.choices is not None:
            probe = value.upper() if self.upper and isinstance(value, str) else value
            if probe not in self.choices:
                return f"must be one of {', '.join(self.choices)}"
        if kind in ("int", "float"):
            low, high = self.low, self.high
            if low is not None and (value < low or (self.low_open and value == low)):
                return self._range_phrase()
            if high is not None and value > high:
                return self._range_phrase()
        if self.extra is not None:
            return self.extra(value)
        return None

    def _kind_phrase(self) -> str:
        return {"int": "an integer", "float": "a finite number", "bool": "true or false"}.get(self.kind, "text")

    def _range_phrase(self) -> str:
        low = None if self.low is None else (f"> {self.low:g}" if self.low_open else f">= {self.low:g}")
        high = None if self.high is None else f"<= {self.high:g}"
        return "must be " + " and ".join(p for p in (low, high) if p)

    def coerce(self, raw: Any) -> Any:
        """A string (from the environment or .env) turned into this kind; ValueError if it cannot be."""
        text = str(raw).strip()
        if self.kind == "bool":
            lowered = text.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if self.kind == "int":
            return int(text)
        if self.kind == "float":
            return float(text)
        return text


def setting(default: Any, kind: str, help: str, **limits: Any) -> Any:
    """A dataclass field whose metadata holds its Setting."""
    return field(default=default, metadata={"setting": Setting(kind, help, **limits)})


@dataclass
class Config:
    max_workers: int = setting(8, "int", "worker threads in the ThreadPoolExecutor", low=1, high=1024)
    queue_size: int = setting(200, "int", "queue.Queue(maxsize=...): the bound that gives backpressure",
                              low=1, high=10_000_000)
    mode: str = setting("block", "str", "when the queue is full: block (wait up to enqueue_timeout_s, then "
                        "reject) or fail_fast (reject at once)", choices=MODES)
    enqueue_timeout_s: float = setting(10.0, "float", "block mode: seconds to wait for room before rejecting",
                                       low=0, high=86_400)
    max_attempts: int = setting(3, "int", "attempts per task, the first one included, before the dead-letter "
                                "queue", low=1, high=1000)
    backoff_base_s: float = setting(0.05, "float", "full-jitter backoff U(0, min(cap, base * 2**(n-1))): base, "
                                    "seconds", low=0, high=3600)
    backoff_cap_s: float = setting(2.0, "float", "backoff cap, seconds (>= backoff_base_s)", low=0, high=86_400)
    db_path: str = setting("data/run/tasks.db", "str", "SQLite database of task state", nonempty=True)
    store_root: str = setting("data/run/store", "str", "object store root: source objects and variants/",
                              nonempty=True)
    store: str = setting("local", "str", "object store: a local directory or an HTTP object store",
                         choices=STORES)
    store_url: str = setting("", "str", "base URL of the HTTP object store when store=http")
    store_token: str = setting("", "str", "store=http: bearer token the object server wants (its --token), if any; "
                               "never written to metrics or logs")
    http_client: str = setting(DEFAULT_HTTP_CLIENT, "str", "HTTP object-store client: stdlib (http.client "
                               "pool) or requests; same behaviour and errors (docs/HTTP_STORE.md)",
                               choices=HTTP_CLIENTS)
    chunk_size: int = setting(64 * 1024, "int", "streaming chunk in bytes", low=1, high=64 * 1024 * 1024)
    latency_ms: float = setting(0.0, "float", "service time of one attempt in ms: the real work, padded by a "
                                "sleep to this (fault injection; 0 = the real work alone)", low=0, high=600_000)
    latency_jitter_ms: float = setting(0.0, "float", "uniform +- jitter around latency_ms", low=0, high=600_000)
    transient_rate: float = setting(0.0, "float", "share of attempts failing with an injected transient (retried) "
                                    "fault", low=0, high=1)
    permanent_rate: float = setting(0.0, "float", "share of tasks failing with an injected permanent fault",
                                    low=0, high=1)
    seed: int = setting(0, "int", "seed of the fault model")
    log_level: str = setting("WARNING", "str", "JSON-lines log level", choices=LOG_LEVELS, upper=True)
    log_file: str = setting("", "str", "JSON-lines log file instead of stderr")
    shutdown_timeout_s: float = setting(60.0, "float", "graceful shutdown waits at most this long for queued "
                                        "work", low=0, low_open=True, high=86_400)
    recover: bool = setting(True, "bool", "resume tasks an earlier process left unfinished")
    retention_s: float = setting(0.0, "float", "delete finished rows this many seconds after they finished (0 = "
                                 "keep them forever; a deleted key can run again)", low=0, high=10 * 365 * 86_400)
    max_source_bytes: int = setting(512 * 1024 * 1024, "int", "largest source object read, bytes (checked before "
                                    "and while reading)", low=1, high=1 << 50)
    attempt_timeout_s: float = setting(300.0, "float", "an attempt still running after this many seconds fails "
                                       "(AttemptTimeout, retried)", low=0, low_open=True, high=86_400)
    allow_hard_links: bool = setting(False, "bool", "read a source object that has other hard links (off: a link "
                                     "to a file outside the store would publish it)")
    image_quality: int = setting(85, "int", "encoder quality of JPEG and WebP variants (PNG is lossless)",
                                 low=1, high=100)
    max_image_pixels: int = setting(89_478_485, "int", "most pixels a source image may have, checked from its "
                                    "header before decoding (default: Pillow's MAX_IMAGE_PIXELS)", low=1,
                                    high=1 << 40)

    def validate(self) -> Config:
        """Check every field against its Setting and the rules across fields; ConfigError (one line)."""
        for name in SETTINGS:
            check(name, getattr(self, name))
        if self.backoff_cap_s < self.backoff_base_s:
            raise ConfigError(f"invalid backoff_cap_s: must be >= backoff_base_s (got {self.backoff_cap_s!r})")
        if self.store == "http" and not self.store_url:
            raise ConfigError("invalid store_url: is required when store=http (got '')")
        return self

    @property
    def ceiling_tps(self) -> float | None:
        """The most successes per second the workers can give: workers / service time."""
        return self.max_workers * 1000.0 / self.latency_ms if self.latency_ms > 0 else None


SETTINGS: dict[str, Setting] = {f.name: f.metadata["setting"] for f in fields(Config)}
DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(Config)}
FIELD_TYPES = {name: spec.kind for name, spec in SETTINGS.items()}


def check(name: str, value: Any) -> Any:
    """`value` when it is valid for the setting `name`, else ConfigError naming both (one line)."""
    problem = SETTINGS[name].problem(value)
    if problem:
        raise ConfigError(f"invalid {name}: {problem} (got {value!r})")
    return value


def coerce(key: str, raw: Any) -> Any:
    """Turn a string (from the environment or .env) into the field's type, or ConfigError."""
    try:
        return SETTINGS[key].coerce(raw)
    except ValueError:
        raise ConfigError(f"invalid {key}: expected {SETTINGS[key].kind}, got {str(raw).strip()!r}") from None


def env_values(environ: Mapping[str, str] | None = None, dotenv_path: str | None = ".env") -> dict[str, Any]:
    """Settings from .env, overlaid by TQ_* environment variables (environment wins)."""
    values: dict[str, Any] = {}
    for name, raw in _dotenv_pairs(dotenv_path).items():
        key = _field_for(name)
        if key and raw is not None:
            values[key] = coerce(key, raw)
    for name, raw in (os.environ if environ is None else environ).items():
        key = _field_for(name)
        if key:
            values[key] = coerce(key, raw)
    return values


def unknown_env_names(environ: Mapping[str, str] | None = None, dotenv_path: str | None = ".env",
                      also_known: frozenset[str] = frozenset()) -> list[str]:
    """TQ_* names in .env or the environment that are no setting (a typo: TQ_MAX_WORKER), which env_values
    ignores; `also_known`: names the caller itself reads. Sorted; empty when .env cannot be read (load_config
    says why)."""
    names = set(os.environ if environ is None else environ)
    try:
        names |= set(_dotenv_pairs(dotenv_path))
    except ConfigError:
        pass
    return sorted(n for n in names if n.startswith(ENV_PREFIX) and _field_for(n) is None and n not in also_known)


def _dotenv_pairs(dotenv_path: str | None) -> dict[str, str | None]:
    """The name = value pairs of the .env file (none when there is no such file); ConfigError when it cannot
    be read or is not UTF-8 text (one line, not python-dotenv's traceback)."""
    if not dotenv_path or not os.path.isfile(dotenv_path):
        return {}
    from dotenv import dotenv_values
    try:
        return dotenv_values(dotenv_path, encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        cause = exc.strerror if isinstance(exc, OSError) else f"not UTF-8 text (byte {exc.start})"
        raise ConfigError(f"cannot read {dotenv_path}: {cause}") from None


def _field_for(name: str) -> str | None:
    if not name.startswith(ENV_PREFIX):
        return None
    key = name[len(ENV_PREFIX):].lower()
    return key if key in SETTINGS else None


def load_config(cli: Mapping[str, Any] | None = None, profile: Mapping[str, Any] | None = None,
                environ: Mapping[str, str] | None = None, dotenv_path: str | None = ".env") -> Config:
    """Build and validate a Config: cli > environment > .env > profile > defaults.

    `cli` and `profile` are dicts of field -> value; None values in `cli` mean "not given".
    """
    values = dict(profile or {})
    values.update(env_values(environ, dotenv_path))
    values.update({k: v for k, v in (cli or {}).items() if v is not None})
    unknown = sorted(set(values) - set(SETTINGS))
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]}")
    for key, value in values.items():
        kind = SETTINGS[key].kind
        if kind in ("int", "float") and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ConfigError(f"invalid {key}: expected {kind}, got {value!r}")
        if kind == "int" and isinstance(value, float):
            if not value.is_integer():
                raise ConfigError(f"invalid {key}: expected int, got {value!r}")
            values[key] = int(value)
    return Config(**values).validate()


def as_dict(config: Config) -> dict[str, Any]:
    return dataclasses.asdict(config)
