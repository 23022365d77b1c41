"""The local object store: a directory standing in for MinIO-style storage.

Reads and writes go chunk by chunk (memory never grows with object size); writes go to a temporary
name in the target directory and are renamed into place only when complete, so a reader or a crash never
sees half an object. Every key is confined to the root: lexically (tasks.check_key) and after resolving
symlinks, so a link inside the store that points outside it is refused too.
"""
import hashlib
import os
import uuid

from .errors import ObjectNotFound, ValidationError
from .tasks import check_key

TMP_SUFFIX = ".tq-tmp"


class LocalObjectStore:
    def __init__(self, root, chunk_size=64 * 1024):
        os.makedirs(root, exist_ok=True)
        self.root = os.path.realpath(root)
        self.chunk_size = chunk_size

    def path_for(self, key):
        """The confined filesystem path of `key` (ValidationError if it escapes the root)."""
        check_key(key)
        path = os.path.join(self.root, *key.split("/"))
        real = os.path.realpath(path)
        if real != path and not real.startswith(self.root + os.sep):
            raise ValidationError("image_key resolves outside the store root")
        return path

    def read_chunks(self, key):
        path = self.path_for(key)
        try:
            f = open(path, "rb")
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFound(f"source object {key[:200]!r} does not exist") from None
        except IsADirectoryError:
            raise ObjectNotFound(f"source object {key[:200]!r} is a directory") from None
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
        path = self.path_for(key)
        directory = os.path.dirname(path)
        os.makedirs(directory, exist_ok=True)
        if os.path.realpath(directory) != directory:
            raise ValidationError("output directory resolves outside the store root")
        tmp = f"{path}.{uuid.uuid4().hex[:12]}{TMP_SUFFIX}"
        digest = hashlib.sha256()
        nbytes = 0
        try:
            with open(tmp, "wb") as f:
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
        return os.path.isfile(self.path_for(key))

    def size(self, key):
        try:
            return os.path.getsize(self.path_for(key))
        except OSError:
            return None

    def remove_temp_files(self):
        """Delete temporary files a crashed writer left behind; return how many were removed."""
        removed = 0
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if name.endswith(TMP_SUFFIX):
                    try:
                        os.unlink(os.path.join(dirpath, name))
                        removed += 1
                    except OSError:
                        pass
        return removed

    def close(self):
        pass
