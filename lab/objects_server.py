"""The HTTP object server: a directory served over real sockets, standing in for MinIO-style storage.

`GET /<bucket>/<key>` streams `<root>/<bucket>/<key>` in chunks with Content-Length (one `bytes=` Range
honoured), `HEAD` gives existence and size, `PUT` streams the body (Content-Length or chunked) into a
temporary file in the server's own upload area and renames it into place only when the whole body has
arrived, so a broken upload leaves nothing under the object's name. A missing object is 404; a bucket
that is not a simple name or a key that could escape the root is 400 (the rules of tasks.check_key on the
percent-decoded path). Every name is then walked from a descriptor of the root, one component at a time
with O_NOFOLLOW (tqengine.objects.confined.ConfinedRoot, the engine's own path safety): a symbolic link on
the way or at the end is 400 (even a folder swapped for a link after an earlier request used it), a file
with other hard links is 400 unless `allow_hard_links`, a FIFO, device, socket or folder is 404 (never
opened: it could block the thread), and an upload lands under the root or nowhere.

Hostile clients (RFC 9112 is the reference for the framing rules):
- Requests are parsed strictly (lab/http_head.py): request line and headers at most 64 KiB and 100 lines,
  header names must be tokens (no space before the colon, no obs-fold), `Content-Length` exactly one
  value of ASCII digits, `Transfer-Encoding` exactly `chunked` and never together with Content-Length
  (nor in HTTP/1.0). Anything else is 400 and the connection is closed: no second request can hide in a
  body. A body sent with a GET or HEAD is read and dropped, never parsed as the next request.
- Who may talk to it, and for how long (lab/objects_guard.py): `Host` must be on an allow-list (loopback
  names and the bound address, plus `allowed_hosts`), else 421 (a missing Host in HTTP/1.1 is 400): this
  closes DNS rebinding (a browser page on evil.example resolving to 127.0.0.1 sends `Host: evil.example`).
  With a token, every request needs `Authorization: Bearer <token>`, else 401. Every phase of a
  connection has a deadline (the request head, a body or an answer by minimum rate, an idle keep-alive),
  enforced by a reaper in the accept loop, so a slow or dripping client is cut off. At most
  max_connections at once (default 512, lowered to fit the file limit): over it, the connection that has
  waited longest for a request is closed, or the new one gets a 503 when all are busy. A connection
  waiting for a request costs one blocked thread and no CPU; running out of descriptors never spins.
- Uploads in progress live in `<root>/.tq-uploads/srv-*/` (one directory per server, held with flock);
  at start a server removes the directories of servers that are gone, so a crash leaves nothing behind.

Faults for experiments: a latency and, from a seeded RNG, a 503 (a transient fault) instead of handling
the request. The latency is the service time of a request, the same model as the engine's Processor:
the server does the work (parse, open/read, or receive/write/rename) and then sleeps whatever is left of
`latency_ms`, counted from the moment the request line was read, before it sends the answer's headers
(for a GET, the time to the first byte). Work that takes longer than latency_ms is not hidden: the answer
is then simply later. An injected 503 waits the whole latency, then answers. So with latency_ms=5 a task's
GET and PUT take 5 ms each (10 ms of I/O per task), whatever the server's own overhead below that.
Requests refused before dispatch (framing, Host, token) are answered at once.
Memory stays flat whatever the object size: bodies move `chunk_size` bytes at a time in both directions.

Responses leave with few sends: the accepted socket has TCP_NODELAY (no ~40 ms Nagle/delayed-ACK stall
between the headers and the body of a kept-alive connection), and the headers go out in the same write
as the first body chunk (a whole small object in one segment).

Run it with `python -m lab objects serve --root DIR`; `ObjectServer` is the in-process form (tests).
"""
import errno
import hashlib
import http.server
import itertools
import json
import os
import random
import re
import socket
import stat
import sys
import threading
import time
import urllib.parse

from lab import objects_guard as guard
from lab.http_head import MAX_HEAD_BYTES, Refused, read_head
from tqengine.errors import ObjectNotFound, UnsafeObject, ValidationError
from tqengine.objects.confined import ConfinedRoot, HeldDir
from tqengine.objects.http import TOKEN_RE
from tqengine.objects.local import TMP_SUFFIX
from tqengine.tasks import check_key

try:
    import fcntl
except ImportError:          # Windows: no flock; one server per root is then assumed
    fcntl = None

CHUNK = 64 * 1024
BUCKET_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
MAX_LINE = 65536           # longest chunk-size line / trailer line accepted in a chunked body
DRAIN_LIMIT = 1 << 20      # bytes of an unwanted request body read (and dropped) before answering
LINGER_S = 2.0             # how long a lingering close keeps reading an unwanted body
UPLOADS = ".tq-uploads"    # the upload area under the root (not a valid bucket name)
_CHUNK_SIZE_RE = re.compile(rb"([0-9A-Fa-f]{1,15})[ \t]*(?:;[^\r\n]*)?\r?\n")
LOG_ESCAPES = http.server.BaseHTTPRequestHandler._control_char_table   # C0, DEL, C1 -> \xNN; \ -> \\

_NO_SPACE = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
_BUSY_ANSWER = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
                b"Content-Length: 19\r\nRetry-After: 1\r\nConnection: close\r\n\r\nserver at capacity\n")


class BadRequest(Exception):
    """The request names something the server will not serve (answered with 400)."""


class _BodyError(Exception):
    """The request body ended early or was malformed (the upload is abandoned)."""


def check_bucket(name):
    if not BUCKET_RE.fullmatch(name) or name in (".", ".."):
        raise BadRequest("bucket must be a simple name: letters, digits, '.', '_', '-' (max 63)")
    return name


def check_token(token):
    """The token itself, or ValueError if it cannot be sent as a Bearer credential."""
    if not isinstance(token, str) or not TOKEN_RE.fullmatch(token):
        raise ValueError("token must be letters, digits and -._~+/ (optionally ending in =), not empty")
    return token


def escape_for_log(text):
    """`text` with control characters (ESC, BEL, CR, ...) written as \\xNN, safe for a terminal."""
    return text.translate(LOG_ESCAPES)


def parse_target(target):
    """(bucket, key) of a request target like `/bucket/a/b.raw?x=y`; BadRequest if it is not one."""
    path = target.split("?", 1)[0].split("#", 1)[0]
    if not path.startswith("/"):
        raise BadRequest("request target must be an absolute path /<bucket>/<key>")
    try:
        decoded = urllib.parse.unquote(path[1:], encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise BadRequest("path is not valid UTF-8 after percent-decoding") from None
    bucket, sep, key = decoded.partition("/")
    check_bucket(bucket)
    if not sep or not key:
        raise BadRequest("path must be /<bucket>/<key>")
    try:
        check_key(key)
    except ValidationError as exc:
        raise BadRequest(str(exc)) from None
    if key.endswith(TMP_SUFFIX):
        raise BadRequest(f"keys ending in {TMP_SUFFIX} are reserved for uploads in progress")
    return bucket, key


class UploadArea:
    """`<root>/.tq-uploads/srv-XXXX/`: this server's temp files, flock-held for the server's life. At
    start, the directories of servers that are gone (lock free) are emptied and removed. Everything is
    reached through descriptors from the confined root (a link in the upload area is never followed).
    Without flock (Windows) one server per root is assumed and every such directory is removed at start."""

    def __init__(self, confined):
        self._confined = confined
        self._seq = itertools.count()
        self.base = confined.path_of([UPLOADS])
        try:
            base = confined.open_dir([UPLOADS], create=True)
        except UnsafeObject:
            raise OSError(errno.ELOOP, f"{self.base} is a symbolic link") from None
        with base:
            _lock(base, fcntl.LOCK_EX if fcntl else 0)      # one server at a time sets up
            self.removed = self._remove_stale(base)
            self.held = self._make_own(base)
        self.name = os.path.basename(self.held.path)
        self.dir = self.held.path

    @staticmethod
    def _remove_stale(base):
        removed = 0
        for name in base.names():
            if not name.startswith("srv-"):
                continue
            try:
                folder = base.subdir(name)
            except (OSError, UnsafeObject):
                continue                          # a file, a link, or unreadable: not an upload folder
            with folder:
                try:
                    _lock(folder, fcntl.LOCK_EX | fcntl.LOCK_NB if fcntl else 0)
                except OSError:
                    continue                      # a live server's uploads: left alone
                removed += _empty_dir(folder)
            try:
                base.rmdir(name)
            except OSError:
                pass
        return removed

    @staticmethod
    def _make_own(base):
        while True:
            name = f"srv-{os.urandom(6).hex()}"
            try:
                base.mkdir(name, 0o700)
            except FileExistsError:
                continue
            held = base.subdir(name)
            try:
                _lock(held, fcntl.LOCK_EX | fcntl.LOCK_NB if fcntl else 0)
            except BaseException:
                held.close()
                raise
            return held

    def new_name(self):
        """A fresh temp file name in this server's folder (create it with `held.create(name)`)."""
        return f"{next(self._seq)}{TMP_SUFFIX}"

    def close(self):
        """Remove what is left in this server's directory, then the directory, and release it."""
        held, self.held = self.held, None
        if held is None:
            return
        _empty_dir(held)
        held.close()                              # closing the descriptor releases its flock
        try:
            with self._confined.open_dir([UPLOADS], create=False) as base:
                base.rmdir(self.name)
        except (OSError, UnsafeObject):
            pass


def _lock(held: HeldDir, operation):
    """flock(operation) on a held directory (OSError if it cannot be had); nothing without flock."""
    if fcntl is not None and held.fd is not None:
        fcntl.flock(held.fd, operation)


def _empty_dir(held: HeldDir):
    removed = 0
    try:
        names = held.names()
    except OSError:
        return 0
    for name in names:
        try:
            held.unlink(name)                     # unlink never follows a link
            removed += 1
        except OSError:
            pass
    return removed


class ObjectServer(http.server.ThreadingHTTPServer):
    """A ThreadingHTTPServer over `root`; `serve_forever()` in any thread, `stop()` from another.

    allowed_hosts, token: see lab/objects_guard.py (HostPolicy, TokenPolicy); max_connections and the
    timeouts: ConnectionGuard (defaults there); allow_hard_links serves files with st_nlink > 1."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024

    def __init__(self, root, host="127.0.0.1", port=0, latency_ms=0.0, error_rate=0.0, seed=0,
                 chunk_size=CHUNK, verbose=False, log=None, allowed_hosts=(), token="", max_connections=None,
                 allow_hard_links=False, **timeouts):
        self.confined = ConfinedRoot(root, allow_hard_links=allow_hard_links)
        self.root = self.confined.root
        self.latency_s = max(0.0, float(latency_ms)) / 1000.0
        self.error_rate = float(error_rate)
        self.chunk_size = int(chunk_size)
        self.verbose = verbose
        self.log = log or sys.stderr
        self._log_lock = threading.Lock()
        self.tokens = guard.TokenPolicy(check_token(token) if token else "")
        self.guard = guard.ConnectionGuard(max_connections, **timeouts)
        self._rng = random.Random(f"objects|{seed}")
        self._rng_lock = threading.Lock()
        self._cond = threading.Condition()
        self._active = 0
        self.stats = {"requests": 0, "injected_503": 0, "uploads": 0, "aborted_uploads": 0,
                      "bad_requests": 0, "refused": 0, "timed_out": 0, "evicted": 0,
                      "busy_503": 0, "accept_errors": 0}
        if ":" in host:                     # an IPv6 address such as ::1
            self.address_family = socket.AF_INET6
        try:
            self.uploads = UploadArea(self.confined)
        except BaseException:
            self.confined.close()
            raise
        self.stats["removed_partial_uploads"] = self.uploads.removed
        try:
            super().__init__((host, port), ObjectHandler)
        except BaseException:
            self.uploads.close()
            self.confined.close()
            raise
        self.hosts = guard.HostPolicy(allowed_hosts, self.server_address[0], self.port)

    @property
    def port(self):
        return self.server_address[1]

    @property
    def url(self):
        host = self.server_address[0]
        return f"http://{'[' + host + ']' if ':' in host else host}:{self.port}"

    @property
    def max_connections(self):
        return self.guard.max_connections

    # --- bookkeeping shared by the handler threads ---
    def inject_error(self):
        if self.error_rate <= 0.0:
            return False
        with self._rng_lock:
            return self._rng.random() < self.error_rate

    def count(self, name, n=1):
        if n:
            with self._cond:
                self.stats[name] += n
                self._cond.notify_all()

    def wait_for(self, predicate, timeout):
        """Wait until predicate(stats) is true (tests use this instead of sleeping); return it."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self.stats), timeout)

    def begin(self):
        with self._cond:
            self._active += 1

    def end(self):
        with self._cond:
            self._active -= 1
            self._cond.notify_all()

    def write_log(self, line):
        with self._log_lock:
            self.log.write(line)
            try:
                self.log.flush()
            except (OSError, ValueError):
                pass

    # --- connections: the limit, eviction, deadlines (objects_guard.ConnectionGuard) ---
    def get_request(self):
        try:
            return super().get_request()
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                # out of descriptors: free one (the longest waiting connection) or back off, instead of
                # spinning on a listening socket that stays readable
                self.count("accept_errors")
                if self.guard.evict_one():
                    self.count("evicted")
                else:
                    time.sleep(0.05)
            raise

    def process_request(self, request, client_address):
        conn, evicted = self.guard.admit(request)
        self.count("evicted", evicted)
        if conn is None:                # every connection busy with a request: 503 at once, and close
            self.count("busy_503")
            try:
                request.setblocking(False)
                request.send(_BUSY_ANSWER)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.guard.forget(request)
            raise

    def shutdown_request(self, request):
        self.guard.forget(request)
        super().shutdown_request(request)

    def service_actions(self):
        """Called by serve_forever at least every poll_interval: cut connections past their deadline."""
        self.count("timed_out", self.guard.reap())

    def connection_count(self):
        return len(self.guard)

    def stop(self, grace_s=2.0):
        """Stop accepting, close idle connections, give in-flight requests `grace_s` to finish, close the
        rest, then remove this server's temp files."""
        self.shutdown()
        self.guard.cut_all(guard.EVICTABLE)
        with self._cond:
            self._cond.wait_for(lambda: self._active == 0, grace_s)
        self.guard.cut_all()
        self.uploads.close()
        self.server_close()
        self.confined.close()


class ObjectHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "TaskQueueLabObjects/1"
    sys_version = ""
    rbufsize = CHUNK        # request line, headers and chunk-size lines come from one 64 KiB buffer
    wbufsize = 0            # unbuffered writes: each response is sent by the explicit writes below

    def setup(self):
        """Disable Nagle on the accepted socket. A response goes out as headers and then body pieces;
        with Nagle on, a piece that follows an unacknowledged small segment waits for the peer's
        delayed ACK (~40 ms on Linux) on every request of a kept-alive connection."""
        self._guard = self.server.guard
        self.timeout = self._guard.stall_timeout_s
        self._conn = self._guard.get(self.request)
        self._served = 0
        try:
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):       # not a TCP socket (tests may hand in others)
            pass
        super().setup()

    _answer_at = None

    def _wait_for_latency(self):
        """Sleep whatever is left of the server's latency for this request (once per request)."""
        answer_at, self._answer_at = self._answer_at, None
        if answer_at is not None:
            left = answer_at - time.perf_counter()
            if left > 0:
                time.sleep(left)

    def _sending(self, nbytes, started=None):
        """The answer is going out: the client has body_grace_s plus 1 s per min_rate bytes to take it."""
        conn, limits = self._conn, self._guard
        conn.phase = guard.SEND
        conn.deadline = (started or time.monotonic()) + limits.body_grace_s + nbytes / limits.min_rate

    def _end_headers_with(self, body=b""):
        """End the headers and send them together with `body` (the first piece of the response body)
        in a single write: one segment instead of two for small responses. Every answer of a dispatched
        request goes out through here, so this is where the latency is paid."""
        self._wait_for_latency()
        self._sending(len(body))
        if self.request_version == "HTTP/0.9" or not hasattr(self, "_headers_buffer"):
            self.end_headers()
            if body:
                self.wfile.write(body)
            return
        self._headers_buffer.append(b"\r\n")
        if body:
            self._headers_buffer.append(body)
        self.flush_headers()

    def version_string(self):
        return self.server_version

    def log_message(self, format, *args):
        if self.server.verbose:
            # the request line and messages can carry whatever a client sent: no raw ESC/BEL on a terminal
            self.server.write_log(f"{self.address_string()} - {escape_for_log(format % args)}\n")

    _linger = False

    def finish(self):
        """After answering early with the request body still arriving, half-close and read (and drop)
        what the client is still sending for a bounded time, so the close does not turn into a reset
        that destroys the answer before the client reads it (the lingering close of web servers)."""
        super().finish()
        if not self._linger:
            return
        self._conn.phase = guard.IDLE           # nothing more for this client: evictable while it lingers
        sock = self.connection
        try:
            sock.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + LINGER_S
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                sock.settimeout(left)
                if not sock.recv(CHUNK):
                    return
        except OSError:
            return

    _started = 0.0
    _body_kind = None          # None (no body), "length" or "chunked"
    _body_length = 0
    _body_done = True

    def handle_one_request(self):
        """Read one request under the deadlines (idle, then headers), check it, dispatch it, and read
        any body the method did not want before the next request on the connection."""
        conn, limits = self._conn, self._guard
        now = time.monotonic()
        conn.phase = guard.IDLE
        conn.since = now
        if self._served:                  # a kept-alive connection waiting for its next request
            conn.deadline = now + limits.idle_timeout_s
        try:
            if not self.rfile.peek(1):    # the client closed (or the reaper cut the connection)
                self.close_connection = True
                return
            if self._served:
                conn.deadline = time.monotonic() + limits.header_timeout_s
            conn.phase = guard.HEADERS
            self._served += 1
            self.raw_requestline = self.rfile.readline(MAX_HEAD_BYTES + 1)
            if self.raw_requestline in (b"\r\n", b"\n"):    # RFC 9112 2.2: ignore one empty line first
                self.raw_requestline = self.rfile.readline(MAX_HEAD_BYTES + 1)
            if not self.parse_request():
                return
            self._working()
            method = getattr(self, "do_" + self.command, None)
            if method is None:
                self._reply(501, f"method {self.command} is not implemented", drain=True)
                return
            method()
            if not self._body_done and not self.close_connection:
                self._drain_body()
        except OSError:                   # timed out, reset, or cut by the reaper: drop the connection
            self.close_connection = True

    # --- request parsing (strict: lab/http_head.py) ---
    def parse_request(self):
        """Read the request head (command, path, request_version, headers, framing) and check Host and
        token; answer, close and return False if the request is refused."""
        self._started = time.perf_counter()       # the request line has just been read
        self._answer_at = None
        self.command = None
        self.request_version = "HTTP/1.1"         # the version of an error answer sent from here
        self.close_connection = True
        self._body_kind, self._body_length, self._body_done = None, 0, True
        raw = self.raw_requestline
        self.requestline = str(raw, "iso-8859-1").rstrip("\r\n")
        head = None
        try:
            head = read_head(raw, self.rfile.readline)
            self.command, self.path, self.request_version = head.command, head.target, head.version
            self.headers = head.headers
            self.close_connection = head.close
            self._body_kind, self._body_length = head.body_kind, head.body_length
            self._body_done = head.body_kind is None
            hosts = head.headers.get_all("host")
            if len(hosts) > 1 or (not hosts and not head.http10):
                raise Refused(400, "exactly one Host header is required")
            if hosts and not self.server.hosts.allows(hosts[0]):
                raise Refused(421, f"this server does not answer for Host {hosts[0][:100]!r}")
            if not self.server.tokens.allows(head.headers.get_all("authorization")):
                raise Refused(401, "a valid 'Authorization: Bearer <token>' is required",
                              {"WWW-Authenticate": 'Bearer realm="objects"'})
        except Refused as refusal:
            self.server.count("refused")
            self.close_connection = True
            # a body may follow (framing unknown or announced): let the answer reach the client first
            self._linger = head is None or not self._body_done
            self._reply(refusal.status, refusal.message, extra=refusal.extra, quiet=True)
            return False
        if not head.http10 and head.headers.get("expect", "").lower() == "100-continue":
            self.send_response_only(100)
            self.end_headers()
        return True

    # --- entry points ---
    def do_GET(self):
        self._dispatch(self._get, body=True)

    def do_HEAD(self):
        self._dispatch(self._get, body=False)

    def do_PUT(self):
        self._dispatch(self._put)

    def do_POST(self):
        self._reply(405, "method not allowed", extra={"Allow": "GET, HEAD, PUT"}, drain=True)

    do_DELETE = do_PATCH = do_OPTIONS = do_POST

    def _dispatch(self, handler, **kwargs):
        server = self.server
        server.begin()
        try:
            server.count("requests")
            # the answer leaves no sooner than latency_s after the request was read (_end_headers_with)
            self._answer_at = self._started + server.latency_s if server.latency_s else None
            if server.inject_error():
                server.count("injected_503")
                self._reply(503, "injected transient fault", extra={"Retry-After": "0"}, drain=True)
                return
            try:
                bucket, key = parse_target(self.path)
            except BadRequest as exc:
                server.count("bad_requests")
                self._reply(400, str(exc), drain=True)
                return
            handler([bucket, *key.split("/")], **kwargs)
        finally:
            server.end()

    # --- GET / HEAD ---
    def _get(self, parts, body):
        if not self._body_done:           # a GET with a body: read it now, it is not the next request
            self._drain_body()
        try:
            # checked before it is opened: a FIFO (or a device) must not block this thread in open()
            fd, st = self.server.confined.open_read(parts, "key")
        except ObjectNotFound:            # missing, or a folder, FIFO, device, socket
            self._reply(404, "no such object", head=not body)
            return
        except UnsafeObject as exc:       # a link on the way or at the end, hard links: like LocalObjectStore
            self.server.count("bad_requests")
            self._reply(400, str(exc), head=not body)
            return
        except OSError as exc:
            self._reply(403, f"object is not readable: {exc.strerror}", head=not body)
            return
        f = open(fd, "rb", buffering=0)
        with f:
            size = st.st_size
            start, end = 0, size - 1
            status = 200
            rng = _parse_range(self.headers.get("Range"), size)
            if rng == "unsatisfiable":
                self._reply(416, "range not satisfiable", extra={"Content-Range": f"bytes */{size}"},
                            head=not body)
                return
            if rng is not None:
                start, end = rng
                status = 206
            length = end - start + 1 if size else 0
            chunk = self.server.chunk_size
            first = b""
            if body and length:
                f.seek(start)
                first = f.read(min(chunk, length))
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(length))
            self.send_header("Accept-Ranges", "bytes")
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            if body and length and not first:     # the file shrank under us: say so, then stop
                self.send_header("Connection", "close")
            try:
                # headers and the first chunk in one write (a whole small object in one segment)
                self._end_headers_with(first)
                if not body or not length or not first:
                    return
                remaining = length - len(first)
                sent = len(first)
                started = time.monotonic()
                while remaining > 0:
                    data = f.read(min(chunk, remaining))
                    if not data:       # the file shrank under us: the client sees a short body
                        self.close_connection = True
                        return
                    self._sending(sent + len(data), started)
                    self.wfile.write(data)
                    remaining -= len(data)
                    sent += len(data)
            except OSError:            # the client went away, stalled, or was too slow
                self.close_connection = True

    # --- PUT ---
    def _put(self, parts):
        if self._body_kind is None and "content-length" not in self.headers:
            self._reply(411, "PUT needs Content-Length or Transfer-Encoding: chunked")
            self.close_connection = True
            return
        confined, uploads = self.server.confined, self.server.uploads
        try:
            st = confined.prepare_write(parts, "key")
        except UnsafeObject as exc:
            self._reply(400, str(exc), drain=True)
            return
        except ValidationError:
            self._reply(409, "a parent of this key is an object, not a directory", drain=True)
            return
        if st is not None and stat.S_ISLNK(st.st_mode):
            self._reply(400, "key is a symbolic link (refused)", drain=True)
            return
        if st is not None and stat.S_ISDIR(st.st_mode):
            self._reply(409, "this key is a directory of other objects", drain=True)
            return
        tmp = uploads.new_name()
        digest = hashlib.sha256()
        nbytes = 0
        done = False
        failure = None
        try:
            with open(uploads.held.create(tmp), "wb") as f:
                for data in self._body_pieces():
                    f.write(data)
                    digest.update(data)
                    nbytes += len(data)
            existed = confined.publish(uploads.held, tmp, parts, "key")
            done = True
        except (_BodyError, OSError, ValidationError) as exc:
            failure = exc
        finally:
            if not done:
                try:
                    uploads.held.unlink(tmp)
                except OSError:
                    pass
        if failure is not None:         # counted only now, when the temp file is gone
            self.close_connection = True
            self.server.count("aborted_uploads")
            if isinstance(failure, _BodyError) and not str(failure).startswith("eof"):
                self._reply(400, f"bad request body: {failure}", quiet=True)
            elif isinstance(failure, UnsafeObject):     # a folder became a link while the body arrived
                self._reply(400, str(failure), quiet=True)
            elif isinstance(failure, ValidationError):  # a folder or a file took the name meanwhile
                self._reply(409, str(failure), quiet=True)
            elif getattr(failure, "errno", None) in _NO_SPACE:     # the client's retry may well succeed later
                self._reply(507, f"could not store the object: {failure.strerror}", quiet=True)
            elif not isinstance(failure, (_BodyError, ConnectionError, TimeoutError)):
                self._reply(500, f"could not store the object: {failure.__class__.__name__}", quiet=True)
            return
        self.server.count("uploads")
        payload = json.dumps({"bytes": nbytes, "sha256": digest.hexdigest()}).encode() + b"\n"
        self._reply(200 if existed else 201, payload, content_type="application/json")

    def _body_pieces(self):
        """The request body in pieces of at most chunk_size (nothing if there is none), under the body
        deadline; _BodyError if it ends early or is malformed."""
        if self._body_kind is None:
            self._body_done = True
            return iter(())
        return self._chunked_body() if self._body_kind == "chunked" else self._sized_body(self._body_length)

    def _working(self):
        """The server's own work (files, latency): no deadline for the client."""
        conn = self._conn
        conn.phase = guard.WORK
        conn.deadline = guard.NEVER

    def _receiving(self, started, nbytes):
        conn, limits = self._conn, self._guard
        conn.phase = guard.BODY
        conn.deadline = started + limits.body_grace_s + nbytes / limits.min_rate

    def _sized_body(self, length):
        read = self.rfile.read
        remaining = length
        chunk = self.server.chunk_size
        started = time.monotonic()
        while remaining > 0:
            self._receiving(started, length - remaining)
            data = read(min(chunk, remaining))
            if not data:
                raise _BodyError(f"eof after {length - remaining} of {length} bytes")
            remaining -= len(data)
            yield data
        self._working()
        self._body_done = True

    def _chunked_body(self):
        rfile = self.rfile
        chunk = self.server.chunk_size
        started = time.monotonic()
        received = 0
        while True:
            self._receiving(started, received)
            line = rfile.readline(MAX_LINE + 1)
            if not line:
                raise _BodyError("eof before the end of the chunked body")
            if len(line) > MAX_LINE or not line.endswith(b"\n"):
                raise _BodyError("chunk size line too long")
            match = _CHUNK_SIZE_RE.fullmatch(line)
            if match is None:
                raise _BodyError("bad chunk size line")
            size = int(match.group(1), 16)
            if size == 0:
                break
            remaining = size
            while remaining > 0:
                self._receiving(started, received)
                data = rfile.read(min(chunk, remaining))
                if not data:
                    raise _BodyError("eof inside a chunk")
                remaining -= len(data)
                received += len(data)
                yield data
            crlf = rfile.readline(3)
            if crlf not in (b"\r\n", b"\n"):
                raise _BodyError("eof after a chunk" if not crlf else "chunk not followed by CRLF")
        for _ in range(100):         # trailer section, ended by an empty line
            line = rfile.readline(MAX_LINE + 1)
            if not line:
                raise _BodyError("eof in the chunked trailer")
            if line in (b"\r\n", b"\n"):
                self._working()
                self._body_done = True
                return
        raise _BodyError("too many trailer lines")

    # --- replies ---
    def _reply(self, status, message, extra=None, head=False, drain=False, content_type=None,
               quiet=False):
        """Send a complete response. With drain, read (and drop) a small unread request body first so
        the client is not reset while still sending; a large one closes the connection instead."""
        if drain and not self._body_done:
            self._drain_body()
        body = message if isinstance(message, bytes) else (message + "\n").encode("utf-8", "replace")
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type or "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            for name, value in (extra or {}).items():
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self._end_headers_with(b"" if head or self.command == "HEAD" else body)
        except OSError:
            self.close_connection = True
            if not quiet:
                raise

    def _drain_body(self):
        """Consume the request body if it is small; otherwise mark the connection for closing (with a
        lingering close, so an answer sent meanwhile still reaches the client)."""
        if self._body_done:
            return
        if self._body_kind == "length" and self._body_length > DRAIN_LIMIT:
            self.close_connection = True
            self._linger = True
            return
        total = 0
        try:
            for data in self._body_pieces():
                total += len(data)
                if total > DRAIN_LIMIT:
                    self.close_connection = True
                    self._linger = True
                    return
        except (_BodyError, OSError):
            self.close_connection = True
        finally:
            if not self._body_done:
                self.close_connection = True


def _parse_range(header, size):
    """(start, end) for one `bytes=` range, None to ignore the header, "unsatisfiable" for 416."""
    if not header:
        return None
    match = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header)
    if not match or (not match.group(1) and not match.group(2)):
        return None              # multiple ranges or another unit: serve the whole object
    first, last = match.group(1), match.group(2)
    if first:
        start = int(first)
        end = min(int(last), size - 1) if last else size - 1
        if last and int(last) < start:
            return None
        if start >= size:
            return "unsatisfiable"
        return start, end
    suffix = int(last)
    if suffix == 0:
        return "unsatisfiable"
    if size == 0:
        return None
    return max(0, size - suffix), size - 1


def _fine_timer_slack(ns=1000):
    """Linux: lower this thread's timer slack (default 50 us) so the injected latency is slept with
    ~30 us of overshoot instead of ~90 us; threads started later inherit it. No-op elsewhere."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(29, int(ns), 0, 0, 0)     # PR_SET_TIMERSLACK
    except (OSError, AttributeError, ValueError):
        pass


def serve(root, host="127.0.0.1", port=0, latency_ms=0.0, error_rate=0.0, seed=0, verbose=False,
          exit_with_parent=False, out=None, grace_s=2.0, allowed_hosts=(), token="", max_connections=None,
          allow_hard_links=False):
    """Serve until SIGINT/SIGTERM (or, with exit_with_parent, until the parent process goes away).
    Prints `listening on http://HOST:PORT` once on `out` (stdout) when the socket is bound. Returns 0."""
    import signal

    out = out or sys.stdout
    if latency_ms:
        _fine_timer_slack()
    server = ObjectServer(root, host=host, port=port, latency_ms=latency_ms, error_rate=error_rate,
                          seed=seed, verbose=verbose, allowed_hosts=allowed_hosts, token=token,
                          max_connections=max_connections, allow_hard_links=allow_hard_links)
    if server.uploads.removed:
        print(f"objects serve: removed {server.uploads.removed} partial upload(s) left by a server that "
              f"stopped", file=sys.stderr)
    stop = threading.Event()
    previous = {}

    def on_signal(signum, frame):
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, on_signal)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name="object-server", daemon=True)
    thread.start()
    parent = os.getppid()
    try:
        print(f"listening on {server.url}", file=out, flush=True)
        while not stop.wait(0.5):
            if exit_with_parent and os.getppid() != parent:
                break
            if not thread.is_alive():
                break
    finally:
        server.stop(grace_s=grace_s)
        thread.join(timeout=grace_s + 1)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


__all__ = ["ObjectServer", "ObjectHandler", "BadRequest", "UploadArea", "check_bucket",
           "check_token", "escape_for_log", "parse_target", "serve"]
