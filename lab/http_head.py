"""Strict reading of an HTTP/1.1 request head (RFC 9112): the request line, the header section and where
the body ends. Standard library only; used by the object server (lab/objects_server.py).

Strict where leniency lets two parties read one message differently (request smuggling):
- request line `METHOD SP TARGET SP HTTP/1.x`, single spaces, an upper-case token method, a visible-ASCII
  target; one empty line before it is skipped by the caller (section 2.2);
- header lines `name: value` where the name is a token: no space before the colon, no obs-fold
  continuation line, no line without a colon, no control characters in a value (tab allowed); at most
  MAX_HEAD_BYTES for the line and headers together and MAX_HEADERS lines;
- framing (section 6): `Transfer-Encoding` exactly `chunked` (one coding, once), never together with
  `Content-Length` and never in HTTP/1.0; `Content-Length` exactly one value of ASCII digits (no sign,
  no `_`, no list, no inner space: int() accepts `+5`, `1_0` and ` 5 `, which is how the old server
  took them).
Every violation raises Refused(status, message): the caller answers it and closes the connection.
"""
import re

MAX_HEAD_BYTES = 65536     # request line + header section
MAX_HEADERS = 100          # header lines per request
_TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")     # control characters a field value may not hold
_TARGET_RE = re.compile(r"[\x21-\x7e]+")                  # a request target is visible ASCII
_METHOD_RE = re.compile(r"[A-Z]{1,16}")
_VERSION_RE = re.compile(r"HTTP/1\.([0-9])")
_CONTENT_LENGTH_RE = re.compile(r"[0-9]{1,18}")


class Refused(Exception):
    """The request cannot be served as sent: `status`, one-line `message`, `extra` answer headers."""

    def __init__(self, status, message, extra=None):
        super().__init__(status, message, extra)
        self.status, self.message, self.extra = status, message, extra


class Headers:
    """Request header fields: lower-case name -> values in order. `get` gives the first value (the
    http.client message interface the handler needs), `get_all` every one."""

    __slots__ = ("_fields",)

    def __init__(self):
        self._fields = {}

    def add(self, name, value):
        values = self._fields.get(name)
        if values is None:
            self._fields[name] = [value]
        else:
            values.append(value)

    def get(self, name, default=None):
        values = self._fields.get(name.lower())
        return values[0] if values else default

    def get_all(self, name):
        return list(self._fields.get(name.lower(), ()))

    def __contains__(self, name):
        return name.lower() in self._fields

    def items(self):
        return [(name, value) for name, values in self._fields.items() for value in values]


class RequestHead:
    """What read_head found. body_kind: None (no body), "length" (body_length bytes) or "chunked"."""

    __slots__ = ("command", "target", "version", "http10", "headers", "close", "body_kind", "body_length")

    def __init__(self, command, target, version, http10, headers):
        self.command, self.target, self.version, self.http10 = command, target, version, http10
        self.headers = headers
        self.close = http10
        self.body_kind = None
        self.body_length = 0


def parse_request_line(raw):
    """(command, target, version, http10) of the raw request line (bytes, with its line end)."""
    if len(raw) > MAX_HEAD_BYTES:
        raise Refused(414, "request line too long")
    if not raw.endswith(b"\n"):
        raise Refused(400, "request line not terminated")
    words = raw.decode("iso-8859-1").rstrip("\r\n").split(" ")
    if len(words) != 3:
        raise Refused(400, "request line must be: METHOD TARGET HTTP/1.x")
    command, target, version = words
    match = _VERSION_RE.fullmatch(version)
    if match is None:
        if version.startswith("HTTP/") and version[5:6].isdigit() and version[5:6] != "1":
            raise Refused(505, f"HTTP version {version[5:]!r} is not supported")
        raise Refused(400, "request line must be: METHOD TARGET HTTP/1.x")
    if not _METHOD_RE.fullmatch(command) or not _TARGET_RE.fullmatch(target):
        raise Refused(400, "bad method or request target")
    return command, target, version, match.group(1) == "0"


def read_headers(readline, used=0):
    """The header section, read line by line with `readline(limit)` up to the empty line. `used` is what
    the request line took of MAX_HEAD_BYTES."""
    headers = Headers()
    add = headers.add
    lines = 0
    while True:
        line = readline(MAX_HEAD_BYTES + 1 - used)
        used += len(line)
        if used > MAX_HEAD_BYTES:
            raise Refused(431, "request header section too large")
        if not line.endswith(b"\n"):
            raise Refused(400, "request headers not terminated")     # EOF inside the headers
        if line == b"\r\n" or line == b"\n":
            return headers
        lines += 1
        if lines > MAX_HEADERS:
            raise Refused(431, "too many request header lines")
        name, colon, value = line.partition(b":")
        if not colon or not name or not _TCHAR.issuperset(name):
            # covers obs-fold (a line starting with space), "Name : value" and lines with no colon
            raise Refused(400, "malformed header line")
        text = value.decode("iso-8859-1").rstrip("\r\n").strip(" \t")
        if _BAD_VALUE.search(text):
            raise Refused(400, "control character in a header value")
        add(name.decode("ascii").lower(), text)


def read_head(raw_line, readline):
    """The request head whose request line is `raw_line`; the headers come from `readline`. Refused
    if any part of it is malformed or its framing is ambiguous."""
    command, target, version, http10 = parse_request_line(raw_line)
    head = RequestHead(command, target, version, http10, read_headers(readline, len(raw_line)))
    headers = head.headers
    connection = {t.strip().lower() for v in headers.get_all("connection") for t in v.split(",")}
    head.close = "close" in connection or (http10 and "keep-alive" not in connection)
    te = headers.get_all("transfer-encoding")
    lengths = headers.get_all("content-length")
    if te:
        if http10:
            raise Refused(400, "Transfer-Encoding in an HTTP/1.0 request")
        codings = [c.strip(" \t").lower() for value in te for c in value.split(",")]
        if codings != ["chunked"]:
            raise Refused(400, "Transfer-Encoding must be exactly 'chunked'")
        if lengths:
            raise Refused(400, "both Transfer-Encoding and Content-Length")
        head.body_kind = "chunked"
    elif lengths:
        if len(lengths) != 1 or not _CONTENT_LENGTH_RE.fullmatch(lengths[0]):
            raise Refused(400, "Content-Length must be one number of ASCII digits")
        head.body_length = int(lengths[0])
        if head.body_length:
            head.body_kind = "length"
    return head


__all__ = ["Headers", "MAX_HEAD_BYTES", "MAX_HEADERS", "Refused", "RequestHead", "parse_request_line",
           "read_head", "read_headers"]
