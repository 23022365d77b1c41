"""The HTTP object store client (same methods as LocalObjectStore), the server launcher and make_store.

`HttpObjectStore` talks to the server in lab.engine.http_server over HTTP/1.1 with kept-alive connections.
One class holds everything the two clients share: URL building, client-side key checks, the blocking of
uploads into chunk_size blocks, the size/sha256 check of an upload's answer, the mapping of statuses and
transport failures to lab errors, and the read_chunks/read_all/write_chunks/write_all/exists/size/close
methods. Only how bytes move differs, in a small transport object chosen by `client`:

- client="stdlib" (the default): a small thread-safe pool of `http.client` connections.
- client="requests": one shared `requests.Session` whose HTTPAdapter keeps `connections` connections,
  PreparedRequests sent with `Session.send`, `stream=True` + `iter_content(chunk_size)` for reads, a
  generator body (chunked transfer encoding) for writes, `trust_env = False` (no proxy, netrc or CA
  settings from the environment: the traffic stays where base_url points).
The two behave the same (the tests run every client test on both). stdlib is the default because it
costs less CPU per call (single thread, GET + PUT of 16 KiB: ~170 us against ~400 us), and the client's
CPU is on every task's path and under the GIL the workers share: over HTTP at 8 workers, 100 clients and
5 ms per request it reaches ~0.91 of the ceiling, requests ~0.86 (docs/HTTP_STORE.md).

Common to both:
- `pool_size` is the number of threads that call the store at once (the engine passes max_workers). The
  pool keeps up to `connections` = 2 * pool_size idle connections, because one worker can hold a
  streaming GET open while its PUT runs (the processor feeds the download, through the transform, into
  the upload). A connection returned to a full pool is closed and counted in `stats["discarded"]`
  (logged once as a warning); a pooled connection the server has closed is noticed (readable socket)
  and replaced before it is used (`stats["dropped"]`).
- Reads stream the body in chunk_size pieces (`read_chunks`); `read_all` reads it in one call.
- Writes collect the caller's pieces into chunk_size blocks. A body that ends within the first block
  (every small object) goes out as one Content-Length request: by then the download it came from is
  finished and its connection back in the pool, so the upload reuses it (one connection per worker, no
  chunk framing). A longer body streams with chunked transfer encoding, one chunk per block.
- TCP_NODELAY is set on every client socket (urllib3 does it by default; the stdlib pool sets it), as the
  server does on the sockets it accepts, so no request or answer waits for a delayed ACK.
- Every call has a (connect, read) timeout, and the client never retries on its own: the engine's retry
  policy decides.

Error mapping (lab.engine.errors), the same for both clients, before or in the middle of a stream:
- connection refused/reset/closed early -> StoreConnectionError(TransientError)
- connect/read timeout                  -> StoreTimeout(TransientError)
- 5xx, 408, 429                          -> StoreServerError(TransientError)   (.status)
- 404                                    -> ObjectNotFound(PermanentError)
- 400, and bad keys checked client-side -> ValidationError(PermanentError)
- any other 4xx                          -> StoreClientError(PermanentError)   (.status)
- an exception raised by the caller's chunk iterator during an upload -> that exception, unchanged

Objects live on the server at <server root>/<bucket>/<key>; the local store keeps them at <root>/<key>.
So the same files are seen by both backends when LocalObjectStore's root is <server root>/<bucket>
(`bucket_root`).
"""
import hashlib
import http.client
import json
import logging
import os
import queue
import re
import select
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter, TimeoutSauce
from requests.models import PreparedRequest
from requests.structures import CaseInsensitiveDict
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from .config import DEFAULT_HTTP_CLIENT, HTTP_CLIENTS
from .errors import (ConfigError, ObjectNotFound, PermanentError, TransientError,
                     ValidationError)
from .objects import LocalObjectStore
from .tasks import check_key

from ..project import ROOT as REPO_ROOT, default_python  # noqa: F401  (default_python is re-exported)
DEFAULT_BUCKET = "store"
DEFAULT_TIMEOUT = (3.05, 30.0)
CLIENTS = HTTP_CLIENTS
DEFAULT_CLIENT = DEFAULT_HTTP_CLIENT
_TRANSIENT_STATUS = (408, 429)
SMALL_BODY = 256 * 1024        # stdlib: a Content-Length body up to this size goes in one send with its headers
ERROR_BODY_MAX = 64 * 1024     # an error answer's body is read (for its message) up to this size
READ_ALL_PIECE = 1 << 20       # requests: read_all reads the body in pieces of this size
_PUT_HEADERS = {"Content-Type": "application/octet-stream"}
log = logging.getLogger(__name__)


class StoreConnectionError(TransientError):
    """The object server could not be reached, or the connection broke (also in mid-stream)."""


class StoreTimeout(TransientError):
    """The object server did not connect or answer within the timeout."""


class StoreServerError(TransientError):
    """The object server answered 5xx (or 408/429): worth another attempt later."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status


class StoreClientError(PermanentError):
    """The object server refused the request with a 4xx other than 400/404."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status


class _SourceFailed(Exception):
    """Carries an exception raised by the caller's chunk iterator out through the transport, so it is
    re-raised unchanged and never mistaken for a transport failure (it may well be an OSError)."""


# Everything a transport can raise: socket errors (ConnectionError, TimeoutError, ssl.SSLError are all
# OSError), http.client's protocol errors (IncompleteRead, RemoteDisconnected, ...), requests' own classes
# (ConnectionError, Timeout, ChunkedEncodingError, ...) and urllib3's, which can leak through iter_content.
_TRANSPORT_ERRORS = (OSError, http.client.HTTPException, requests.RequestException,
                     urllib3.exceptions.HTTPError)
_TIMEOUTS = (TimeoutError, requests.Timeout, urllib3.exceptions.TimeoutError)


def _is_timeout(exc):
    if isinstance(exc, _TIMEOUTS):
        return True
    # requests turns a read timeout in the middle of iter_content into a ConnectionError around urllib3's
    # ReadTimeoutError
    return any(isinstance(arg, _TIMEOUTS) for arg in getattr(exc, "args", ()))


def _map_request_error(exc, what):
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


class _Counts:
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
        except _TRANSPORT_ERRORS:
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


_TRANSPORTS = {"requests": _RequestsTransport, "stdlib": _StdlibTransport}


class HttpObjectStore:
    """An object store reached over HTTP; thread-safe for concurrent calls from `pool_size` threads.

    client="stdlib" (default) or "requests" picks the transport (see the module docstring); everything
    else, errors included, is the same for both."""

    def __init__(self, base_url, bucket=DEFAULT_BUCKET, chunk_size=64 * 1024, pool_size=8,
                 timeout=DEFAULT_TIMEOUT, connections=None, client=DEFAULT_CLIENT):
        if not isinstance(base_url, str) or not re.match(r"https?://[^/\s]+", base_url):
            raise ConfigError(f"store_url must be http(s)://host:port, not {base_url!r}")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", bucket or "") or bucket in (".", ".."):
            raise ConfigError(f"bucket must be a simple name, not {bucket!r}")
        if int(chunk_size) <= 0 or int(pool_size) <= 0:
            raise ConfigError("chunk_size and pool_size must be positive")
        if connections is not None and int(connections) <= 0:
            raise ConfigError("connections must be positive")
        if client not in _TRANSPORTS:
            raise ConfigError(f"http client must be one of {', '.join(CLIENTS)}, not {client!r}")
        parts = urllib.parse.urlsplit(base_url)
        try:
            host, port = parts.hostname, parts.port
        except ValueError as exc:
            raise ConfigError(f"store_url has a bad port: {base_url!r} ({exc})") from None
        if not host:
            raise ConfigError(f"store_url must be http://host:port, not {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.bucket = bucket
        self.chunk_size = int(chunk_size)
        self.pool_size = int(pool_size)
        # a caller may hold a GET (being streamed into its upload) and a PUT at the same time
        self.connections = int(connections) if connections is not None else 2 * self.pool_size
        self.timeout = timeout
        self.client = client
        self._prefix = parts.path.rstrip("/") + "/" + urllib.parse.quote(bucket) + "/"
        self._transport = _TRANSPORTS[client](
            parts.scheme, host, port or (443 if parts.scheme == "https" else 80), parts.netloc,
            self.connections, timeout, _Counts(self.connections))

    @property
    def stats(self):
        """Connection counts: created, reused, dropped (closed by the server while idle), discarded
        (closed because the pool was full)."""
        return self._transport.counts.snapshot()

    def url_for(self, key):
        check_key(key)
        return f"{self.base_url}/{urllib.parse.quote(self.bucket)}/{urllib.parse.quote(key, safe='/')}"

    def _target(self, key):
        check_key(key)
        return self._prefix + urllib.parse.quote(key, safe="/")

    # --- one request ---
    def _send(self, method, key, body=None, headers=None):
        """Send a request and read the answer's status and headers: (answer, what). A transport failure
        raises the mapped error (the transport has closed the connection)."""
        target = self._target(key)                 # ValidationError before any request
        what = f"{method} {key[:200]!r}"
        try:
            return self._transport.request(method, target, body, headers), what
        except _TRANSPORT_ERRORS as exc:
            raise _map_request_error(exc, what) from exc

    def _fail(self, answer, key, what, head=False):
        """Read (a bounded part of) an error answer for its message, then raise the mapped error."""
        detail = ""
        try:
            if not head:
                detail = answer.read(ERROR_BODY_MAX)[:200].decode("utf-8", "replace").strip()
        except _TRANSPORT_ERRORS:
            pass
        finally:
            answer.release()
        self._raise_for_status(answer.status, key, what, detail)

    # --- the LocalObjectStore interface ---
    def read_chunks(self, key):
        """Start the download now (ObjectNotFound/ValidationError/TransientError raise here) and return
        an iterator of chunk_size pieces; transport failures while iterating raise TransientError. The
        response is closed when the iterator ends, fails or is closed/abandoned."""
        answer, what = self._send("GET", key)
        if answer.status != 200:
            self._fail(answer, key, what)
        return self._iter_body(answer, what)

    def _iter_body(self, answer, what):
        expected = answer.header("Content-Length")
        received = 0
        clean = False
        try:
            try:
                for data in answer.chunks(self.chunk_size):
                    received += len(data)
                    yield data
            except _TRANSPORT_ERRORS as exc:
                raise _map_request_error(exc, what + f" after {received} bytes") from exc
            if expected is not None and received != int(expected):
                raise StoreConnectionError(f"{what}: body ended after {received} of {expected} bytes")
            clean = True
        finally:
            if clean:
                answer.release()
            else:
                answer.discard()

    def read_all(self, key):
        """The whole object in one call."""
        answer, what = self._send("GET", key)
        if answer.status != 200:
            self._fail(answer, key, what)
        try:
            data = answer.read()           # a body cut short raises (IncompleteRead / ProtocolError)
        except _TRANSPORT_ERRORS as exc:
            answer.discard()
            raise _map_request_error(exc, what) from exc
        answer.release()
        return data

    def write_chunks(self, key, chunks):
        """Stream `chunks` to `key`; the server renames it into place only when complete. Returns
        (bytes written, sha256 hex). The pieces are sent in chunk_size blocks: a body that ends within the
        first block goes out as one request with Content-Length (write_all), a longer one as a chunked
        PUT. An exception from `chunks` itself is re-raised unchanged (the server sees a cut upload, or no
        upload at all, and keeps nothing)."""
        target = self._target(key)
        what = f"PUT {key[:200]!r}"
        iterator = iter(chunks)
        first, ended = self._collect(iterator)       # the caller's own errors propagate unchanged
        if ended:
            return self.write_all(key, first)
        digest = hashlib.sha256()
        state = {"nbytes": 0, "source_error": None}

        def blocks():
            block, done = first, False
            while block:
                digest.update(block)
                state["nbytes"] += len(block)
                yield block
                if done:
                    return
                try:
                    block, done = self._collect(iterator)
                except BaseException as exc:          # keep the caller's own error; abort the upload
                    state["source_error"] = exc
                    raise _SourceFailed() from exc

        try:
            answer = self._transport.stream_put(target, blocks(), _PUT_HEADERS)
        except BaseException as exc:
            if state["source_error"] is not None:
                raise state["source_error"] from None
            if isinstance(exc, _TRANSPORT_ERRORS):
                raise _map_request_error(exc, what) from exc
            raise
        if state["source_error"] is not None:        # cannot happen: the upload had to abort
            answer.discard()
            raise state["source_error"]
        return self._finish_put(answer, key, what, state["nbytes"], digest.hexdigest())

    def _collect(self, iterator):
        """(block, ended): the next pieces of `iterator` joined until they reach chunk_size bytes (a
        bigger piece passes whole), with ended=True when the iterator is exhausted."""
        pieces = []
        have = 0
        for piece in iterator:
            if not piece:
                continue
            pieces.append(piece)
            have += len(piece)
            if have >= self.chunk_size:
                return (bytes(pieces[0]) if len(pieces) == 1 else b"".join(pieces)), False
        return b"".join(pieces), True

    def write_all(self, key, data):
        """Upload `data` (bytes-like) in one PUT with Content-Length; returns (bytes, sha256 hex)."""
        data = bytes(data)
        answer, what = self._send("PUT", key, body=data, headers=_PUT_HEADERS)
        return self._finish_put(answer, key, what, len(data), hashlib.sha256(data).hexdigest())

    def _finish_put(self, answer, key, what, nbytes, sha):
        if answer.status not in (200, 201):
            self._fail(answer, key, what)
        try:
            info = json.loads(answer.read(ERROR_BODY_MAX))
        except (ValueError, *_TRANSPORT_ERRORS) as exc:
            answer.discard()
            raise StoreConnectionError(f"{what}: unreadable answer to the upload: {exc}") from exc
        answer.release()
        if not isinstance(info, dict) or info.get("bytes") != nbytes or info.get("sha256") != sha:
            info = info if isinstance(info, dict) else {}
            raise StoreServerError(f"{what}: server stored {info.get('bytes')} bytes "
                                   f"sha256={str(info.get('sha256'))[:16]}, sent {nbytes} "
                                   f"sha256={str(sha)[:16]}")
        return nbytes, sha

    def exists(self, key):
        return self._head(key) is not None

    def size(self, key):
        """Size in bytes, None for a missing object (transport errors raise TransientError)."""
        return self._head(key)

    def _head(self, key):
        answer, what = self._send("HEAD", key)
        if answer.status not in (200, 404):
            self._fail(answer, key, what, head=True)
        length = answer.header("Content-Length")
        try:
            answer.read()                  # no body: this only marks the answer as read to its end
        except _TRANSPORT_ERRORS as exc:
            answer.discard()
            raise _map_request_error(exc, what) from exc
        answer.release()
        return int(length or 0) if answer.status == 200 else None

    def remove_temp_files(self):
        """Temp files are the server's business (it removes its own); nothing to do here."""
        return 0

    def ping(self):
        """Check that an HTTP server answers at base_url (any status will do): the engine calls this at
        start, so a wrong or dead URL is one clear error instead of every task failing. Raises the mapped
        TransientError (StoreConnectionError, StoreTimeout) when nothing answers."""
        what = f"HEAD {self.base_url}{self._prefix}"
        try:
            answer = self._transport.request("HEAD", self._prefix)
        except _TRANSPORT_ERRORS as exc:
            raise _map_request_error(exc, what) from exc
        try:
            answer.read()
        except _TRANSPORT_ERRORS:
            answer.discard()
        else:
            answer.release()
        return answer.status

    def close(self):
        self._transport.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- errors ---
    @staticmethod
    def _raise_for_status(status, key, what, detail=""):
        message = f"{what}: HTTP {status} {detail}".rstrip()
        if status == 404:
            raise ObjectNotFound(f"source object {key[:200]!r} does not exist ({message})")
        if status == 400:
            raise ValidationError(message)
        if status >= 500 or status in _TRANSIENT_STATUS:
            raise StoreServerError(message, status)
        if 400 <= status < 500:
            raise StoreClientError(message, status)
        raise StoreServerError(f"{what}: unexpected HTTP {status}", status)


# --- the server as a child process ---
_LISTENING = re.compile(rb"listening on (http://(\S+):(\d+))")


class ServerProcess:
    """A running `objects serve` child: `.url`, `.port`, `.pid`, `.stop()`; a context manager."""

    def __init__(self, proc, url, port, stderr_file):
        self.proc = proc
        self.url = url
        self.port = port
        self.pid = proc.pid
        self._stderr = stderr_file

    def stop(self, timeout=5.0):
        """SIGTERM, wait up to `timeout`, then SIGKILL; return the exit code."""
        proc = self.proc
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout)
            except ProcessLookupError:
                proc.wait(timeout=timeout)
        self._close_files()
        return proc.returncode

    def kill(self, timeout=5.0):
        """SIGKILL at once (a crash, for tests); return the exit code."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=timeout)
        self._close_files()
        return self.proc.returncode

    def stderr_text(self):
        try:
            self._stderr.seek(0)
            return self._stderr.read().decode("utf-8", "replace")
        except (OSError, ValueError):
            return ""

    def _close_files(self):
        for f in (self.proc.stdout, self._stderr):
            try:
                f.close()
            except (OSError, AttributeError):
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def server_argv(root, latency_ms=0.0, error_rate=0.0, seed=0, python=None, host="127.0.0.1", port=0):
    """The argument list that starts the server. It runs `-m lab.objects_cli serve` (the same code as
    `python -m lab objects serve`) so that the server does not depend on every other `python -m lab`
    subcommand module importing cleanly."""
    return [python or default_python(), "-m", "lab.objects_cli", "serve", "--root", os.fspath(root),
            "--host", host, "--port", str(int(port)), "--latency-ms", repr(float(latency_ms)),
            "--error-rate", repr(float(error_rate)), "--seed", str(seed), "--exit-with-parent"]


def start_server_process(root, latency_ms=0.0, error_rate=0.0, seed=0, python=None, host="127.0.0.1",
                         port=0, startup_timeout=15.0):
    """Start the object server as a child process and wait (up to startup_timeout) for its port line."""
    argv = server_argv(root, latency_ms, error_rate, seed, python, host, port)
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO_ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    stderr_file = tempfile.TemporaryFile()
    proc = subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=stderr_file)
    deadline = time.monotonic() + startup_timeout
    buffered = b""
    match = None
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while match is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"object server printed no port within {startup_timeout}s")
                if not sel.select(timeout=left):
                    continue
                data = os.read(proc.stdout.fileno(), 4096)
                if not data:
                    proc.wait(timeout=5)
                    raise RuntimeError(f"object server exited with {proc.returncode} before listening")
                buffered += data
                if b"\n" in buffered:
                    match = _LISTENING.search(buffered.split(b"\n", 1)[0])
                    if match is None:
                        raise RuntimeError(f"unexpected first line from the object server: {buffered[:200]!r}")
    except BaseException as exc:
        server = ServerProcess(proc, None, None, stderr_file)
        server.stop(timeout=2.0)
        tail = server.stderr_text()[-1500:]
        if isinstance(exc, (TimeoutError, RuntimeError)):
            raise RuntimeError(f"{exc}; argv={argv}; stderr: {tail}") from None
        raise
    return ServerProcess(proc, match.group(1).decode(), int(match.group(3)), stderr_file)


# --- the factory the engine config calls ---
def bucket_root(server_root, bucket=DEFAULT_BUCKET):
    """The directory where a server started on `server_root` keeps the objects of `bucket`."""
    return os.path.join(server_root, bucket)


def make_store(kind, root, url, chunk_size=64 * 1024, pool_size=8, bucket=DEFAULT_BUCKET,
               timeout=DEFAULT_TIMEOUT, client=DEFAULT_CLIENT):
    """LocalObjectStore(root) for kind "local", HttpObjectStore(url) for kind "http" (root unused);
    ConfigError for anything else or an http store without a URL. pool_size = threads calling at once
    (the engine's max_workers); the HTTP store keeps 2 * pool_size connections. `client` picks the HTTP
    transport: "stdlib" (default) or "requests" (unused for kind "local")."""
    if kind == "local":
        if not root:
            raise ConfigError("store=local needs store_root")
        return LocalObjectStore(root, chunk_size=chunk_size)
    if kind == "http":
        if not url:
            raise ConfigError("store=http needs store_url (e.g. from start_server_process(...).url)")
        return HttpObjectStore(url, bucket=bucket, chunk_size=chunk_size, pool_size=pool_size,
                               timeout=timeout, client=client)
    raise ConfigError(f"store must be 'local' or 'http', not {kind!r}")


__all__ = ["CLIENTS", "HttpObjectStore", "ServerProcess", "StoreClientError", "StoreConnectionError",
           "StoreServerError", "StoreTimeout", "bucket_root", "make_store", "server_argv",
           "start_server_process"]
