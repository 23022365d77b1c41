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


SCRATCH_ENV = "TQ_SCRATCH_DIR"


def scratch_root():
    """Where benchmark and trial scratch files (source objects, outputs, SQLite) go, and its kind.

    $TQ_SCRATCH_DIR when set; else /dev/shm (RAM) when it exists and is writable; else the system temp
    folder. Benchmarks measure the queue, and on a virtual disk creating a small file costs 150-250 us
    of kernel CPU and stalls under writeback, which swamps the engine's own overhead with noise; set
    TQ_SCRATCH_DIR to a disk folder to measure with it.
    """
    import tempfile
    chosen = os.environ.get(SCRATCH_ENV)
    if not chosen and os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        chosen = "/dev/shm"
    if not chosen:
        chosen = tempfile.gettempdir()
    return chosen, filesystem_kind(chosen)


def filesystem_kind(path):
    """The filesystem type holding `path` (Linux /proc/mounts), e.g. tmpfs or ext4; None elsewhere."""
    try:
        real = os.path.realpath(path)
        best, kind = "", None
        with open("/proc/mounts", encoding="utf-8") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and (real == parts[1] or real.startswith(parts[1].rstrip("/") + "/")) \
                        and len(parts[1]) > len(best):
                    best, kind = parts[1], parts[2]
        return kind
    except OSError:
        return None
