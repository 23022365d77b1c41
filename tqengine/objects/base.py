"""The object store interface every backend implements (local directory, HTTP client).

One interface, several backends, in the manner of huey's `BaseStorage`: the engine's Processor and the
lab only ever call these methods, so a backend can be swapped by configuration (`Config.store`).
Keys are `/`-separated object names checked by `tasks.check_key`; every backend refuses a key that
could name anything outside its root with ValidationError.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator


class ObjectStore:
    """Streams objects in and out in chunks; writes are atomic (a reader never sees half an object)."""

    chunk_size: int = 64 * 1024

    def read_chunks(self, key: str) -> Iterator[bytes]:
        """The object's bytes in chunk_size pieces. ObjectNotFound for a missing key, ValidationError for
        a key that escapes the store; the error is raised by this call, not by the first next()."""
        raise NotImplementedError

    def write_chunks(self, key: str, chunks: Iterable[bytes]) -> tuple[int, str]:
        """Write the stream to `key` through a temporary object renamed into place when complete;
        returns (bytes written, sha256 hex). An exception from `chunks` propagates unchanged and leaves
        nothing under `key`."""
        raise NotImplementedError

    def read_all(self, key: str) -> bytes:
        """The whole object in memory (for callers that want it, such as the baseline's store hook)."""
        return b"".join(self.read_chunks(key))

    def write_all(self, key: str, data: bytes) -> tuple[int, str]:
        return self.write_chunks(key, (data,))

    def exists(self, key: str) -> bool:
        raise NotImplementedError

    def size(self, key: str) -> int | None:
        """Size in bytes, None when there is no such object."""
        raise NotImplementedError

    def remove_temp_files(self) -> int:
        """Delete temporary objects a crashed writer of this store left behind; return how many."""
        return 0

    def ping(self) -> object:
        """Check that the store answers (raise TransientError when it does not)."""
        return None

    def close(self) -> None:
        """Release connections or handles; the store is not used afterwards."""

    def __enter__(self) -> ObjectStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
