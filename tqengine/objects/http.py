"""The HTTP object store client: the same interface as LocalObjectStore, over HTTP/1.1 (the lab server).

`HttpObjectStore` talks to the server in lab/objects_server.py over HTTP/1.1 with kept-alive connections.
One class holds everything the two clients share: URL building, client-side key checks, the blocking of
uploads into chunk_size blocks, the size/sha256 check of an upload's answer, the mapping of statuses and
transport failures to lab errors, and the read_chunks/read_all/write_chunks/write_all/exists/size/close
methods.
Only how bytes move differs, in a small transport object chosen by `client` (the interface in
objects/http_transport.py): "stdlib" (the default, an http.client pool: objects/http_stdlib.py) or
"requests" (one shared Session: objects/http_requests.py). stdlib is the default
because it costs less CPU per call (single thread, GET + PUT of 16 KiB: ~170 us against ~400 us), and the
client's CPU is on every task's path and under the GIL the workers share (docs/HTTP_STORE.md).

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
  policy decides. The read timeout bounds an answer's status line and headers as a whole, over plain TCP
  and TLS alike (http_transport.HeadDeadlineSocket, HeadDeadlineSSLSocket), and each read of its body; a
  body comes in pieces as they arrive (one recv each at most), so the attempt's deadline, checked between
  pieces, holds against a server that dribbles bytes.
- An answer that makes no sense (a Content-Length that is not digits, a chunk size past memory) is a
  StoreServerError or StoreConnectionError, never another exception.

Error mapping (tqengine.errors), the same for both clients, before or in the middle of a stream:
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
from __future__ import annotations

import hashlib
import json
import re
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping
from typing import NoReturn

from ..config import DEFAULT_HTTP_CLIENT, HTTP_CLIENTS
from ..errors import (
    ConfigError,
    ObjectNotFound,
    ResourceError,
    StoreClientError,
    StoreConnectionError,
    StoreServerError,
    ValidationError,
)
from ..tasks import check_key
from .base import ObjectStore
from .bearer import TOKEN_RE
from .http_requests import RequestsTransport
from .http_stdlib import StdlibTransport
from .http_transport import (
    TRANSPORT_ERRORS,
    Answer,
    Body,
    Counts,
    SourceFailed,
    Timeout,
    Transport,
    TransportFactory,
    map_request_error,
)

DEFAULT_BUCKET = "store"
DEFAULT_TIMEOUT = (3.05, 30.0)
CLIENTS = HTTP_CLIENTS
DEFAULT_CLIENT = DEFAULT_HTTP_CLIENT
_TRANSIENT_STATUS = (408, 429)
ERROR_BODY_MAX = 64 * 1024     # an error answer's body is read (for its message) up to this size
_PUT_HEADERS = {"Content-Type": "application/octet-stream"}
TRANSPORTS: dict[str, TransportFactory] = {"requests": RequestsTransport, "stdlib": StdlibTransport}


class HttpObjectStore(ObjectStore):
    """An object store reached over HTTP; thread-safe for concurrent calls from `pool_size` threads.

    client="stdlib" (default) or "requests" picks the transport (see the module docstring); everything
    else, errors included, is the same for both."""

    def __init__(self, base_url: str, bucket: str = DEFAULT_BUCKET, chunk_size: int = 64 * 1024, pool_size: int = 8,
                 timeout: Timeout = DEFAULT_TIMEOUT, connections: int | None = None, client: str = DEFAULT_CLIENT,
                 token: str = "") -> None:
        if not isinstance(base_url, str) or not re.match(r"https?://[^/\s]+", base_url):
            raise ConfigError(f"store_url must be http(s)://host:port, not {base_url!r}")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", bucket or "") or bucket in (".", ".."):
            raise ConfigError(f"bucket must be a simple name, not {bucket!r}")
        if int(chunk_size) <= 0 or int(pool_size) <= 0:
            raise ConfigError("chunk_size and pool_size must be positive")
        if connections is not None and int(connections) <= 0:
            raise ConfigError("connections must be positive")
        if token and (not isinstance(token, str) or not TOKEN_RE.fullmatch(token)):
            raise ConfigError("store_token must be letters, digits and -._~+/ (optionally ending in =)")
        if client not in TRANSPORTS:
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
        # with a token every request carries it (the server answers 401 without it); built once
        auth = {"Authorization": f"Bearer {token}"} if token else {}
        self._headers: dict[str, str] | None = auth or None
        self._put_headers = {**_PUT_HEADERS, **auth}
        self._transport: Transport = TRANSPORTS[client](
            parts.scheme, host, port or (443 if parts.scheme == "https" else 80), parts.netloc,
            self.connections, timeout, Counts(self.connections))

    @property
    def stats(self) -> dict[str, int]:
        """Connection counts: created, reused, dropped (closed by the server while idle), discarded
        (closed because the pool was full)."""
        return self._transport.counts.snapshot()

    def url_for(self, key: str) -> str:
        key = check_key(key)
        return f"{self.base_url}/{urllib.parse.quote(self.bucket)}/{urllib.parse.quote(key, safe='/')}"

    def _target(self, key: str) -> str:
        key = check_key(key)
        return self._prefix + urllib.parse.quote(key, safe="/")

    # --- one request ---
    def _send(self, method: str, key: str, body: Body = None,
              headers: Mapping[str, str] | None = None) -> tuple[Answer, str]:
        """Send a request and read the answer's status and headers: (answer, what). A transport failure
        raises the mapped error (the transport has closed the connection)."""
        target = self._target(key)                 # ValidationError before any request
        what = f"{method} {key[:200]!r}"
        try:
            return self._transport.request(method, target, body, headers), what
        except TRANSPORT_ERRORS as exc:
            raise map_request_error(exc, what) from exc

    def _fail(self, answer: Answer, key: str, what: str, head: bool = False) -> NoReturn:
        """Read (a bounded part of) an error answer for its message, then raise the mapped error."""
        detail = ""
        try:
            if not head:
                detail = answer.read(ERROR_BODY_MAX)[:200].decode("utf-8", "replace").strip()
        except TRANSPORT_ERRORS:
            pass
        finally:
            answer.release()
        self._raise_for_status(answer.status, key, what, detail)

    # --- the LocalObjectStore interface ---
    def read_chunks(self, key: str) -> Iterator[bytes]:
        """Start the download now (ObjectNotFound/ValidationError/TransientError raise here) and return
        an iterator of chunk_size pieces; transport failures while iterating raise TransientError. The
        response is closed when the iterator ends, fails or is closed/abandoned."""
        answer, what = self._send("GET", key, headers=self._headers)
        if answer.status != 200:
            self._fail(answer, key, what)
        return self._iter_body(answer, what)

    def _iter_body(self, answer: Answer, what: str) -> Iterator[bytes]:
        expected = _content_length(answer, what)
        received = 0
        clean = False
        try:
            try:
                for data in answer.chunks(self.chunk_size):
                    received += len(data)
                    yield data
            except TRANSPORT_ERRORS as exc:
                raise map_request_error(exc, what + f" after {received} bytes") from exc
            if expected is not None and received != expected:
                raise StoreConnectionError(f"{what}: body ended after {received} of {expected} bytes")
            clean = True
        finally:
            if clean:
                answer.release()
            else:
                answer.discard()

    def read_all(self, key: str) -> bytes:
        """The whole object in one call."""
        answer, what = self._send("GET", key, headers=self._headers)
        if answer.status != 200:
            self._fail(answer, key, what)
        _content_length(answer, what)
        try:
            data = answer.read()           # a body cut short raises (IncompleteRead / ProtocolError)
        except TRANSPORT_ERRORS as exc:
            answer.discard()
            raise map_request_error(exc, what) from exc
        answer.release()
        return data

    def write_chunks(self, key: str, chunks: Iterable[bytes]) -> tuple[int, str]:
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
        sent = _Upload()

        def blocks() -> Iterator[bytes]:
            block, done = first, False
            while block:
                digest.update(block)
                sent.nbytes += len(block)
                yield block
                if done:
                    return
                try:
                    block, done = self._collect(iterator)
                except BaseException as exc:          # keep the caller's own error; abort the upload
                    sent.source_error = exc
                    raise SourceFailed() from exc

        try:
            answer = self._transport.stream_put(target, blocks(), self._put_headers)
        except BaseException as exc:
            if sent.source_error is not None:
                raise sent.source_error from None
            if isinstance(exc, TRANSPORT_ERRORS):
                raise map_request_error(exc, what) from exc
            raise
        if sent.source_error is not None:            # cannot happen: the upload had to abort
            answer.discard()
            raise sent.source_error
        return self._finish_put(answer, key, what, sent.nbytes, digest.hexdigest())

    def _collect(self, iterator: Iterator[bytes]) -> tuple[bytes, bool]:
        """(block, ended): the next pieces of `iterator` joined until they reach chunk_size bytes (a
        bigger piece passes whole), with ended=True when the iterator is exhausted."""
        pieces: list[bytes] = []
        have = 0
        for piece in iterator:
            if not piece:
                continue
            pieces.append(piece)
            have += len(piece)
            if have >= self.chunk_size:
                return (bytes(pieces[0]) if len(pieces) == 1 else b"".join(pieces)), False
        return b"".join(pieces), True

    def write_all(self, key: str, data: bytes) -> tuple[int, str]:
        """Upload `data` (bytes-like) in one PUT with Content-Length; returns (bytes, sha256 hex)."""
        data = bytes(data)
        answer, what = self._send("PUT", key, body=data, headers=self._put_headers)
        return self._finish_put(answer, key, what, len(data), hashlib.sha256(data).hexdigest())

    def _finish_put(self, answer: Answer, key: str, what: str, nbytes: int, sha: str) -> tuple[int, str]:
        if answer.status not in (200, 201):
            self._fail(answer, key, what)
        try:
            info = json.loads(answer.read(ERROR_BODY_MAX))
        except (ValueError, *TRANSPORT_ERRORS) as exc:
            answer.discard()
            raise StoreConnectionError(f"{what}: unreadable answer to the upload: {exc}") from exc
        answer.release()
        if not isinstance(info, dict) or info.get("bytes") != nbytes or info.get("sha256") != sha:
            info = info if isinstance(info, dict) else {}
            raise StoreServerError(f"{what}: server stored {info.get('bytes')} bytes "
                                   f"sha256={str(info.get('sha256'))[:16]}, sent {nbytes} "
                                   f"sha256={str(sha)[:16]}")
        return nbytes, sha

    def exists(self, key: str) -> bool:
        return self._head(key) is not None

    def size(self, key: str) -> int | None:
        """Size in bytes, None for a missing object (transport errors raise TransientError)."""
        return self._head(key)

    def _head(self, key: str) -> int | None:
        answer, what = self._send("HEAD", key, headers=self._headers)
        if answer.status not in (200, 404):
            self._fail(answer, key, what, head=True)
        size = _content_length(answer, what) if answer.status == 200 else None
        try:
            answer.read()                  # no body: this only marks the answer as read to its end
        except TRANSPORT_ERRORS as exc:
            answer.discard()
            raise map_request_error(exc, what) from exc
        answer.release()
        return None if answer.status != 200 else size or 0

    def remove_temp_files(self) -> int:
        """Temp files are the server's business (it removes its own); nothing to do here."""
        return 0

    def ping(self) -> int:
        """Check that an HTTP server answers at base_url and lets us in: the engine calls this at start,
        so a wrong or dead URL, a missing token or a refused Host is one clear error instead of every task
        failing. Raises the mapped TransientError (StoreConnectionError, StoreTimeout) when nothing
        answers, ConfigError for 401 (token) and 421 (Host); any other status will do."""
        what = f"HEAD {self.base_url}{self._prefix}"
        try:
            answer = self._transport.request("HEAD", self._prefix, headers=self._headers)
        except TRANSPORT_ERRORS as exc:
            raise map_request_error(exc, what) from exc
        try:
            answer.read()
        except TRANSPORT_ERRORS:
            answer.discard()
        else:
            answer.release()
        if answer.status == 401:
            hint = "the store_token given is not its token" if self._headers else "set store_token (TQ_STORE_TOKEN)"
            raise ConfigError(f"the object store at {self.base_url} wants a token (HTTP 401): {hint}")
        if answer.status == 421:
            raise ConfigError(f"the object store at {self.base_url} does not answer for that host name "
                              f"(HTTP 421): use a loopback address, or start the server with --allow-host NAME")
        return answer.status

    def close(self) -> None:
        self._transport.close()

    # --- errors ---
    @staticmethod
    def _raise_for_status(status: int, key: str, what: str, detail: str = "") -> NoReturn:
        message = f"{what}: HTTP {status} {detail}".rstrip()
        if status == 404:
            raise ObjectNotFound(f"source object {key[:200]!r} does not exist ({message})")
        if status == 400:
            raise ValidationError(message)
        if status == 507:       # the server's disk is full: the machine's fault, not the task's
            raise ResourceError(f"{message}: the object store is full", "object store disk full")
        if status >= 500 or status in _TRANSIENT_STATUS:
            raise StoreServerError(message, status)
        if 400 <= status < 500:
            raise StoreClientError(message, status)
        raise StoreServerError(f"{what}: unexpected HTTP {status}", status)


class _Upload:
    """What a streamed upload has sent so far, and the caller's own error if its chunks raised one."""

    __slots__ = ("nbytes", "source_error")

    def __init__(self) -> None:
        self.nbytes = 0
        self.source_error: BaseException | None = None


MAX_CONTENT_LENGTH = 1 << 53     # bytes an answer may announce (http.client's read of 10**20 raised OverflowError)


def _parse_length(value: str | None, what: str) -> int | None:
    """An answer's Content-Length as a number (None when absent); StoreServerError (transient: the server's
    fault) for one that is not ASCII digits (int() took '+5', ' 5' and '5_0') or is beyond MAX_CONTENT_LENGTH."""
    if value is None:
        return None
    length = int(value) if value.isascii() and value.isdigit() and len(value) <= 16 else -1
    if not 0 <= length <= MAX_CONTENT_LENGTH:
        raise StoreServerError(f"{what}: the server answered with Content-Length {value[:40]!r}")
    return length


def _content_length(answer: Answer, what: str) -> int | None:
    """_parse_length of `answer`'s header; the answer is discarded (its connection closed) when it is bad."""
    try:
        return _parse_length(answer.header("Content-Length"), what)
    except StoreServerError:
        answer.discard()
        raise
