"""The HTTP object server: a directory served over real sockets, standing in for MinIO-style storage.

`GET /<bucket>/<key>` streams `<root>/<bucket>/<key>` in chunks with Content-Length (one `bytes=` Range
honoured), `HEAD` gives existence and size, `PUT` streams the body (Content-Length or chunked) into a
temporary file in the target directory and renames it into place only when the whole body has arrived,
so a broken upload leaves nothing under the object's name. A missing object is 404; a bucket that is not
a simple name or a key that could escape the root is 400 (the rules of tasks.check_key on the
percent-decoded path, then realpath confinement like LocalObjectStore.path_for).

Faults for experiments: a latency and, from a seeded RNG, a 503 (a transient fault) instead of handling
the request. The latency is the service time of a request, the same model as the engine's Processor:
the server does the work (parse, open/read, or receive/write/rename) and then sleeps whatever is left of
`latency_ms`, counted from the moment the request line was read, before it sends the answer's headers
(for a GET, the time to the first byte). Work that takes longer than latency_ms is not hidden: the answer
is then simply later. An injected 503 waits the whole latency, then answers. So with latency_ms=5 a task's
GET and PUT take 5 ms each (10 ms of I/O per task), whatever the server's own overhead below that.
Memory stays flat whatever the object size: bodies move `chunk_size` bytes at a time in both directions.

Responses leave with few sends: the accepted socket has TCP_NODELAY (no ~40 ms Nagle/delayed-ACK stall
between the headers and the body of a kept-alive connection), and the headers go out in the same write
as the first body chunk (a whole small object in one segment).

Run it with `python -m lab objects serve --root DIR`; `ObjectServer` is the in-process form (tests).
"""
import hashlib
import http.server
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
import uuid

from tqengine.errors import ValidationError
from tqengine.objects.local import TMP_SUFFIX, ConfinedDirs
from tqengine.tasks import check_key

CHUNK = 64 * 1024
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
BUCKET_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
MAX_LINE = 65536           # longest chunk-size line / trailer line accepted in a chunked body
DRAIN_LIMIT = 1 << 20      # bytes of an unwanted request body read (and dropped) before answering
LINGER_S = 2.0             # how long a lingering close keeps reading an unwanted body
IDLE_TIMEOUT_S = 60        # a keep-alive connection idle (or an upload stalled) this long is closed


class BadRequest(Exception):
    """The request names something the server will not serve (answered with 400)."""


class _BodyError(Exception):
    """The request body ended early or was malformed (the upload is abandoned)."""


def check_bucket(name):
    if not BUCKET_RE.fullmatch(name) or name in (".", ".."):
        raise BadRequest("bucket must be a simple name: letters, digits, '.', '_', '-' (max 63)")
    return name


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


class ObjectServer(http.server.ThreadingHTTPServer):
    """A ThreadingHTTPServer over `root`; `serve_forever()` in any thread, `stop()` from another."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, root, host="127.0.0.1", port=0, latency_ms=0.0, error_rate=0.0, seed=0,
                 chunk_size=CHUNK, verbose=False, log=None):
        os.makedirs(root, exist_ok=True)
        self.root = os.path.realpath(root)
        self.dirs = ConfinedDirs(self.root)
        self.latency_s = max(0.0, float(latency_ms)) / 1000.0
        self.error_rate = float(error_rate)
        self.chunk_size = int(chunk_size)
        self.verbose = verbose
        self.log = log or sys.stderr
        self._rng = random.Random(f"objects|{seed}")
        self._rng_lock = threading.Lock()
        self._cond = threading.Condition()
        self._active = 0
        self._temp_files = set()
        self.stats = {"requests": 0, "injected_503": 0, "uploads": 0, "aborted_uploads": 0,
                      "bad_requests": 0}
        super().__init__((host, port), ObjectHandler)

    @property
    def port(self):
        return self.server_address[1]

    @property
    def url(self):
        host = self.server_address[0]
        return f"http://{'[' + host + ']' if ':' in host else host}:{self.port}"

    # --- bookkeeping shared by the handler threads ---
    def inject_error(self):
        if self.error_rate <= 0.0:
            return False
        with self._rng_lock:
            return self._rng.random() < self.error_rate

    def count(self, name):
        with self._cond:
            self.stats[name] += 1
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

    def track_temp(self, path, add):
        with self._cond:
            (self._temp_files.add if add else self._temp_files.discard)(path)

    def path_for(self, bucket, key):
        """Confined filesystem path of <root>/<bucket>/<key> (BadRequest if its directory resolves
        outside the root; the last component is never followed: GET opens it with O_NOFOLLOW, PUT
        refuses a link there and renames over a name, never through it)."""
        path = os.path.join(self.root, bucket, *key.split("/"))
        try:
            self.dirs.check(os.path.dirname(path))
        except ValidationError:
            raise BadRequest("key resolves outside the store root") from None
        return path

    def stop(self, grace_s=2.0):
        """Stop accepting, give in-flight requests `grace_s` to finish, then remove leftover temp files."""
        self.shutdown()
        with self._cond:
            self._cond.wait_for(lambda: self._active == 0, grace_s)
            leftovers = list(self._temp_files)
        for path in leftovers:
            try:
                os.unlink(path)
            except OSError:
                pass
        self.server_close()


class ObjectHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "TaskQueueLabObjects/1"
    sys_version = ""
    timeout = IDLE_TIMEOUT_S
    rbufsize = CHUNK        # request line, headers and chunk-size lines come from one 64 KiB buffer
    wbufsize = 0            # unbuffered writes: each response is sent by the explicit writes below

    def setup(self):
        """Disable Nagle on the accepted socket. A response goes out as headers and then body pieces;
        with Nagle on, a piece that follows an unacknowledged small segment waits for the peer's
        delayed ACK (~40 ms on Linux) on every request of a kept-alive connection."""
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

    def _end_headers_with(self, body=b""):
        """End the headers and send them together with `body` (the first piece of the response body)
        in a single write: one segment instead of two for small responses. Every answer of a dispatched
        request goes out through here, so this is where the latency is paid."""
        self._wait_for_latency()
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
            self.server.log.write("%s - %s\n" % (self.address_string(), format % args))

    _linger = False

    def finish(self):
        """After answering early with the request body still arriving, half-close and read (and drop)
        what the client is still sending for a bounded time, so the close does not turn into a reset
        that destroys the answer before the client reads it (the lingering close of web servers)."""
        super().finish()
        if not self._linger:
            return
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

    def parse_request(self):
        self._started = time.perf_counter()       # the request line has just been read
        self._answer_at = None
        return super().parse_request()

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
                path = server.path_for(bucket, key)
            except BadRequest as exc:
                server.count("bad_requests")
                self._reply(400, str(exc), drain=True)
                return
            handler(path, **kwargs)
        finally:
            server.end()

    # --- GET / HEAD ---
    def _get(self, path, body):
        try:
            fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            self._reply(404, "no such object", head=not body)
            return
        except OSError as exc:
            if os.path.islink(path):     # like LocalObjectStore: a linked object is refused outright
                self.server.count("bad_requests")
                self._reply(400, "key is a symbolic link (refused)", head=not body)
            else:
                self._reply(403, f"object is not readable: {exc.strerror}", head=not body)
            return
        f = open(fd, "rb", buffering=0)
        with f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                self._reply(404, "no such object", head=not body)
                return
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
                while remaining > 0:
                    data = f.read(min(chunk, remaining))
                    if not data:       # the file shrank under us: the client sees a short body
                        self.close_connection = True
                        return
                    self.wfile.write(data)
                    remaining -= len(data)
            except OSError:            # the client went away or stalled past the socket timeout
                self.close_connection = True

    # --- PUT ---
    def _put(self, path):
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        length_header = self.headers.get("Content-Length")
        if not chunked:
            if length_header is None:
                self._reply(411, "PUT needs Content-Length or Transfer-Encoding: chunked")
                self.close_connection = True
                return
            try:
                length = int(length_header)
                if length < 0:
                    raise ValueError
            except ValueError:
                self._reply(400, "bad Content-Length")
                self.close_connection = True
                return
        try:
            self.server.dirs.ensure(os.path.dirname(path))
        except (FileExistsError, NotADirectoryError):
            self._reply(409, "a parent of this key is an object, not a directory", drain=True)
            return
        except ValidationError:
            self._reply(400, "key resolves outside the store root", drain=True)
            return
        if os.path.islink(path):
            self._reply(400, "key is a symbolic link (refused)", drain=True)
            return
        if os.path.isdir(path):
            self._reply(409, "this key is a directory of other objects", drain=True)
            return
        tmp = f"{path}.{uuid.uuid4().hex[:12]}{TMP_SUFFIX}"
        self.server.track_temp(tmp, True)
        digest = hashlib.sha256()
        nbytes = 0
        done = False
        failure = None
        try:
            with open(tmp, "wb") as f:
                pieces = self._chunked_body() if chunked else self._sized_body(length)
                for data in pieces:
                    f.write(data)
                    digest.update(data)
                    nbytes += len(data)
            existed = os.path.exists(path)
            os.replace(tmp, path)
            done = True
        except (_BodyError, OSError) as exc:
            failure = exc
        finally:
            if not done:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
            self.server.track_temp(tmp, False)
        if failure is not None:         # counted only now, when the temp file is gone
            self.close_connection = True
            self.server.count("aborted_uploads")
            if isinstance(failure, _BodyError) and not str(failure).startswith("eof"):
                self._reply(400, f"bad request body: {failure}", quiet=True)
            elif not isinstance(failure, (_BodyError, ConnectionError, TimeoutError)):
                self._reply(500, f"could not store the object: {failure.__class__.__name__}", quiet=True)
            return
        self.server.count("uploads")
        payload = json.dumps({"bytes": nbytes, "sha256": digest.hexdigest()}).encode() + b"\n"
        self._reply(200 if existed else 201, payload, content_type="application/json")

    def _sized_body(self, length):
        read = self.rfile.read
        remaining = length
        chunk = self.server.chunk_size
        while remaining > 0:
            data = read(min(chunk, remaining))
            if not data:
                raise _BodyError(f"eof after {length - remaining} of {length} bytes")
            remaining -= len(data)
            yield data

    def _chunked_body(self):
        rfile = self.rfile
        chunk = self.server.chunk_size
        while True:
            line = rfile.readline(MAX_LINE + 1)
            if not line:
                raise _BodyError("eof before the end of the chunked body")
            if len(line) > MAX_LINE or not line.endswith(b"\n"):
                raise _BodyError("chunk size line too long")
            size_text = line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
                if size < 0 or not re.fullmatch(rb"[0-9A-Fa-f]+", size_text):
                    raise ValueError
            except ValueError:
                raise _BodyError("bad chunk size line") from None
            if size == 0:
                break
            remaining = size
            while remaining > 0:
                data = rfile.read(min(chunk, remaining))
                if not data:
                    raise _BodyError("eof inside a chunk")
                remaining -= len(data)
                yield data
            crlf = rfile.readline(3)
            if crlf not in (b"\r\n", b"\n"):
                raise _BodyError("eof after a chunk" if not crlf else "chunk not followed by CRLF")
        for _ in range(100):         # trailer section, ended by an empty line
            line = rfile.readline(MAX_LINE + 1)
            if not line:
                raise _BodyError("eof in the chunked trailer")
            if line in (b"\r\n", b"\n"):
                return
        raise _BodyError("too many trailer lines")

    # --- replies ---
    def _reply(self, status, message, extra=None, head=False, drain=False, content_type=None,
               quiet=False):
        """Send a complete response. With drain, read (and drop) a small unread request body first so
        the client is not reset while still sending; a large one closes the connection instead."""
        if drain:
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
        """Consume the request body if it is small; otherwise mark the connection for closing."""
        te = self.headers.get("Transfer-Encoding", "").lower()
        try:
            if "chunked" in te:
                total = 0
                for data in self._chunked_body():
                    total += len(data)
                    if total > DRAIN_LIMIT:
                        self.close_connection = True
                        self._linger = True
                        return
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length > DRAIN_LIMIT or length < 0:
                self.close_connection = True
                self._linger = True
                return
            while length > 0:
                data = self.rfile.read(min(length, CHUNK))
                if not data:
                    self.close_connection = True
                    return
                length -= len(data)
        except (ValueError, _BodyError, OSError):
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
          exit_with_parent=False, out=None, grace_s=2.0):
    """Serve until SIGINT/SIGTERM (or, with exit_with_parent, until the parent process goes away).
    Prints `listening on http://HOST:PORT` once on `out` (stdout) when the socket is bound. Returns 0."""
    import signal

    out = out or sys.stdout
    if latency_ms:
        _fine_timer_slack()
    server = ObjectServer(root, host=host, port=port, latency_ms=latency_ms, error_rate=error_rate,
                          seed=seed, verbose=verbose)
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


__all__ = ["ObjectServer", "ObjectHandler", "BadRequest", "check_bucket", "parse_target", "serve"]
