"""The HTTP object store: client, server (in-process and as a child process), CLI, faults, confinement,
atomic uploads and flat memory. All traffic stays on 127.0.0.1.

Every client test runs against both transports of HttpObjectStore (the `client` fixture: "requests", the
default, and "stdlib"); the server-only tests run once.

Measure peak RSS by hand for another size:  .venv/bin/python tests/test_http_objects.py 268435456 [stdlib]
"""
import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from runners.project import default_python
from runners.server_process import bucket_root, start_server_process
from runners.workload import object_chunks, write_object
from tests.server_helpers import InProcessServer
from tqengine.errors import (
    ConfigError,
    ObjectNotFound,
    PermanentError,
    StoreClientError,
    StoreConnectionError,
    StoreServerError,
    StoreTimeout,
    TransientError,
    ValidationError,
)
from tqengine.objects import make_store
from tqengine.objects.http import CLIENTS, DEFAULT_CLIENT, HttpObjectStore
from tqengine.objects.local import TMP_SUFFIX, LocalObjectStore
from tqengine.retry import classify

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MiB = 1 << 20


# --- helpers ---
def poll(predicate, timeout=5.0, what="condition"):
    """Poll `predicate` until it is true or the deadline passes (no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.002)


def sha(chunks):
    h = hashlib.sha256()
    n = 0
    for c in chunks:
        h.update(c)
        n += len(c)
    return n, h.hexdigest()


def files_under(path):
    return sorted(os.path.relpath(os.path.join(d, f), path) for d, _, fs in os.walk(path) for f in fs)


def raw_request(port, method, target, body=None, headers=None):
    """One request through http.client, bypassing the client-side key checks; returns (status, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        conn.endheaders(body)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def with_retries(fn, attempts=12):
    """A caller's retry loop: retry what retry.classify calls transient; return (result, errors seen)."""
    errors = []
    for _ in range(attempts):
        try:
            return fn(), errors
        except Exception as exc:  # noqa: BLE001 - classification decides
            if classify(exc) != "transient":
                raise
            errors.append(exc)
    raise AssertionError(f"still failing after {attempts} attempts: {errors[-1]!r}")


@pytest.fixture
def srv(tmp_path):
    s = InProcessServer(str(tmp_path / "srv"))
    yield s.server
    s.stop()


@pytest.fixture(params=CLIENTS)
def client(request):
    """The HttpObjectStore transport under test: every test that takes it runs once per client."""
    return request.param


@pytest.fixture
def store(srv, client):
    with HttpObjectStore(srv.url, chunk_size=64 * 1024, pool_size=4, timeout=(2, 10), client=client) as st:
        assert st.client == client
        yield st


# --- round trips ---
@pytest.mark.parametrize("nbytes", [0, 1, 65536, 5 * 65536 + 123])
def test_round_trip_streaming(srv, store, nbytes):
    key = f"img/rt/{nbytes}.raw"
    expected = sha(object_chunks(key, nbytes))
    assert store.write_chunks(key, object_chunks(key, nbytes)) == expected
    assert store.exists(key) and store.size(key) == nbytes
    pieces = list(store.read_chunks(key))
    assert all(0 < len(p) <= store.chunk_size for p in pieces)      # as they come: one recv each at most
    assert sum(map(len, pieces)) == nbytes and sha(pieces) == expected
    assert store.read_all(key) == b"".join(object_chunks(key, nbytes))
    # the file is where the contract says: <root>/<bucket>/<key>, readable by the local store too
    local = LocalObjectStore(bucket_root(srv.root, "store"))
    assert sha(local.read_chunks(key)) == expected
    assert files_under(srv.root) == [os.path.join("store", *key.split("/"))]


def test_write_all_read_all_and_overwrite(store):
    assert store.write_all("a/b", b"first") == (5, hashlib.sha256(b"first").hexdigest())
    assert store.write_all("a/b", b"") == (0, hashlib.sha256(b"").hexdigest())
    assert store.read_all("a/b") == b"" and store.size("a/b") == 0
    store.write_all("odd key/with %25 ?#&=+ chars é", b"x")
    assert store.read_all("odd key/with %25 ?#&=+ chars é") == b"x"


def test_missing_object(store):
    with pytest.raises(ObjectNotFound):
        store.read_chunks("no/such.raw")          # raised at call time, like LocalObjectStore
    with pytest.raises(ObjectNotFound):
        store.read_all("no/such.raw")
    assert store.exists("no/such.raw") is False
    assert store.size("no/such.raw") is None
    assert classify(ObjectNotFound("x")) == "permanent"


def test_client_side_key_check_before_any_request(client):
    st = HttpObjectStore("http://127.0.0.1:9", client=client)   # nothing listens there: no request made
    for key in ("../x", "/abs", "a/../b", "a\\b", "a\x00b", "", "a//b", "x" * 1025):
        for call in (st.read_chunks, st.exists, st.size, st.read_all, lambda k: st.write_all(k, b"")):
            with pytest.raises(ValidationError):
                call(key)
    st.close()


def test_other_4xx_is_permanent_and_range_is_served(srv, store):
    store.write_all("parent", b"0123456789")
    with pytest.raises(StoreClientError) as info:          # 409: a parent of the key is an object
        store.write_all("parent/child", b"x")
    assert info.value.status == 409 and isinstance(info.value, PermanentError)
    assert raw_request(srv.port, "GET", "/store/parent", headers={"Range": "bytes=2-4"}) == (206, b"234")
    assert raw_request(srv.port, "GET", "/store/parent", headers={"Range": "bytes=-3"}) == (206, b"789")
    assert raw_request(srv.port, "GET", "/store/parent", headers={"Range": "bytes=20-"})[0] == 416


def test_concurrent_workers_share_one_pool(srv, client):
    with HttpObjectStore(srv.url, pool_size=4, chunk_size=16 * 1024, client=client) as st:
        results, errors = {}, []

        def work(i):
            key = f"c/{i}.raw"
            try:
                w = st.write_chunks(key, object_chunks(key, 50_000 + i))
                results[key] = (w, sha(st.read_chunks(key)))
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=20)
        assert not errors and len(results) == 8
        assert all(w == r for w, r in results.values())


# --- performance properties: no Nagle stall, pool sizing ---
def test_kept_alive_requests_do_not_stall_on_delayed_ack(srv, store):
    """Headers and body used to leave in two writes; with Nagle on, the second waited for the client's
    delayed ACK: ~40 ms per request on a reused connection. Now each takes well under a millisecond on an
    idle machine; the bound leaves a wide margin for a loaded one and still catches the stall."""
    data = os.urandom(16 * 1024)
    store.write_all("warm", data)
    timings = {"PUT": [], "GET": [], "HEAD": []}
    for i in range(15):
        key = f"n/{i}"
        for method, call in (("PUT", lambda key=key: store.write_all(key, data)),
                             ("GET", lambda key=key: store.read_all(key)),
                             ("HEAD", lambda key=key: store.size(key))):
            started = time.perf_counter()
            call()
            timings[method].append(time.perf_counter() - started)
    medians = {m: sorted(t)[len(t) // 2] * 1000 for m, t in timings.items()}
    assert all(ms < 20 for ms in medians.values()), medians
    assert store.stats["created"] == 1, store.stats          # one kept-alive connection did it all
    socks = store._transport.idle_sockets()
    assert len(socks) == 1 and socks[0].getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def _stream_through(st, src, dst, barrier=None):
    """What the engine's processor does: the download feeds the upload (GET open while PUT runs)."""
    def pieces():
        received, waited = 0, barrier is None
        for chunk in st.read_chunks(src):
            if not waited and received >= st.chunk_size:
                waited = True                 # the PUT has sent its first block: every thread now holds a GET
                barrier.wait(timeout=10)      # and a PUT connection
            received += len(chunk)
            yield chunk
    return st.write_chunks(dst, pieces())


@pytest.mark.parametrize("connections, discarded", [(None, 0), (4, 4)], ids=["2x-pool", "1x-pool"])
def test_pool_holds_a_get_and_a_put_per_worker(srv, client, connections, discarded):
    """pool_size threads each streaming a GET into a PUT need 2 * pool_size connections: the default
    keeps them all; a pool of only pool_size has to close some (the 'pool is full' warning)."""
    with HttpObjectStore(srv.url, pool_size=4, chunk_size=16 * 1024, connections=connections,
                         client=client) as st:
        for i in range(4):
            st.write_chunks(f"src/{i}", object_chunks(f"src/{i}", 100_000))
        barrier = threading.Barrier(4)
        errors = []

        def work(i):
            try:
                _stream_through(st, f"src/{i}", f"dst/{i}", barrier)
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=20)
        assert not errors
        stats = st.stats
        assert stats["created"] == 8 and stats["discarded"] == discarded, stats
        for i in range(4):
            assert st.read_all(f"dst/{i}") == b"".join(object_chunks(f"src/{i}", 100_000))


def test_small_body_is_sent_whole_after_the_download_finished(srv, client):
    """A body that fits in one chunk goes out with Content-Length once the source is exhausted, so the
    GET's connection is back in the pool and the PUT reuses it: one connection per worker."""
    with HttpObjectStore(srv.url, pool_size=1, chunk_size=64 * 1024, client=client) as st:
        st.write_all("small", b"s" * 20_000)
        _stream_through(st, "small", "small.out")
        assert st.stats == {"created": 1, "reused": 2, "dropped": 0, "discarded": 0}
        assert st.read_all("small.out") == b"s" * 20_000
        st.write_all("large", b"L" * 200_000)
        _stream_through(st, "large", "large.out")            # chunked: GET and PUT overlap
        assert st.stats["created"] == 2
        assert st.read_all("large.out") == b"L" * 200_000


def test_server_latency_is_the_service_time_of_a_request(tmp_path, client):
    """latency_ms counts from the request line: work shorter than it is inside it (not added on top),
    and every kind of answer (200, 201, 404, 503) waits for it."""
    latency = 0.4
    s = InProcessServer(str(tmp_path / "srv"), latency_ms=latency * 1000)
    try:
        class SlowWork(s.server.RequestHandlerClass):
            def _get(self, path, body):
                time.sleep(0.3)               # work under the latency
                super()._get(path, body)

        s.server.RequestHandlerClass = SlowWork
        with HttpObjectStore(s.server.url, timeout=(2, 10), client=client) as st:
            for call in (lambda: st.write_all("k", b"x"), lambda: st.read_all("k"),
                         lambda: st.exists("missing")):
                started = time.perf_counter()
                call()
                elapsed = time.perf_counter() - started
                # 0.7 s if it were added; 0.2 s of room for a busy machine (the suite runs on every core)
                assert latency <= elapsed < latency + 0.2, elapsed
        s.server.error_rate = 1.0
        with HttpObjectStore(s.server.url, timeout=(2, 10), client=client) as st:
            started = time.perf_counter()
            with pytest.raises(StoreServerError):
                st.read_all("k")
            assert time.perf_counter() - started >= latency
    finally:
        s.stop()


def test_trial_ceiling_uses_the_http_service_time():
    from runners.trial import service_time_ms, validate
    http = validate({"store": "http", "latency_ms": 5, "server_latency_ms": 5})
    assert service_time_ms(http) == 10.0                   # a GET and a PUT of 5 ms each
    assert service_time_ms(dict(http, latency_ms=25)) == 25   # the processor pads to more than that
    assert service_time_ms(validate({"store": "local", "latency_ms": 5, "server_latency_ms": 5})) == 5


# --- faults ---
def test_injected_503_is_transient_and_a_retry_loop_gets_through(tmp_path, client):
    s = InProcessServer(str(tmp_path / "srv"), error_rate=0.5, seed=7)
    try:
        with HttpObjectStore(s.server.url, timeout=(2, 10), client=client) as st:
            seen = []
            for i in range(6):
                key = f"r/{i}.raw"
                w, e1 = with_retries(lambda key=key: st.write_chunks(key, object_chunks(key, 200_000)))
                r, e2 = with_retries(lambda key=key: sha(st.read_chunks(key)))
                ok, e3 = with_retries(lambda key=key: st.exists(key))
                assert w == r and ok
                seen += e1 + e2 + e3
            assert seen, "error_rate=0.5 with seed 7 should have injected some 503s"
            assert all(isinstance(e, StoreServerError) and e.status == 503 for e in seen)
            assert all(isinstance(e, TransientError) for e in seen)
            assert s.server.stats["injected_503"] == len(seen)
            assert not [f for f in files_under(s.server.root) if f.endswith(TMP_SUFFIX)]
    finally:
        s.stop()


def test_503_during_a_large_upload_still_reaches_the_client(tmp_path, client):
    """The server answers before reading an 8 MiB body; its lingering close lets the client read the 503
    instead of a connection reset."""
    s = InProcessServer(str(tmp_path / "srv"), error_rate=1.0)
    try:
        with HttpObjectStore(s.server.url, timeout=(2, 10), client=client) as st:
            with pytest.raises(StoreServerError) as info:
                st.write_chunks("big", object_chunks("big", 8 * MiB))
            assert info.value.status == 503
        assert files_under(s.server.root) == []
    finally:
        s.stop()


def test_read_timeout_is_transient(tmp_path, client):
    s = InProcessServer(str(tmp_path / "srv"), latency_ms=400)
    try:
        with HttpObjectStore(s.server.url, timeout=(2, 0.05), client=client) as st:
            with pytest.raises(StoreTimeout) as info:
                st.exists("anything")
            assert classify(info.value) == "transient"
    finally:
        s.stop()


def _read_request_head(conn):
    """Read a request up to the end of its head (5 s at most a read); False if the client closed first."""
    conn.settimeout(5)
    request = b""
    while b"\r\n\r\n" not in request:
        data = conn.recv(65536)
        if not data:
            return False
        request += data
    return True


def test_read_timeout_in_mid_stream_is_transient(client):
    """A server that sends the headers and part of the body, then nothing: the read timeout while
    iterating maps to StoreTimeout (requests reports it as a ConnectionError around urllib3's
    ReadTimeoutError), and the half-read connection is not reused."""
    listener = socket.create_server(("127.0.0.1", 0))
    release = threading.Event()

    def serve_one():
        conn, _ = listener.accept()
        with conn:
            if not _read_request_head(conn):
                return
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 200000\r\n\r\n" + b"x" * 70_000)
            release.wait(timeout=10)

    thread = threading.Thread(target=serve_one, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        with HttpObjectStore(url, chunk_size=65536, timeout=(2, 0.2), client=client) as st:
            received = 0
            with pytest.raises(StoreTimeout) as info:
                for piece in st.read_chunks("slow"):
                    received += len(piece)
            assert received == 70_000                   # every byte the server sent, then the timeout
            assert classify(info.value) == "transient"
            assert st._transport.idle_sockets() == []
    finally:
        release.set()
        thread.join(timeout=10)
        listener.close()


def test_server_killed_mid_stream_then_back_on_the_same_port(tmp_path, client):
    """SIGKILL the server process in the middle of a download and of an upload: both surface as
    TransientError; a new server on the same port and root serves the same client again."""
    root = str(tmp_path / "srv")
    key = "img/killed.raw"
    nbytes = 32 * MiB        # larger than the loopback socket buffers, so the cut is seen mid-body
    write_object(bucket_root(root), key, nbytes)
    first = start_server_process(root)
    port = first.port
    try:
        with HttpObjectStore(first.url, timeout=(2, 10), client=client) as st:
            chunks = st.read_chunks(key)
            next(chunks)
            first.kill()
            with pytest.raises(TransientError) as info:
                for _ in chunks:
                    pass
            assert isinstance(info.value, StoreConnectionError)
            with pytest.raises(StoreConnectionError):          # nobody listening now
                st.exists(key)

            second = start_server_process(root, port=port)
            try:
                assert second.port == port
                assert sha(st.read_chunks(key)) == sha(object_chunks(key, nbytes))   # same client

                def upload_then_kill():
                    for i, chunk in enumerate(object_chunks("up.raw", 16 * MiB)):
                        if i == 8:
                            second.kill()
                        yield chunk

                with pytest.raises(TransientError):
                    st.write_chunks("up.raw", upload_then_kill())
            finally:
                second.stop()
            with start_server_process(root, port=port) as third:
                assert st.exists("up.raw") is False            # the cut upload is not an object
                assert st.write_chunks("up.raw", object_chunks("up.raw", MiB)) == \
                    sha(object_chunks("up.raw", MiB))
                assert third.port == port
    finally:
        first.stop()


# --- confinement ---
TRAVERSALS = [
    "/store/../../etc/passwd", "/store/%2e%2e/x", "/store/%2E%2E/%2e%2E/x", "/store/a/../../b",
    "/store/a/%2e%2e/%2e%2e/b", "/store//etc/passwd", "/store/%2Fetc%2Fpasswd", "/store/a%00b",
    "/store/..%5C..%5Cx", "/store/a\\b", "/store/..\\x", "/../x", "/%2e%2e/store/x", "/store/./x",
    "/store/a//b", "/store/", "/store", "/", "/store/%ff", "/bad%20bucket/x", "/.hidden-ok/../x",
    "http://127.0.0.1/store/x", "/store/x" + "y" * 1100, "/store/x.0123456789ab" + TMP_SUFFIX,
]


@pytest.mark.parametrize("target", TRAVERSALS)
def test_server_refuses_escaping_keys_with_400(srv, tmp_path, target):
    for method in ("GET", "HEAD"):
        status, _ = raw_request(srv.port, method, target)
        assert status == 400, (method, target, status)
    status, _ = raw_request(srv.port, "PUT", target, body=b"pwned")
    assert status == 400, ("PUT", target, status)
    assert files_under(str(tmp_path)) == [], "nothing may be written anywhere"


def test_symlink_out_of_the_root_is_refused(srv, tmp_path, client):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    os.makedirs(os.path.join(srv.root, "store"), exist_ok=True)
    os.symlink(str(outside), os.path.join(srv.root, "store", "link"))
    assert raw_request(srv.port, "GET", "/store/link/secret")[0] == 400
    assert raw_request(srv.port, "PUT", "/store/link/new", body=b"x")[0] == 400
    assert sorted(os.listdir(outside)) == ["secret"]
    # a linked last component is refused even when it points inside the root (as LocalObjectStore does)
    with open(os.path.join(srv.root, "store", "real"), "wb") as f:
        f.write(b"inside")
    os.symlink(os.path.join(srv.root, "store", "real"), os.path.join(srv.root, "store", "alias"))
    assert raw_request(srv.port, "GET", "/store/alias")[0] == 400
    assert raw_request(srv.port, "PUT", "/store/alias", body=b"x")[0] == 400
    assert os.path.islink(os.path.join(srv.root, "store", "alias"))
    assert raw_request(srv.port, "GET", "/store/real") == (200, b"inside")
    with HttpObjectStore(srv.url, client=client) as st:
        with pytest.raises(ValidationError):      # the server's 400 maps to ValidationError
            st.read_all("link/secret")


# --- atomic uploads ---
def _cut_upload(port, head, body_part):
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(head + body_part)
    return sock


@pytest.mark.parametrize("kind", ["content-length", "chunked-mid-chunk", "chunked-no-last-chunk"])
def test_put_cut_short_leaves_nothing(srv, store, kind):
    store.write_all("obj", b"old version")
    before = srv.stats["aborted_uploads"]
    if kind == "content-length":
        head = b"PUT /store/obj HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000000\r\n\r\n"
        part = b"n" * 100_000
    else:
        head = b"PUT /store/obj HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        part = b"%x\r\n%s\r\n" % (50_000, b"n" * 50_000)
        part += b"%x\r\n%s" % (50_000, b"n" * 10_000) if kind == "chunked-mid-chunk" else b""
    sock = _cut_upload(srv.port, head, part)
    try:
        directory = srv.uploads.path            # <root>/.tq-uploads/<owner>/: not reachable by any key
        poll(lambda: any(f.endswith(TMP_SUFFIX) for f in os.listdir(directory)), what="the temp file")
        # while the upload is in flight, readers see the old object and cannot reach the temp file
        assert store.read_all("obj") == b"old version"
        temp = next(f for f in os.listdir(directory) if f.endswith(TMP_SUFFIX))
        assert raw_request(srv.port, "GET", "/store/" + temp)[0] == 400
        rel = os.path.relpath(os.path.join(directory, temp), srv.root).replace(os.sep, "/")
        assert raw_request(srv.port, "GET", "/" + rel)[0] == 400
    finally:
        sock.close()
    assert srv.wait_for(lambda st: st["aborted_uploads"] > before, timeout=5)
    assert store.read_all("obj") == b"old version"
    assert files_under(srv.root) == [os.path.join("store", "obj")]


class SourceBroke(Exception):
    pass


@pytest.mark.parametrize("error", [SourceBroke, OSError], ids=["own-class", "OSError"])
def test_client_source_error_aborts_the_upload_and_is_reraised(srv, store, error):
    """The caller's exception comes back as it was raised, even an OSError (which a transport failure
    also is: it must not turn into a StoreConnectionError)."""
    raised = error("disk read failed")

    def chunks():
        yield b"a" * 70_000
        yield b"b" * 70_000
        raise raised

    with pytest.raises(error) as info:
        store.write_chunks("k", chunks())
    assert info.value is raised
    assert srv.wait_for(lambda st: st["aborted_uploads"] >= 1, timeout=5)
    assert store.exists("k") is False
    assert files_under(srv.root) == []


# --- the process and the command line ---
def _lab_cli_missing_modules():
    """Subcommand modules `python -m lab` imports that are not in the tree yet (other people's work)."""
    import importlib.util

    from lab.__main__ import SUBCOMMAND_MODULES
    return [m for m in SUBCOMMAND_MODULES if importlib.util.find_spec(m) is None]


ENTRIES = [pytest.param(["lab", "objects"], id="python-m-lab"),
           pytest.param(["lab.objects_cli"], id="python-m-lab.objects_cli")]


def _serve_argv(entry, root, *extra):
    if entry == ["lab", "objects"] and _lab_cli_missing_modules():
        pytest.skip(f"`python -m lab` cannot start yet: {_lab_cli_missing_modules()} not in the tree")
    return [default_python(), "-m", *entry, "serve", "--root", root, "--port", "0", *extra]


def _env():
    return dict(os.environ, PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_cli_prints_port_and_exits_0_on_signal(tmp_path, sig, entry):
    proc = subprocess.Popen(_serve_argv(entry, str(tmp_path / "r")), cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        line = proc.stdout.readline().decode()        # the server prints it at once (or dies: EOF)
        assert line.startswith("listening on http://127.0.0.1:"), (line, proc.stderr.read()[-2000:])
        port = int(line.rsplit(":", 1)[1])
        assert 0 < port < 65536
        assert raw_request(port, "HEAD", "/store/none")[0] == 404
        proc.send_signal(sig)
        assert proc.wait(timeout=10) == 0
        assert proc.stderr.read() == b""               # quiet: no per-request log lines
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("bad", [["--error-rate", "2"], ["--latency-ms", "-1"], ["--port", "70000"]])
def test_cli_bad_arguments_exit_2(tmp_path, bad, entry):
    proc = subprocess.run(_serve_argv(entry, str(tmp_path / "r"), *bad), cwd=ROOT, env=_env(), capture_output=True,
                          timeout=20)
    assert proc.returncode == 2
    assert proc.stdout == b"" and len(proc.stderr.decode().strip().splitlines()) == 1


def test_start_server_process_and_stop(tmp_path, client):
    with start_server_process(str(tmp_path / "r"), latency_ms=1, seed=3) as server:
        assert server.url == f"http://127.0.0.1:{server.port}"
        with HttpObjectStore(server.url, client=client) as st:
            st.write_all("x", b"1")
            assert st.read_all("x") == b"1"
    assert server.proc.returncode == 0
    assert server.stop() == 0              # idempotent


def test_make_store(tmp_path):
    local = make_store("local", str(tmp_path / "l"), None, 1024, 2)
    assert isinstance(local, LocalObjectStore) and local.chunk_size == 1024
    remote = make_store("http", None, "http://127.0.0.1:1", 2048, 3)
    assert isinstance(remote, HttpObjectStore) and remote.chunk_size == 2048 and remote.pool_size == 3
    assert remote.client == "stdlib" and remote.connections == 6     # the cheaper client is the default
    assert remote.remove_temp_files() == 0
    remote.close()
    with make_store("http", None, "http://127.0.0.1:1", 2048, 3, client="requests") as other:
        assert other.client == "requests" and other.connections == 6
    for args in (("s3", "x", None, 1, 1), ("http", "x", None, 1, 1), ("http", "x", "ftp://h", 1, 1)):
        with pytest.raises(ConfigError):
            make_store(*args)
    with pytest.raises(ConfigError):
        make_store("http", None, "http://127.0.0.1:1", 2048, 3, client="urllib3")


# --- memory ---
RSS_SCRIPT = r"""
import hashlib, json, os, resource, sys
from tqengine.objects.http import HttpObjectStore
from runners.server_process import start_server_process
from runners.workload import object_chunks

root, nbytes, client = sys.argv[1], int(sys.argv[2]), sys.argv[3]

def server_hwm_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])

def me_kib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

with start_server_process(root) as server, HttpObjectStore(server.url, client=client) as st:
    for key in ("warm/a", "warm/b"):       # load every code path once before the baseline
        st.write_chunks(key, object_chunks(key, 4 << 20))
        for _ in st.read_chunks(key):
            pass
    st.write_all("warm/c", b"x")
    st.read_all("warm/c")
    c0, s0 = me_kib(), server_hwm_kib(server.pid)
    n, digest = st.write_chunks("big.raw", object_chunks("big.raw", nbytes))
    c1, s1 = me_kib(), server_hwm_kib(server.pid)
    h = hashlib.sha256()
    got = 0
    for chunk in st.read_chunks("big.raw"):
        h.update(chunk)
        got += len(chunk)
    c2, s2 = me_kib(), server_hwm_kib(server.pid)
    ok = n == got == nbytes and h.hexdigest() == digest
print(json.dumps({"client": client, "nbytes": nbytes, "ok": ok, "client_kib": [c0, c1, c2],
                  "server_kib": [s0, s1, s2]}))
"""


def measure_rss(root, nbytes, client=DEFAULT_CLIENT):
    out = subprocess.run([default_python(), "-c", RSS_SCRIPT, root, str(nbytes), client], cwd=ROOT, env=_env(),
                         capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    return json.loads(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the server's VmHWM from /proc")
def test_streaming_256_mib_keeps_peak_rss_flat(tmp_path, client):
    result = measure_rss(str(tmp_path / "r"), 256 * MiB, client)
    assert result["ok"]
    client, server = result["client_kib"], result["server_kib"]
    assert client[2] - client[0] < 16 * 1024, result
    assert server[2] - server[0] < 16 * 1024, result


if __name__ == "__main__":
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        r = measure_rss(d, int(sys.argv[1]) if len(sys.argv) > 1 else 256 * MiB,
                        sys.argv[2] if len(sys.argv) > 2 else DEFAULT_CLIENT)
    c, s = r["client_kib"], r["server_kib"]
    print(json.dumps(r))
    print(f"{r['client']}: {r['nbytes'] / MiB:.0f} MiB PUT+GET: client peak {c[0] / 1024:.1f} -> {c[2] / 1024:.1f} MiB "
          f"(+{(c[2] - c[0]) / 1024:.2f}), server peak {s[0] / 1024:.1f} -> {s[2] / 1024:.1f} MiB "
          f"(+{(s[2] - s[0]) / 1024:.2f})")


def _dribbling_server(stop):
    """A server that answers one GET with 1 MB announced, then sends one byte every 20 ms until `stop`."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve_one():
        conn, _ = listener.accept()
        with conn:
            if not _read_request_head(conn):
                return
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
            try:
                while not stop.wait(0.02):
                    conn.sendall(b"x")
            except OSError:
                pass

    thread = threading.Thread(target=serve_one, daemon=True)
    thread.start()
    return listener, thread


@pytest.mark.timeout(30)
def test_a_server_that_dribbles_its_body_cannot_hold_an_attempt_past_its_deadline(client):
    """read(64 KiB) waited for all 64 KiB: a server sending a byte every 20 ms (well within the read timeout)
    held the first piece for ~20 minutes, and the attempt's deadline, checked between pieces, with it. Pieces
    now come as they arrive: the first at once, and the attempt ends at attempt_timeout_s."""
    from tqengine.errors import AttemptTimeout
    from tqengine.processor import Processor
    stop = threading.Event()
    listener, thread = _dribbling_server(stop)
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        with HttpObjectStore(url, chunk_size=65536, timeout=(2, 2), client=client) as st:
            processor = Processor(st, attempt_timeout_s=0.5)
            started = time.perf_counter()
            with pytest.raises(AttemptTimeout):
                processor.process("slow.jpg", "10x10", "slow.jpg#10x10", 1)
            assert time.perf_counter() - started < 3.0      # the deadline, not 64 KiB x 20 ms
    finally:
        stop.set()
        thread.join(timeout=10)
        listener.close()


def _one_answer_server(answer):
    """A server that answers every request with the bytes `answer`, then closes the connection."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                try:
                    if _read_request_head(conn):
                        conn.sendall(answer)
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, stop, thread


_NONSENSE = [
    ("head-length-abc", b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n", "size", StoreServerError),
    ("get-length-abc", b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nxyz", "read_chunks", StoreServerError),
    ("get-length-1e20", b"HTTP/1.1 200 OK\r\nContent-Length: 100000000000000000000\r\n\r\nxyz", "read_all",
     StoreServerError),
    ("chunk-size-huge", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nxyz",
     "read_all", TransientError),
    ("redirect", b"HTTP/1.1 302 Found\r\nLocation: http://elsewhere.example/x\r\nContent-Length: 0\r\n\r\n",
     "read_chunks", (StoreClientError, StoreServerError)),
]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case, answer, call, raises", _NONSENSE, ids=[c[0] for c in _NONSENSE])
def test_a_server_answering_nonsense_is_a_store_error_not_a_crash(client, case, answer, call, raises):
    """Each answer raised something no caller expects out of the store (ValueError from int() of the length,
    OverflowError from http.client, AttributeError from requests working out a redirect with no cookie jar):
    the engine classified those as the task's fault, or not at all. Now each is a store error."""
    listener, stop, thread = _one_answer_server(answer)
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        with HttpObjectStore(url, chunk_size=4096, timeout=(2, 2), client=client) as st:
            with pytest.raises(raises):
                if call == "size":
                    st.size("k")
                elif call == "read_all":
                    st.read_all("k")
                else:
                    b"".join(st.read_chunks("k"))
    finally:
        stop.set()
        thread.join(timeout=10)
        listener.close()


def _dribble_head(conn, stop):
    """Send a 3 KB answer head one byte every 20 ms, until it is sent or `stop` is set."""
    for byte in b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 3000 + b"\r\nContent-Length: 3\r\n\r\nabc":
        if stop.wait(0.02):
            return
        conn.sendall(bytes([byte]))


@pytest.mark.timeout(30)
def test_a_server_that_dribbles_its_answers_head_is_timed_out_as_a_whole(client):
    """http.client reads an answer's status line and headers a recv at a time, each under the read timeout: a
    server sending one byte every 20 ms kept a 3 KB head coming for a minute (up to 100 lines of 64 KiB: hours).
    The head as a whole now has the read timeout."""
    stop = threading.Event()
    listener = socket.create_server(("127.0.0.1", 0))

    def serve_one():
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            try:
                _dribble_head(conn, stop)
            except OSError:
                pass

    thread = threading.Thread(target=serve_one, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        with HttpObjectStore(url, timeout=(2, 1), client=client) as st:
            started = time.perf_counter()
            with pytest.raises(StoreTimeout):
                st.read_all("k")
            assert time.perf_counter() - started < 5.0
    finally:
        stop.set()
        thread.join(timeout=10)
        listener.close()


@pytest.fixture(scope="module")
def tls_cert(tmp_path_factory):
    """(certificate, key) files of a self-signed certificate for 127.0.0.1, made by the openssl command."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = str(folder / "cert.pem"), str(folder / "key.pem")
    try:
        made = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                               "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                              capture_output=True, timeout=60)
    except FileNotFoundError:
        pytest.skip("no openssl command to make a test certificate with")
    assert made.returncode == 0, made.stderr.decode()[-2000:]
    return cert, key


def _tls_dribbler(cert, key, stop):
    """A TLS server that reads one request and sends a 3 KB answer head one byte every 20 ms until `stop`."""
    import ssl
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))

    def serve_one():
        try:
            plain, _ = listener.accept()
            plain.settimeout(10)
            with context.wrap_socket(plain, server_side=True) as conn:
                if _read_request_head(conn):
                    _dribble_head(conn, stop)
        except OSError:
            pass

    thread = threading.Thread(target=serve_one, daemon=True)
    thread.start()
    return listener, thread


@pytest.mark.parametrize("client", CLIENTS)
def test_a_tls_server_that_dribbles_its_answers_head_is_timed_out_as_a_whole(tls_cert, client):
    """Over TLS the head had no deadline of its own (only each read had the read timeout): the HTTPS
    connections of both transports now read through HeadDeadlineSSLSocket, and still verify the server."""
    import ssl

    from tqengine.objects.http_requests import _CountingHTTPPool, _CountingHTTPSPool, _HeadDeadlineHTTPSConnection
    from tqengine.objects.http_stdlib import _HTTPSConnection
    from tqengine.objects.http_transport import HeadDeadlineSSLSocket
    assert _CountingHTTPSPool.ConnectionCls is _HeadDeadlineHTTPSConnection    # the plain pool's class speaks no TLS
    assert _CountingHTTPPool.ConnectionCls is not _HeadDeadlineHTTPSConnection
    cert, key = tls_cert
    stop = threading.Event()
    listener, thread = _tls_dribbler(cert, key, stop)
    port = listener.getsockname()[1]
    try:
        if client == "stdlib":
            conn = _HTTPSConnection("127.0.0.1", port, timeout=5, context=ssl.create_default_context(cafile=cert))
            conn.read_timeout = 1.0
        else:
            conn = _HeadDeadlineHTTPSConnection("127.0.0.1", port, timeout=1.0, ca_certs=cert)
        try:
            conn.request("GET", "/store/k")
            assert type(conn.sock) is HeadDeadlineSSLSocket and conn.sock.version()     # TLS, verified
            started = time.perf_counter()
            with pytest.raises(Exception) as raised:
                conn.getresponse()
            took = time.perf_counter() - started
        finally:
            conn.close()
        assert "timed out" in str(raised.value).lower() or isinstance(raised.value, TimeoutError), raised.value
        assert took < 3.0       # the head as a whole: 1 s, where each byte within 1 s kept it for a minute
    finally:
        stop.set()
        thread.join(timeout=10)
        listener.close()


def test_a_tls_connection_to_an_unverified_server_is_refused(tls_cert):
    """Making the TLS socket a HeadDeadlineSSLSocket happens after the handshake: verification is unchanged."""
    import ssl

    from tqengine.objects.http_stdlib import _HTTPSConnection
    cert, key = tls_cert
    stop = threading.Event()
    listener, thread = _tls_dribbler(cert, key, stop)
    try:
        conn = _HTTPSConnection("127.0.0.1", listener.getsockname()[1], timeout=5,
                                context=ssl.create_default_context())      # the system's CAs: not this one
        with pytest.raises(ssl.SSLCertVerificationError):
            conn.connect()
        conn.close()
    finally:
        stop.set()
        thread.join(timeout=10)
        listener.close()


def test_the_head_deadline_socket_keeps_the_timeout_a_request_is_sent_under():
    """The socket urllib3 made has the connect timeout, which its request is then sent under; the head
    deadline socket that takes its place had none (a server that never reads could block the send forever)."""
    from tqengine.objects.http_requests import _HeadDeadlineConnection
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        conn = _HeadDeadlineConnection("127.0.0.1", listener.getsockname()[1], timeout=2.5)
        conn.connect()
        try:
            assert type(conn.sock).__name__ == "HeadDeadlineSocket" and conn.sock.gettimeout() == 2.5
        finally:
            conn.close()
    finally:
        listener.close()


def test_a_prompt_answer_costs_no_socket_timeout_change(srv, store, monkeypatch):
    """Each answer's head set the socket's timeout to what was left of its deadline, then back to the read
    timeout: two settimeout() calls a request, each an ioctl with the GIL released (a quarter of the releases of
    a task over HTTP). A timeout within HEAD_SLACK of the one wanted is now kept; a dribbled head is still cut
    (test_a_server_that_dribbles_its_answers_head_is_timed_out_as_a_whole). The `store` fixture's timeouts:
    connect 2 s, read 10 s."""
    from tqengine.objects.http_transport import HeadDeadlineSocket
    calls = []
    real = HeadDeadlineSocket.settimeout
    monkeypatch.setattr(HeadDeadlineSocket, "settimeout", lambda sock, t: calls.append(t) or real(sock, t))
    store.write_chunks("img/t/a.raw", [b"x" * 1000])
    store.read_all("img/t/a.raw")                       # the connections are made (and their timeouts set)
    calls.clear()
    for n in range(10):
        store.write_chunks(f"img/t/{n}.raw", [b"y" * 1000])
        assert store.read_all(f"img/t/{n}.raw") == b"y" * 1000
    if store.client == "stdlib":
        assert calls == []
    else:       # urllib3 sets the connect timeout to send under and the read timeout to answer under, itself
        assert calls == [2, 10] * 20


def test_the_server_reads_and_writes_objects_through_their_descriptors(srv, monkeypatch):
    """A GET wrapped its descriptor in a FileIO and a PUT wrote through a buffered file: their fstat, isatty,
    seek and tell were five of the server's 27 GIL releases a task of two requests (perf probe on
    PyEval_SaveThread). They now use the descriptor itself, with the same bytes: whole, by range, and a body
    of many chunks written in blocks."""
    from lab import objects_handler
    opened = []
    monkeypatch.setattr(objects_handler, "open", lambda *a, **k: opened.append(a) or open(*a, **k), raising=False)
    big = bytes(range(256)) * 1000                      # 256,000 bytes: more than one WRITE_BLOCK
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
    try:
        conn.putrequest("PUT", "/store/d/big.raw")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        for i in range(0, len(big), 1000):              # 256 chunks of 1,000 bytes
            piece = big[i:i + 1000]
            conn.send(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        conn.send(b"0\r\n\r\n")
        answer = conn.getresponse()
        assert answer.status == 201 and json.loads(answer.read())["sha256"] == hashlib.sha256(big).hexdigest()
    finally:
        conn.close()
    assert raw_request(srv.port, "GET", "/store/d/big.raw") == (200, big)
    assert raw_request(srv.port, "GET", "/store/d/big.raw", headers={"Range": "bytes=70000-70009"}) == \
        (206, big[70000:70010])
    assert raw_request(srv.port, "PUT", "/store/d/small.raw", body=b"tiny")[0] == 201
    assert raw_request(srv.port, "GET", "/store/d/small.raw") == (200, b"tiny")
    assert opened == []
