"""Machine and interpreter metadata recorded with every measurement, and the peak-RSS helper.

Kept separate so the benchmark, the trial runner and the engine's own --benchmark report the same fields
measured the same way.
"""
import os
import platform
import sys

from lab.engine.metrics import peak_rss_mb  # noqa: F401  (one definition, re-exported for the harness)


def current_rss_mb():
    """Resident set size right now in MB (Linux /proc), or None elsewhere."""
    try:
        with open("/proc/self/statm", "rb") as f:
            resident_pages = int(f.read().split()[1])
        return round(resident_pages * os.sysconf("SC_PAGE_SIZE") / (1024.0 * 1024.0), 2)
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def cpu_count():
    """CPUs this process may run on (affinity-aware where the OS supports it)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def env_info():
    """Where a figure was measured: interpreter, OS, CPUs, this process id."""
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
