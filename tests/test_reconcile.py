"""Load and reconciliation through the API: 100 client threads, 20,000 tasks, 5% transient and 1% permanent
injected faults, 10% duplicates. The final counts reconcile exactly, from the handles and from the engine's
counters, and agree with the seeded fault model task by task; SQLite holds no unfinished row; every success
has its output object."""
import itertools
import os
import pathlib
import random
import shutil
import tempfile
import threading
import time

import pytest
from helpers_crash import dead_letters, file_chunks, rows, sha256_file

from runners.workload import image_bytes, image_format_for, make_tasks
from tqengine import Config, WorkerPool, faults
from tqengine.transform import verify_output

COUNT, CLIENTS, SEED = 20_000, 100, 7
TRANSIENT, PERMANENT, DUPLICATES, MAX_ATTEMPTS = 0.05, 0.01, 0.10, 3
SOURCE_SIDE = (8, 6)     # one tiny image per format, the same for every key of that format: 18,000 sources in
                         # well under a second, and the thumbnail work stays a fraction of the 1 ms service time
_SOURCES = {fmt: image_bytes(f"reconcile.{ext}", *SOURCE_SIDE) for fmt, ext in
            (("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp"))}
LATENCY_MS = 1


def _key(task):
    return f"{task['image_key']}#{task['size']}"


def _expected(key):
    """(final status, attempts, failed attempts) the seeded fault model dictates for one key."""
    for attempt in range(1, MAX_ATTEMPTS + 1):
        _lat, fault = faults.plan(SEED, key, attempt, LATENCY_MS, 0, TRANSIENT, PERMANENT)
        if fault is None:
            return "success", attempt, attempt - 1
        if fault == faults.PERMANENT:
            return "dead", attempt, attempt
    return "dead", MAX_ATTEMPTS, MAX_ATTEMPTS


def _source(image_key):
    return _SOURCES[image_format_for(image_key)]


def _write_small_object(store, image_key):
    """The tiny source image of the key's format; plain write, no rename: the store is ours."""
    path = os.path.join(str(store), *image_key.split("/"))
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        os.makedirs(directory)
    with open(path, "wb") as f:
        f.write(_source(image_key))


def test_small_sources_are_real_images_of_their_format(tmp_path):
    from PIL import Image, ImageOps
    for key in ("img/a.jpg", "img/7/000001.png", "x.webp"):
        _write_small_object(tmp_path, key)
        with Image.open(tmp_path / key) as im:
            assert im.format == image_format_for(key) and ImageOps.exif_transpose(im).size == SOURCE_SIDE


@pytest.fixture
def workdir(tmp_path):
    """36,000 small files are written here: on tmpfs when the machine has one (creating and deleting them on a
    disk filesystem costs seconds), removed at the end either way."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else str(tmp_path)
    path = tempfile.mkdtemp(prefix="tq-reconcile-", dir=base)
    try:
        yield pathlib.Path(path)
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.longest
@pytest.mark.timeout(180)          # ~40 s on a slow 2-core VM; the bounds are hang guards
def test_100_clients_20000_tasks_reconcile_exactly(workdir):
    tmp_path = workdir
    started = time.perf_counter()
    tasks = make_tasks(COUNT, seed=SEED, duplicate_rate=DUPLICATES)
    store, db = tmp_path / "store", tmp_path / "tasks.db"
    keys = {}
    for task in tasks:
        if _key(task) not in keys:
            keys[_key(task)] = task
            _write_small_object(store, task["image_key"])
    expected = {key: _expected(key) for key in keys}
    setup_s = time.perf_counter() - started

    cfg = Config(max_workers=8, queue_size=200, mode="block", latency_ms=LATENCY_MS, transient_rate=TRANSIENT,
                 permanent_rate=PERMANENT, max_attempts=MAX_ATTEMPTS, backoff_base_s=0.002, backoff_cap_s=0.01,
                 log_level="ERROR",
                 seed=SEED, db_path=str(db), store_root=str(store))
    next_index = itertools.count()
    results = [None] * COUNT
    errors = []

    def client():
        try:
            while True:
                i = next(next_index)        # itertools.count is atomic under the GIL
                if i >= COUNT:
                    return
                results[i] = pool.submit(tasks[i]).result(timeout=60)
        except BaseException as exc:        # reported below; a dead client must not hang the test
            errors.append(exc)

    run_started = time.perf_counter()
    with WorkerPool(cfg) as pool:
        threads = [threading.Thread(target=client, name=f"client-{n}") for n in range(CLIENTS)]
        for t in threads:
            t.start()
        deadline = time.perf_counter() + 150            # one deadline for all the joins
        for t in threads:
            t.join(timeout=max(0.0, deadline - time.perf_counter()))
        assert not any(t.is_alive() for t in threads), "clients still running"
        assert pool.drain(timeout=10)
        snap = pool.metrics_snapshot()
    run_s = time.perf_counter() - run_started
    assert not errors, errors[:3]
    assert all(r is not None for r in results)

    # -- from the handles ------------------------------------------------------------------------
    duplicates = sum(r.duplicate for r in results)
    firsts = [r for r in results if not r.duplicate]
    succeeded = sum(r.status == "success" for r in firsts)
    dead = sum(r.status == "dead" for r in firsts)
    rejected = sum(r.status == "rejected" for r in firsts)
    other = [r for r in firsts if r.status not in ("success", "dead", "rejected")]
    assert not other, other[:3]
    assert succeeded + dead + rejected + duplicates == COUNT
    assert duplicates == COUNT - len(keys), "a duplicate ran again, or a first submission was called a duplicate"
    assert rejected == 0
    for task, res in zip(tasks, results, strict=True):       # each submission agrees with the fault model for its key
        status, attempts, _failed = expected[_key(task)]
        assert (res.status, res.attempts) == (status, attempts), (task, res)

    # -- from the engine's counters -------------------------------------------------------------
    c = snap["counters"]
    assert snap["tasks_submitted"] == COUNT
    assert c["succeeded"] + c["dead_lettered"] + c["rejected"] + c["duplicates"] == COUNT
    assert (c["succeeded"], c["dead_lettered"], c["rejected"], c["duplicates"]) == (succeeded, dead, rejected,
                                                                                    duplicates)
    exp_success = sum(1 for s, _a, _f in expected.values() if s == "success")
    assert succeeded == exp_success and dead == len(keys) - exp_success
    assert c["failed"] == sum(f for _s, _a, f in expected.values())
    assert c["retried"] == sum(a - 1 for _s, a, _f in expected.values())   # every attempt but the last
    assert c["enqueued"] == len(keys)

    # -- from SQLite ------------------------------------------------------------------------------
    db_rows = rows(db)
    assert len(db_rows) == len(keys)
    unfinished = [r for r in db_rows if r["status"] not in ("success", "dead", "rejected")]
    assert not unfinished, unfinished[:3]
    letters = {d["task_row"] for d in dead_letters(db)}
    for row in db_rows:
        status, attempts, _f = expected[row["idempotency_key"]]
        assert (row["status"], row["attempts"]) == (status, attempts), row
        if status == "dead":
            assert row["id"] in letters
            continue
        out = os.path.join(str(store), *row["output_key"].split("/"))
        assert os.path.isfile(out), f"success without output: {row}"
        assert os.path.getsize(out) == row["output_bytes"]
    sample = random.Random(SEED).sample([r for r in db_rows if r["status"] == "success"], 300)
    for row in sample:
        out = os.path.join(str(store), *row["output_key"].split("/"))
        assert sha256_file(out) == row["output_digest"]
        image_key, variant = row["idempotency_key"].rsplit("#", 1)
        assert verify_output(file_chunks(out), variant, [_source(image_key)]) is None

    total_s = time.perf_counter() - started
    print(f"\nreconcile: submitted {COUNT} by {CLIENTS} clients; distinct keys {len(keys)}; succeeded {succeeded}, "
          f"dead {dead}, rejected {rejected}, duplicates {duplicates} "
          f"(sum {succeeded + dead + rejected + duplicates}); failed attempts {c['failed']}, retried {c['retried']}; "
          f"engine run {run_s:.2f} s ({COUNT / run_s:.0f} submissions/s), object setup {setup_s:.2f} s, "
          f"test total {total_s:.2f} s")

