"""The local object store cannot be led outside its root, however the filesystem changes under it
(issue 13: a folder swapped for a link after use, hard links, FIFOs and devices as sources, a file where an
output folder must go, two engines sharing one store's temp area)."""
import os
import threading

try:
    import fcntl
except ImportError:          # Windows
    fcntl = None

import pytest

from tqengine.errors import ObjectNotFound, UnsafeObject, ValidationError
from tqengine.objects.local import TMP_AREA, LocalObjectStore


@pytest.fixture(autouse=True, params=["openat2", "walk"])
def resolution(request, monkeypatch):
    """Every test runs twice: with the kernel's openat2 fast path (where this machine has it) and with the
    component walk that every platform with dir_fd has."""
    from tqengine.objects import confined
    if request.param == "walk":
        monkeypatch.setattr(confined, "openat2_beneath", None)
    elif confined.openat2_beneath is None:
        pytest.skip("this kernel has no openat2")
    return request.param

def _put(store, key, data=b"x" * 100):
    return store.write_chunks(key, [data])


def _read(store, key):
    return b"".join(store.read_chunks(key))


@pytest.fixture
def outside(tmp_path):
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "passwd").write_bytes(b"root:x:0:0\n")
    return folder


def test_a_folder_swapped_for_a_link_after_use_is_refused_for_reads(tmp_path, outside):
    store = LocalObjectStore(str(tmp_path / "store"))
    _put(store, "img/x/a")
    assert _read(store, "img/x/a") == b"x" * 100            # the folder was used once
    os.rename(tmp_path / "store" / "img" / "x", tmp_path / "store" / "img" / "x.orig")
    os.symlink(outside, tmp_path / "store" / "img" / "x")
    with pytest.raises(UnsafeObject, match="symbolic link"):
        _read(store, "img/x/passwd")
    assert not store.exists("img/x/passwd") and store.size("img/x/passwd") is None


def test_a_folder_swapped_for_a_link_after_use_is_refused_for_writes(tmp_path, outside):
    store = LocalObjectStore(str(tmp_path / "store"))
    _put(store, "variants/img/z/a@1x1")
    os.rename(tmp_path / "store" / "variants" / "img" / "z", tmp_path / "store" / "variants" / "img" / "z.orig")
    os.symlink(outside, tmp_path / "store" / "variants" / "img" / "z")
    with pytest.raises(UnsafeObject):
        _put(store, "variants/img/z/b@1x1")
    assert sorted(os.listdir(outside)) == ["passwd"], "an output was written outside the store"


def test_the_temp_area_swapped_for_a_link_is_never_written_through(tmp_path, outside):
    root = tmp_path / "store"
    root.mkdir()
    os.symlink(outside, root / TMP_AREA)
    store = LocalObjectStore(str(root))
    with pytest.raises(UnsafeObject):
        _put(store, "a")
    assert sorted(os.listdir(outside)) == ["passwd"]


def test_a_hard_link_to_a_file_outside_is_refused_unless_allowed(tmp_path, outside):
    root = tmp_path / "store"
    root.mkdir()
    os.link(outside / "passwd", root / "passwd")
    with pytest.raises(UnsafeObject, match="hard links"):
        _read(LocalObjectStore(str(root)), "passwd")
    assert _read(LocalObjectStore(str(root), allow_hard_links=True), "passwd") == b"root:x:0:0\n"


@pytest.mark.timeout(10)
def test_a_fifo_source_is_refused_without_blocking(tmp_path):
    root = tmp_path / "store"
    root.mkdir()
    os.mkfifo(root / "pipe")
    store = LocalObjectStore(str(root))
    result = {}

    def read():
        try:
            _read(store, "pipe")
        except Exception as exc:        # noqa: BLE001 - the class is what is asserted
            result["error"] = exc

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    thread.join(3)
    assert not thread.is_alive(), "opening a FIFO source blocked the reader"
    assert isinstance(result.get("error"), ObjectNotFound) and "FIFO" in str(result["error"])


def test_a_folder_as_source_and_a_device_are_not_regular_files(tmp_path):
    root = tmp_path / "store"
    (root / "dir").mkdir(parents=True)
    store = LocalObjectStore(str(root))
    with pytest.raises(ObjectNotFound, match="folder"):
        _read(store, "dir")


def test_a_source_over_the_size_limit_is_refused_before_it_is_read(tmp_path):
    from tqengine.errors import SourceTooLarge
    root = tmp_path / "store"
    root.mkdir()
    with open(root / "big", "wb") as f:
        f.truncate(1 << 40)                 # a 1 TiB sparse file
    store = LocalObjectStore(str(root), max_read_bytes=1 << 20)
    with pytest.raises(SourceTooLarge):
        store.read_chunks("big")


def test_a_source_is_read_without_a_trailing_empty_read_yet_whole_when_it_changes(tmp_path, monkeypatch):
    """A small source took two reads, the second only to see the end (one GIL-releasing call a task more). A
    short read that reaches the size the file had at open now ends it. A file that shrank after open, or one
    read in full chunks, is still read to an empty read, so nothing is cut short."""
    from tqengine.objects import local
    root = tmp_path / "store"
    root.mkdir()
    (root / "small").write_bytes(b"s" * 1000)
    (root / "exact").write_bytes(b"e" * 4096)
    store = LocalObjectStore(str(root), chunk_size=4096)
    reads = []
    real_read = os.read

    def counted(fd, n):
        data = real_read(fd, n)
        reads.append(len(data))
        return data
    monkeypatch.setattr(local.os, "read", counted)
    assert _read(store, "small") == b"s" * 1000 and reads == [1000]
    reads.clear()
    assert _read(store, "exact") == b"e" * 4096 and reads == [4096, 0]      # a full chunk: look again
    reads.clear()
    chunks = store.read_chunks("small")            # opened (its size at open: 1000), then cut to 600
    (root / "small").write_bytes(b"t" * 600)
    assert b"".join(chunks) == b"t" * 600 and reads == [600, 0]          # short of that size: read to the end


def test_an_output_whose_name_is_a_folder_fails_alone(tmp_path):
    store = LocalObjectStore(str(tmp_path / "store"))
    _put(store, "variants/victim.raw@100x100/evil.raw@1x1")
    with pytest.raises(ValidationError, match="folder"):
        _put(store, "variants/victim.raw@100x100")


def test_two_stores_on_one_root_never_remove_each_others_temp_files(tmp_path):
    root = str(tmp_path / "store")
    first, second = LocalObjectStore(root), LocalObjectStore(root)
    started, release = threading.Event(), threading.Event()

    def slow_chunks():
        yield b"a" * 10
        started.set()
        release.wait(10)
        yield b"b" * 10

    writer = threading.Thread(target=lambda: first.write_chunks("slow", slow_chunks()))
    writer.start()
    assert started.wait(10)
    assert second.remove_temp_files() == 0, "the second engine removed an upload in progress"
    release.set()
    writer.join(10)
    assert _read(second, "slow") == b"a" * 10 + b"b" * 10


def test_temp_files_of_a_dead_owner_are_removed(tmp_path):
    root = tmp_path / "store"
    dead = root / TMP_AREA / "12345-deadbeef0000"
    dead.mkdir(parents=True)
    (dead / "1-0.tq-tmp").write_bytes(b"half")       # nobody holds the folder's lock
    assert LocalObjectStore(str(root)).remove_temp_files() == 1
    assert not dead.exists()


@pytest.mark.skipif(fcntl is None, reason="flock is POSIX")
def test_a_temp_folder_being_made_is_never_taken_for_a_dead_owners(tmp_path):
    """An owner makes its folder, then locks it: a sweep by another engine in between must not take the new,
    still unlocked folder for a dead owner's. Making a folder and sweeping both hold the temp area's lock."""
    root = tmp_path / "store"
    area = root / TMP_AREA
    area.mkdir(parents=True)
    area_fd = os.open(area, os.O_RDONLY | os.O_DIRECTORY)
    held = None
    try:
        fcntl.flock(area_fd, fcntl.LOCK_EX)          # an owner between its mkdir and its lock
        new = area / "4242-0123456789ab"
        new.mkdir()
        (new / "1-0.tq-tmp").write_bytes(b"in progress")
        sweeper = LocalObjectStore(str(root))
        result = []
        thread = threading.Thread(target=lambda: result.append(sweeper.remove_temp_files()))
        thread.start()
        thread.join(0.3)
        waited = thread.is_alive()
        held = os.open(new, os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)      # the owner locks its folder, then the area
        fcntl.flock(area_fd, fcntl.LOCK_UN)
        thread.join(10)
        assert not thread.is_alive()
        assert waited, "the sweep did not wait for the temp area's lock"
        assert result == [0] and (new / "1-0.tq-tmp").read_bytes() == b"in progress"
        sweeper.close()
    finally:
        os.close(area_fd)
        if held is not None:
            os.close(held)


def test_a_key_whose_folder_is_named_like_a_variant_is_refused_so_outputs_never_collide(tmp_path):
    from tqengine import Config, WorkerPool
    from tqengine.tasks import validate
    with pytest.raises(ValidationError, match="named like a variant"):
        validate({"image_key": "victim.raw@100x100/evil.raw", "size": "10x10"})
    assert validate({"image_key": "a@100x100", "size": "10x10"}) == ("a@100x100", "10x10")   # a file name may
    store = tmp_path / "store"
    LocalObjectStore(str(store)).write_chunks("victim.raw", [b"v"])
    cfg = Config(max_workers=1, db_path=str(tmp_path / "t.db"), store_root=str(store), log_level="ERROR")
    with WorkerPool(cfg) as pool:
        evil = pool.submit({"image_key": "victim.raw@100x100/evil.raw", "size": "10x10"}).result(10)
    assert evil.status == "dead" and evil.error_class == "ValidationError"
    assert not (store / "variants" / "victim.raw@100x100").exists()


def test_cleanup_never_follows_a_temp_area_swapped_for_a_link(tmp_path, outside):
    """remove_temp_files walks the temp area by descriptor: a link there (to a user's folder whose
    subfolders hold no owner lock) must not make their contents look like a dead owner's temp files."""
    photos = outside / "photos"
    photos.mkdir()
    (photos / "holiday.jpg").write_bytes(b"jpeg")
    root = tmp_path / "store"
    root.mkdir()
    os.symlink(outside, root / TMP_AREA)
    assert LocalObjectStore(str(root)).remove_temp_files() == 0
    assert (photos / "holiday.jpg").read_bytes() == b"jpeg", "cleanup deleted a folder outside the store"


def test_without_flock_the_object_server_sweeps_other_upload_folders_and_the_store_none(tmp_path, monkeypatch):
    """Where there is no flock (Windows) no owner can be seen alive: the object server (one per root)
    takes every other upload folder for a crashed server's; the local store, which two engines may
    share, takes none."""
    from tqengine.objects import owned
    from tqengine.objects.confined import ConfinedRoot
    monkeypatch.setattr(owned, "fcntl", None)
    root = tmp_path / "root"
    left = {}
    for area in ("uploads", "tmp"):
        left[area] = root / area / "777-0123456789ab"
        left[area].mkdir(parents=True)
        (left[area] / "1-0.tq-tmp").write_bytes(b"half")
    confined = ConfinedRoot(str(root))
    try:
        server = owned.OwnedTempFolder(confined, "uploads", single_owner=True)
        store = owned.OwnedTempFolder(confined, "tmp")
        assert server.remove_stale() == 1 and not left["uploads"].exists()
        assert store.remove_stale() == 0 and (left["tmp"] / "1-0.tq-tmp").read_bytes() == b"half"
        store.folder()                       # made without a lock there, and removed with its owner
        assert os.path.isdir(store.path)
        store.close()
        assert not os.path.exists(store.path) and left["tmp"].exists()
    finally:
        confined.close()


@pytest.mark.skipif(fcntl is None, reason="flock is POSIX")
def test_a_temp_area_held_too_long_is_an_error_after_its_deadline_not_a_hang(tmp_path):
    from tqengine.objects import owned
    from tqengine.objects.confined import ConfinedRoot
    confined = ConfinedRoot(str(tmp_path / "root"))
    area_fd = None
    try:
        with confined.open_dir(["area"], create=True) as area:
            area_fd = os.open(area.path, os.O_RDONLY | os.O_DIRECTORY)
            fcntl.flock(area_fd, fcntl.LOCK_EX)              # another process that never lets go
            with pytest.raises(OSError, match="held by another process for over 0.2 s"):
                with owned._area_locked(area, timeout_s=0.2):
                    pass
            fcntl.flock(area_fd, fcntl.LOCK_UN)
            with owned._area_locked(area, timeout_s=0.2):     # free again: taken at once
                pass
    finally:
        if area_fd is not None:
            os.close(area_fd)
        confined.close()


@pytest.mark.skipif(fcntl is None, reason="flock is POSIX")
def test_a_live_engine_of_the_earlier_version_keeps_its_temp_folder(tmp_path):
    """Before objects/owned.py an owner held an flock on `<folder>/.owner-lock`, not on the folder: during an
    upgrade, the old engine's uploads in progress must survive the new engine's sweep."""
    root = tmp_path / "store"
    old = root / TMP_AREA / "4242-0123456789ab"
    old.mkdir(parents=True)
    (old / "1-0.tq-tmp").write_bytes(b"in progress")
    lock_fd = os.open(old / ".owner-lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        store = LocalObjectStore(str(root))
        assert store.remove_temp_files() == 0 and (old / "1-0.tq-tmp").read_bytes() == b"in progress"
    finally:
        os.close(lock_fd)                          # the old engine stops
    assert store.remove_temp_files() == 1 and not old.exists()
    store.close()
