"""The HTTP object store client (same methods as LocalObjectStore), the server launcher and make_store.

`HttpObjectStore` talks to the server in lab.engine.http_server over HTTP/1.1 with kept-alive
connections from a small thread-safe pool of `http.client` connections (no requests/urllib3 layer: on
this path their per-call CPU, ~300-400 us for requests, ~120-170 us for urllib3 against ~60-110 us here,
was the engine process's largest cost per task, and the engine's workers share one GIL).

- `pool_size` is the number of threads that call the store at once (the engine passes max_workers). The
  pool keeps up to `connections` = 2 * pool_size idle connections, because one worker can hold a
  streaming GET open while its PUT runs (the processor feeds the download, through the transform, into
  the upload). A connection returned to a full pool is closed and counted in `stats["discarded"]`
  (logged once as a warning); a pooled connection the server has closed is noticed (readable socket)
  and replaced before it is used.
- Reads stream the body in chunk_size pieces (`read_chunks`); `read_all` reads it in one call.
- Writes collect the caller's pieces into chunk_size blocks. A body that ends within the first block
  (every small object) goes out as one Content-Length request whose headers and body leave in a single
  send, so the download it came from is finished and its connection back in the pool before the upload
  takes one; a longer body streams with chunked transfer encoding, one chunk per block.
- TCP_NODELAY is set on every client socket (the server sets it on the sockets it accepts), so no
  request or answer waits for a delayed ACK.
- Every call has a (connect, read) timeout, and the client never retries on its own: the engine's retry
  policy decides.

Error mapping (lab.engine.errors), the same whether it happens before or in the middle of a stream:
- connection refused/reset/closed early -> StoreConnectionError(TransientError)
- connect/read timeout                  -> StoreTimeout(TransientError)
- 5xx, 408, 429                          -> StoreServerError(TransientError)   (.status)
- 404                                    -> ObjectNotFound(PermanentError)
- 400, and bad keys checked client-side -> ValidationError(PermanentError)
- any other 4xx                          -> StoreClientError(PermanentError)   (.status)

Objects live on the server at <server root>/<bucket>/<key>; the local store keeps them at <root>/<key>.
So the same files are seen by both backends when LocalObjectStore's root is <server root>/<bucket>
(`bucket_root`).
"""
import hashlib
import http.client
import json
import logging
import os
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

from .errors import (ConfigError, ObjectNotFound, PermanentError, TransientError,
                     ValidationError)
from .objects import LocalObjectStore
from .tasks import check_key

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_BUCKET = "store"
DEFAULT_TIMEOUT = (3.05, 30.0)
_TRANSIENT_STATUS = (408, 429)
SMALL_BODY = 256 * 1024        # a Content-Length body up to this size leaves in the same send as its headers
ERROR_BODY_MAX = 64 * 1024     # an error answer's body is read (for its message) up to this size
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


# Everything the transport can raise: socket errors (ConnectionError, TimeoutError, ssl.SSLError are all
# OSError) and http.client's protocol errors (IncompleteRead, BadStatusLine, RemoteDisconnected, ...).
_TRANSPORT_ERRORS = (OSError, http.client.HTTPException)


def _map_request_error(exc, what):
    """The lab error for a socket/http.client exception raised while talking to the server."""
    if isinstance(exc, (TransientError, PermanentError)):
        return exc
    if isinstance(exc, TimeoutError):
        return StoreTimeout(f"{what}: timed out ({exc.__class__.__name__})")
    return StoreConnectionError(f"{what}: {exc.__class__.__name__}: {str(exc)[:200]}")


def _split_timeout(timeout):
    if isinstance(timeout, (tuple, list)):
        connect, read = timeout
    else:
        connect = read = timeout
    return connect, read


class _Connection(http.client.HTTPConnection):
    """An http.client connection with a separate read timeout and one send for headers + small body."""
    read_timeout = None

    def connect(self):
        super().connect()                      # connect timeout = self.timeout; sets TCP_NODELAY
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

    def __init__(self, scheme, host, port, maxsize, timeout):
        self.cls = _HTTPSConnection if scheme == "https" else _Connection
        self.host, self.port = host, port
        self.maxsize = maxsize
        self.connect_timeout, self.read_timeout = _split_timeout(timeout)
        self.idle = []
        self.lock = threading.Lock()
        self.closed = False
        self.stats = {"created": 0, "reused": 0, "dropped": 0, "discarded": 0}

    def get(self):
        while True:
            with self.lock:
                conn = self.idle.pop() if self.idle else None
            if conn is None:
                conn = self.cls(self.host, self.port, timeout=self.connect_timeout)
                conn.read_timeout = self.read_timeout
                with self.lock:
                    self.stats["created"] += 1
                return conn
            if not _dropped(conn):
                with self.lock:
                    self.stats["reused"] += 1
                return conn
            conn.close()
            with self.lock:
                self.stats["dropped"] += 1

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
                self.stats["discarded"] += 1
                first = self.stats["discarded"] == 1
        if full and first:
            log.warning("object store connection pool is full (%d idle), closing a connection; more "
                        "threads call the store than pool_size allows for", self.maxsize)
        conn.close()

    def close(self):
        with self.lock:
            self.closed = True
            idle, self.idle = self.idle, []
        for conn in idle:
            conn.close()


class HttpObjectStore:
    """An object store reached over HTTP; thread-safe for concurrent calls from `pool_size` threads."""

    def __init__(self, base_url, bucket=DEFAULT_BUCKET, chunk_size=64 * 1024, pool_size=8,
                 timeout=DEFAULT_TIMEOUT, connections=None):
        if not isinstance(base_url, str) or not re.match(r"https?://[^/\s]+", base_url):
            raise ConfigError(f"store_url must be http://host:port, not {base_url!r}")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", bucket or "") or bucket in (".", ".."):
            raise ConfigError(f"bucket must be a simple name, not {bucket!r}")
        if int(chunk_size) <= 0 or int(pool_size) <= 0:
            raise ConfigError("chunk_size and pool_size must be positive")
        if connections is not None and int(connections) <= 0:
            raise ConfigError("connections must be positive")
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
        self._prefix = parts.path.rstrip("/") + "/" + urllib.parse.quote(bucket) + "/"
        self._pool = _Pool(parts.scheme, host, port or (443 if parts.scheme == "https" else 80),
                           self.connections, timeout)

    @property
    def stats(self):
        """Connection counts: created, reused, dropped (closed by the server while idle), discarded
        (closed because the pool was full)."""
        with self._pool.lock:
            return dict(self._pool.stats)

    def url_for(self, key):
        check_key(key)
        return f"{self.base_url}/{urllib.parse.quote(self.bucket)}/{urllib.parse.quote(key, safe='/')}"

    def _target(self, key):
        check_key(key)
        return self._prefix + urllib.parse.quote(key, safe="/")

    # --- one request ---
    def _send(self, method, target, what, body=None, headers=None):
        """Send a request and read the answer's status and headers: (conn, resp). A transport failure
        closes the connection and raises the mapped error."""
        conn = self._pool.get()
        try:
            conn.request(method, target, body=body, headers=headers or {})
            return conn, conn.getresponse()
        except BaseException as exc:
            conn.close()
            if isinstance(exc, _TRANSPORT_ERRORS):
                raise _map_request_error(exc, what) from exc
            raise

    def _done(self, conn, resp):
        """The answer was read to its end: the connection goes back to the pool, else it is closed."""
        if resp.isclosed():
            self._pool.put(conn)
        else:
            resp.close()
            conn.close()

    def _fail(self, conn, resp, key, what, head=False):
        """Read (a bounded part of) an error answer for its message, then raise the mapped error."""
        detail = ""
        try:
            if not head:
                data = resp.read(ERROR_BODY_MAX)
                detail = data[:200].decode("utf-8", "replace").strip()
        except _TRANSPORT_ERRORS:
            pass
        finally:
            self._done(conn, resp)
        self._raise_for_status(resp.status, key, what, detail)

    # --- the LocalObjectStore interface ---
    def read_chunks(self, key):
        """Start the download now (ObjectNotFound/ValidationError/TransientError raise here) and return
        an iterator of chunk_size pieces; transport failures while iterating raise TransientError."""
        target = self._target(key)
        what = f"GET {key[:200]!r}"
        conn, resp = self._send("GET", target, what)
        if resp.status != 200:
            self._fail(conn, resp, key, what)
        return self._iter_body(conn, resp, what)

    def _iter_body(self, conn, resp, what):
        expected = resp.getheader("Content-Length")
        received = 0
        clean = False
        chunk = self.chunk_size
        try:
            try:
                while True:
                    data = resp.read(chunk)
                    if not data:
                        break
                    received += len(data)
                    yield data
            except _TRANSPORT_ERRORS as exc:
                raise _map_request_error(exc, what + f" after {received} bytes") from exc
            if expected is not None and received != int(expected):
                raise StoreConnectionError(f"{what}: body ended after {received} of {expected} bytes")
            clean = True
        finally:
            if clean:
                self._done(conn, resp)
            else:
                resp.close()
                conn.close()

    def read_all(self, key):
        """The whole object in one call (one read of the body)."""
        target = self._target(key)
        what = f"GET {key[:200]!r}"
        conn, resp = self._send("GET", target, what)
        if resp.status != 200:
            self._fail(conn, resp, key, what)
        try:
            data = resp.read()             # IncompleteRead if the body is cut short
        except _TRANSPORT_ERRORS as exc:
            resp.close()
            conn.close()
            raise _map_request_error(exc, what) from exc
        self._done(conn, resp)
        return data

    def write_chunks(self, key, chunks):
        """Stream `chunks` to `key`; the server renames it into place only when complete. Returns
        (bytes written, sha256 hex). The pieces are sent in chunk_size blocks: a body that ends within the
        first block goes out as one request with Content-Length, a longer one as a chunked PUT. An
        exception from `chunks` itself is re-raised unchanged (the server sees a cut upload, or no upload
        at all, and keeps nothing)."""
        target = self._target(key)
        what = f"PUT {key[:200]!r}"
        iterator = iter(chunks)
        block, ended = self._collect(iterator)       # the caller's own errors propagate unchanged
        if ended:
            return self.write_all(key, block)
        digest = hashlib.sha256()
        nbytes = 0
        conn = self._pool.get()
        try:
            try:
                conn.putrequest("PUT", target, skip_accept_encoding=True)
                conn.putheader("Content-Type", "application/octet-stream")
                conn.putheader("Transfer-Encoding", "chunked")
                conn.endheaders()
                while True:
                    digest.update(block)
                    nbytes += len(block)
                    conn.send(b"%x\r\n%b\r\n" % (len(block), block))
                    block, ended = self._collect(iterator)   # the caller's error: see below
                    if ended:
                        break
                if block:
                    digest.update(block)
                    nbytes += len(block)
                    conn.send(b"%x\r\n%b\r\n" % (len(block), block))
                conn.send(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError) as exc:
                # The server may have answered early (a 503 before reading the body) and stopped
                # reading: its answer is still worth reading; if there is none, the send error stands.
                status, detail = self._early_answer(conn)
                if status is None or status in (200, 201):
                    raise _map_request_error(exc, what) from exc
                self._raise_for_status(status, key, what, detail)
            resp = conn.getresponse()
        except BaseException as exc:
            conn.close()                     # a cut chunked body: the server keeps nothing
            if isinstance(exc, _TRANSPORT_ERRORS):
                raise _map_request_error(exc, what) from exc
            raise                            # the caller's own error, unchanged (or ours, mapped)
        return self._finish_put(conn, resp, key, what, nbytes, digest.hexdigest())

    @staticmethod
    def _early_answer(conn):
        """(status, detail) of an answer the server sent while the body was still going out, or
        (None, "") if there is none to read. The connection is closed either way."""
        try:
            resp = conn.getresponse()
            return resp.status, resp.read(ERROR_BODY_MAX)[:200].decode("utf-8", "replace").strip()
        except _TRANSPORT_ERRORS:
            return None, ""
        finally:
            conn.close()

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
        target = self._target(key)
        what = f"PUT {key[:200]!r}"
        data = bytes(data)
        conn, resp = self._send("PUT", target, what, body=data,
                                headers={"Content-Type": "application/octet-stream",
                                         "Content-Length": str(len(data))})
        return self._finish_put(conn, resp, key, what, len(data), hashlib.sha256(data).hexdigest())

    def _finish_put(self, conn, resp, key, what, nbytes, sha):
        if resp.status not in (200, 201):
            self._fail(conn, resp, key, what)
        try:
            info = json.loads(resp.read(ERROR_BODY_MAX))
        except (ValueError, *_TRANSPORT_ERRORS) as exc:
            resp.close()
            conn.close()
            raise StoreConnectionError(f"{what}: unreadable answer to the upload: {exc}") from exc
        self._done(conn, resp)
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
        target = self._target(key)
        what = f"HEAD {key[:200]!r}"
        conn, resp = self._send("HEAD", target, what)
        if resp.status == 200:
            length = resp.getheader("Content-Length")
            resp.read()
            self._done(conn, resp)
            return int(length or 0)
        if resp.status == 404:
            resp.read()
            self._done(conn, resp)
            return None
        self._fail(conn, resp, key, what, head=True)

    def remove_temp_files(self):
        """Temp files are the server's business (it removes its own); nothing to do here."""
        return 0

    def close(self):
        self._pool.close()

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
def default_python():
    for candidate in (os.path.join(REPO_ROOT, ".venv", "bin", "python"),
                      os.path.join(REPO_ROOT, ".venv", "Scripts", "python.exe")):
        if os.path.exists(candidate):
            return candidate
    return sys.executable


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
               timeout=DEFAULT_TIMEOUT):
    """LocalObjectStore(root) for kind "local", HttpObjectStore(url) for kind "http" (root unused);
    ConfigError for anything else or an http store without a URL. pool_size = threads calling at once
    (the engine's max_workers); the HTTP store keeps 2 * pool_size connections."""
    if kind == "local":
        if not root:
            raise ConfigError("store=local needs store_root")
        return LocalObjectStore(root, chunk_size=chunk_size)
    if kind == "http":
        if not url:
            raise ConfigError("store=http needs store_url (e.g. from start_server_process(...).url)")
        return HttpObjectStore(url, bucket=bucket, chunk_size=chunk_size, pool_size=pool_size,
                               timeout=timeout)
    raise ConfigError(f"store must be 'local' or 'http', not {kind!r}")


__all__ = ["HttpObjectStore", "ServerProcess", "StoreClientError", "StoreConnectionError",
           "StoreServerError", "StoreTimeout", "bucket_root", "make_store", "server_argv",
           "start_server_process"]
