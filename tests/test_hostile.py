"""Hostile input, through the CLI and through the API ("nothing let in").

File-level problems (tests/data/*.json): exit code 2 and one line on stderr naming the problem and where,
no traceback, nothing written. Task-level problems (tests/data/hostile_tasks.json plus a 1 MB key, made at
test time): each bad task is a permanent failure with its reason, dead-lettered, while every good task in
the same file is processed; the same key with a different payload is refused as a conflict, never merged.
Keys that try to leave the store (including through symlinks planted inside it) read and write nothing
outside the store root. A 50 MB task file is streamed, not held.
"""
import json
import os
import re
import shutil
import subprocess

import pytest
from helpers_crash import (
    DATA,
    PY,
    check_end_state,
    cli_args,
    cli_env,
    create_objects,
    dead_letters,
    rows,
    run_cli,
    snapshot_tree,
    stderr_lines,
    write_tasks,
)

from lab.taskfile import TaskFileError, check, iter_elements
from tqengine import Config, WorkerPool
from tqengine.admission import identify
from tqengine.tasks import fingerprint

MB = 1024 * 1024

# -- file-level problems -------------------------------------------------------------------------
# file -> (fragment naming the problem, fragment naming where or None)
BAD_FILES = {
    "not_json.json": ("not a JSON list", "line 1 column 1"),
    "truncated_after_task.json": ("truncated", "line 3 column 1"),
    "truncated_in_object.json": ("truncated", "task #2"),
    "truncated_in_string.json": ("truncated", "task #2"),
    "object_not_list.json": ("found an object", "line 1 column 1"),
    "empty_file.json": ("empty file", None),
    "non_utf8.json": ("not UTF-8", "byte 39"),
    "utf16.json": ("not UTF-8", "byte 0"),
    "trailing_garbage.json": ("extra data", "line 4 column 1"),
    "missing_comma.json": ("not valid JSON", "line 3"),
}
# Regression (fixed in 1155aff): a file cut inside a string used to be reported as "not valid JSON ...
# Unterminated string starting at" (a dangling "starting at", and no word that the file is truncated).


def _file_params():
    return [pytest.param(name, id=name) for name in sorted(BAD_FILES)]


@pytest.mark.timeout(20)
@pytest.mark.parametrize("name", list(_file_params()))
def test_bad_task_file_cli_exit_2_one_line(tmp_path, name):
    problem, where = BAD_FILES[name]
    path = os.path.join(DATA, name)
    db, store = tmp_path / "state" / "tasks.db", tmp_path / "store"
    proc = run_cli(cli_args(path, store, db), tmp_path, timeout=15)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = stderr_lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    assert "Traceback" not in proc.stderr
    assert line.startswith("error: ") and name in line, line
    said = line.split(name, 1)[1]           # the problem and where, without the file name
    assert problem in said, line
    if where:
        assert where in said, line
    assert proc.stdout == ""
    assert not db.exists() and not store.exists(), "a refused file must not start a run"


@pytest.mark.timeout(10)
@pytest.mark.parametrize("name", list(_file_params()))
def test_bad_task_file_api_raises_task_file_error(name):
    problem, where = BAD_FILES[name]
    path = os.path.join(DATA, name)
    with pytest.raises(TaskFileError) as info:
        check(path)
    message = str(info.value)
    assert "\n" not in message and name in message
    said = message.split(name, 1)[1]
    assert problem in said, message
    if where:
        assert where in said, message
    with pytest.raises(TaskFileError):
        list(iter_elements(path))


@pytest.mark.timeout(10)
# Regression (bug found by this test, fixed in 1155aff): lab/taskfile.py _Reader.fill: the 'bad byte at byte N'
# offset is bytes_read + exc.start, but exc.start counts from the bytes the incremental decoder carried over from
# the previous 1 MiB read, so past the first read the offset is off by up to 3
def test_non_utf8_offset_is_exact_past_the_first_read(tmp_path):
    from lab.taskfile import READ_SIZE
    path = tmp_path / "late.json"
    data = b'["' + b"a" * (READ_SIZE - 3) + "\u00e9".encode() + b"b\xffc\"]"   # e-acute straddles the read boundary
    path.write_bytes(data)
    with pytest.raises(TaskFileError) as info:
        check(str(path))
    bad = data.index(b"\xff")
    assert f"byte {bad})" in str(info.value), str(info.value)


@pytest.mark.timeout(20)
def test_empty_list_is_fine(tmp_path):
    path = os.path.join(DATA, "empty_list.json")
    assert check(path) == 0
    proc = run_cli(cli_args(path, tmp_path / "store", tmp_path / "tasks.db"), tmp_path, timeout=15)
    assert proc.returncode == 0, proc.stderr
    assert "submitted 0 of 0 task(s)" in proc.stdout
    assert "Traceback" not in proc.stderr


@pytest.mark.timeout(20)
def test_missing_or_directory_task_file_is_exit_2(tmp_path):
    for path, problem in ((tmp_path / "nope.json", "no such file"), (tmp_path, "is a directory")):
        proc = run_cli(cli_args(path, tmp_path / "store", tmp_path / "tasks.db"), tmp_path, timeout=15)
        assert proc.returncode == 2 and len(stderr_lines(proc.stderr)) == 1 and problem in proc.stderr, proc.stderr


# -- a 50 MB task file ---------------------------------------------------------------------------
RSS_WRAPPER = ("import resource, subprocess, sys\n"
               "p = subprocess.run(sys.argv[1:])\n"
               "print('child_maxrss_kib', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, flush=True)\n"
               "sys.exit(p.returncode)\n")


def _write_big_file(path, target_bytes):
    """~target_bytes of well-formed tasks: 8 valid keys cycling (so the work is real but cheap: duplicates
    of finished keys are answered from the database) and every 1000th task an invalid variant (dead). Each
    task carries a ~1 KB note: the file's size is what the test is about, and ~19,000 tasks of 1 KB stream
    the same 20 MB through the reader as 160,000 tasks of 130 B, at a tenth of the CLI's submission time."""
    counts = {"tasks": 0, "valid": 0, "invalid": 0}
    pad = "p" * 960
    with open(path, "w", encoding="utf-8") as f:
        f.write("[\n")
        size = 2
        n = 0
        while size < target_bytes:
            if n % 1000 == 999:
                line = (f'{{"task_id": "t{n:07d}", "image_key": "big/bad.raw", "size": "0x0", '
                        f'"object_bytes": 512, "note": "{pad}"}}')
                counts["invalid"] += 1
            else:
                line = (f'{{"task_id": "t{n:07d}", "image_key": "big/{n % 8}.raw", "size": "16x16", '
                        f'"object_bytes": 512, "note": "{pad}"}}')
                counts["valid"] += 1
            line = (",\n" if n else "") + line
            f.write(line)
            size += len(line)
            n += 1
        f.write("\n]\n")
    counts["tasks"] = n
    return counts


def _rss_run(args, cwd, timeout):
    proc = subprocess.run([PY, "-c", RSS_WRAPPER, *args], cwd=str(cwd), env=cli_env(), capture_output=True,
                          text=True, timeout=timeout)
    match = re.search(r"child_maxrss_kib (\d+)", proc.stdout)
    assert match, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc, int(match.group(1)) * 1024


@pytest.mark.timeout(60)
def test_a_20mb_task_file_is_streamed_not_held(tmp_path):
    path = tmp_path / "big.json"
    counts = _write_big_file(path, 20 * MB)
    size = path.stat().st_size
    assert size >= 20 * MB

    # API: the reader alone, in a fresh interpreter so its peak RSS is its own.
    proc_args = [PY, "-c", "import sys; from lab.taskfile import check; print('count', check(sys.argv[1]))", str(path)]
    proc, reader_rss = _rss_run(proc_args, tmp_path, timeout=40)
    assert proc.returncode == 0 and f"count {counts['tasks']}" in proc.stdout

    # CLI: the whole run (structure check, object creation, submission, processing).
    store, db = tmp_path / "store", tmp_path / "tasks.db"
    proc, cli_rss = _rss_run(cli_args(path, store, db, "--create-objects", "--latency-ms", "0", "--workers", "4"),
                             tmp_path, timeout=55)
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(f"\n20 MB task file: {size / MB:.1f} MiB, {counts['tasks']} tasks ({counts['invalid']} invalid); "
          f"peak RSS reader {reader_rss / MB:.1f} MiB, CLI {cli_rss / MB:.1f} MiB")
    assert f"submitted {counts['tasks']} of {counts['tasks']} task(s)" in proc.stdout
    assert f"success {counts['valid']}, dead {counts['invalid']}, rejected 0" in proc.stdout
    # an interpreter with the reader loaded is ~13 MiB; holding the file as text alone would add its 20 MiB
    assert reader_rss < 26 * MB, f"the reader used {reader_rss / MB:.1f} MiB for a {size / MB:.1f} MiB file"
    assert cli_rss < 2 * size, f"the CLI used {cli_rss / MB:.1f} MiB for a {size / MB:.1f} MiB file"
    assert len(rows(db)) == 9   # 8 keys + the invalid one: duplicates never made rows


# -- task-level problems -------------------------------------------------------------------------
def _corpus(extra=()):
    with open(os.path.join(DATA, "hostile_tasks.json"), encoding="utf-8") as f:
        tasks = json.load(f)
    return tasks + list(extra)


HUGE_KEY = {"task_id": "bad-huge-key", "image_key": "k" * MB, "size": "10x10", "case": "1 MB key",
            "expect": "longer than 1024"}


def _good(tasks):
    return [t for t in tasks if isinstance(t, dict) and t.get("case") == "good"]


def _expected_error(task):
    if not isinstance(task, dict):
        return "must be a JSON object"
    return task.get("expect")


def _check_db_after_corpus(db, store, tasks):
    """Good tasks: success, verified. Bad tasks: dead with their reason and one dead letter each.
    The conflicting task: rejected as a conflict, the original row untouched. Duplicates: no new row."""
    check_end_state(db, store, _good(tasks), max_attempts=3, allowed=("success",))
    by_payload = {}
    for row in rows(db):
        by_payload.setdefault(row["payload"], []).append(row)
    letters = {}
    for letter in dead_letters(db):
        letters.setdefault(letter["task_row"], []).append(letter)
    for task in tasks:
        expect = _expected_error(task)
        case = task.get("case") if isinstance(task, dict) else repr(task)
        found = by_payload.get(identify(task).payload, [])   # a big bad task is kept as its digest
        assert found, f"{case}: no row: the task was lost"
        if isinstance(task, dict) and task.get("case") == "good":
            assert len(found) == 1
            continue
        if case == "conflict":
            assert len(found) == 1
            row = found[0]
            assert row["status"] == "rejected" and row["error_class"] == "IdempotencyConflict", row
            assert "conflict" in row["last_error"] and row["idempotency_key"] is None, row
            continue
        for row in found:
            assert row["status"] == "dead", (case, row)
            assert expect in (row["last_error"] or ""), (case, expect, row["last_error"])
            assert len(letters.get(row["id"], [])) == 1, f"{case}: not dead-lettered exactly once"
            letter = letters[row["id"]][0]
            assert letter["error_class"] in ("ValidationError", "UnsafeObject", "ObjectNotFound"), letter
            assert expect in letter["error_message"]
            assert "payload" not in letter, "the dead letter copies the payload (it lives once, in tasks)"
            assert len(row["payload"]) < 2 * MB
        if isinstance(task, dict) and task.get("case") == "variant abc":
            assert len(found) == 1, "the repeated bad task made a second row"
    # the conflicting submission did not touch the original: still its payload, still its output
    original = next(t for t in tasks if isinstance(t, dict) and t.get("task_id") == "good-0")
    row = by_payload[fingerprint(original)][0]
    assert row["status"] == "success" and row["idempotency_key"] == "good/000.raw#10x10"
    assert os.path.getsize(os.path.join(str(store), "variants", "good", "000.raw@10x10")) == row["output_bytes"]


def _expected_summary(tasks):
    good = len(_good(tasks))
    bad = sum(1 for t in tasks if not (isinstance(t, dict) and t.get("case") in ("good", "conflict")))
    return good, bad


@pytest.mark.timeout(30)
def test_hostile_tasks_cli_bad_dead_good_processed(tmp_path):
    tasks = _corpus([HUGE_KEY])
    path = write_tasks(tmp_path / "tasks.json", tasks)
    store, db = tmp_path / "store", tmp_path / "state" / "tasks.db"
    create_objects(store, _good(tasks))
    proc = run_cli(cli_args(path, store, db, "--workers", "4"), tmp_path, timeout=25)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr) < 200_000, "the 1 MB key was echoed to stderr"
    good, bad = _expected_summary(tasks)
    assert f"success {good}, dead {bad}, rejected 1; 2 of them duplicates" in proc.stdout, proc.stdout
    _check_db_after_corpus(db, store, tasks)


@pytest.mark.timeout(30)
def test_hostile_tasks_api_bad_dead_good_processed(tmp_path):
    tasks = _corpus([HUGE_KEY])
    store, db = tmp_path / "store", tmp_path / "tasks.db"
    create_objects(store, _good(tasks))
    with WorkerPool(Config(max_workers=4, db_path=str(db), store_root=str(store), log_level="ERROR")) as pool:
        handles = pool.submit_many(tasks)
        results = [h.result(timeout=20) for h in handles]
        assert pool.drain(timeout=20)
        counters = pool.metrics_snapshot()["counters"]
    for task, res in zip(tasks, results, strict=True):
        case = task.get("case") if isinstance(task, dict) else repr(task)
        if isinstance(task, dict) and task.get("case") == "good":
            assert res.status == "success", (case, res)
        elif case == "conflict":
            assert res.status == "rejected" and "conflict" in res.error and res.error_class == "IdempotencyConflict"
        else:
            assert res.status == "dead", (case, res)
            assert _expected_error(task) in res.error, (case, res.error)
            assert res.error_class in ("ValidationError", "UnsafeObject", "ObjectNotFound"), (case, res.error_class)
    good, bad = _expected_summary(tasks)
    dup = sum(r.duplicate for r in results)
    assert dup == 2
    finals = counters["succeeded"] + counters["duplicates"] + counters["dead_lettered"] + counters["rejected"]
    assert finals == len(tasks)
    assert counters["rejected"] == 1 and counters["duplicates"] == 2
    assert counters["succeeded"] == good - 1 and counters["dead_lettered"] == bad - 1
    _check_db_after_corpus(db, store, tasks)


@pytest.mark.timeout(30)
def test_same_key_different_payload_is_a_conflict_never_merged_api(tmp_path):
    store, db = tmp_path / "store", tmp_path / "tasks.db"
    a = {"task_id": "a", "image_key": "c/1.raw", "size": "20x20", "object_bytes": 3000}
    b = dict(a, task_id="b", owner="someone else")                # same key, different payload
    c = {"task_id": "c", "image_key": "c/2.raw", "size": "20x20", "object_bytes": 3000}
    d = dict(c, task_id="d", object_bytes=4000)
    create_objects(store, [a, c])
    with WorkerPool(Config(max_workers=2, db_path=str(db), store_root=str(store), log_level="ERROR")) as pool:
        first = pool.submit(a).result(10)
        assert first.status == "success"
        late = pool.submit(b).result(10)                          # the key finished earlier
        assert late.status == "rejected" and "conflict" in late.error and not late.duplicate
        hc, hd = pool.submit_many([c, d])                         # the key is in flight
        rc, rd = hc.result(10), hd.result(10)
        assert rc.status == "success" and rd.status == "rejected" and "conflict" in rd.error
        again = pool.submit(dict(a, task_id="a2")).result(10)     # same payload: a duplicate, not a rerun
        assert again.status == "success" and again.duplicate and again.output_digest == first.output_digest
    by_key = {r["idempotency_key"]: r for r in rows(db)}
    assert json.loads(by_key["c/1.raw#20x20"]["payload"]) == {k: v for k, v in a.items() if k != "task_id"}
    assert json.loads(by_key["c/2.raw#20x20"]["payload"]) == {k: v for k, v in c.items() if k != "task_id"}
    assert by_key["c/1.raw#20x20"]["attempts"] == 1
    rejected = [r for r in rows(db) if r["status"] == "rejected"]
    assert len(rejected) == 2 and all(r["error_class"] == "IdempotencyConflict" for r in rejected)


@pytest.mark.timeout(30)
def test_same_key_different_payload_across_runs_cli(tmp_path):
    store, db = tmp_path / "store", tmp_path / "tasks.db"
    a = {"task_id": "a", "image_key": "c/1.raw", "size": "20x20", "object_bytes": 3000}
    b = dict(a, task_id="b", object_bytes=5000)
    first = run_cli(cli_args(write_tasks(tmp_path / "a.json", [a]), store, db, "--create-objects"), tmp_path)
    assert first.returncode == 0 and "success 1" in first.stdout, first.stderr
    digest = rows(db)[0]["output_digest"]
    second = run_cli(cli_args(write_tasks(tmp_path / "b.json", [b]), store, db), tmp_path)
    assert second.returncode == 0, second.stderr
    assert "success 0, dead 0, rejected 1" in second.stdout
    (row_a,) = [r for r in rows(db) if r["idempotency_key"] == "c/1.raw#20x20"]
    assert row_a["output_digest"] == digest and json.loads(row_a["payload"])["object_bytes"] == 3000
    (row_b,) = [r for r in rows(db) if r["status"] == "rejected"]
    assert "conflict" in row_b["last_error"] and json.loads(row_b["payload"])["object_bytes"] == 5000


# -- nothing outside the store root is read or written --------------------------------------------
def _escape_layout(tmp_path):
    """tmp/sentinel (outside, with a canary) and tmp/run/{store,state}; symlinks inside the store that point
    at the sentinel; good objects in the store."""
    sentinel = tmp_path / "sentinel"
    (sentinel / "sub").mkdir(parents=True)
    canary = sentinel / "canary.txt"
    canary.write_bytes(b"canary: must never change\n")
    os.utime(canary, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    store, db = tmp_path / "run" / "store", tmp_path / "run" / "state" / "tasks.db"
    good = [{"task_id": f"ok-{i}", "image_key": f"ok/{i}.raw", "size": "8x8", "object_bytes": 700} for i in range(3)]
    create_objects(store, good)
    os.symlink("../../sentinel", store / "link")                         # a directory link
    os.symlink("../../sentinel/canary.txt", store / "evil.raw")          # a file link
    (store / "deep").mkdir()
    os.symlink("../../../sentinel/sub", store / "deep" / "link2")        # a nested directory link
    bad = [
        {"task_id": "via-dir-link", "image_key": "link/canary.txt", "size": "8x8"},
        {"task_id": "via-dir-link-new", "image_key": "link/new.raw", "size": "8x8"},
        {"task_id": "file-link", "image_key": "evil.raw", "size": "8x8"},
        {"task_id": "nested-link", "image_key": "deep/link2/x.raw", "size": "8x8"},
        {"task_id": "dotdot", "image_key": "../../sentinel/canary.txt", "size": "8x8"},
        {"task_id": "absolute", "image_key": str(canary), "size": "8x8"},
    ]
    return sentinel, canary, store, db, good, bad


def _canary_state(canary):
    st = os.stat(canary)
    return canary.read_bytes(), st.st_mtime_ns, st.st_ino, st.st_size


def _check_escapes_refused(db, store, good, bad):
    check_end_state(db, store, good, max_attempts=3)
    by_task = {r["task_id"]: r for r in rows(db)}
    for task in bad:
        row = by_task[task["task_id"]]
        assert row["status"] == "dead" and row["error_class"] in ("ValidationError", "UnsafeObject"), row
        assert any(s in row["last_error"] for s in ("outside the store root", "symbolic link", "path component",
                                                    "absolute path")), row


@pytest.mark.timeout(40)
def test_keys_and_symlinks_cannot_leave_the_store_cli(tmp_path):
    sentinel, canary, store, db, good, bad = _escape_layout(tmp_path)
    tasks_file = write_tasks(tmp_path / "tasks.json", good + bad)
    trace = tmp_path / "strace.txt"
    run_dir = tmp_path / "run"
    before = snapshot_tree(tmp_path, skip=[run_dir, trace])
    canary_before = _canary_state(canary)

    args = cli_args(tasks_file, store, db, "--workers", "2")
    strace = shutil.which("strace")
    if strace:
        args = [strace, "-f", "-qq", "-y", "-o", str(trace), "-e",
                "trace=open,openat,creat,mkdir,mkdirat,rename,renameat,renameat2,unlink,unlinkat,symlink,"
                "symlinkat,link,linkat,truncate,rmdir", *args]
    proc = run_cli(args, tmp_path, timeout=35)
    assert proc.returncode == 0, proc.stderr[-3000:]
    if strace and "ptrace" in proc.stderr and not trace.exists():
        strace = None   # ptrace not permitted here: the filesystem comparison below still stands

    assert _canary_state(canary) == canary_before
    after = snapshot_tree(tmp_path, skip=[run_dir, trace])
    assert after == before, f"outside the store: {set(after) ^ set(before)}"
    _check_escapes_refused(db, store, good, bad)

    if strace and trace.exists():
        _check_trace(trace.read_text(), cwd=tmp_path, sentinel=sentinel, allowed_roots=[run_dir])
    else:
        print("strace not available: syscall check skipped")


_SYSCALL = re.compile(r'^\d+\s+(\w+)\((.*)\)\s+=\s+(-?\d+)')
_WRITE_FLAGS = ("O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC", "O_APPEND")


def _check_trace(text, cwd, sentinel, allowed_roots):
    """No successful syscall touches a path that resolves into the sentinel; no successful write-ish
    syscall (create, write-open, mkdir, rename, unlink, link) lands outside the run directory."""
    sentinel = os.path.realpath(sentinel)
    allowed = [os.path.realpath(p) for p in allowed_roots]
    problems = []
    calls = 0
    for line in text.splitlines():
        match = _SYSCALL.match(line)
        if not match:
            continue
        name, argtext, result = match.group(1), match.group(2), int(match.group(3))
        if result < 0:
            continue
        calls += 1
        # with strace -y a directory descriptor prints as N</its/path>: a name relative to it (openat,
        # mkdirat, renameat, ...) is resolved against that folder, not the working directory
        paths = re.findall(r'(?:\d+<([^>]*)>,\s*)?"((?:[^"\\]|\\.)*)"', argtext)
        if not paths:
            continue
        writes = name not in ("open", "openat") or any(flag in argtext for flag in _WRITE_FLAGS)
        for base, raw in paths:
            path = raw if os.path.isabs(raw) else os.path.join(base or str(cwd), raw)
            real = os.path.realpath(path)
            if real == sentinel or real.startswith(sentinel + os.sep):
                problems.append(line)
            elif writes and not real.startswith("/dev/") and not any(
                    real == a or real.startswith(a + os.sep) for a in allowed):
                problems.append(line)
    assert calls > 10, "the trace is empty: strace did not follow the CLI"
    assert not problems, "syscalls outside the store/db:\n" + "\n".join(problems[:20])


@pytest.mark.timeout(30)
def test_keys_and_symlinks_cannot_leave_the_store_api(tmp_path):
    sentinel, canary, store, db, good, bad = _escape_layout(tmp_path)
    run_dir = tmp_path / "run"
    before = snapshot_tree(tmp_path, skip=[run_dir])
    canary_before = _canary_state(canary)
    with WorkerPool(Config(max_workers=2, db_path=str(db), store_root=str(store), log_level="ERROR")) as pool:
        results = [h.result(10) for h in pool.submit_many(good + bad)]
    assert [r.status for r in results] == ["success"] * len(good) + ["dead"] * len(bad)
    assert _canary_state(canary) == canary_before
    assert snapshot_tree(tmp_path, skip=[run_dir]) == before
    _check_escapes_refused(db, store, good, bad)


# -- regressions: bugs these tests found (each was a strict xfail until the engine fix) ----------------
@pytest.mark.timeout(30)
# Regression (bug found by this test, fixed in 1155aff): lab/workload.py ensure_objects (used by the CLI's
# --create-objects) follows a symlinked directory inside the store and creates/overwrites files outside the store
# root
def test_create_objects_does_not_write_through_a_symlink(tmp_path):
    sentinel, canary, store, db, good, bad = _escape_layout(tmp_path)
    run_dir = tmp_path / "run"
    tasks_file = write_tasks(tmp_path / "tasks.json", good + bad)
    before = snapshot_tree(tmp_path, skip=[run_dir])
    canary_before = _canary_state(canary)
    proc = run_cli(cli_args(tasks_file, store, db, "--create-objects"), tmp_path, timeout=25)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _canary_state(canary) == canary_before, "the canary outside the store was overwritten"
    assert snapshot_tree(tmp_path, skip=[run_dir]) == before, "files appeared outside the store"


@pytest.mark.timeout(30)
# Regression (bug found by this test, fixed in 1155aff): tqengine/objects.py LocalObjectStore.write_chunks calls
# os.makedirs on the output directory before _confine_dir checks it, so a symlink under variants/ makes it create
# directories outside the store root (the write itself is then refused)
def test_output_write_does_not_mkdir_through_a_symlink(tmp_path):
    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    store, db = tmp_path / "run" / "store", tmp_path / "run" / "tasks.db"
    task = {"task_id": "t", "image_key": "sub/deep/a.raw", "size": "8x8", "object_bytes": 500}
    create_objects(store, [task])
    (store / "variants").mkdir()
    os.symlink("../../../sentinel", store / "variants" / "sub")
    tasks_file = write_tasks(tmp_path / "t.json", [task])
    before = snapshot_tree(tmp_path, skip=[tmp_path / "run"])
    proc = run_cli(cli_args(tasks_file, store, db), tmp_path, timeout=25)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert rows(db)[0]["status"] == "dead"
    assert snapshot_tree(tmp_path, skip=[tmp_path / "run"]) == before, "a directory was created outside the store"


SURROGATE_KEY = {"task_id": "sur-key", "image_key": "bad/x\ud800.raw", "size": "10x10"}
SURROGATE_ID = {"task_id": "\udcff", "image_key": "bad/sur-id.raw", "size": "10x10"}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("bad", [SURROGATE_KEY, SURROGATE_ID], ids=["image_key", "task_id"])
# Regression (bug found by this test, fixed in 1155aff): tqengine/tasks.py validate accepts strings with lone
# surrogates (valid JSON '\ud800'); SQLite cannot encode them, the whole claim batch fails, and because
# store.TaskStore._with_lock_retry only rolls back on OperationalError the writer connection stays inside a
# transaction: every later commit fails ('cannot start a transaction within a transaction'), so all good tasks end
# 'failed'
def test_unencodable_string_is_dead_and_good_tasks_still_run_api(tmp_path, bad):
    store, db = tmp_path / "store", tmp_path / "tasks.db"
    good = [{"task_id": f"g{i}", "image_key": f"good/{i}.raw", "size": "10x10", "object_bytes": 600} for i in range(4)]
    create_objects(store, good)
    with WorkerPool(Config(max_workers=2, db_path=str(db), store_root=str(store), log_level="ERROR")) as pool:
        results = [h.result(10) for h in pool.submit_many([good[0], bad, good[1]])]
        later = [h.result(10) for h in pool.submit_many(good[2:])]
    assert [r.status for r in results] == ["success", "dead", "success"], [(r.status, r.error) for r in results]
    assert [r.status for r in later] == ["success", "success"], [(r.status, r.error) for r in later]


@pytest.mark.timeout(30)
# Regression (bug found by this test, fixed in 1155aff): same lone-surrogate bug through the CLI: good tasks are
# lost (rows missing or left 'queued') and the CLI still exits 0 (task_queue_optimized.run_tasks ignores 'failed'
# results)
def test_unencodable_string_in_task_file_cli(tmp_path):
    good = [{"task_id": f"g{i}", "image_key": f"good/{i}.raw", "size": "10x10", "object_bytes": 600}
            for i in range(150)]
    tasks = good[:70] + [SURROGATE_KEY] + good[70:]
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps(tasks), encoding="ascii")   # json.dumps escapes the surrogate as \ud800
    store, db = tmp_path / "store", tmp_path / "tasks.db"
    create_objects(store, good)
    proc = run_cli(cli_args(path, store, db), tmp_path, timeout=25)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "success 150, dead 1, rejected 0" in proc.stdout, proc.stdout
    check_end_state(db, store, good, max_attempts=3)


@pytest.mark.timeout(30)
# Regression (bug found by this test, fixed in 1155aff): tqengine/pool.py submit_many: a task that fails
# validation only because of its task_id (e.g. true) has the same key and payload as a valid twin; when the twin
# is in flight the store claim is 'adopted' and the handle resolves with status 'queued' (not final, no dead
# letter)
def test_invalid_task_id_twin_resolves_to_a_final_status(tmp_path):
    store, db = tmp_path / "store", tmp_path / "tasks.db"
    task = {"task_id": "ok", "image_key": "t/1.raw", "size": "10x10", "object_bytes": 600}
    create_objects(store, [task])
    with WorkerPool(Config(max_workers=2, db_path=str(db), store_root=str(store), latency_ms=50)) as pool:
        results = [h.result(10) for h in pool.submit_many([task, dict(task, task_id=True)])]
    assert results[0].status == "success"
    assert results[1].status in ("success", "dead", "rejected"), results[1]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("keys", [["."], ["x" * 300 + ".raw"], ["ab", "ab/c.raw"]], ids=["dot", "name-too-long",
                                                                                           "file-then-dir"])
# Regression (bug found by this test, fixed in 1155aff): lab/workload.py ensure_objects (CLI --create-objects)
# tries to create objects for keys the engine refuses or cannot store ('.', a component longer than NAME_MAX, a
# key that needs a file to be a directory) and the CLI dies with a traceback (exit 1) instead of dead-lettering
# those tasks
def test_create_objects_survives_unstorable_keys(tmp_path, keys):
    tasks = [{"task_id": f"k{i}", "image_key": k, "size": "10x10"} for i, k in enumerate(keys)]
    tasks.append({"task_id": "ok", "image_key": "fine.raw", "size": "10x10"})
    path = write_tasks(tmp_path / "tasks.json", tasks)
    proc = run_cli(cli_args(path, tmp_path / "store", tmp_path / "tasks.db", "--create-objects"), tmp_path)
    assert "Traceback" not in proc.stderr, proc.stderr[-1500:]
    assert proc.returncode == 0
    assert {r["task_id"]: r["status"] for r in rows(tmp_path / "tasks.db")}["ok"] == "success"


@pytest.mark.timeout(30)
# Regression (bug found by this test, fixed in 1155aff): tqengine/objects.py LocalObjectStore.remove_temp_files
# (run at every engine start) deletes every file under the store whose name ends in .tq-tmp, including a user's
# source object whose (valid) key ends that way; the task then fails with ObjectNotFound
def test_source_object_named_like_a_temp_file_is_not_deleted(tmp_path):
    task = {"task_id": "t", "image_key": "photos/holiday.tq-tmp", "size": "10x10", "object_bytes": 600}
    store, db = tmp_path / "store", tmp_path / "tasks.db"
    create_objects(store, [task])
    proc = run_cli(cli_args(write_tasks(tmp_path / "t.json", [task]), store, db), tmp_path)
    assert proc.returncode == 0
    assert (store / "photos" / "holiday.tq-tmp").exists(), "the user's source object was deleted"


@pytest.mark.timeout(30)
def test_valid_task_after_an_invalid_twin_still_runs(tmp_path):
    store, db = tmp_path / "store", tmp_path / "tasks.db"
    task = {"task_id": "ok", "image_key": "t/1.raw", "size": "10x10", "object_bytes": 600}
    create_objects(store, [task])
    with WorkerPool(Config(max_workers=2, db_path=str(db), store_root=str(store), log_level="ERROR")) as pool:
        bad = pool.submit(dict(task, task_id=True)).result(10)
        good = pool.submit(task).result(10)
    assert bad.status == "dead" and "task_id" in bad.error
    assert good.status == "success", (good.status, good.duplicate, good.error)


class _Unprintable:
    def __repr__(self):
        raise RuntimeError("repr")


@pytest.mark.timeout(30)
def test_a_task_that_raises_as_it_is_read_is_dead_and_the_rest_of_its_call_runs(tmp_path):
    """A task holding a value whose __repr__ raises (json's default=repr calls it) made identify() raise out of
    submit_many(): the task before it in the call was registered but never claimed, so drain() never
    returned and a resubmission of its key waited forever on it. Now the bad task is dead and the call
    goes on."""
    store, db = tmp_path / "store", tmp_path / "tasks.db"
    good = {"task_id": "good", "image_key": "a/1.jpg", "size": "10x10"}
    create_objects(store, [good])
    with WorkerPool(Config(max_workers=2, db_path=str(db), store_root=str(store), log_level="ERROR")) as pool:
        handles = pool.submit_many([good, {"task_id": "bad", "image_key": "b.jpg", "size": "1x1",
                                           "extra": _Unprintable()}])
        first, bad = (h.result(timeout=10) for h in handles)
        assert pool.drain(timeout=10)
        again = pool.submit(good).result(timeout=10)
    assert first.status == "success" and again.status == "success" and again.duplicate
    assert bad.status == "dead" and bad.error_class == "ValidationError" and "plain JSON data" in bad.error
    assert {r["task_id"]: r["status"] for r in rows(db)} == {"good": "success", "bad": "dead"}


@pytest.mark.timeout(30)
def test_an_iterable_that_raises_half_way_submits_nothing_and_leaves_the_engine_whole(tmp_path):
    """submit_many(generator) whose generator raised after two tasks left those two registered but never
    claimed: drain() never returned and a resubmission of their keys waited forever. Now the caller's error
    comes back unchanged, nothing of the call is submitted, and the same tasks run when submitted again."""
    store, db = tmp_path / "store", tmp_path / "tasks.db"
    tasks = [{"task_id": f"t{i}", "image_key": f"a/{i}.jpg", "size": "10x10"} for i in range(2)]
    create_objects(store, tasks)

    def source():
        yield from tasks
        raise OSError("the task source failed")

    with WorkerPool(Config(max_workers=2, db_path=str(db), store_root=str(store), log_level="ERROR")) as pool:
        with pytest.raises(OSError, match="the task source failed"):
            pool.submit_many(source())
        assert pool.drain(timeout=10)
        assert rows(db) == []
        results = [h.result(timeout=10) for h in pool.submit_many(iter(tasks))]
    assert [r.status for r in results] == ["success", "success"] and not any(r.duplicate for r in results)
