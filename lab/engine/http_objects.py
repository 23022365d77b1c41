"""The HTTP object store client (same methods as LocalObjectStore), the server launcher and make_store.

`HttpObjectStore` talks to the server in lab.engine.http_server through one shared requests.Session whose
connection pool is sized to the number of worker threads. Reads stream (`stream=True` +
`iter_content(chunk_size)`), writes send a generator body (chunked transfer encoding), every call has a
(connect, read) timeout, and requests never retries on its own: the engine's retry policy decides.

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
import os
import re
import selectors
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse

import requests
from requests.adapters import HTTPAdapter

from .errors import (ConfigError, ObjectNotFound, PermanentError, TransientError,
                     ValidationError)
from .objects import LocalObjectStore
from .tasks import check_key

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_BUCKET = "store"
DEFAULT_TIMEOUT = (3.05, 30.0)
_TRANSIENT_STATUS = (408, 429)


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
    """Carries an exception raised by the caller's chunk iterator out through requests."""


def _map_request_error(exc, what):
    """The lab error for a requests/urllib3/socket exception raised while talking to the server."""
    if isinstance(exc, (TransientError, PermanentError)):
        return exc
    if isinstance(exc, (requests.Timeout, TimeoutError)):
        return StoreTimeout(f"{what}: timed out ({exc.__class__.__name__})")
    return StoreConnectionError(f"{what}: {exc.__class__.__name__}: {str(exc)[:200]}")


# Everything the transport can raise mid-call: requests' own classes (ConnectionError, Timeout,
# ChunkedEncodingError, ContentDecodingError), urllib3's that leak through iter_content, and OSError.
_TRANSPORT_ERRORS = (requests.RequestException, OSError)
try:  # urllib3 is a dependency of requests; its HTTPError is the base of ProtocolError etc.
    import urllib3.exceptions as _u3
    _TRANSPORT_ERRORS = _TRANSPORT_ERRORS + (_u3.HTTPError,)
except ImportError:  # pragma: no cover
    pass


class HttpObjectStore:
    """An object store reached over HTTP; thread-safe for concurrent calls from `pool_size` workers."""

    def __init__(self, base_url, bucket=DEFAULT_BUCKET, chunk_size=64 * 1024, pool_size=8,
                 timeout=DEFAULT_TIMEOUT):
        if not isinstance(base_url, str) or not re.match(r"https?://[^/\s]+", base_url):
            raise ConfigError(f"store_url must be http://host:port, not {base_url!r}")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", bucket or "") or bucket in (".", ".."):
            raise ConfigError(f"bucket must be a simple name, not {bucket!r}")
        if int(chunk_size) <= 0 or int(pool_size) <= 0:
            raise ConfigError("chunk_size and pool_size must be positive")
        self.base_url = base_url.rstrip("/")
        self.bucket = bucket
        self.chunk_size = int(chunk_size)
        self.pool_size = int(pool_size)
        self.timeout = timeout
        self.session = requests.Session()
        self.session.trust_env = False          # loopback only: no proxies or netrc from the environment
        adapter = HTTPAdapter(pool_connections=self.pool_size, pool_maxsize=self.pool_size, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def url_for(self, key):
        check_key(key)
        return f"{self.base_url}/{urllib.parse.quote(self.bucket)}/{urllib.parse.quote(key, safe='/')}"

    # --- the LocalObjectStore interface ---
    def read_chunks(self, key):
        """Start the download now (ObjectNotFound/ValidationError/TransientError raise here) and return
        an iterator of chunk_size pieces; transport failures while iterating raise TransientError."""
        url = self.url_for(key)
        what = f"GET {key[:200]!r}"
        try:
            resp = self.session.get(url, stream=True, timeout=self.timeout)
        except _TRANSPORT_ERRORS as exc:
            raise _map_request_error(exc, what) from exc
        if resp.status_code != 200:
            try:
                self._raise_for_status(resp, key, what)
            finally:
                resp.close()
        return self._iter_body(resp, what)

    def _iter_body(self, resp, what):
        expected = resp.headers.get("Content-Length")
        received = 0
        try:
            try:
                for chunk in resp.iter_content(self.chunk_size):
                    received += len(chunk)
                    yield chunk
            except _TRANSPORT_ERRORS as exc:
                raise _map_request_error(exc, what + f" after {received} bytes") from exc
            if expected is not None and received != int(expected):
                raise StoreConnectionError(f"{what}: body ended after {received} of {expected} bytes")
        finally:
            resp.close()

    def read_all(self, key):
        return b"".join(self.read_chunks(key))

    def write_chunks(self, key, chunks):
        """Stream `chunks` to `key` (chunked PUT); the server renames it into place only when complete.
        Returns (bytes written, sha256 hex). An exception from `chunks` itself is re-raised unchanged
        (the server sees a cut upload and keeps nothing)."""
        url = self.url_for(key)
        what = f"PUT {key[:200]!r}"
        digest = hashlib.sha256()
        state = {"nbytes": 0, "source_error": None}

        def body():
            iterator = iter(chunks)
            while True:
                try:
                    chunk = next(iterator)
                except StopIteration:
                    return
                except BaseException as exc:    # keep the caller's own error; abort the upload
                    state["source_error"] = exc
                    raise _SourceFailed() from exc
                if not chunk:
                    continue
                digest.update(chunk)
                state["nbytes"] += len(chunk)
                yield chunk

        try:
            resp = self.session.put(url, data=body(), timeout=self.timeout,
                                    headers={"Content-Type": "application/octet-stream"})
        except BaseException as exc:
            if state["source_error"] is not None:
                raise state["source_error"]
            if isinstance(exc, _TRANSPORT_ERRORS):
                raise _map_request_error(exc, what) from exc
            raise
        if state["source_error"] is not None:       # should not happen: the upload had to abort
            raise state["source_error"]
        return self._finish_put(resp, key, what, state["nbytes"], digest.hexdigest())

    def write_all(self, key, data):
        """Upload `data` (bytes-like) in one PUT with Content-Length; returns (bytes, sha256 hex)."""
        url = self.url_for(key)
        what = f"PUT {key[:200]!r}"
        data = bytes(data)
        try:
            resp = self.session.put(url, data=data, timeout=self.timeout,
                                    headers={"Content-Type": "application/octet-stream"})
        except _TRANSPORT_ERRORS as exc:
            raise _map_request_error(exc, what) from exc
        return self._finish_put(resp, key, what, len(data), hashlib.sha256(data).hexdigest())

    def _finish_put(self, resp, key, what, nbytes, sha):
        with resp:
            if resp.status_code not in (200, 201):
                self._raise_for_status(resp, key, what)
            try:
                info = resp.json()
            except (ValueError, *_TRANSPORT_ERRORS) as exc:
                raise StoreConnectionError(f"{what}: unreadable answer to the upload: {exc}") from exc
        if info.get("bytes") != nbytes or info.get("sha256") != sha:
            raise StoreServerError(f"{what}: server stored {info.get('bytes')} bytes "
                                   f"sha256={str(info.get('sha256'))[:16]}, sent {nbytes} sha256={sha[:16]}")
        return nbytes, sha

    def exists(self, key):
        return self._head(key) is not None

    def size(self, key):
        """Size in bytes, None for a missing object (transport errors raise TransientError)."""
        return self._head(key)

    def _head(self, key):
        url = self.url_for(key)
        what = f"HEAD {key[:200]!r}"
        try:
            resp = self.session.head(url, timeout=self.timeout)
        except _TRANSPORT_ERRORS as exc:
            raise _map_request_error(exc, what) from exc
        with resp:
            if resp.status_code == 404:
                return None
            if resp.status_code != 200:
                self._raise_for_status(resp, key, what)
            return int(resp.headers.get("Content-Length", 0))

    def remove_temp_files(self):
        """Temp files are the server's business (it removes its own); nothing to do here."""
        return 0

    def close(self):
        self.session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- errors ---
    @staticmethod
    def _raise_for_status(resp, key, what):
        status = resp.status_code
        try:
            detail = resp.text[:200].strip() if resp.request.method != "HEAD" else ""
        except _TRANSPORT_ERRORS:
            detail = ""
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
    ConfigError for anything else or an http store without a URL."""
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
