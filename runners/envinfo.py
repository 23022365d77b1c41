"""Where a trial's scratch files go (and on which filesystem); the machine metadata comes from the contract."""
import os

from tqcontract.environment import cpu_count, current_rss_mb, env_info, peak_rss_mb

__all__ = ["cpu_count", "current_rss_mb", "env_info", "peak_rss_mb", "scratch_root", "filesystem_kind"]

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
