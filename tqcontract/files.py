"""Atomic file output: write a temporary file next to the target, then rename it into place."""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any


def _new_file_mode() -> int:
    """What open() would give a new file now (mkstemp makes it 0600): 0666 less the umask, which can
    only be read by setting it, so it is put straight back."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def write_text(path: str | os.PathLike[str], text: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            if hasattr(os, "fchmod"):       # (not on Windows before 3.13, where the mode means little)
                os.fchmod(f.fileno(), _new_file_mode())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
