"""File-like adapters between the object store's chunk streams and Pillow, in bounded memory.

`ChunkReader` turns the iterator that `ObjectStore.read_chunks(key)` returns (local file or HTTP body)
into the read/seek/tell file Pillow decodes from, without ever holding the whole object: it keeps a
sliding window of the last `window_bytes` read (Pillow seeks back a little: to 0 while it tries a format,
to the start of the pixel data before decoding), hashes every byte once as it arrives (so the source's
sha256 is known when the stream ends), and enforces a read budget (how far into the stream a reader may
go, e.g. while only headers should be read). `read()` of "everything" (WebP's decoder wants the whole
file) is allowed up to `max_read_all` bytes. A seek behind the window raises `StreamSeekError`: the
format needs random access and is not decoded from a stream.

`SpooledSink` is the other direction: the encoder writes the variant into it (memory up to
`max_memory` bytes, then an anonymous temporary file), and `chunks()` streams it back out for
`ObjectStore.write_chunks`. It has no fileno() on purpose: Pillow would write straight to the file
descriptor and force a spooled buffer onto disk.
"""
from __future__ import annotations

import hashlib
import io
import tempfile
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

DEFAULT_WINDOW = 1 << 20          # bytes kept behind the furthest read
DEFAULT_MAX_READ_ALL = 64 << 20   # the most one read-everything call may return


class StreamSeekError(io.UnsupportedOperation):
    """A seek to bytes the reader no longer holds (behind its window) or cannot know (the end)."""


class ReadBudgetExceeded(Exception):
    """The stream was read further than the budget set for this phase (see ChunkReader.set_budget)."""

    def __init__(self, message: str, budget: int) -> None:
        super().__init__(message)
        self.budget = budget


class ReadAllTooLarge(Exception):
    """read() of the whole rest was asked for and the rest is larger than max_read_all."""

    def __init__(self, message: str, limit: int) -> None:
        super().__init__(message)
        self.limit = limit


class ChunkReader(io.RawIOBase):
    """A forward-streaming, window-seekable, hashing binary file over an iterator of byte chunks.

    `error` holds the first exception the chunk iterator raised (a store error: the caller re-raises it
    in preference to whatever the decoder made of it). `close()` closes the iterator (an HTTP response
    is released) without reading the rest."""

    def __init__(self, chunks: Iterator[bytes], window_bytes: int = DEFAULT_WINDOW,
                 max_read_all: int = DEFAULT_MAX_READ_ALL) -> None:
        super().__init__()
        self._chunks: Iterator[bytes] | None = iter(chunks)
        self._window = window_bytes
        self._max_read_all = max_read_all
        self._buf = bytearray()      # bytes [self._buf_start, self._buf_start + len(self._buf)) of the stream
        self._buf_start = 0
        self._pos = 0
        self._eof = False
        self._budget: int | None = None
        self._budget_what = ""
        self._hash = hashlib.sha256()
        self.error: BaseException | None = None

    # -- what the stream has shown so far --------------------------------------------------------------
    @property
    def fetched(self) -> int:
        """Bytes taken from the iterator so far (all of them hashed)."""
        return self._buf_start + len(self._buf)

    @property
    def at_eof(self) -> bool:
        return self._eof

    def set_budget(self, limit: int | None, what: str = "") -> None:
        """From now on, reading past stream offset `limit` raises ReadBudgetExceeded (None: no limit)."""
        self._budget = limit
        self._budget_what = what

    def peek_head(self, n: int) -> bytes:
        """The first n bytes of the stream (fewer if it is shorter), without moving the position; only
        while they are still in the window."""
        self._fill(n)
        if self._buf_start != 0:
            raise StreamSeekError("the head of the stream is no longer held")
        return bytes(self._buf[:n])

    def drain(self) -> None:
        """Read (and hash) the rest of the stream without keeping it; the position moves to the end."""
        self._budget = None
        while not self._eof:
            self._pull()
            if len(self._buf) > self._window:
                self._trim(self.fetched - self._window)
        self._pos = self.fetched

    def sha256_hex(self) -> str:
        """sha256 of the whole stream: drain() first (or read to the end)."""
        if not self._eof:
            raise RuntimeError("the stream has not been read to its end")
        return self._hash.hexdigest()

    # -- io.RawIOBase --------------------------------------------------------------------------------
    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            target = offset
        elif whence == io.SEEK_CUR:
            target = self._pos + offset
        else:
            raise StreamSeekError("a stream's end is not known before it is read")
        if target < 0:
            raise ValueError(f"negative seek position {target}")
        if target < self._buf_start:
            raise StreamSeekError(f"cannot seek back to byte {target}: only bytes from {self._buf_start} on "
                                  "are still held (this file needs random access)")
        self._pos = target
        return target

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return self._read_all()
        if size == 0:
            return b""
        start = self._pos - self._buf_start
        if start + size > len(self._buf):
            self._fill(self._pos + size)
            start = self._pos - self._buf_start
        data = bytes(self._buf[start:start + size])
        self._pos += len(data)
        if self._pos - self._buf_start > 2 * self._window:
            self._trim(self._pos - self._window)
        return data

    def readall(self) -> bytes:
        return self._read_all()

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[:len(data)] = data
        return len(data)

    def close(self) -> None:
        if self._chunks is not None:
            closer = getattr(self._chunks, "close", None)
            self._chunks = None
            if closer is not None:
                try:
                    closer()
                except Exception:  # noqa: BLE001 - releasing a response must not mask the real outcome
                    pass
        self._buf = bytearray()
        super().close()

    # -- internals -----------------------------------------------------------------------------------
    def _read_all(self) -> bytes:
        limit = self._pos + self._max_read_all
        while not self._eof and self.fetched <= limit:
            self._pull()
        if self.fetched > limit:
            raise ReadAllTooLarge(f"the rest of the stream is larger than {self._max_read_all} bytes, the most "
                                  "read whole", self._max_read_all)
        start = max(0, self._pos - self._buf_start)
        data = bytes(self._buf[start:])
        self._pos = self.fetched
        self._trim(self._pos - self._window)
        return data

    def _fill(self, upto: int) -> None:
        while self.fetched < upto and not self._eof:
            self._pull()

    def _pull(self) -> None:
        if self._chunks is None:
            raise ValueError("read from a closed ChunkReader")
        try:
            chunk = next(self._chunks)
        except StopIteration:
            self._eof = True
            return
        except BaseException as exc:
            if self.error is None:
                self.error = exc
            raise
        if self._budget is not None and self.fetched + len(chunk) > self._budget:
            raise ReadBudgetExceeded(f"read past {self._budget} bytes {self._budget_what}".rstrip(), self._budget)
        self._hash.update(chunk)
        self._buf += chunk

    def _trim(self, keep_from: int) -> None:
        drop = keep_from - self._buf_start
        if drop > 0 and drop >= len(self._buf) // 2:   # amortised: drop in big steps, not per read
            drop = min(drop, len(self._buf))
            del self._buf[:drop]
            self._buf_start += drop


class SpooledSink(io.RawIOBase):
    """A write-only binary file that holds up to `max_memory` bytes in memory, then spills to an anonymous
    temporary file; `chunks(size)` yields what was written. No fileno(), on purpose (see the module doc)."""

    def __init__(self, max_memory: int = 8 << 20) -> None:
        super().__init__()
        self._file = tempfile.SpooledTemporaryFile(max_size=max_memory)
        self._size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: ReadableBuffer) -> int:
        n = self._file.write(data)
        self._size += n
        return n

    def tell(self) -> int:
        return self._size

    @property
    def size(self) -> int:
        return self._size

    def chunks(self, size: int = 64 * 1024) -> Iterator[bytes]:
        self._file.seek(0)
        while True:
            chunk = self._file.read(size)
            if not chunk:
                return
            yield chunk

    def close(self) -> None:
        self._file.close()
        super().close()
