"""The object server's upload area: `<root>/.tq-uploads/srv-XXXX/`, where uploads in progress live.

One folder per server, held with flock for the server's life; at start a server empties and removes the
folders of servers that are gone (their lock is free), so a crash leaves no partial upload behind, and
the folder of a live server on the same root is left alone. Everything is reached through descriptors
from the confined root (tqengine.objects.confined), so a link in the upload area is never followed. The
area is not reachable by any key: a bucket cannot start with `.`.
"""
import errno
import itertools
import os

from tqengine.errors import UnsafeObject
from tqengine.objects.confined import HeldDir
from tqengine.objects.local import TMP_SUFFIX

try:
    import fcntl
except ImportError:          # Windows: no flock; one server per root is then assumed
    fcntl = None

UPLOADS = ".tq-uploads"    # the upload area under the root (not a valid bucket name)


class UploadArea:
    """`<root>/.tq-uploads/srv-XXXX/`: this server's temp files, flock-held for the server's life. At
    start, the directories of servers that are gone (lock free) are emptied and removed. Everything is
    reached through descriptors from the confined root (a link in the upload area is never followed).
    Without flock (Windows) one server per root is assumed and every such directory is removed at start."""

    def __init__(self, confined):
        self._confined = confined
        self._seq = itertools.count()
        self.base = confined.path_of([UPLOADS])
        try:
            base = confined.open_dir([UPLOADS], create=True)
        except UnsafeObject:
            raise OSError(errno.ELOOP, f"{self.base} is a symbolic link") from None
        with base:
            _lock(base, fcntl.LOCK_EX if fcntl else 0)      # one server at a time sets up
            self.removed = self._remove_stale(base)
            self.held = self._make_own(base)
        self.name = os.path.basename(self.held.path)
        self.dir = self.held.path

    @staticmethod
    def _remove_stale(base):
        removed = 0
        for name in base.names():
            if not name.startswith("srv-"):
                continue
            try:
                folder = base.subdir(name)
            except (OSError, UnsafeObject):
                continue                          # a file, a link, or unreadable: not an upload folder
            with folder:
                try:
                    _lock(folder, fcntl.LOCK_EX | fcntl.LOCK_NB if fcntl else 0)
                except OSError:
                    continue                      # a live server's uploads: left alone
                removed += _empty_dir(folder)
            try:
                base.rmdir(name)
            except OSError:
                pass
        return removed

    @staticmethod
    def _make_own(base):
        while True:
            name = f"srv-{os.urandom(6).hex()}"
            try:
                base.mkdir(name, 0o700)
            except FileExistsError:
                continue
            held = base.subdir(name)
            try:
                _lock(held, fcntl.LOCK_EX | fcntl.LOCK_NB if fcntl else 0)
            except BaseException:
                held.close()
                raise
            return held

    def new_name(self):
        """A fresh temp file name in this server's folder (create it with `held.create(name)`)."""
        return f"{next(self._seq)}{TMP_SUFFIX}"

    def close(self):
        """Remove what is left in this server's directory, then the directory, and release it."""
        held, self.held = self.held, None
        if held is None:
            return
        _empty_dir(held)
        held.close()                              # closing the descriptor releases its flock
        try:
            with self._confined.open_dir([UPLOADS], create=False) as base:
                base.rmdir(self.name)
        except (OSError, UnsafeObject):
            pass


def _lock(held: HeldDir, operation):
    """flock(operation) on a held directory (OSError if it cannot be had); nothing without flock."""
    if fcntl is not None and held.fd is not None:
        fcntl.flock(held.fd, operation)


def _empty_dir(held: HeldDir):
    removed = 0
    try:
        names = held.names()
    except OSError:
        return 0
    for name in names:
        try:
            held.unlink(name)                     # unlink never follows a link
            removed += 1
        except OSError:
            pass
    return removed
