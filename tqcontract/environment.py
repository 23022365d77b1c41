"""Where a figure was measured, and what the measuring process used: one definition for every part.

`env_info()` goes into every metrics JSON; `peak_rss_mb()` and `current_rss_mb()` read this process's
memory; `cpu_count()` is affinity-aware (the CPUs this process may run on).
"""
from __future__ import annotations

import os
import platform
import sys
from typing import Any


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
