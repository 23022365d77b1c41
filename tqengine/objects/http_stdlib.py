"""The "stdlib" transport of HttpObjectStore (the default): a small thread-safe pool of `http.client`
connections (the interface: objects/http_transport.py).

Connections are kept alive and reused last in, first out; an idle one the server has closed is noticed
(its socket is readable) and replaced before it carries a request. A Content-Length body up to
SMALL_BODY goes out in the same send as the request's headers; a longer body streams with chunked
transfer encoding, one chunk per block.
"""
from __future__ import annotations

import http.client
import select
import socket
import threading
from collections.abc import Iterable, Iterator, Mapping

from .http_transport import (
    TRANSPORT_ERRORS,
    Body,
    Counts,
    HeadDeadlineSocket,
    HeadDeadlineSSLSocket,
    Timeout,
    answer_with_head_deadline,
    split_timeout,
)

SMALL_BODY = 256 * 1024        # a Content-Length body up to this size goes in one send with its headers


class _HeadDeadlineAnswers:
    """getresponse() of a connection whose socket bounds an answer's head as a whole (http_transport)."""
    read_timeout: float | None = None

    def getresponse(self) -> http.client.HTTPResponse:
        return answer_with_head_deadline(self.sock, self.read_timeout,   # type: ignore[attr-defined]
                                         super().getresponse)            # type: ignore[misc]


class _Connection(_HeadDeadlineAnswers, http.client.HTTPConnection):
    """An http.client connection with a separate read timeout (for an answer's head as a whole, and for each
    read of its body) and one send for headers + small body."""

    def connect(self) -> None:
        super().connect()                      # connect timeout = self.timeout
        sock = HeadDeadlineSocket.taking(self.sock, self.read_timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(self.read_timeout)
        self.sock = sock

    def _send_output(self, message_body: object = None, encode_chunked: bool = False) -> None:
        buffer = getattr(self, "_buffer", None)
        if (isinstance(message_body, bytes) and len(message_body) <= SMALL_BODY and not encode_chunked
                and isinstance(buffer, list)):
            buffer.extend((b"", b""))
            msg = b"\r\n".join(buffer)
            del buffer[:]
            self.send(msg + message_body)
            return
        # _send_output is http.client's own (not in typeshed): the one place headers and body are joined
        super()._send_output(message_body, encode_chunked)  # type: ignore[misc]


class _HTTPSConnection(_HeadDeadlineAnswers, http.client.HTTPSConnection):
    """An http.client TLS connection with the same read timeouts as _Connection."""

    def connect(self) -> None:
        super().connect()
        sock = HeadDeadlineSSLSocket.taking(self.sock, self.read_timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(self.read_timeout)
        self.sock = sock


_AnyConnection = _Connection | _HTTPSConnection


def _dropped(conn: _AnyConnection) -> bool:
    """True if an idle kept-alive connection was closed by the server (its socket is readable: EOF or
    bytes nobody asked for), so it must not carry the next request."""
    sock = conn.sock
    if sock is None:
        return False                           # not connected: it connects on first use
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return True


class _Pool:
    """Idle kept-alive connections to one server, shared by threads (last in, first out)."""

    def __init__(self, scheme: str, host: str, port: int, maxsize: int, timeout: Timeout,
                 counts: Counts) -> None:
        self.cls: type[_AnyConnection] = _HTTPSConnection if scheme == "https" else _Connection
        self.host, self.port = host, port
        self.maxsize = maxsize
        self.connect_timeout, self.read_timeout = split_timeout(timeout)
        self.idle: list[_AnyConnection] = []
        self.lock = threading.Lock()
        self.closed = False
        self.counts = counts

    def get(self) -> _AnyConnection:
        while True:
            with self.lock:
                conn = self.idle.pop() if self.idle else None
            if conn is None:
                conn = self.cls(self.host, self.port, timeout=self.connect_timeout)
                conn.read_timeout = self.read_timeout
                self.counts.add("created")
                return conn
            if not _dropped(conn):
                self.counts.add("reused")
                return conn
            conn.close()
            self.counts.add("dropped")

    def put(self, conn: _AnyConnection) -> None:
        """Keep a connection whose last response was read to the end (or close it if there is no room)."""
        if conn.sock is None:                  # the server said Connection: close (http.client closed it)
            return
        with self.lock:
            if not self.closed and len(self.idle) < self.maxsize:
                self.idle.append(conn)
                return
            full = not self.closed
        if full:
            self.counts.add("discarded")
        conn.close()

    def close(self) -> None:
        with self.lock:
            self.closed = True
            idle, self.idle = self.idle, []
        for conn in idle:
            conn.close()


class StdlibAnswer:
    """A response on a pooled http.client connection."""

    def __init__(self, pool: _Pool, conn: _AnyConnection, resp: http.client.HTTPResponse,
                 reusable: bool = True) -> None:
        self._pool, self._resp = pool, resp
        self._conn: _AnyConnection | None = conn
        self._reusable = reusable
        self.status = resp.status

    def header(self, name: str) -> str | None:
        return self._resp.getheader(name)

    def chunks(self, size: int) -> Iterator[bytes]:
        """The body in pieces of at most `size`, each from at most one recv: read(size) waited for all of
        `size`, so a server sending a byte every few seconds held one piece (and the attempt's deadline,
        checked between pieces) for up to `size` read timeouts."""
        resp = self._resp
        read1 = resp.read1
        while resp.length != 0:         # None: chunked, or to the end of the connection
            data = read1(size)
            if not data:                # the end (chunked), or cut short (the caller counts the bytes)
                return
            yield data
        resp.read()                     # all of Content-Length: marks the answer closed, so it can be reused

    def read(self, limit: int | None = None) -> bytes:
        return self._resp.read() if limit is None else self._resp.read(limit)

    def release(self) -> None:
        """The answer was read to its end: the connection goes back to the pool, else it is closed."""
        if self._reusable and self._resp.isclosed() and self._conn is not None:
            conn, self._conn = self._conn, None
            self._pool.put(conn)
        else:
            self.discard()

    def discard(self) -> None:
        self._resp.close()
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()


class StdlibTransport:
    name = "stdlib"

    def __init__(self, scheme: str, host: str, port: int, netloc: str, maxsize: int, timeout: Timeout,
                 counts: Counts) -> None:
        self.counts = counts
        self._pool = _Pool(scheme, host, port, maxsize, timeout, counts)

    def request(self, method: str, target: str, body: Body = None,
                headers: Mapping[str, str] | None = None) -> StdlibAnswer:
        conn = self._pool.get()
        try:
            conn.request(method, target, body=body, headers=headers or {})
            return StdlibAnswer(self._pool, conn, conn.getresponse())
        except BaseException:
            conn.close()
            raise

    def stream_put(self, target: str, blocks: Iterable[bytes], headers: Mapping[str, str]) -> StdlibAnswer:
        """PUT with chunked transfer encoding, one chunk per block of `blocks`."""
        conn = self._pool.get()
        try:
            try:
                conn.putrequest("PUT", target, skip_accept_encoding=True)
                for name, value in headers.items():
                    conn.putheader(name, value)
                conn.putheader("Transfer-Encoding", "chunked")
                conn.endheaders()
                for block in blocks:
                    conn.send(b"%x\r\n%b\r\n" % (len(block), block))
                conn.send(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                # The server may have answered early (a 503 before reading the body) and stopped
                # reading: its answer is still worth reading; if there is none, the send error stands.
                early = self._early_answer(conn)
                if early is None or early.status in (200, 201):
                    raise
                return early
            return StdlibAnswer(self._pool, conn, conn.getresponse())
        except BaseException:
            conn.close()                       # a cut chunked body: the server keeps nothing
            raise

    def _early_answer(self, conn: _AnyConnection) -> StdlibAnswer | None:
        """An answer the server sent while the body was still going out (its connection is never
        reused: the body was cut), or None if there is none to read."""
        try:
            return StdlibAnswer(self._pool, conn, conn.getresponse(), reusable=False)
        except TRANSPORT_ERRORS:
            return None

    def idle_sockets(self) -> list[socket.socket]:
        with self._pool.lock:
            return [conn.sock for conn in self._pool.idle if conn.sock is not None]

    def close(self) -> None:
        self._pool.close()
