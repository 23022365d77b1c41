"""How bytes move between HttpObjectStore and the object server: two transports with one behaviour.

- "stdlib" (the default): a small thread-safe pool of `http.client` connections.
- "requests": one shared `requests.Session` whose HTTPAdapter keeps `connections` connections,
  PreparedRequests sent with `Session.send`, `stream=True` + `iter_content(chunk_size)` for reads, a
  generator body (chunked transfer encoding) for writes, `trust_env = False` (no proxy, netrc or CA
  settings from the environment: the traffic stays where base_url points).

A transport has `request(method, target, body, headers) -> answer`, `stream_put(target, blocks,
headers) -> answer`, `idle_sockets()` and `close()`; an answer has `status`, `header(name)`,
`chunks(size)`, `read(limit)`, `release()` (read to its end: the connection goes back to the pool) and
`discard()` (close it). Connection counts (created, reused, dropped, discarded) are kept in `Counts`.
TCP_NODELAY is set on every client socket; every call has a (connect, read) timeout; a transport never
retries on its own (the engine's retry policy decides).
"""
import http.client
import logging
import queue
import select
import socket
import threading

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter, TimeoutSauce
from requests.models import PreparedRequest
from requests.structures import CaseInsensitiveDict
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from ..errors import PermanentError, StoreConnectionError, StoreTimeout, TransientError

SMALL_BODY = 256 * 1024        # stdlib: a Content-Length body up to this size goes in one send with its headers
READ_ALL_PIECE = 1 << 20       # requests: read_all reads the body in pieces of this size
log = logging.getLogger(__name__)


class SourceFailed(Exception):
    """Carries an exception raised by the caller's chunk iterator out through the transport, so it is
    re-raised unchanged and never mistaken for a transport failure (it may well be an OSError)."""


# Everything a transport can raise: socket errors (ConnectionError, TimeoutError, ssl.SSLError are all
# OSError), http.client's protocol errors (IncompleteRead, RemoteDisconnected, ...), requests' own classes
# (ConnectionError, Timeout, ChunkedEncodingError, ...) and urllib3's, which can leak through iter_content.
TRANSPORT_ERRORS = (OSError, http.client.HTTPException, requests.RequestException,
                     urllib3.exceptions.HTTPError)
_TIMEOUTS = (TimeoutError, requests.Timeout, urllib3.exceptions.TimeoutError)


def _is_timeout(exc):
    if isinstance(exc, _TIMEOUTS):
        return True
    # requests turns a read timeout in the middle of iter_content into a ConnectionError around urllib3's
    # ReadTimeoutError
    return any(isinstance(arg, _TIMEOUTS) for arg in getattr(exc, "args", ()))


def map_request_error(exc, what):
    """The lab error for a transport exception raised while talking to the server."""
    if isinstance(exc, (TransientError, PermanentError)):
        return exc
    if _is_timeout(exc):
        return StoreTimeout(f"{what}: timed out ({exc.__class__.__name__})")
    return StoreConnectionError(f"{what}: {exc.__class__.__name__}: {str(exc)[:200]}")


def _split_timeout(timeout):
    if isinstance(timeout, (tuple, list)):
        connect, read = timeout
    else:
        connect = read = timeout
    return connect, read


class Counts:
    """Connection counts shared by a transport's pool: created, reused, dropped (closed by the server while
    idle, replaced by a new one), discarded (closed because the pool was full; warned about once)."""

    def __init__(self, maxsize):
        self.maxsize = maxsize
        self.lock = threading.Lock()
        self.values = {"created": 0, "reused": 0, "dropped": 0, "discarded": 0}

    def add(self, name):
        with self.lock:
            self.values[name] += 1
            first = name == "discarded" and self.values[name] == 1
        if first:
            log.warning("object store connection pool is full (%d idle), closing a connection; more "
                        "threads call the store than pool_size allows for", self.maxsize)

    def snapshot(self):
        with self.lock:
            return dict(self.values)


# --- transport "stdlib": a pool of http.client connections ---
class _Connection(http.client.HTTPConnection):
    """An http.client connection with a separate read timeout and one send for headers + small body."""
    read_timeout = None

    def connect(self):
        super().connect()                      # connect timeout = self.timeout
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(self.read_timeout)

    def _send_output(self, message_body=None, encode_chunked=False):
        buffer = getattr(self, "_buffer", None)
        if (isinstance(message_body, bytes) and len(message_body) <= SMALL_BODY and not encode_chunked
                and isinstance(buffer, list)):
            buffer.extend((b"", b""))
            msg = b"\r\n".join(buffer)
            del buffer[:]
            self.send(msg + message_body)
            return
        super()._send_output(message_body, encode_chunked)


class _HTTPSConnection(http.client.HTTPSConnection):
    read_timeout = None

    def connect(self):
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(self.read_timeout)


def _dropped(conn):
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

    def __init__(self, scheme, host, port, maxsize, timeout, counts):
        self.cls = _HTTPSConnection if scheme == "https" else _Connection
        self.host, self.port = host, port
        self.maxsize = maxsize
        self.connect_timeout, self.read_timeout = _split_timeout(timeout)
        self.idle = []
        self.lock = threading.Lock()
        self.closed = False
        self.counts = counts

    def get(self):
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

    def put(self, conn):
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

    def close(self):
        with self.lock:
            self.closed = True
            idle, self.idle = self.idle, []
        for conn in idle:
            conn.close()


class _StdlibAnswer:
    """A response on a pooled http.client connection."""

    def __init__(self, pool, conn, resp, reusable=True):
        self._pool, self._conn, self._resp = pool, conn, resp
        self._reusable = reusable
        self.status = resp.status

    def header(self, name):
        return self._resp.getheader(name)

    def chunks(self, size):
        read = self._resp.read
        while True:
            data = read(size)
            if not data:
                return
            yield data

    def read(self, limit=None):
        return self._resp.read() if limit is None else self._resp.read(limit)

    def release(self):
        """The answer was read to its end: the connection goes back to the pool, else it is closed."""
        if self._reusable and self._resp.isclosed() and self._conn is not None:
            conn, self._conn = self._conn, None
            self._pool.put(conn)
        else:
            self.discard()

    def discard(self):
        self._resp.close()
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()


class _StdlibTransport:
    name = "stdlib"

    def __init__(self, scheme, host, port, netloc, maxsize, timeout, counts):
        self.counts = counts
        self._pool = _Pool(scheme, host, port, maxsize, timeout, counts)

    def request(self, method, target, body=None, headers=None):
        conn = self._pool.get()
        try:
            conn.request(method, target, body=body, headers=headers or {})
            return _StdlibAnswer(self._pool, conn, conn.getresponse())
        except BaseException:
            conn.close()
            raise

    def stream_put(self, target, blocks, headers):
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
            return _StdlibAnswer(self._pool, conn, conn.getresponse())
        except BaseException:
            conn.close()                       # a cut chunked body: the server keeps nothing
            raise

    def _early_answer(self, conn):
        """An answer the server sent while the body was still going out (its connection is never
        reused: the body was cut), or None if there is none to read."""
        try:
            return _StdlibAnswer(self._pool, conn, conn.getresponse(), reusable=False)
        except TRANSPORT_ERRORS:
            return None

    def idle_sockets(self):
        with self._pool.lock:
            return [conn.sock for conn in self._pool.idle if conn.sock is not None]

    def close(self):
        self._pool.close()


# --- transport "requests": one shared Session ---
class _CountingPoolMixin:
    """urllib3's connection pool, counting connections like _Pool and never keeping a closed one.

    urllib3 keeps `maxsize` slots (None = "make a connection when needed"). A connection that comes back
    closed (an error, an answer cut short, Connection: close) goes back as an empty slot, so a later
    request makes a fresh one; one that comes back to a full pool is closed and counted as discarded."""
    counts = None

    def _new_conn(self):
        conn = super()._new_conn()
        conn._tq_new = True
        self.counts.add("created")
        return conn

    def _get_conn(self, timeout=None):
        conn = super()._get_conn(timeout)
        if getattr(conn, "_tq_new", False):
            conn._tq_new = False
        elif conn.sock is None:                # found closed by the server while idle: it reconnects
            self.counts.add("dropped")
            self.counts.add("created")
        else:
            self.counts.add("reused")
        return conn

    def _put_conn(self, conn):
        if conn is not None and conn.sock is None:
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


class _CountingHTTPPool(_CountingPoolMixin, HTTPConnectionPool):
    pass


class _CountingHTTPSPool(_CountingPoolMixin, HTTPSConnectionPool):
    pass


class _Adapter(HTTPAdapter):
    """HTTPAdapter for the one origin a transport talks to, without proxies.

    Its urllib3 pools are the counting ones above (remembered, for idle_sockets). HTTPAdapter.send looks the
    pool up from the request's URL on every call (parse the URL, normalise a pool key, lock the pool
    manager) and works out the request target from the URL again (proxy selection, urlsplit); here there
    is one origin and no proxy, so the pool is looked up once and the target is the one the transport
    built (`PreparedRequest.tq_target`)."""

    def __init__(self, counts, **kwargs):
        self._counts = counts
        self._pools = []
        self._origin_pool = None
        super().__init__(**kwargs)

    def init_poolmanager(self, connections, maxsize, block=False, **pool_kwargs):
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        classes = {"http": _CountingHTTPPool, "https": _CountingHTTPSPool}

        def factory(scheme):
            def make(host, port, **kwargs):
                pool = classes[scheme](host, port, **kwargs)
                pool.counts = self._counts
                self._pools.append(pool)
                return pool
            return make

        self.poolmanager.pool_classes_by_scheme = {scheme: factory(scheme) for scheme in classes}

    def get_connection_with_tls_context(self, request, verify, proxies=None, cert=None):
        pool = self._origin_pool
        if pool is None:
            pool = super().get_connection_with_tls_context(request, verify, proxies=proxies, cert=cert)
            self._origin_pool = pool
        return pool

    def request_url(self, request, proxies):
        target = getattr(request, "tq_target", None)
        return target if target is not None else super().request_url(request, proxies)

    def close(self):
        self._origin_pool = None
        super().close()


class _RequestsAnswer:
    """A requests.Response fetched with stream=True."""

    def __init__(self, resp):
        self._resp = resp
        self.status = resp.status_code

    def header(self, name):
        return self._resp.headers.get(name)

    def chunks(self, size):
        return self._resp.iter_content(size)

    def read(self, limit=None):
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

    def release(self):
        # a consumed response gives its connection back to the pool; an unconsumed one closes it
        self._resp.close()

    def discard(self):
        self._resp.raw.close()
        self._resp.close()


class _RequestsTransport:
    """requests, used the way its documentation describes for repeated calls to one service: one
    Session (its HTTPAdapter holds the connection pool) and PreparedRequests sent with Session.send.

    Session.request would rebuild the same request from the session's settings on every call (merge the
    headers, cookies, hooks and environment settings, parse and re-quote the URL): measured, that was a
    third of the ~650 us of CPU a GET + PUT cost, and the engine's workers share one GIL. Here the
    request is prepared directly from what the store already knows (a quoted target, a bytes body or a
    generator), with the headers Session.request would add for it."""
    name = "requests"

    def __init__(self, scheme, host, port, netloc, maxsize, timeout, counts):
        self.counts = counts
        self.origin = f"{scheme}://{netloc}"
        connect, read = _split_timeout(timeout)
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

    def request(self, method, target, body=None, headers=None):
        prepared = PreparedRequest()
        prepared.method = method
        prepared.url = self.origin + target
        prepared.tq_target = target
        prepared.headers = all_headers = CaseInsensitiveDict(self.session.headers)
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
        prepared.body = body
        resp = self.session.send(prepared, stream=True, timeout=self.timeout, allow_redirects=False,
                                 proxies={})
        return _RequestsAnswer(resp)

    def stream_put(self, target, blocks, headers):
        """A generator body: requests sends it with chunked transfer encoding, one chunk per block."""
        return self.request("PUT", target, body=blocks, headers=headers)

    def idle_sockets(self):
        socks = []
        for pool in self._adapter._pools:
            slots = pool.pool
            if slots is not None:
                with slots.mutex:
                    socks += [c.sock for c in slots.queue if c is not None and c.sock is not None]
        return socks

    def close(self):
        self.session.close()


TRANSPORTS = {"requests": _RequestsTransport, "stdlib": _StdlibTransport}
