"""One connection of the lab's HTTP object server under its guard: the HTTP/1.1 mechanics, not what the
requests mean (that is lab/objects_handler.py, a subclass).

`GuardedHandler` reads each request head strictly (lab/http_head.py: RFC 9112 framing, conflicts are 400
and close the connection), checks Host and token (lab/objects_guard.py: 421, 401), keeps the connection's
phase and deadline up to date for the guard's reaper (idle, headers, body by minimum rate, work, send),
reads a request body in pieces (Content-Length or chunked), drains a small unwanted body and lingers
after an early answer so the client reads it instead of a reset. Every answer of a dispatched request
goes out through `_end_headers_with`: headers and the first body piece in one write, no sooner than the
server's latency after the request line was read. A subclass implements do_GET, do_PUT, ... and answers
with `_reply` or `_end_headers_with`.
"""
import http.server
import re
import socket
import time

from lab import objects_guard as guard
from lab.http_head import MAX_HEAD_BYTES, Refused, read_head
from lab.terminal import printable

CHUNK = 64 * 1024
MAX_LINE = 65536           # longest chunk-size line / trailer line accepted in a chunked body
DRAIN_LIMIT = 1 << 20      # bytes of an unwanted request body read (and dropped) before answering
LINGER_S = 2.0             # how long a lingering close keeps reading an unwanted body
_CHUNK_SIZE_RE = re.compile(rb"([0-9A-Fa-f]{1,15})[ \t]*(?:;[^\r\n]*)?\r?\n")


class BodyError(Exception):
    """The request body ended early or was malformed (the upload is abandoned)."""


class GuardedHandler(http.server.BaseHTTPRequestHandler):
    """BaseHTTPRequestHandler with strict heads, the guard's deadlines and one-write answers (see the
    module docstring). The server provides guard, hosts, tokens, latency_s, chunk_size, verbose,
    write_log() and count()."""

    protocol_version = "HTTP/1.1"
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
            self.server.write_log(f"{self.address_string()} - {printable(format % args)}\n")

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

    # --- request bodies ---
    def _body_pieces(self):
        """The request body in pieces of at most chunk_size (nothing if there is none), under the body
        deadline; BodyError if it ends early or is malformed."""
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
                raise BodyError(f"eof after {length - remaining} of {length} bytes")
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
                raise BodyError("eof before the end of the chunked body")
            if len(line) > MAX_LINE or not line.endswith(b"\n"):
                raise BodyError("chunk size line too long")
            match = _CHUNK_SIZE_RE.fullmatch(line)
            if match is None:
                raise BodyError("bad chunk size line")
            size = int(match.group(1), 16)
            if size == 0:
                break
            remaining = size
            while remaining > 0:
                self._receiving(started, received)
                data = rfile.read(min(chunk, remaining))
                if not data:
                    raise BodyError("eof inside a chunk")
                remaining -= len(data)
                received += len(data)
                yield data
            crlf = rfile.readline(3)
            if crlf not in (b"\r\n", b"\n"):
                raise BodyError("eof after a chunk" if not crlf else "chunk not followed by CRLF")
        for _ in range(100):         # trailer section, ended by an empty line
            line = rfile.readline(MAX_LINE + 1)
            if not line:
                raise BodyError("eof in the chunked trailer")
            if line in (b"\r\n", b"\n"):
                self._working()
                self._body_done = True
                return
        raise BodyError("too many trailer lines")

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
        except (BodyError, OSError):
            self.close_connection = True
        finally:
            if not self._body_done:
                self.close_connection = True
