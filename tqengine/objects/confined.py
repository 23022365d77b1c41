"""A directory tree no name can lead out of: the path safety of every object store, by construction.

`ConfinedRoot` opens its root once and resolves every name from that directory descriptor, one component
at a time (`openat` with O_DIRECTORY | O_NOFOLLOW), for reads, for folders and for writes. No path string
is ever opened, so a symbolic link anywhere on the way is refused, even one swapped in for a folder after
an earlier request used it, and nothing is cached that could go stale. The engine's LocalObjectStore
(objects/local.py) and the lab's HTTP object server (lab/objects_server.py) both stand on it.

- `open_read(parts)`: the last component is checked with fstatat before it is opened, so a FIFO, device,
  socket or folder is never opened (a FIFO would block the thread in open()); the file is then opened
  O_NOFOLLOW | O_NONBLOCK and checked again with fstat (same inode, still regular). A file with other
  hard links (st_nlink > 1) is refused unless `allow_hard_links`: a hard link is indistinguishable from
  the file it links, so one made inside the root to a file elsewhere would be served as if it were
  inside. An optional size limit is checked on both stats.
- `lstat(parts)`: what the last component is, never following it.
- `open_dir(parts)`: a folder held by its descriptor (`HeldDir`), made if missing: temp files are created
  in it and renamed out of it into place with `publish` (renameat between two descriptors), so a write
  lands under the root or nowhere. `prepare_write` makes an output's folders and says what stands at
  its name; `remove_tree` deletes a folder without following links (shutil.rmtree with dir_fd).

Errors speak the engine's vocabulary (tqengine.errors), the messages prefixed by the caller's `what`:
- ObjectNotFound: the name is missing, a file stands where a folder of it should be, or it is not a
  regular file (a folder, FIFO, device, socket);
- UnsafeObject (a ValidationError): a symbolic link on the way or at the end, other hard links, a file
  replaced while it was opened;
- ValidationError: a write that cannot land (a file stands where a folder must be, the name is a folder);
- SourceTooLarge: over `max_bytes`;
- PermissionError passes unchanged (the store reports it as a missing source, the server as 403).
Components are checked once more here (no empty name, `.`, `..` or separator), whatever the caller did.

Where the kernel has openat2 (Linux 5.6+), a name is resolved in one system call with RESOLVE_BENEATH |
RESOLVE_NO_SYMLINKS (the kernel refuses any link on the way and any way out of the root): the same rule as
the walk, in one call instead of two per component, which matters because every call releases the GIL
and a worker waits to get it back. Reads then open the file O_NONBLOCK and check it with fstat (a FIFO
opened so does not block; anything but a regular file is closed at once and refused). Anything the fast
path cannot answer (a missing folder to make, an error to explain) goes through the walk.

On platforms without `dir_fd` support (Windows) the same rules are applied to paths, resolved with
realpath on every call (never cached).

Why one module of ~430 lines: it is one rule (no name leads out of the root) in its three forms (the
openat2 call, the component walk, the path fallback), which must be read and changed together.
"""
from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Sequence

from ..errors import ObjectNotFound, SourceTooLarge, UnsafeObject, ValidationError
from .openat2 import openat2_beneath

_NOFOLLOW: int = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY: int = getattr(os, "O_DIRECTORY", 0)
_NONBLOCK: int = getattr(os, "O_NONBLOCK", 0)
_CLOEXEC: int = getattr(os, "O_CLOEXEC", 0)
_BINARY: int = getattr(os, "O_BINARY", 0)
_DIR_FLAGS = os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC
_READ_FLAGS = os.O_RDONLY | _NOFOLLOW | _NONBLOCK | _CLOEXEC | _BINARY
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC | _BINARY
DIR_FD = (os.open in os.supports_dir_fd and os.stat in os.supports_dir_fd and os.rename in os.supports_dir_fd
          and bool(_NOFOLLOW))
_LINK_ERRNOS = (errno.ELOOP, errno.EMLINK)      # O_NOFOLLOW on a link: ELOOP (Linux), EMLINK (FreeBSD)
_FOLDER_ERRNOS = (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST)


def link_refused(what: str) -> UnsafeObject:
    return UnsafeObject(f"{what} is a symbolic link (refused: it could point outside the store)")


def _is_link(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


_BAD_PARTS = frozenset(("", ".", ".."))


def _check_part(part: str) -> str:
    if part in _BAD_PARTS or "/" in part or os.sep in part or "\0" in part:
        raise ValidationError(f"{part[:100]!r} is not a name inside the store")
    return part


def kind_of(mode: int) -> str:
    """What a non-regular file is, in words ("a FIFO", "a folder", ...)."""
    return ("a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else
            "a socket" if stat.S_ISSOCK(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file")


class HeldDir:
    """A folder inside a ConfinedRoot, held by its descriptor (`fd`; None without dir_fd support, where
    `path` is used): files are created in it and renamed out of it into the root (`ConfinedRoot.publish`).
    `path` is for messages, tests and the path fallback. Close it when done."""

    def __init__(self, path: str, fd: int | None) -> None:
        self.path = path
        self.fd = fd

    def open(self, name: str, flags: int, mode: int = 0o666) -> int:
        """os.open of `name` in this folder (O_NOFOLLOW added): a descriptor the caller closes."""
        _check_part(name)
        if self.fd is not None:
            return os.open(name, flags | _NOFOLLOW | _CLOEXEC, mode, dir_fd=self.fd)
        if os.path.realpath(self.path) != self.path:     # the path fallback: re-checked on every open
            raise link_refused(f"folder {os.path.basename(self.path)[:100]!r}")
        return os.open(os.path.join(self.path, name), flags | _NOFOLLOW | _BINARY, mode)

    def create(self, name: str) -> int:
        """A new file `name` open for writing (FileExistsError if the name is taken)."""
        return self.open(name, _CREATE_FLAGS)

    def unlink(self, name: str) -> None:
        if self.fd is not None:
            os.unlink(_check_part(name), dir_fd=self.fd)
        else:
            os.unlink(os.path.join(self.path, _check_part(name)))

    def mkdir(self, name: str, mode: int = 0o777) -> None:
        if self.fd is not None:
            os.mkdir(_check_part(name), mode, dir_fd=self.fd)
        else:
            os.mkdir(os.path.join(self.path, _check_part(name)), mode)

    def rmdir(self, name: str) -> None:
        if self.fd is not None:
            os.rmdir(_check_part(name), dir_fd=self.fd)
        else:
            os.rmdir(os.path.join(self.path, _check_part(name)))

    def names(self) -> list[str]:
        """The names in this folder (read through the descriptor, not the path)."""
        if self.fd is not None:
            with os.scandir(self.fd) as entries:
                return [entry.name for entry in entries]
        return os.listdir(self.path)

    def subdir(self, name: str) -> HeldDir:
        """The folder `name` in this one, held (never through a link: UnsafeObject)."""
        path = os.path.join(self.path, _check_part(name))
        if self.fd is None:
            if os.path.islink(path):
                raise link_refused(f"folder {name[:100]!r}")
            if not os.path.isdir(path):
                raise NotADirectoryError(errno.ENOTDIR, "not a folder", path)
            return HeldDir(path, None)
        try:
            return HeldDir(path, os.open(name, _DIR_FLAGS, dir_fd=self.fd))
        except OSError as exc:
            if exc.errno in _LINK_ERRNOS or (exc.errno == errno.ENOTDIR and _is_link(name, self.fd)):
                raise link_refused(f"folder {name[:100]!r}") from None
            raise

    def remove_tree(self, name: str) -> None:
        """Delete the folder `name` and what is in it, never following a link (errors ignored)."""
        if self.fd is not None:
            shutil.rmtree(_check_part(name), ignore_errors=True, dir_fd=self.fd)
        else:
            shutil.rmtree(os.path.join(self.path, _check_part(name)), ignore_errors=True)

    def close(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> HeldDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ConfinedRoot:
    """The folder `root` (made if missing), opened once; every name is walked from its descriptor.
    `allow_hard_links` lets open_read read files with st_nlink > 1. Thread-safe (no shared state but the
    root descriptor, which only close() changes)."""

    def __init__(self, root: str, allow_hard_links: bool = False) -> None:
        os.makedirs(root, exist_ok=True)
        self.root = os.path.realpath(root)
        self.allow_hard_links = allow_hard_links
        self._root_fd: int | None = os.open(self.root, _DIR_FLAGS) if DIR_FD else None

    def path_of(self, parts: Sequence[str]) -> str:
        """The filesystem path `parts` names (for messages and display; never opened as such here)."""
        return os.path.join(self.root, *parts)

    # -- the walk ------------------------------------------------------------------------------
    def _walk(self, parts: Sequence[str], create: bool) -> int:
        """A descriptor of the folder `parts` (all of them), walked from the root without following
        links; `create` makes missing folders. The caller closes it."""
        root = self._root_fd
        if root is None:
            raise ValueError("the confined root is closed")
        if not parts:
            return os.dup(root)
        if openat2_beneath is not None:
            try:
                return openat2_beneath(root, "/".join(_check_part(p) for p in parts), _DIR_FLAGS, 0)
            except OSError:
                pass                    # missing, or refused: the walk makes it or says precisely why
        fd = root
        try:
            for part in parts:
                _check_part(part)
                try:
                    nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    try:
                        os.mkdir(part, 0o777, dir_fd=fd)
                    except FileExistsError:
                        pass                # made by another thread meanwhile (or a link: refused below)
                    nfd = self._open_dir(part, fd)
                except OSError as exc:
                    raise self._dir_error(exc, part, fd) from None
                if fd != root:
                    os.close(fd)
                fd = nfd
            return fd
        except BaseException:
            if fd != root:
                os.close(fd)
            raise

    def _open_dir(self, part: str, fd: int) -> int:
        try:
            return os.open(part, _DIR_FLAGS, dir_fd=fd)
        except OSError as exc:
            raise self._dir_error(exc, part, fd) from None

    @staticmethod
    def _dir_error(exc: OSError, part: str, fd: int) -> Exception:
        # O_DIRECTORY | O_NOFOLLOW on a link: ELOOP, or ENOTDIR on some kernels
        if exc.errno in _LINK_ERRNOS or (exc.errno == errno.ENOTDIR and _is_link(part, fd)):
            return link_refused(f"folder {part[:100]!r} of the key")
        return exc

    def _path(self, parts: Sequence[str]) -> str:
        """Without dir_fd support: the path of `parts`, refused if a folder on the way is a link or
        resolves outside the root, or if the name itself is a link (realpath on every call)."""
        for part in parts:
            _check_part(part)
        path = self.path_of(parts)
        if not parts:
            return path
        folder = os.path.dirname(path)
        real = os.path.realpath(folder)
        if real != folder or not (real == self.root or real.startswith(self.root + os.sep)):
            raise link_refused("a folder of the key")
        if os.path.islink(path):
            raise link_refused("the object")
        return path

    # -- reads ---------------------------------------------------------------------------------
    def open_read(self, parts: Sequence[str], what: str = "object",
                  max_bytes: int | None = None) -> tuple[int, os.stat_result]:
        """(descriptor open for reading, its fstat) of the regular file `parts`; the caller closes it. The
        descriptor keeps O_NONBLOCK, which changes nothing for a regular file. Errors: see the module docstring."""
        if openat2_beneath is not None and self._root_fd is not None:
            try:
                fd = openat2_beneath(self._root_fd, "/".join(_check_part(p) for p in parts), _READ_FLAGS, 0)
            except OSError:
                fd = -1                 # missing, a link, ...: the walk below says which
            if fd >= 0:
                try:
                    st = os.fstat(fd)
                    self._check_source(what, st, max_bytes)
                except BaseException:
                    os.close(fd)
                    raise
                return fd, st           # O_NONBLOCK stays: it changes nothing for a regular file
        try:
            if DIR_FD:
                parent = self._walk(parts[:-1], create=False)
                try:
                    st = os.stat(_check_part(parts[-1]), dir_fd=parent, follow_symlinks=False)
                    self._check_source(what, st, max_bytes)
                    fd = os.open(parts[-1], _READ_FLAGS, dir_fd=parent)
                finally:
                    os.close(parent)
            else:
                path = self._path(parts)
                st = os.lstat(path)
                self._check_source(what, st, max_bytes)
                fd = os.open(path, _READ_FLAGS)
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFound(f"{what} does not exist") from None
        except OSError as exc:
            if exc.errno in _LINK_ERRNOS:
                raise link_refused(what) from None
            raise
        try:
            now = os.fstat(fd)
            if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                raise UnsafeObject(f"{what} was replaced while it was opened")
            self._check_source(what, now, max_bytes)
        except BaseException:
            os.close(fd)
            raise
        return fd, now

    def _check_source(self, what: str, st: os.stat_result, max_bytes: int | None) -> None:
        mode = st.st_mode
        if stat.S_ISLNK(mode):
            raise link_refused(what)
        if not stat.S_ISREG(mode):
            raise ObjectNotFound(f"{what} is {kind_of(mode)}, not a regular file")
        if st.st_nlink > 1 and not self.allow_hard_links:
            raise UnsafeObject(f"{what} has {st.st_nlink} hard links (refused: a link to a file outside the "
                               f"store would publish it; allow_hard_links reads it)")
        if max_bytes is not None and st.st_size > max_bytes:
            raise SourceTooLarge(f"{what} is {st.st_size} bytes, over the limit of {max_bytes}")

    def lstat(self, parts: Sequence[str]) -> os.stat_result | None:
        """The lstat of `parts` (a link is reported as a link, never followed); None if it is missing or
        cannot be reached without following a link."""
        try:
            if not DIR_FD:
                return os.lstat(self._path(parts))
            parent = self._walk(parts[:-1], create=False)
            try:
                return os.stat(_check_part(parts[-1]), dir_fd=parent, follow_symlinks=False)
            finally:
                os.close(parent)
        except (FileNotFoundError, NotADirectoryError, UnsafeObject):
            return None
        except OSError as exc:
            if exc.errno in _LINK_ERRNOS:
                return None
            raise

    # -- folders and writes --------------------------------------------------------------------
    def open_dir(self, parts: Sequence[str], create: bool = True) -> HeldDir:
        """The folder `parts` held open (made, with its parents, if missing and `create`)."""
        path = self.path_of(parts)
        if DIR_FD:
            return HeldDir(path, self._walk(parts, create=create))
        self._path(parts)
        if create:
            os.makedirs(path, exist_ok=True)
        self._path(parts)
        if not os.path.isdir(path):
            raise NotADirectoryError(errno.ENOTDIR, "not a folder", path)
        return HeldDir(path, None)

    def _parent(self, parts: Sequence[str], what: str) -> int | None:
        """A descriptor of the folder holding the last of `parts`, made if missing (None without dir_fd
        support, the folder then checked and made by path). The caller closes it."""
        try:
            if DIR_FD:
                return self._walk(parts[:-1], create=True)
            self.open_dir(parts[:-1], create=True).close()
            return None
        except (FileExistsError, NotADirectoryError):
            raise ValidationError(f"{what}: a file stands where a folder of it must be") from None

    def prepare_write(self, parts: Sequence[str], what: str = "output") -> os.stat_result | None:
        """Make the folders of the output `parts` and return the lstat of what stands at its name (None:
        nothing yet). ValidationError if a file stands where a folder must be, UnsafeObject for a link on
        the way."""
        last = _check_part(parts[-1])
        parent = self._parent(parts, what)
        try:
            if parent is None:
                return os.lstat(self.path_of(parts))
            return os.stat(last, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return None
        finally:
            if parent is not None:
                os.close(parent)

    def publish(self, src: HeldDir, name: str, parts: Sequence[str], what: str = "output",
                tell_existed: bool = True) -> bool:
        """Rename the finished file `name` of `src` to `parts` (replacing a file there, never writing
        through a link), making its folders; the folders are walked again now, whatever happened since
        an earlier prepare_write. Returns whether something stood at the name before (False without
`tell_existed`). ValidationError if
        a file stands where a folder must be or the name is a folder."""
        last, name = _check_part(parts[-1]), _check_part(name)
        parent = self._parent(parts, what)
        try:
            if parent is not None and src.fd is not None:
                existed = False
                if tell_existed:        # (one more system call; the engine's store does not ask)
                    try:
                        os.stat(last, dir_fd=parent, follow_symlinks=False)
                        existed = True
                    except FileNotFoundError:
                        pass
                os.rename(name, last, src_dir_fd=src.fd, dst_dir_fd=parent)
            else:
                target = self._path(parts)
                existed = os.path.lexists(target)
                if os.path.isdir(target):
                    raise IsADirectoryError(errno.EISDIR, "is a folder", target)
                os.replace(os.path.join(src.path, name), target)
        except OSError as exc:
            if isinstance(exc, IsADirectoryError) or exc.errno in _FOLDER_ERRNOS:
                raise ValidationError(f"{what} is a folder in the store") from None
            raise
        finally:
            if parent is not None:
                os.close(parent)
        return existed

    def close(self) -> None:
        """Release the root descriptor; the object is not used afterwards."""
        fd, self._root_fd = self._root_fd, None
        if fd is not None:
            os.close(fd)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
