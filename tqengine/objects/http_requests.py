"""The "requests" transport of HttpObjectStore: one shared `requests.Session` (the interface:
objects/http_transport.py).

The Session's HTTPAdapter keeps `connections` connections (counted like the stdlib pool);
PreparedRequests are sent with `Session.send`, `stream=True` + `iter_content(chunk_size)` for reads, a
generator body (chunked transfer encoding) for writes, `trust_env = False` (no proxy, netrc or CA
settings from the environment: the traffic stays where base_url points).
"""
from __future__ import annotations

import queue
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import requests
from requests.adapters import HTTPAdapter, TimeoutSauce
from requests.cookies import RequestsCookieJar
from requests.models import PreparedRequest
from requests.structures import CaseInsensitiveDict
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

if TYPE_CHECKING:
    from urllib3._base_connection import BaseHTTPConnection

from .http_transport import (
    Body,
    Counts,
    HeadDeadlineSocket,
    HeadDeadlineSSLSocket,
    Timeout,
    answer_with_head_deadline,
    split_timeout,
)

READ_ALL_PIECE = 1 << 20       # read_all reads the body in pieces of this size


class _HeadDeadlineAnswers:
    """getresponse() of a urllib3 connection whose socket bounds an answer's head as a whole (under the
    read timeout: http_transport); each read of a body keeps the read timeout of its own."""
    sock: Any
    timeout: Any

    def getresponse(self) -> Any:       # urllib3's HTTPResponse
        timeout = self.timeout
        if not isinstance(timeout, (int, float)):
            return super().getresponse()        # type: ignore[misc]
        return answer_with_head_deadline(self.sock, float(timeout), super().getresponse)  # type: ignore[misc]


class _HeadDeadlineConnection(_HeadDeadlineAnswers, HTTPConnection):
    """urllib3's plain connection on a HeadDeadlineSocket."""

    def connect(self) -> None:
        super().connect()
        self.sock = HeadDeadlineSocket.taking(self.sock, None)


class _HeadDeadlineHTTPSConnection(_HeadDeadlineAnswers, HTTPSConnection):
    """urllib3's TLS connection on a HeadDeadlineSSLSocket."""

    def connect(self) -> None:
        super().connect()
        self.sock = HeadDeadlineSSLSocket.taking(self.sock, None)


class _CountingHTTPPool(HTTPConnectionPool):
    """urllib3's connection pool, counting connections like the stdlib pool and never keeping a closed one.

    urllib3 keeps `maxsize` slots (None = "make a connection when needed"). A connection that comes back
    closed (an error, an answer cut short, Connection: close) goes back as an empty slot, so a later
    request makes a fresh one; one that comes back to a full pool is closed and counted as discarded.
    `counts` is set by the adapter that makes the pool."""
    counts: Counts
    ConnectionCls: type[HTTPConnection] = _HeadDeadlineConnection

    def _new_conn(self) -> BaseHTTPConnection:
        conn = super()._new_conn()
        conn._tq_new = True                    # type: ignore[attr-defined]  # our mark on urllib3's object
        self.counts.add("created")
        return conn

    def _get_conn(self, timeout: float | None = None) -> BaseHTTPConnection:
        conn = super()._get_conn(timeout)
        if getattr(conn, "_tq_new", False):
            conn._tq_new = False               # type: ignore[attr-defined]  # our mark on urllib3's object
        elif getattr(conn, "sock", None) is None:     # found closed by the server while idle: it reconnects
            self.counts.add("dropped")
            self.counts.add("created")
        else:
            self.counts.add("reused")
        return conn

    def _put_conn(self, conn: BaseHTTPConnection | None) -> None:
        if conn is not None and getattr(conn, "sock", None) is None:
            conn = None
        pool = self.pool
        if pool is not None:
            try:
                pool.put(conn, block=False)
                return
            except queue.Full:
                if conn is not None:
                    self.counts.add("discarded")
        if conn is not None:
            conn.close()


# The ignore: to mypy _new_conn returns a BaseHTTPConnection in one base and a BaseHTTPSConnection in the
# other; at run time super() in _CountingHTTPPool reaches HTTPSConnectionPool's own _new_conn (HTTPS).
class _CountingHTTPSPool(_CountingHTTPPool, HTTPSConnectionPool):  # type: ignore[misc]
    ConnectionCls = _HeadDeadlineHTTPSConnection     # not _CountingHTTPPool's plain one


class _TargetedRequest(PreparedRequest):
    """A PreparedRequest that carries the request target the transport built (see _Adapter). It has an empty
    cookie jar, as prepare_cookies() would give it: Session.send works out where a 3xx answer points even
    with allow_redirects=False, and with no jar that raised AttributeError out of the request."""
    tq_target: str | None = None

    def __init__(self) -> None:
        super().__init__()
        self._cookies = RequestsCookieJar()


class _Adapter(HTTPAdapter):
    """HTTPAdapter for the one origin a transport talks to, without proxies.

    Its urllib3 pools are the counting ones above (remembered, for idle_sockets). HTTPAdapter.send looks the
    pool up from the request's URL on every call (parse the URL, normalise a pool key, lock the pool
    manager) and works out the request target from the URL again (proxy selection, urlsplit); here there
    is one origin and no proxy, so the pool is looked up once and the target is the one the transport
    built (`_TargetedRequest.tq_target`)."""

    def __init__(self, counts: Counts, **kwargs: Any) -> None:
        self._counts = counts
        self._pools: list[_CountingHTTPPool] = []
        self._origin_pool: HTTPConnectionPool | None = None
        super().__init__(**kwargs)

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        classes: dict[str, type[_CountingHTTPPool]] = {"http": _CountingHTTPPool, "https": _CountingHTTPSPool}

        def factory(scheme: str) -> Callable[..., _CountingHTTPPool]:
            def make(host: str, port: int | None, **kwargs: Any) -> _CountingHTTPPool:
                pool = classes[scheme](host, port, **kwargs)
                pool.counts = self._counts
                self._pools.append(pool)
                return pool
            return make

        # urllib3 calls pool_classes_by_scheme[scheme](host, port, **kwargs): a factory does as well as a class
        self.poolmanager.pool_classes_by_scheme = {
            scheme: factory(scheme) for scheme in classes}  # type: ignore[misc]

    def get_connection_with_tls_context(self, request: PreparedRequest, verify: bool | str,
                                        proxies: dict[str, str] | None = None,
                                        cert: str | tuple[str, str] | None = None) -> HTTPConnectionPool:
        pool = self._origin_pool
        if pool is None:
            pool = super().get_connection_with_tls_context(request, verify, proxies=proxies, cert=cert)
            self._origin_pool = pool
        return pool

    def request_url(self, request: PreparedRequest, proxies: dict[str, str] | None) -> str:
        target = getattr(request, "tq_target", None)
        return target if target is not None else super().request_url(request, proxies)

    def close(self) -> None:
        self._origin_pool = None
        super().close()


class RequestsAnswer:
    """A requests.Response fetched with stream=True."""

    def __init__(self, resp: requests.Response) -> None:
        self._resp = resp
        self.status = resp.status_code
        self._read_to_end = False       # chunks() read the body to its end through urllib3 itself

    def header(self, name: str) -> str | None:
        return self._resp.headers.get(name)

    def chunks(self, size: int) -> Iterator[bytes]:
        """The body in pieces of at most `size`, each from at most one read of the socket (urllib3's read1):
        iter_content(size) waited for all of `size` (see StdlibAnswer.chunks)."""
        read1 = self._resp.raw.read1
        while True:
            data = read1(size)
            if not data:
                break
            yield data
        self._read_to_end = True

    def read(self, limit: int | None = None) -> bytes:
        """The body (or its first `limit` bytes), through iter_content so that requests knows it was
        consumed and release() keeps the connection."""
        pieces = []
        have = 0
        for piece in self._resp.iter_content(READ_ALL_PIECE if limit is None else min(limit, 65536)):
            pieces.append(piece)
            have += len(piece)
            if limit is not None and have >= limit:
                break
        data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        return data if limit is None else data[:limit]

    def release(self) -> None:
        # a consumed response gives its connection back to the pool; an unconsumed one closes it (requests
        # does not know of a body read through chunks(): urllib3 gives the connection back itself)
        if self._read_to_end:
            self._resp.raw.release_conn()
        else:
            self._resp.close()

    def discard(self) -> None:
        self._resp.raw.close()
        self._resp.close()


class RequestsTransport:
    """requests, used the way its documentation describes for repeated calls to one service: one
    Session (its HTTPAdapter holds the connection pool) and PreparedRequests sent with Session.send.

    Session.request would rebuild the same request from the session's settings on every call (merge the
    headers, cookies, hooks and environment settings, parse and re-quote the URL): measured, that was a
    third of the ~650 us of CPU a GET + PUT cost, and the engine's workers share one GIL. Here the
    request is prepared directly from what the store already knows (a quoted target, a bytes body or a
    generator), with the headers Session.request would add for it."""
    name = "requests"

    def __init__(self, scheme: str, host: str, port: int, netloc: str, maxsize: int, timeout: Timeout,
                 counts: Counts) -> None:
        self.counts = counts
        self.origin = f"{scheme}://{netloc}"
        connect, read = split_timeout(timeout)
        self.timeout = TimeoutSauce(connect=connect, read=read)
        session = requests.Session()
        session.trust_env = False          # no proxies, netrc or CA bundle from the environment
        # of requests' default headers only User-Agent stays: HTTP/1.1 keeps connections alive without
        # `Connection: keep-alive`, the server never compresses (`Accept-Encoding`) and has one media type
        # (`Accept: */*`); fewer header lines to write here and to parse at the server
        session.headers = CaseInsensitiveDict({"User-Agent": session.headers["User-Agent"]})
        # one server, so one urllib3 pool (pool_connections=1) of `maxsize` connections: 2 * pool_size,
        # because a worker can hold a streaming GET open while its PUT runs
        self._adapter = _Adapter(counts, pool_connections=1, pool_maxsize=maxsize, max_retries=0)
        session.mount("http://", self._adapter)
        session.mount("https://", self._adapter)
        self.session = session

    def request(self, method: str, target: str, body: Body = None,
                headers: Mapping[str, str] | None = None) -> RequestsAnswer:
        prepared = _TargetedRequest()
        prepared.method = method
        prepared.url = self.origin + target
        prepared.tq_target = target
        all_headers: CaseInsensitiveDict[str | bytes] = CaseInsensitiveDict(self.session.headers)
        prepared.headers = all_headers
        if headers:
            all_headers.update(headers)
        if isinstance(body, (bytes, bytearray)):
            if body:
                all_headers["Content-Length"] = str(len(body))
            else:
                body = None                # as requests prepares an empty body
        elif body is not None:
            all_headers["Transfer-Encoding"] = "chunked"    # a generator: requests streams it chunked
        if body is None and method not in ("GET", "HEAD"):
            all_headers["Content-Length"] = "0"
        prepared.body = body               # type: ignore[assignment]  # requests streams an iterable body
        resp = self.session.send(prepared, stream=True, timeout=self.timeout, allow_redirects=False,
                                 proxies={})
        return RequestsAnswer(resp)

    def stream_put(self, target: str, blocks: Iterable[bytes], headers: Mapping[str, str]) -> RequestsAnswer:
        """A generator body: requests sends it with chunked transfer encoding, one chunk per block."""
        return self.request("PUT", target, body=blocks, headers=headers)

    def idle_sockets(self) -> list[socket.socket]:
        socks: list[socket.socket] = []
        for pool in self._adapter._pools:
            slots = pool.pool
            if slots is not None:
                with slots.mutex:
                    socks += [c.sock for c in slots.queue if c is not None and c.sock is not None]
        return socks

    def close(self) -> None:
        self.session.close()
