"""The HTTP object server: a directory served over real sockets, standing in for MinIO-style storage.

Four modules, one job each: this one is the server (its lifecycle, the connection limit and deadlines
through the guard, the fault model, counters, `serve`); lab/objects_connection.py is one connection's
HTTP mechanics (strict heads, deadlines, bodies, answers); lab/objects_handler.py is what a GET, HEAD or
PUT means on the confined root; lab/objects_uploads.py is the upload area.

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
- Uploads in progress live in `<root>/.tq-uploads/<owner>/` (one directory per server, held with flock);
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
import http.server
import os
import random
import socket
import sys
import threading
import time

from lab import objects_guard as guard
from lab.objects_connection import CHUNK
from lab.objects_handler import ObjectHandler
from lab.objects_uploads import open_upload_area
from tqengine.objects.bearer import TOKEN_RE
from tqengine.objects.confined import ConfinedRoot

_BUSY_ANSWER = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
                b"Content-Length: 19\r\nRetry-After: 1\r\nConnection: close\r\n\r\nserver at capacity\n")


def check_token(token):
    """The token itself, or ValueError if it cannot be sent as a Bearer credential."""
    if not isinstance(token, str) or not TOKEN_RE.fullmatch(token):
        raise ValueError("token must be letters, digits and -._~+/ (optionally ending in =), not empty")
    return token


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
        self.guard = guard.ConnectionGuard(max_connections, on_cut=self.count, **timeouts)
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
            self.uploads, self.removed_uploads = open_upload_area(self.confined)
        except BaseException:
            self.confined.close()
            raise
        self.stats["removed_partial_uploads"] = self.removed_uploads
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
                if not self.guard.evict_one():
                    time.sleep(0.05)
            raise

    def process_request(self, request, client_address):
        conn = self.guard.admit(request)
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
        self.guard.reap()

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
    if server.removed_uploads:
        print(f"objects serve: removed {server.removed_uploads} partial upload(s) left by a server that "
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


__all__ = ["ObjectServer", "check_token", "serve"]
