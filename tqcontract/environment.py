"""Where a figure was measured, and what the measuring process used: one definition for every part.

`env_info()` goes into every metrics JSON; `peak_rss_mb()` and `current_rss_mb()` read this process's
memory; `cpu_count()` is affinity-aware (the CPUs this process may run on). `machine_info()` describes
the machine (CPU model, cores, memory, load average, single-core speed by `cpu_reference_ms()`) for
sweep.json and benchmark.py's results; `load_average()` is read before
and after each trial; `process_usage()` snapshots this process's CPU time and context switches
(getrusage) and `usage_delta(before, after)` is what a run between two snapshots cost.
None wherever the platform cannot tell, never a guess.
"""
from __future__ import annotations

import functools
import os
import platform
import sys
import time
from typing import Any

USAGE_FIELDS = ("cpu_user_s", "cpu_sys_s", "ctx_voluntary", "ctx_involuntary")
REFERENCE_LOOP = "sum(i * i for i in range(200_000))"


def cpu_reference_ms(repeats: int = 3) -> float:
    """Single-core speed: the best of `repeats` timings of REFERENCE_LOOP, in ms (pure Python, one thread;
    lower is faster; 10-40 ms). Figures from different machines compare through it: the engine's CPU per
    task scales with it, while the baseline's rate, bound by its one lock around the service time, does not."""
    best = float("inf")
    for _ in range(max(1, repeats)):
        started = time.perf_counter()
        sum(i * i for i in range(200_000))
        best = min(best, time.perf_counter() - started)
    return round(best * 1000.0, 2)


@functools.lru_cache(maxsize=1)
def process_reference_ms() -> float:
    """cpu_reference_ms(), measured once per process: what a sweep or a benchmark logs and records is one
    figure, and it is not paid for twice."""
    return cpu_reference_ms()


def cpu_count() -> int | None:
    """CPUs this process may run on (affinity-aware where the OS supports it)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def env_info() -> dict[str, Any]:
    """Interpreter, OS, CPUs and this process id."""
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": cpu_count(),
        "cpu_count_total": os.cpu_count(),
        "pid": os.getpid(),
        "gil_enabled": getattr(sys, "_is_gil_enabled", lambda: True)(),
    }


def peak_rss_mb() -> float | None:
    """Peak resident set size of this process in MiB, or None where the platform cannot tell
    (ru_maxrss is KiB on Linux and the BSDs, bytes on macOS; Windows has no getrusage)."""
    try:
        import resource
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    except (ImportError, OSError, ValueError):
        return None
    if not peak:
        return None
    return round(peak / (1024.0 * 1024.0 if sys.platform == "darwin" else 1024.0), 2)


def current_rss_mb() -> float | None:
    """Resident set size right now in MiB (Linux /proc), or None elsewhere."""
    try:
        with open("/proc/self/statm", "rb") as f:
            resident_pages = int(f.read().split()[1])
        return round(resident_pages * os.sysconf("SC_PAGE_SIZE") / (1024.0 * 1024.0), 2)
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def cpu_model() -> str | None:
    """The CPU's model name (Linux /proc/cpuinfo, else platform.processor()), or None."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware", "cpu model") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or None


def _meminfo_mb(field: str) -> float | None:
    """One field of Linux /proc/meminfo (`MemTotal`, `MemAvailable`) in MiB, or None."""
    try:
        with open("/proc/meminfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return round(int(line.split()[1]) / 1024.0, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def memory_total_mb() -> float | None:
    """Physical memory in MiB (Linux /proc/meminfo, else sysconf), or None."""
    total = _meminfo_mb("MemTotal")
    if total is not None:
        return total
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1024.0 * 1024.0), 1)
    except (AttributeError, OSError, ValueError):
        return None


def memory_available_mb() -> float | None:
    """Memory available to new work in MiB (Linux MemAvailable), or None."""
    return _meminfo_mb("MemAvailable")


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages, or None (Windows)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def machine_info() -> dict[str, Any]:
    """The machine a sweep or benchmark runs on: platform, CPU model and counts, memory, load now, and
    single-core speed (process_reference_ms; ~0.1 s to measure, once)."""
    return {"platform": platform.platform(), "system": platform.system(), "machine": platform.machine(),
            "processor": platform.processor() or None, "cpu_model": cpu_model(),
            "cpu_count": os.cpu_count(), "cpu_usable": cpu_count(), "memory_total_mb": memory_total_mb(),
            "memory_available_mb": memory_available_mb(), "load_average": load_average(),
            "cpu_reference_ms": process_reference_ms()}


def process_usage() -> dict[str, float | int] | None:
    """This process's CPU time (user, sys; seconds, all threads) and voluntary/involuntary context
    switches so far (getrusage RUSAGE_SELF), or None where there is no getrusage."""
    try:
        import resource
        ru = resource.getrusage(resource.RUSAGE_SELF)
    except (ImportError, OSError, ValueError):
        return None
    return {"cpu_user_s": ru.ru_utime, "cpu_sys_s": ru.ru_stime, "ctx_voluntary": ru.ru_nvcsw,
            "ctx_involuntary": ru.ru_nivcsw}


def usage_delta(before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, Any]:
    """What the run between two process_usage() snapshots cost; every field None when either is None."""
    if not before or not after:
        return dict.fromkeys(USAGE_FIELDS)
    out: dict[str, Any] = {}
    for key in USAGE_FIELDS:
        d = after[key] - before[key]
        out[key] = round(d, 6) if isinstance(d, float) else d
    return out
