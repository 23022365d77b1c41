"""Temp folders with a live owner: `<root>/<area>/<owner>/`, where one local store object, or one object
server, keeps its files in progress until they are renamed into place.

The owner holds an flock on the folder's own descriptor for its life; closing it, or the process dying,
releases it. `remove_stale()` deletes the folders whose lock can be taken: their owner is gone. A folder is
made and its lock taken under an flock on the area folder, and stale folders are looked for under the same
lock, so a folder just made is never taken for one whose owner died before locking it. Nothing but temp
files is ever in a folder (and, in one of the version before, its `.owner-lock`, whose flock is honoured).
Everything is reached by descriptor from the confined root (objects/confined.py): a link in the area is
never followed. Without flock (Windows) an owner cannot be seen alive: with
`single_owner` (the object server: one per root) every other folder is taken for stale, otherwise (the local
store, which two engines may share) none is, and a crash there leaves its temp files behind.
"""
from __future__ import annotations

import contextlib
import errno
import itertools
import os
import threading
import time
from collections.abc import Iterator

from ..errors import UnsafeObject
from .confined import ConfinedRoot, HeldDir

try:
    import fcntl
except ImportError:     # pragma: no cover (Windows)
    fcntl = None  # type: ignore[assignment]

__all__ = ["OwnedTempFolder", "TMP_SUFFIX"]

TMP_SUFFIX = ".tq-tmp"
LEGACY_LOCK = ".owner-lock"    # the lock file of versions before this module: its flock marks a live owner too
AREA_LOCK_TIMEOUT_S = 10.0     # another owner holds the area only while it makes its folder or sweeps


class OwnedTempFolder:
    """This owner's folder `<root>/<area>/<owner>/`, made and locked on first use (`folder()`), removed with
    what is left in it by `close()`. Thread-safe."""

    def __init__(self, confined: ConfinedRoot, area: str, single_owner: bool = False) -> None:
        self._confined = confined
        self.area = area
        self.single_owner = single_owner       # without flock: every other folder is stale
        self.owner = f"{os.getpid()}-{os.urandom(6).hex()}"
        self._held: HeldDir | None = None
        self._guard = threading.Lock()
        self._seq = itertools.count()

    @property
    def path(self) -> str:
        """The folder's path (for messages and tests; it is reached by descriptor)."""
        return self._confined.path_of([self.area, self.owner])

    def new_name(self) -> str:
        """A name no other thread of this owner uses, for a temp file in `folder()`."""
        return f"{threading.get_ident()}-{next(self._seq)}{TMP_SUFFIX}"

    def folder(self) -> HeldDir:
        """The folder, held open; made and its owner lock taken on the first call."""
        held = self._held
        if held is not None:
            return held
        with self._guard:
            if self._held is None:
                with self._confined.open_dir([self.area], create=True) as area, _area_locked(area):
                    try:
                        area.mkdir(self.owner, 0o700)
                    except FileExistsError:
                        pass                      # a retry after a failed first use
                    held = area.subdir(self.owner)
                    try:
                        if fcntl is not None and held.fd is not None:
                            fcntl.flock(held.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BaseException:
                        held.close()
                        raise
                self._held = held
            return self._held

    def remove_stale(self) -> int:
        """Delete the folders of owners that are gone; return the temp files they held. Folders of live
        owners (another engine or server on the same root) are left alone."""
        try:
            area = self._confined.open_dir([self.area], create=False)
        except (FileNotFoundError, NotADirectoryError, UnsafeObject):
            return 0
        removed = 0
        with area, _area_locked(area):
            for name in area.names():
                if name == self.owner:
                    continue
                try:
                    folder = area.subdir(name)
                except (OSError, UnsafeObject):
                    continue                # a file, a link or unreadable: not an owner's folder
                with folder:
                    if not _owner_gone(folder, self.single_owner):
                        continue
                    try:
                        removed += sum(1 for n in folder.names() if n != LEGACY_LOCK)
                    except OSError:
                        continue
                area.remove_tree(name)
        return removed

    def close(self) -> None:
        """Remove the folder and what is left in it, then release its lock (in that order: a sweep never
        sees it unlocked while it exists)."""
        with self._guard:
            held, self._held = self._held, None
        if held is None:
            return
        try:
            with self._confined.open_dir([self.area], create=False) as area:
                area.remove_tree(self.owner)
        except (OSError, UnsafeObject):
            pass
        held.close()                # closing its descriptor releases the lock


@contextlib.contextmanager
def _area_locked(area: HeldDir, timeout_s: float = AREA_LOCK_TIMEOUT_S) -> Iterator[None]:
    """An exclusive flock on the area folder for the block (released when the block ends); polled, so a
    holder that never lets go costs `timeout_s` and an OSError, not a hang."""
    if fcntl is None or area.fd is None:
        yield
        return
    deadline = time.perf_counter() + timeout_s
    pause = 0.001
    while True:
        try:
            fcntl.flock(area.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.perf_counter() >= deadline:
                raise OSError(errno.EWOULDBLOCK, f"the temp area is held by another process for over "
                                                 f"{timeout_s:g} s", area.path) from None
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
    try:
        yield
    finally:
        fcntl.flock(area.fd, fcntl.LOCK_UN)


def _owner_gone(folder: HeldDir, single_owner: bool) -> bool:
    """Whether the owner of a temp folder is gone: the folder's flock can be taken (through this second
    descriptor of it, released when the caller closes it), and so can the flock of its LEGACY_LOCK file if it
    has one. Without flock: `single_owner`."""
    if fcntl is None or folder.fd is None:
        return single_owner
    try:
        fcntl.flock(folder.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    try:
        fd = folder.open(LEGACY_LOCK, os.O_RDWR)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False            # an engine of an earlier version, still writing through this folder
    finally:
        os.close(fd)
