"""Who may talk to the object server, and for how long (lab/objects_server.py uses it).

- `HostPolicy`: the `Host` values answered (DNS-rebinding guard): the loopback names and the bound
  address, with or without the server's port, plus names given with --allow-host (NAME, or NAME:PORT
  for exactly that port).
- `TokenPolicy`: with a token, exactly one `Authorization: Bearer <token>`, compared in constant time
  (sha256 of both, hmac.compare_digest).
- `ConnectionGuard`: every served connection, its phase (what it waits for) and its deadline. At most
  `max_connections` at once (fitted to the open-file limit); a new connection over the limit closes the
  one that has waited longest in an evictable phase (idle, or still sending its headers), or is refused
  when all are busy. `reap()` cuts connections past their deadline. Cutting is `shutdown(SHUT_RDWR)`
  under the guard's lock: the connection's own thread wakes and closes the socket itself. `on_cut(reason,
  n)` ("timed_out" or "evicted") is called before the sockets are shut, so a client that sees its
  connection close finds it already counted.

Deadlines: the first request's head within header_timeout_s of the accept; then idle_timeout_s for the
next request to start and header_timeout_s from its first byte for its head; a body read or an answer
sent gets body_grace_s plus one second per min_rate bytes moved (a 1-byte drip gains nothing); the
server's own work (files, injected latency) has none.
"""
import hashlib
import hmac
import re
import socket
import threading
import time

IDLE_TIMEOUT_S = 60.0      # a kept-alive connection idle this long is closed
HEADER_TIMEOUT_S = 10.0    # a request head must arrive within this
BODY_GRACE_S = 10.0        # a body being read or an answer being sent gets this long ...
MIN_RATE = 32 * 1024       # ... plus one second per MIN_RATE bytes moved
STALL_TIMEOUT_S = 60.0     # socket timeout: no single read or write may block longer
MAX_CONNECTIONS = 512
REAP_INTERVAL_S = 0.1

# a connection's phase: what it is waiting for (EVICTABLE ones may be closed for a new connection)
IDLE, HEADERS, BODY, WORK, SEND = "idle", "headers", "body", "work", "send"
EVICTABLE = (IDLE, HEADERS)
NEVER = float("inf")
_NAME_WITH_PORT = re.compile(r"(\[[0-9a-f:.]+\]|[^:\[\]]+):[0-9]{1,5}")


class HostPolicy:
    def __init__(self, names, bound_host, port):
        bound = bound_host.lower()
        if ":" in bound:
            bound = f"[{bound}]"
        values = set()
        for name in ("localhost", "127.0.0.1", "[::1]", bound, *names):
            name = name.strip().lower()
            if not name or name in ("0.0.0.0", "[::]"):
                continue        # a wildcard bind names no host: clients use a loopback name or --allow-host
            values.add(name)
            if not _NAME_WITH_PORT.fullmatch(name):
                values.add(f"{name}:{port}")
        self.values = frozenset(values)

    def allows(self, host_value):
        return host_value.lower() in self.values


class TokenPolicy:
    def __init__(self, token):
        self._digest = hashlib.sha256(token.encode()).digest() if token else None

    @property
    def required(self):
        return self._digest is not None

    def allows(self, header_values):
        """True if there is no token, or exactly one `Authorization: Bearer <token>` that matches."""
        if self._digest is None:
            return True
        if len(header_values) != 1:
            return False
        scheme, _, credential = header_values[0].partition(" ")
        if scheme.lower() != "bearer":
            return False
        given = hashlib.sha256(credential.strip(" ").encode("latin-1")).digest()
        return hmac.compare_digest(given, self._digest)


def fd_budget():
    """Connections the process's open-file limit leaves room for (a socket and a file each)."""
    try:
        import resource
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):
        return MAX_CONNECTIONS
    if soft == getattr(resource, "RLIM_INFINITY", -1) or soft <= 0:
        return MAX_CONNECTIONS
    return max(4, (soft - 64) // 2)


class Connection:
    """One served connection: its socket, what it waits for since when, and until when. The serving
    thread writes phase/since/deadline; the guard only reads them (single attribute reads and writes)."""

    __slots__ = ("sock", "phase", "since", "deadline")

    def __init__(self, sock, now, deadline):
        self.sock = sock
        self.phase = IDLE
        self.since = now
        self.deadline = deadline


class ConnectionGuard:
    def __init__(self, max_connections=None, header_timeout_s=HEADER_TIMEOUT_S, idle_timeout_s=IDLE_TIMEOUT_S,
                 body_grace_s=BODY_GRACE_S, min_rate=MIN_RATE, stall_timeout_s=STALL_TIMEOUT_S, on_cut=None):
        self.max_connections = max(1, min(int(max_connections or MAX_CONNECTIONS), fd_budget()))
        self.header_timeout_s = float(header_timeout_s)
        self.idle_timeout_s = float(idle_timeout_s)
        self.body_grace_s = float(body_grace_s)
        self.min_rate = float(min_rate)
        self.stall_timeout_s = float(stall_timeout_s)
        self._conns = {}                 # socket -> Connection
        self._lock = threading.Lock()
        self._next_reap = 0.0
        self._on_cut = on_cut or (lambda reason, n: None)

    def admit(self, sock):
        """The Connection of a new socket (after evicting one if at the limit), or None when every
        connection is busy."""
        now = time.monotonic()
        with self._lock:
            if len(self._conns) >= self.max_connections and not self._evict_locked():
                return None
            conn = self._conns[sock] = Connection(sock, now, now + self.header_timeout_s)
        return conn

    def get(self, sock):
        """The Connection of an admitted socket (a fresh, unregistered one for any other)."""
        with self._lock:
            conn = self._conns.get(sock)
        if conn is None:
            now = time.monotonic()
            conn = Connection(sock, now, now + self.header_timeout_s)
        return conn

    def forget(self, sock):
        with self._lock:
            self._conns.pop(sock, None)

    def evict_one(self):
        with self._lock:
            return self._evict_locked()

    def _evict_locked(self):
        victim = None
        for conn in self._conns.values():
            if conn.phase in EVICTABLE and (victim is None or conn.since < victim.since):
                victim = conn
        if victim is None:
            return False
        self._on_cut("evicted", 1)
        self._cut_locked(victim)
        return True

    def _cut_locked(self, conn):
        self._conns.pop(conn.sock, None)
        try:
            conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def reap(self):
        """Cut every connection past its deadline (at most every REAP_INTERVAL_S); how many were cut."""
        now = time.monotonic()
        if now < self._next_reap:
            return 0
        self._next_reap = now + REAP_INTERVAL_S
        with self._lock:
            late = [c for c in self._conns.values() if c.deadline < now]
            if late:
                self._on_cut("timed_out", len(late))
            for conn in late:
                self._cut_locked(conn)
        return len(late)

    def cut_all(self, phases=None):
        with self._lock:
            for conn in list(self._conns.values()):
                if phases is None or conn.phase in phases:
                    self._cut_locked(conn)

    def __len__(self):
        with self._lock:
            return len(self._conns)


__all__ = ["ConnectionGuard", "Connection", "HostPolicy", "TokenPolicy", "fd_budget", "IDLE", "HEADERS", "BODY",
           "WORK", "SEND", "EVICTABLE", "NEVER"]
