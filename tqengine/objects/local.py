"""The local object store: a directory standing in for MinIO-style storage, confined by construction.

Path safety. The store root is opened once; every key is resolved from that directory descriptor one
component at a time (`openat` with O_DIRECTORY | O_NOFOLLOW), for reads and for writes, so no path ever
leaves the root: a symbolic link anywhere on the way (even one swapped in for a directory after an earlier
task used it) is refused, and nothing is cached that could go stale. A source must be a regular file: it
is checked with fstatat before it is opened (a FIFO, device or socket is never opened) and again with
fstat on the descriptor. A source with other hard links (st_nlink > 1) is refused unless
`allow_hard_links`: a hard link is indistinguishable from the file it links, so one made inside the store
to a file elsewhere would publish that file. Keys are checked lexically first (tasks.check_key).

Atomic writes. An output goes to a temporary file in this store's own temp folder,
<root>/.tq-tmp/<owner>/ (a reserved key prefix; <owner> is unique to the store object and held with an
flock while it is open), and is renamed into place only when complete, so a reader or a crash never sees
half an object. At start, `remove_temp_files()` removes only the temp folders whose owner is gone (their
lock can be taken): two engines on one store never delete each other's uploads in progress.

Reads and writes go chunk by chunk, so memory never grows with object size. On platforms without
`dir_fd` support (Windows) the same rules are applied to paths (resolved with realpath every time).
"""
from __future__ import annotations

import errno
import hashlib
import itertools
import os
import shutil
import stat
import threading
from collections.abc import Iterable, Iterator

from ..errors import ObjectNotFound, SourceTooLarge, UnsafeObject, ValidationError
from ..tasks import check_key
from .base import ObjectStore

try:
    import fcntl
except ImportError:     # pragma: no cover (Windows)
    fcntl = None  # type: ignore[assignment]

TMP_SUFFIX = ".tq-tmp"
TMP_AREA = ".tq-tmp"
OWNER_LOCK = ".owner-lock"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIR_FLAGS = os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC
_DIR_FD = os.open in os.supports_dir_fd and os.stat in os.supports_dir_fd and bool(_NOFOLLOW)
_LINK_ERRNOS = (errno.ELOOP, errno.EMLINK)      # O_NOFOLLOW on a link: ELOOP (Linux), EMLINK (FreeBSD)
_DIR_CACHE_MAX = 65536


def _link_refused(what: str) -> UnsafeObject:
    return UnsafeObject(f"{what} is a symbolic link (refused: it could point outside the store)")


def _is_link(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


class ConfinedDirs:
    """Path-based confinement for the lab's HTTP object server: a directory is accepted when it resolves
    (realpath) inside the root; remembered once checked. The engine's store does not use it (see
    `LocalObjectStore`, which resolves every component from a directory descriptor)."""

    def __init__(self, root: str) -> None:
        self.root = root
        self._known: set[str] = set()
        self._made: set[str] = set()
        self._lock = threading.Lock()

    def check(self, directory: str) -> None:
        """ValidationError if `directory` resolves outside the root."""
        if directory in self._known:
            return
        real = os.path.realpath(directory)
        if real != self.root and not real.startswith(self.root + os.sep):
            raise ValidationError("image_key resolves outside the store root")
        if real == directory and os.path.isdir(real):
            with self._lock:
                if len(self._known) >= _DIR_CACHE_MAX:
                    self._known.clear()
                self._known.add(directory)

    def ensure(self, directory: str) -> None:
        """Check `directory`, create it (and its parents) if missing, and check it again."""
        self.check(directory)
        if directory not in self._made:
            os.makedirs(directory, exist_ok=True)
            self.check(directory)
            with self._lock:
                if len(self._made) >= _DIR_CACHE_MAX:
                    self._made.clear()
                self._made.add(directory)


class LocalObjectStore(ObjectStore):
    """Objects under `root`: <root>/<key>. `max_read_bytes` bounds a source (checked before reading and
    while streaming: SourceTooLarge); `allow_hard_links` reads sources with st_nlink > 1."""

    def __init__(self, root: str, chunk_size: int = 64 * 1024, max_read_bytes: int | None = None,
                 allow_hard_links: bool = False) -> None:
        os.makedirs(root, exist_ok=True)
        self.root = os.path.realpath(root)
        self.chunk_size = chunk_size
        self.max_read_bytes = max_read_bytes
        self.allow_hard_links = allow_hard_links
        self.tmp_dir = os.path.join(self.root, TMP_AREA)
        self._root_fd = os.open(self.root, _DIR_FLAGS) if _DIR_FD else None
        self._owner = f"{os.getpid()}-{os.urandom(6).hex()}"
        self._owner_dir = os.path.join(self.tmp_dir, self._owner)
        self._owner_lock_fd: int | None = None
        self._owner_dir_fd: int | None = None
        self._owner_lock = threading.Lock()
        self._tmp_seq = itertools.count()

    # -- keys and directories ----------------------------------------------------------------
    def path_for(self, key: str) -> str:
        """The filesystem path `key` names (ValidationError for a key that is not a valid object key). For
        display and tests: open objects through the store, which refuses links on the way."""
        check_key(key)
        return self.root + os.sep + key.replace("/", os.sep)

    def _parent_fd(self, parts: list[str], create: bool) -> int:
        """A descriptor of the directory holding the last of `parts`, walked from the root without
        following links; `create` makes missing directories. The caller closes it."""
        assert self._root_fd is not None
        fd = os.dup(self._root_fd)
        try:
            for part in parts[:-1]:
                try:
                    nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    try:
                        os.mkdir(part, 0o777, dir_fd=fd)
                    except FileExistsError:
                        pass                # made by another thread meanwhile (or a link: refused below)
                    nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    # O_DIRECTORY | O_NOFOLLOW on a link: ELOOP, or ENOTDIR on some kernels
                    if exc.errno in _LINK_ERRNOS or (exc.errno == errno.ENOTDIR and _is_link(part, fd)):
                        raise _link_refused(f"folder {part[:100]!r} of the key") from None
                    raise
                os.close(fd)
                fd = nfd
            return fd
        except BaseException:
            os.close(fd)
            raise

    def _checked_path(self, key: str) -> str:
        """Without dir_fd support: the path, refused if it resolves outside the root or is a link."""
        path = self.path_for(key)
        real = os.path.realpath(path)
        if real != path and not os.path.islink(path):
            raise _link_refused("a folder of the key")
        if os.path.islink(path):
            raise _link_refused("the object")
        return path

    # -- reads -------------------------------------------------------------------------------
    def read_chunks(self, key: str) -> Iterator[bytes]:
        fd = self._open_source(key)
        return self._iter_fd(fd, key)

    def _open_source(self, key: str) -> int:
        parts = check_key(key).split("/")
        missing = f"source object {key[:200]!r} does not exist"
        try:
            if _DIR_FD:
                parent = self._parent_fd(parts, create=False)
                try:
                    st = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
                    self._check_source(key, st)
                    fd = os.open(parts[-1], os.O_RDONLY | _NOFOLLOW | _NONBLOCK | _CLOEXEC, dir_fd=parent)
                finally:
                    os.close(parent)
            else:
                path = self._checked_path(key)
                st = os.lstat(path)
                self._check_source(key, st)
                fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _NONBLOCK | getattr(os, "O_BINARY", 0))
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFound(missing) from None
        except OSError as exc:
            if exc.errno in _LINK_ERRNOS:
                raise _link_refused("the object") from None
            if exc.errno in (errno.EACCES, errno.EPERM):
                raise ObjectNotFound(f"source object {key[:200]!r} cannot be read: {exc.strerror}") from None
            raise
        try:
            now = os.fstat(fd)
            if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                raise UnsafeObject(f"source object {key[:200]!r} was replaced while it was opened")
            self._check_source(key, now)
            if _NONBLOCK and fcntl is not None:
                flags = fcntl.fcntl(fd, fcntl.F_GETFL)
                fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~_NONBLOCK)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _check_source(self, key: str, st: os.stat_result) -> None:
        mode = st.st_mode
        if stat.S_ISLNK(mode):
            raise _link_refused("the object")
        if not stat.S_ISREG(mode):
            kind = ("a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else
                    "a socket" if stat.S_ISSOCK(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                    else "not a regular file")
            raise ObjectNotFound(f"source object {key[:200]!r} is {kind}, not a regular file")
        if st.st_nlink > 1 and not self.allow_hard_links:
            raise UnsafeObject(f"source object {key[:200]!r} has {st.st_nlink} hard links (refused: a link to a "
                               f"file outside the store would publish it; allow_hard_links reads it)")
        if self.max_read_bytes is not None and st.st_size > self.max_read_bytes:
            raise SourceTooLarge(f"source object {key[:200]!r} is {st.st_size} bytes, over the limit of "
                                 f"{self.max_read_bytes}")

    def _iter_fd(self, fd: int, key: str) -> Iterator[bytes]:
        size, limit = self.chunk_size, self.max_read_bytes
        read = os.read
        total = 0
        try:
            while True:
                chunk = read(fd, size)
                if not chunk:
                    return
                total += len(chunk)
                if limit is not None and total > limit:      # it grew while we read it
                    raise SourceTooLarge(f"source object {key[:200]!r} grew past the limit of {limit} bytes "
                                         f"while it was read")
                yield chunk
        finally:
            os.close(fd)

    def exists(self, key: str) -> bool:
        st = self._lstat(key)
        return st is not None and stat.S_ISREG(st.st_mode)

    def size(self, key: str) -> int | None:
        st = self._lstat(key)
        return st.st_size if st is not None and stat.S_ISREG(st.st_mode) else None

    def _lstat(self, key: str) -> os.stat_result | None:
        parts = check_key(key).split("/")
        try:
            if not _DIR_FD:
                return os.lstat(self._checked_path(key))
            parent = self._parent_fd(parts, create=False)
            try:
                return os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
            finally:
                os.close(parent)
        except (FileNotFoundError, NotADirectoryError, UnsafeObject):
            return None
        except OSError as exc:
            if exc.errno in _LINK_ERRNOS:
                return None
            raise

    # -- writes ------------------------------------------------------------------------------
    def write_chunks(self, key: str, chunks: Iterable[bytes]) -> tuple[int, str]:
        """Write the stream to `key` atomically; return (bytes written, sha256 hex of them)."""
        parts = check_key(key).split("/")
        tmp_dir = self._own_temp_dir()
        name = f"{threading.get_ident()}-{next(self._tmp_seq)}{TMP_SUFFIX}"
        digest = hashlib.sha256()
        nbytes = 0
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC | getattr(os, "O_BINARY", 0)
        fd = os.open(name, flags, 0o666, dir_fd=tmp_dir) if _DIR_FD else \
            os.open(os.path.join(self._owner_dir, name), flags, 0o666)
        try:
            try:
                write = os.write
                for chunk in chunks:
                    view = memoryview(chunk)
                    while view:
                        done = write(fd, view)
                        view = view[done:]
                    digest.update(chunk)
                    nbytes += len(chunk)
            finally:
                os.close(fd)
            self._publish(name, parts, key)
        except BaseException:
            try:
                if _DIR_FD:
                    os.unlink(name, dir_fd=tmp_dir)
                else:
                    os.unlink(os.path.join(self._owner_dir, name))
            except OSError:
                pass
            raise
        return nbytes, digest.hexdigest()

    def _publish(self, name: str, parts: list[str], key: str) -> None:
        """Rename the finished temp file `name` to `key`, making its folders (never through a link)."""
        if not _DIR_FD:
            path = self._checked_path(key)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            self._checked_path(key)
            if os.path.isdir(path):
                raise ValidationError(f"output {key[:200]!r} is a folder in the store")
            os.replace(os.path.join(self._owner_dir, name), path)
            return
        try:
            parent = self._parent_fd(parts, create=True)
        except (FileExistsError, NotADirectoryError):
            raise ValidationError(f"output {key[:200]!r}: a file stands where a folder of it must be") from None
        try:
            try:
                os.rename(name, parts[-1], src_dir_fd=self._owner_dir_fd, dst_dir_fd=parent)
            except OSError as exc:
                if isinstance(exc, IsADirectoryError) or exc.errno in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST):
                    raise ValidationError(f"output {key[:200]!r} is a folder in the store") from None
                raise
        finally:
            os.close(parent)

    def _own_temp_dir(self) -> int:
        """A descriptor of this store object's temp folder (made, walked from the root without following
        links, and its owner lock taken on first use); -1 without dir_fd support."""
        if self._owner_dir_fd is not None:
            return self._owner_dir_fd
        with self._owner_lock:
            if self._owner_dir_fd is None:
                if _DIR_FD:
                    dir_fd = self._parent_fd([TMP_AREA, self._owner, OWNER_LOCK], create=True)
                else:
                    os.makedirs(self._owner_dir, exist_ok=True)
                    dir_fd = -1
                lock_flags = os.O_RDWR | os.O_CREAT | _NOFOLLOW | _CLOEXEC
                fd = os.open(OWNER_LOCK, lock_flags, 0o644, dir_fd=dir_fd) if _DIR_FD else \
                    os.open(os.path.join(self._owner_dir, OWNER_LOCK), lock_flags, 0o644)
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._owner_lock_fd = fd
                self._owner_dir_fd = dir_fd
        return self._owner_dir_fd

    def remove_temp_files(self) -> int:
        """Delete the temp folders of owners that are gone (their lock is free); return the files removed.
        Folders of live owners (another engine on the same store) are left alone."""
        removed = 0
        try:
            names = os.listdir(self.tmp_dir)
        except FileNotFoundError:
            return 0
        for name in names:
            path = os.path.join(self.tmp_dir, name)
            if name == self._owner or not os.path.isdir(path) or os.path.islink(path):
                continue
            if not self._owner_gone(path):
                continue
            try:
                removed += sum(1 for n in os.listdir(path) if n != OWNER_LOCK)
            except OSError:
                continue
            shutil.rmtree(path, ignore_errors=True)
        return removed

    @staticmethod
    def _owner_gone(folder: str) -> bool:
        if fcntl is None:
            return False
        try:
            fd = os.open(os.path.join(folder, OWNER_LOCK), os.O_RDWR | _NOFOLLOW | _CLOEXEC)
        except FileNotFoundError:
            return True             # a folder without a lock: its owner died before taking it
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            return False
        finally:
            os.close(fd)

    def close(self) -> None:
        """Release the root descriptor; remove this store's own (empty) temp folder."""
        fd, self._owner_lock_fd = self._owner_lock_fd, None
        dir_fd, self._owner_dir_fd = self._owner_dir_fd, None
        if fd is not None:
            shutil.rmtree(self._owner_dir, ignore_errors=True)
            os.close(fd)
        if dir_fd is not None and dir_fd >= 0:
            os.close(dir_fd)
        root, self._root_fd = self._root_fd, None
        if root is not None:
            os.close(root)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
