"""The local object store: a directory standing in for MinIO-style storage.

Reads and writes go chunk by chunk (memory never grows with object size); writes go to a temporary
file in the store's own temp area (<root>/.tq-tmp/, a reserved key prefix) and are renamed into place
only when complete, so a reader or a crash never sees half an object, and the cleanup at start touches
nothing but that area (a user's object may well be named *.tq-tmp). Every key is confined to the
root: lexically (tasks.check_key), its directory after resolving symlinks (ConfinedDirs: cached per
directory, because a store is owned by one engine and re-resolving every path costs a dozen lstat calls
per task; the object server uses the same class), and its last component opened with O_NOFOLLOW, so a
link inside the store that points outside it is refused.
"""
import hashlib
import itertools
import os
import stat
import threading

from ..errors import ObjectNotFound, ValidationError
from ..tasks import check_key
from .base import ObjectStore

TMP_SUFFIX = ".tq-tmp"
TMP_AREA = ".tq-tmp"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIR_CACHE_MAX = 65536


class ConfinedDirs:
    """The directories under `root` known to resolve inside it, so a path's directory is resolved once,
    not on every access (resolving costs one lstat per path component). A directory is remembered only
    once it exists and is its own realpath; the owner of the root (one engine, or one object server) is
    assumed not to swap a remembered directory for a link while it runs. Thread-safe."""

    def __init__(self, root):
        self.root = root
        self._known = set()
        self._made = set()
        self._lock = threading.Lock()

    def check(self, directory):
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

    def ensure(self, directory):
        """Check `directory`, create it (and its parents) if missing, and check it again: it is never
        created through a link. FileExistsError/NotADirectoryError if a parent is a file."""
        self.check(directory)
        if directory not in self._made:
            os.makedirs(directory, exist_ok=True)
            self.check(directory)
            with self._lock:
                if len(self._made) >= _DIR_CACHE_MAX:
                    self._made.clear()
                self._made.add(directory)


class LocalObjectStore(ObjectStore):
    def __init__(self, root, chunk_size=64 * 1024):
        os.makedirs(root, exist_ok=True)
        self.root = os.path.realpath(root)
        self.chunk_size = chunk_size
        self.tmp_dir = os.path.join(self.root, TMP_AREA)
        self._dirs = ConfinedDirs(self.root)
        self._tmp_seq = itertools.count()

    def path_for(self, key):
        """The confined filesystem path of `key` (ValidationError if it escapes the root)."""
        check_key(key)
        path = self.root + os.sep + key.replace("/", os.sep)
        self._dirs.check(os.path.dirname(path))
        return path

    def read_chunks(self, key):
        path = self.path_for(key)
        try:
            fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFound(f"source object {key[:200]!r} does not exist") from None
        except OSError as exc:
            if os.path.islink(path):
                raise ValidationError("image_key is a symbolic link (refused: it could point outside "
                                      "the store)") from None
            raise ObjectNotFound(f"source object {key[:200]!r} cannot be read: {exc.strerror}") from None
        f = open(fd, "rb", buffering=0)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            f.close()
            raise ObjectNotFound(f"source object {key[:200]!r} is not a regular file")
        return self._iter_file(f)

    def _iter_file(self, f):
        with f:
            read = f.read
            size = self.chunk_size
            while True:
                chunk = read(size)
                if not chunk:
                    return
                yield chunk

    def write_chunks(self, key, chunks):
        """Write the stream to `key` atomically; return (bytes written, sha256 hex of them)."""
        check_key(key)
        path = self.root + os.sep + key.replace("/", os.sep)
        self._dirs.ensure(os.path.dirname(path))     # never mkdir through a link
        if not os.path.isdir(self.tmp_dir):
            os.makedirs(self.tmp_dir, exist_ok=True)
        tmp = os.path.join(self.tmp_dir, f"{os.getpid()}-{threading.get_ident()}-{next(self._tmp_seq)}{TMP_SUFFIX}")
        digest = hashlib.sha256()
        nbytes = 0
        try:
            with open(tmp, "xb") as f:
                for chunk in chunks:
                    f.write(chunk)
                    digest.update(chunk)
                    nbytes += len(chunk)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        return nbytes, digest.hexdigest()

    def exists(self, key):
        path = self.path_for(key)
        return os.path.isfile(path) and not os.path.islink(path)

    def size(self, key):
        try:
            return os.path.getsize(self.path_for(key))
        except OSError:
            return None

    def remove_temp_files(self):
        """Delete temporary files a crashed writer left in the temp area; return how many were removed."""
        removed = 0
        try:
            names = os.listdir(self.tmp_dir)
        except FileNotFoundError:
            return 0
        for name in names:
            try:
                os.unlink(os.path.join(self.tmp_dir, name))
                removed += 1
            except OSError:
                pass
        return removed
