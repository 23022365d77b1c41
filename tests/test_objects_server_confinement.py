"""The HTTP object server cannot be led outside its root, however the filesystem changes under it (issue 13
point 1, the server side): a folder swapped for a link after a request used it (GET and PUT, and during an
upload), hard links, FIFOs, the server's own upload folder swapped for a link. The server walks every name
from a descriptor of its root (tqengine.objects.confined.ConfinedRoot), like the engine's local store."""
import os
import socket
import threading
import time

import pytest

from tests.server_helpers import InProcessServer
from tqengine.objects.owned import TMP_SUFFIX

SECRET = b"root:x:0:0\n"


@pytest.fixture
def outside(tmp_path):
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "passwd").write_bytes(SECRET)
    return folder


@pytest.fixture
def served(tmp_path):
    s = InProcessServer(str(tmp_path / "srv"))
    yield s
    s.stop()


def _temps(folder):
    """The temp files of uploads in progress in an upload folder (not its owner lock)."""
    return [name for name in os.listdir(folder) if name.endswith(TMP_SUFFIX)]


def _swap_for_link(folder, target):
    os.rename(folder, str(folder) + ".orig")
    os.symlink(target, folder)


def test_get_through_a_folder_swapped_for_a_link_after_use_is_refused(served, tmp_path, outside):
    root = tmp_path / "srv"
    assert served.request("PUT", "/store/img/x/a", b"inside")[0] == 201
    assert served.request("GET", "/store/img/x/a") == (200, b"inside")      # the folder was used once
    _swap_for_link(root / "store" / "img" / "x", outside)
    status, body = served.request("GET", "/store/img/x/passwd")
    assert status == 400 and SECRET not in body, (status, body)
    assert served.request("HEAD", "/store/img/x/passwd")[0] == 400
    assert served.request("GET", "/store/img/x.orig/a") == (200, b"inside")


def test_put_through_a_folder_swapped_for_a_link_after_use_is_refused(served, tmp_path, outside):
    root = tmp_path / "srv"
    assert served.request("PUT", "/store/variants/img/z/a", b"first")[0] == 201
    _swap_for_link(root / "store" / "variants" / "img" / "z", outside)
    status, _ = served.request("PUT", "/store/variants/img/z/b", b"pwned")
    assert status == 400
    status, _ = served.request("PUT", "/store/variants/img/z/passwd", b"pwned")
    assert status == 400
    assert sorted(os.listdir(outside)) == ["passwd"] and (outside / "passwd").read_bytes() == SECRET


def test_a_folder_swapped_for_a_link_while_the_body_arrives_is_never_written_through(served, tmp_path, outside):
    root = tmp_path / "srv"
    assert served.request("PUT", "/store/v/z/a", b"first")[0] == 201
    sock = socket.create_connection(("127.0.0.1", served.server.port), timeout=5)
    try:
        sock.sendall(b"PUT /store/v/z/passwd HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"5\r\npwned\r\n")
        directory = served.server.uploads.path
        deadline = time.monotonic() + 5
        while not _temps(directory):            # the upload has started (its temp file exists)
            assert time.monotonic() < deadline, "the upload never started"
            time.sleep(0.002)
        _swap_for_link(root / "store" / "v" / "z", outside)
        sock.sendall(b"0\r\n\r\n")
        answer = sock.recv(4096)
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert (outside / "passwd").read_bytes() == SECRET and sorted(os.listdir(outside)) == ["passwd"]
    assert _temps(directory) == [], "the refused upload left its temp file"


def test_a_hard_link_to_a_file_outside_is_refused_unless_allowed(tmp_path, outside):
    root = tmp_path / "srv"
    (root / "store").mkdir(parents=True)
    os.link(outside / "passwd", root / "store" / "passwd")
    served = InProcessServer(str(root))
    try:
        status, body = served.request("GET", "/store/passwd")
        assert status == 400 and b"hard links" in body and SECRET not in body, (status, body)
        assert served.request("HEAD", "/store/passwd")[0] == 400
        # an upload replaces the name (never writes through the link into the file it shares)
        assert served.request("PUT", "/store/passwd", b"replaced")[0] == 200
        assert (outside / "passwd").read_bytes() == SECRET
    finally:
        served.stop()
    os.unlink(root / "store" / "passwd")
    os.link(outside / "passwd", root / "store" / "passwd")
    allowed = InProcessServer(str(root), allow_hard_links=True)
    try:
        assert allowed.request("GET", "/store/passwd") == (200, SECRET)
    finally:
        allowed.stop()


@pytest.mark.timeout(20)
def test_a_fifo_is_refused_without_blocking_the_server(served, tmp_path):
    root = tmp_path / "srv"
    (root / "store").mkdir(parents=True, exist_ok=True)
    os.mkfifo(root / "store" / "pipe")
    assert served.request("PUT", "/store/ok", b"fine")[0] == 201
    results = {}

    def get(method):
        try:
            results[method] = served.request(method, "/store/pipe", timeout=3)[0]
        except OSError as exc:          # a timeout: the server thread is stuck on the FIFO
            results[method] = exc

    threads = [threading.Thread(target=get, args=(method,), daemon=True) for method in ("GET", "HEAD")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert results == {"GET": 404, "HEAD": 404}, results
    assert served.request("GET", "/store/ok") == (200, b"fine")


def test_the_upload_folder_swapped_for_a_link_is_never_written_through(served, outside):
    own = served.server.uploads.path
    _swap_for_link(own, outside)
    sock = socket.create_connection(("127.0.0.1", served.server.port), timeout=5)
    try:
        sock.sendall(b"PUT /store/obj HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"5\r\nhello\r\n")
        deadline = time.monotonic() + 5
        while not _temps(own + ".orig"):         # the temp file goes to the folder the server holds
            assert sorted(os.listdir(outside)) == ["passwd"], "a temp file was written outside the root"
            assert time.monotonic() < deadline, "the upload never started"
            time.sleep(0.002)
        sock.sendall(b"0\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 201")
    finally:
        sock.close()
    assert served.request("GET", "/store/obj") == (200, b"hello")
    assert sorted(os.listdir(outside)) == ["passwd"]
