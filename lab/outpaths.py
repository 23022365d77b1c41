"""Output paths checked before any work starts: `lab sweep --out`, `lab report --out`, `benchmark.py --out`.

A result that cannot be written must fail in the first second with one line (exit 2), not in a traceback
after every run has finished. The check is the real thing: the folder is created (the tool would create it
anyway) and a probe file is created and removed in it, so a path under an existing file, on a read-only
or pseudo filesystem (/proc), or without permission is refused whatever the process's privileges.
"""
import os
import tempfile


class OutputPathError(Exception):
    """An output path that cannot take the results; str(error) is the one line to print."""


def _probe_dir(target, label):
    if os.path.exists(target) and not os.path.isdir(target):
        raise OutputPathError(f"{label}: {target} exists and is not a folder")
    try:
        os.makedirs(target, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".tq-write-probe-", dir=target)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputPathError(f"{label}: cannot write in {target} ({exc.strerror or exc})") from None


def ensure_output_dir(path, what="--out"):
    """Create `path` if needed and prove a file can be written in it; returns its absolute path."""
    target = os.path.abspath(path)
    _probe_dir(target, f"{what} {path}")
    return target


def ensure_output_file(path, what="--out"):
    """Check an output file's folder as ensure_output_dir does; the file itself must not be a folder.
    Returns its absolute path."""
    target = os.path.abspath(path)
    if os.path.isdir(target):
        raise OutputPathError(f"{what} {path}: is a folder; give a file name")
    _probe_dir(os.path.dirname(target), f"{what} {path}")
    return target
