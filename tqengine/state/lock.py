"""One engine per database: an exclusive lock held for as long as an engine uses its SQLite file.

Two engines on one database would each run what the other has queued: a submission whose key is
unfinished in the database but not in this engine's hands is adopted and run, and recovery resumes every
unfinished row. So an engine takes an advisory `flock` on `<db>.engine-lock` before it opens the
database, and a second engine on the same file is refused with a one-line error naming the holder's pid.
The kernel drops the lock when the holding process exits or is killed, so a crash never leaves a stale
lock behind, and the lock file itself can stay. Readers (`python -m lab dlq`, reports) do not take it.

Where `fcntl` does not exist (Windows) there is no lock, and one engine per database is the operator's job.
"""
from __future__ import annotations

import errno
import os

from ..errors import ConfigError

try:
    import fcntl
except ImportError:     # pragma: no cover (Windows)
    fcntl = None  # type: ignore[assignment]

SUFFIX = ".engine-lock"
_NO_LOCKS = (errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOLCK)


class DatabaseLock:
    """The engine lock of the database `db_path` (the file `<db>.engine-lock`)."""

    def __init__(self, db_path: str) -> None:
        self.db_path = db_path
        self.path = os.path.abspath(db_path) + SUFFIX
        self._fd: int | None = None
        self.previous_holder: str | None = None

    def acquire(self) -> DatabaseLock:
        """Take the lock, or raise ConfigError if another engine holds it."""
        if fcntl is None or self._fd is not None:
            return self
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:      # the database's directory is unusable: say so as TaskStore would
            raise ConfigError(f"cannot open database {self.db_path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise ConfigError(f"database {self.db_path} is in use by another engine"
                              f"{f' (pid {holder})' if holder else ''}; one engine per database") from None
        except OSError as exc:
            os.close(fd)
            if exc.errno in _NO_LOCKS:      # a file system without flock: run without the lock
                return self
            raise ConfigError(f"cannot lock database {self.db_path} ({self.path}): {exc.strerror or exc}") from None
        self.previous_holder = _read_pid(fd)      # an engine used this database before
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)


def _read_pid(fd: int) -> str | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return text if text.isdigit() else None
