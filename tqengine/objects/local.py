"""The local object store: a directory standing in for MinIO-style storage, confined by construction.

Path safety (objects/confined.py, `ConfinedRoot`). The store root is opened once; every key is resolved
from that directory descriptor one component at a time (`openat` with O_DIRECTORY | O_NOFOLLOW), for
reads and for writes, so no path ever leaves the root: a symbolic link anywhere on the way (even one
swapped in for a directory after an earlier task used it) is refused, and nothing is cached that could go
stale. A source must be a regular file: it is checked with fstatat before it is opened (a FIFO, device or
socket is never opened) and again with fstat on the descriptor. A source with other hard links
(st_nlink > 1) is refused unless `allow_hard_links`: a hard link is indistinguishable from the file it
links, so one made inside the store to a file elsewhere would publish that file. Keys are checked
lexically first (tasks.check_key).

Atomic writes. An output goes to a temporary file in this store's own temp folder,
<root>/.tq-tmp/<owner>/ (a reserved key prefix; objects/owned.py: <owner> is unique to the store object
and held with an flock while it is open), and is renamed into place only when complete, so a reader or a
crash never sees half an object. At start, `remove_temp_files()` removes only the temp folders whose owner
is gone (their lock can be taken), walking them by descriptor like every other name (a temp area swapped
for a link is never followed): two engines on one store never delete each other's uploads in progress.

Reads and writes go chunk by chunk, so memory never grows with object size.
"""
from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable, Iterator

from ..errors import ObjectNotFound, SourceTooLarge
from ..tasks import check_key
from .base import ObjectStore
from .confined import ConfinedRoot
from .owned import TMP_SUFFIX, OwnedTempFolder

__all__ = ["LocalObjectStore", "ConfinedRoot", "TMP_AREA", "TMP_SUFFIX"]

TMP_AREA = ".tq-tmp"


class LocalObjectStore(ObjectStore):
    """Objects under `root`: <root>/<key>. `max_read_bytes` bounds a source (checked before reading and
    while streaming: SourceTooLarge); `allow_hard_links` reads sources with st_nlink > 1."""

    def __init__(self, root: str, chunk_size: int = 64 * 1024, max_read_bytes: int | None = None,
                 allow_hard_links: bool = False) -> None:
        self._confined = ConfinedRoot(root, allow_hard_links=allow_hard_links)
        self.root = self._confined.root
        self.chunk_size = chunk_size
        self.max_read_bytes = max_read_bytes
        self._temp = OwnedTempFolder(self._confined, TMP_AREA)

    def path_for(self, key: str) -> str:
        """The filesystem path `key` names (ValidationError for a key that is not a valid object key). For
        display and tests: open objects through the store, which refuses links on the way."""
        key = check_key(key)
        return self.root + os.sep + key.replace("/", os.sep)

    # -- reads -------------------------------------------------------------------------------
    def read_chunks(self, key: str) -> Iterator[bytes]:
        parts = check_key(key).split("/")
        what = f"source object {key[:200]!r}"
        try:
            fd, st = self._confined.open_read(parts, what, self.max_read_bytes)
        except PermissionError as exc:
            raise ObjectNotFound(f"{what} cannot be read: {exc.strerror}") from None
        return self._iter_fd(fd, key, st.st_size)

    def _iter_fd(self, fd: int, key: str, size_at_open: int) -> Iterator[bytes]:
        """The file's chunks. A short read that brings the total to the size the file had at open is its end:
        the empty read that would confirm it is skipped (one GIL-releasing call a task fewer; a file still
        growing past that size is read on, as a full chunk or a total short of it always is)."""
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
                if len(chunk) < size and total >= size_at_open:
                    return
        finally:
            os.close(fd)

    def exists(self, key: str) -> bool:
        st = self._confined.lstat(check_key(key).split("/"))
        return st is not None and stat.S_ISREG(st.st_mode)

    def size(self, key: str) -> int | None:
        st = self._confined.lstat(check_key(key).split("/"))
        return st.st_size if st is not None and stat.S_ISREG(st.st_mode) else None

    # -- writes ------------------------------------------------------------------------------
    def write_chunks(self, key: str, chunks: Iterable[bytes]) -> tuple[int, str]:
        """Write the stream to `key` atomically; return (bytes written, sha256 hex of them)."""
        parts = check_key(key).split("/")
        tmp_dir = self._temp.folder()
        name = self._temp.new_name()
        digest = hashlib.sha256()
        nbytes = 0
        fd = tmp_dir.create(name)
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
            self._confined.publish(tmp_dir, name, parts, f"output {key[:200]!r}", tell_existed=False)
        except BaseException:
            try:
                tmp_dir.unlink(name)
            except OSError:
                pass
            raise
        return nbytes, digest.hexdigest()

    def remove_temp_files(self) -> int:
        """Delete the temp folders of owners that are gone (their lock is free); return the files removed.
        Folders of live owners (another engine on the same store) are left alone (objects/owned.py)."""
        return self._temp.remove_stale()

    def close(self) -> None:
        """Remove this store's own temp folder and release its lock, then the root descriptor."""
        self._temp.close()
        self._confined.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

