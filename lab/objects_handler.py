"""What the object server's requests mean: GET, HEAD and PUT of `/<bucket>/<key>` on the confined root.

The connection mechanics (strict heads, deadlines, bodies, one-write answers) are GuardedHandler's
(lab/objects_connection.py); the server (lab/objects_server.py) holds the confined root, the upload area
and the counters. A target is percent-decoded and checked lexically (`parse_target`: a simple bucket, a
key tasks.check_key accepts, not a temp name: else 400); then every name is walked from a descriptor of
the root (tqengine.objects.confined.ConfinedRoot): a symbolic link on the way or at the end, or a file
with other hard links (unless allowed), is 400; a FIFO, device, socket or folder is 404 without being
opened; a missing object is 404. GET streams the object in chunk_size pieces (one `bytes=` Range: 206 or
416); PUT receives the body into a temp file of the upload area and renames it into place (folders walked
again at that moment) only when all of it has arrived: 201 new, 200 replaced, 409 when a parent is a file
or the key a folder, 507 when the disk is full.
"""
import errno
import hashlib
import json
import os
import re
import stat
import time
import urllib.parse

from lab.objects_connection import BodyError, GuardedHandler
from tqengine.errors import ObjectNotFound, UnsafeObject, ValidationError
from tqengine.objects.owned import TMP_SUFFIX
from tqengine.tasks import check_key

BUCKET_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
WRITE_BLOCK = 64 * 1024      # an upload's body goes to its temp file in writes of about this size
_NO_SPACE = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


class BadRequest(Exception):
    """The request names something the server will not serve (answered with 400)."""


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


class ObjectHandler(GuardedHandler):
    server_version = "TaskQueueLabObjects/1"

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
        # the descriptor itself, not a file object over it: FileIO's fstat (and a seek to 0) were GIL releases
        # of their own, ~1 in 7 of the server's per task (perf probe on PyEval_SaveThread)
        read = os.read
        try:
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
                if start:
                    os.lseek(fd, start, os.SEEK_SET)
                first = read(fd, min(chunk, length))
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
                    data = read(fd, min(chunk, remaining))
                    if not data:       # the file shrank under us: the client sees a short body
                        self.close_connection = True
                        return
                    self._sending(sent + len(data), started)
                    self.wfile.write(data)
                    remaining -= len(data)
                    sent += len(data)
            except OSError:            # the client went away, stalled, or was too slow
                self.close_connection = True
        finally:
            os.close(fd)

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
        folder = uploads.folder()
        digest = hashlib.sha256()
        nbytes = 0
        done = False
        failure = None
        try:
            fd = folder.create(tmp)
            try:        # raw writes of up to WRITE_BLOCK bytes: a buffered file's fstat, isatty and tell were
                pending = bytearray()       # GIL releases of their own (3 a PUT)
                for data in self._body_pieces():
                    digest.update(data)
                    nbytes += len(data)
                    pending += data
                    if len(pending) >= WRITE_BLOCK:
                        _write_all(fd, pending)
                        pending.clear()
                if pending:
                    _write_all(fd, pending)
            finally:
                os.close(fd)
            existed = confined.publish(folder, tmp, parts, "key")
            done = True
        except (BodyError, OSError, ValidationError) as exc:
            failure = exc
        finally:
            if not done:
                try:
                    folder.unlink(tmp)
                except OSError:
                    pass
        if failure is not None:         # counted only now, when the temp file is gone
            self.close_connection = True
            self.server.count("aborted_uploads")
            if isinstance(failure, BodyError) and not str(failure).startswith("eof"):
                self._reply(400, f"bad request body: {failure}", quiet=True)
            elif isinstance(failure, UnsafeObject):     # a folder became a link while the body arrived
                self._reply(400, str(failure), quiet=True)
            elif isinstance(failure, ValidationError):  # a folder or a file took the name meanwhile
                self._reply(409, str(failure), quiet=True)
            elif getattr(failure, "errno", None) in _NO_SPACE:     # the client's retry may well succeed later
                self._reply(507, f"could not store the object: {failure.strerror}", quiet=True)
            elif not isinstance(failure, (BodyError, ConnectionError, TimeoutError)):
                self._reply(500, f"could not store the object: {failure.__class__.__name__}", quiet=True)
            return
        self.server.count("uploads")
        payload = json.dumps({"bytes": nbytes, "sha256": digest.hexdigest()}).encode() + b"\n"
        self._reply(200 if existed else 201, payload, content_type="application/json")


def _write_all(fd, data):
    """os.write until all of `data` is written (a write may take only part of it)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


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
