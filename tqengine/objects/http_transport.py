"""What HttpObjectStore's two transports share: their interface, their errors and their connection counts.

A transport moves bytes between HttpObjectStore (objects/http.py) and the object server; there are two
with one behaviour, each in its own module:
- "stdlib" (the default, objects/http_stdlib.py): a small thread-safe pool of `http.client` connections;
- "requests" (objects/http_requests.py): one shared `requests.Session` whose HTTPAdapter keeps
  `connections` connections.

A transport (`Transport`) has `request(method, target, body, headers) -> answer`, `stream_put(target,
blocks, headers) -> answer`, `idle_sockets()` and `close()`; an answer (`Answer`) has `status`,
`header(name)`, `chunks(size)`, `read(limit)`, `release()` (read to its end: the connection goes back to
the pool) and `discard()` (close it). Connection counts (created, reused, dropped, discarded) are kept in
`Counts`. TCP_NODELAY is set on every client socket; every call has a (connect, read) timeout; a
transport never retries on its own (the engine's retry policy decides).
"""
from __future__ import annotations

import http.client
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol

import requests
import urllib3.exceptions

from ..errors import PermanentError, StoreConnectionError, StoreTimeout, TransientError

log = logging.getLogger(__name__)

Timeout = float | tuple[float, float]
Body = bytes | bytearray | Iterable[bytes] | None


class SourceFailed(Exception):
    """Carries an exception raised by the caller's chunk iterator out through the transport, so it is
    re-raised unchanged and never mistaken for a transport failure (it may well be an OSError)."""


# Everything a transport can raise: socket errors (ConnectionError, TimeoutError, ssl.SSLError are all
# OSError), http.client's protocol errors (IncompleteRead, RemoteDisconnected, ...), requests' own classes
# (ConnectionError, Timeout, ChunkedEncodingError, ...) and urllib3's, which can leak through iter_content.
# OverflowError: http.client reading a chunk whose announced size does not fit in memory ('ffffffffffffffffff')
TRANSPORT_ERRORS = (OSError, http.client.HTTPException, requests.RequestException,
                    urllib3.exceptions.HTTPError, OverflowError)
_TIMEOUTS = (TimeoutError, requests.Timeout, urllib3.exceptions.TimeoutError)


def _is_timeout(exc: BaseException) -> bool:
    if isinstance(exc, _TIMEOUTS):
        return True
    # requests turns a read timeout in the middle of iter_content into a ConnectionError around urllib3's
    # ReadTimeoutError
    return any(isinstance(arg, _TIMEOUTS) for arg in getattr(exc, "args", ()))


def map_request_error(exc: BaseException, what: str) -> Exception:
    """The lab error for a transport exception raised while talking to the server."""
    if isinstance(exc, (TransientError, PermanentError)):
        return exc
    if _is_timeout(exc):
        return StoreTimeout(f"{what}: timed out ({exc.__class__.__name__})")
    return StoreConnectionError(f"{what}: {exc.__class__.__name__}: {str(exc)[:200]}")


def split_timeout(timeout: Timeout) -> tuple[float, float]:
    """(connect, read) of a timeout given as one number or a pair."""
    if isinstance(timeout, (tuple, list)):
        connect, read = timeout
    else:
        connect = read = timeout
    return connect, read


HEAD_SLACK = 0.01      # a head's reads may overrun its deadline by this share of the wait left, at most


class _HeadDeadline:
    """Reads that share one deadline while an answer's head is read. http.client reads the status line and
    the headers a recv at a time, each under the read timeout: a server sending a byte every few seconds
    kept one head coming for hours (up to 100 lines of 64 KiB)."""
    head_deadline: float | None = None
    read_timeout: float | None = None

    def reading_head(self, read_timeout: float | None) -> None:
        """The reads of one answer's head begin: together they may take `read_timeout`."""
        self.read_timeout = read_timeout
        self.head_deadline = None if read_timeout is None else time.monotonic() + read_timeout

    def head_read(self) -> None:
        """The head has been read (or failed): back to the read timeout for each read of the body."""
        self.head_deadline = None
        if self.fileno() != -1 and self.gettimeout() != self.read_timeout:   # type: ignore[attr-defined]
            self.settimeout(self.read_timeout)                  # type: ignore[attr-defined]

    def recv_into(self, buffer: Any, *args: Any, **kwargs: Any) -> int:
        deadline = self.head_deadline
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the answer's status line and headers took longer than the read timeout")
            want = left if self.read_timeout is None else min(left, self.read_timeout)
            now = self.gettimeout()                              # type: ignore[attr-defined]
            # settimeout() is an ioctl with the GIL released (4 a task of two requests, ~a quarter of the HTTP
            # path's releases): the socket keeps a timeout within HEAD_SLACK of the one wanted
            if now is None or abs(now - want) > HEAD_SLACK * want:
                self.settimeout(want)                           # type: ignore[attr-defined]
        return super().recv_into(buffer, *args, **kwargs)       # type: ignore[misc]


class HeadDeadlineSocket(_HeadDeadline, socket.socket):
    """A plain TCP socket whose answer heads have one deadline (_HeadDeadline)."""

    @classmethod
    def taking(cls, plain: socket.socket, read_timeout: float | None) -> HeadDeadlineSocket:
        """This kind of socket on `plain`'s connection (`plain` is detached from it), with its timeout (urllib3
        sends the request under the timeout create_connection gave the socket)."""
        timeout = plain.gettimeout()
        sock = cls(plain.family, plain.type, plain.proto, fileno=plain.detach())
        sock.settimeout(timeout)
        sock.read_timeout = read_timeout
        return sock


class HeadDeadlineSSLSocket(_HeadDeadline, ssl.SSLSocket):
    """A TLS socket whose answer heads have one deadline (_HeadDeadline): the TLS layer reads its records
    under the socket's timeout, which recv_into sets to what is left of the head's deadline."""

    @classmethod
    def taking(cls, tls: socket.socket, read_timeout: float | None) -> socket.socket:
        """`tls`, a connected ssl.SSLSocket, made this kind (its TLS session cannot move to a new socket
        object, and SSLSocket keeps its attributes in a __dict__, so its class can change); any other socket
        as it is (e.g. urllib3's SSLTransport for TLS through a TLS proxy, which this transport never makes)."""
        if type(tls) is not ssl.SSLSocket:
            return tls
        tls.__class__ = cls
        assert isinstance(tls, HeadDeadlineSSLSocket)
        tls.read_timeout = read_timeout
        return tls


HeadDeadline = (HeadDeadlineSocket, HeadDeadlineSSLSocket)


def answer_with_head_deadline(sock: Any, read_timeout: float | None, getresponse: Callable[[], Any]) -> Any:
    """getresponse() with the reads of the answer's head sharing one deadline of `read_timeout`, when `sock`
    is one of the HeadDeadline sockets (either client's connections call this in their getresponse)."""
    if not isinstance(sock, HeadDeadline):
        return getresponse()
    sock.reading_head(read_timeout)
    try:
        return getresponse()
    finally:
        sock.head_read()


class Counts:
    """Connection counts shared by a transport's pool: created, reused, dropped (closed by the server while
    idle, replaced by a new one), discarded (closed because the pool was full; warned about once)."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.lock = threading.Lock()
        self.values = {"created": 0, "reused": 0, "dropped": 0, "discarded": 0}

    def add(self, name: str) -> None:
        with self.lock:
            self.values[name] += 1
            first = name == "discarded" and self.values[name] == 1
        if first:
            log.warning("object store connection pool is full (%d idle), closing a connection; more "
                        "threads call the store than pool_size allows for", self.maxsize)

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return dict(self.values)


class Answer(Protocol):
    """A response whose status and headers have been read; its body is read through it."""

    status: int

    def header(self, name: str) -> str | None: ...

    def chunks(self, size: int) -> Iterator[bytes]: ...

    def read(self, limit: int | None = None) -> bytes: ...

    def release(self) -> None: ...

    def discard(self) -> None: ...


class Transport(Protocol):
    """How requests reach the server (see the module docstring)."""

    name: str
    counts: Counts

    def request(self, method: str, target: str, body: Body = None,
                headers: Mapping[str, str] | None = None) -> Answer: ...

    def stream_put(self, target: str, blocks: Iterable[bytes], headers: Mapping[str, str]) -> Answer: ...

    def idle_sockets(self) -> list[socket.socket]: ...

    def close(self) -> None: ...


class TransportFactory(Protocol):
    def __call__(self, scheme: str, host: str, port: int, netloc: str, maxsize: int, timeout: Timeout,
                 counts: Counts) -> Transport: ...
