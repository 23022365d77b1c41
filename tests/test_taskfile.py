"""The task-file reader (lab/taskfile.py) under hostile files (issue 13, defects 11 and 12): linear work on
a big element, bounded memory, a nesting limit, huge integers, numbers cut by a read boundary, FIFOs,
pipes and process substitution read in one pass; and a differential check against json.loads with tiny
reads, so every split point is exercised.

The reader's cost is measured as characters handed to the JSON decoder (deterministic), not as time.
"""
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import tracemalloc

import pytest

import lab.taskfile as taskfile
from lab.taskfile import TaskFile, TaskFileError, check, iter_elements

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MiB = 1 << 20


class CountingDecoder(json.JSONDecoder):
    """json.JSONDecoder that counts the characters each raw_decode call may scan (from idx to the end)."""
    scanned = 0

    def raw_decode(self, s, idx=0):
        CountingDecoder.scanned += len(s) - idx
        return super().raw_decode(s, idx)


def write(path, text):
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return str(path)


def one_line_error(excinfo):
    message = str(excinfo.value)
    assert "\n" not in message
    return message


# --- defect 11: linear, bounded ---
def test_a_big_string_is_decoded_once_not_on_every_read(tmp_path, monkeypatch):
    """Before, the buffer was re-decoded from the element's start on every 1 MiB read: an n MiB element
    cost about n*n/2 MiB of scanning (16 MB: 0.7 s; 256 MB: a minute and 1.3 GB)."""
    monkeypatch.setattr(json, "JSONDecoder", CountingDecoder)
    CountingDecoder.scanned = 0
    size = 12 * MiB
    path = write(tmp_path / "big.json",
                 '[{"task_id": "x", "image_key": "' + "k" * size + '", "size": "1x1"}, {"a": 1}]')
    elements = list(iter_elements(path))
    assert len(elements) == 2 and len(elements[0]["image_key"]) == size
    assert CountingDecoder.scanned < 2.5 * size, f"{CountingDecoder.scanned / size:.1f} x the element scanned"


def test_an_element_over_the_limit_is_refused_with_bounded_memory(tmp_path):
    path = write(tmp_path / "huge.json", '[{"task_id": "x", "image_key": "' + "k" * (40 * MiB) + '"}]')
    tracemalloc.start()
    try:
        with pytest.raises(TaskFileError) as info:
            check(path, max_element_chars=4 * MiB)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = one_line_error(info)
    assert "task #1" in message and "line 1 column 2" in message and "4,194,304 characters" in message
    assert peak < 24 * MiB, f"refusing a 40 MiB element took {peak / MiB:.0f} MiB"


def test_the_default_element_limit_keeps_a_1_mib_key_as_a_task(tmp_path):
    """A 1 MiB key is a task-level problem (dead letter "longer than 1024"), not a file-level one."""
    path = write(tmp_path / "k.json", json.dumps([{"task_id": "k", "image_key": "k" * MiB, "size": "1x1"}]))
    assert check(path) == 1
    path = write(tmp_path / "k2.json", '["' + "s" * (taskfile.MAX_ELEMENT_CHARS + 10) + '"]')
    with pytest.raises(TaskFileError, match="longer than the limit"):
        check(path)


@pytest.mark.parametrize("read_size", [7, 1 << 20])
def test_the_limits_do_not_depend_on_where_a_read_ends(tmp_path, monkeypatch, read_size):
    """An element is refused or accepted the same whether it lies in one read or spans several."""
    monkeypatch.setattr(taskfile, "READ_SIZE", read_size)
    ok = "[" * 10 + "]" * 10
    deep = "[" * 11 + "]" * 11
    path = write(tmp_path / "d.json", f"[{ok}, {ok}]")
    assert check(path, max_depth=10) == 2
    path = write(tmp_path / "d.json", f"[{ok}, {deep}]")
    with pytest.raises(TaskFileError, match="task #2 nests deeper than 10 levels"):
        check(path, max_depth=10)
    long = json.dumps({"k": "x" * 100})
    path = write(tmp_path / "l.json", f"[{long}]")
    assert check(path, max_element_chars=len(long)) == 1
    with pytest.raises(TaskFileError, match="longer than the limit"):
        check(path, max_element_chars=len(long) - 1)


# --- defect 12: nesting, integers, pipes ---
def test_deep_nesting_is_one_line_not_a_recursion_error(tmp_path):
    path = write(tmp_path / "deep.json", "[" + "[" * 100_000 + "]" * 100_000 + "]")
    with pytest.raises(TaskFileError) as info:
        check(path)
    message = one_line_error(info)
    assert f"nests deeper than {taskfile.MAX_DEPTH} levels" in message and "line 1 column" in message


def test_deep_nesting_in_the_cli_is_exit_2(tmp_path):
    path = write(tmp_path / "deep.json", '[{"task_id": "a", "image_key": "a.raw", "size": "1x1", "x": '
                 + "[" * 100_000 + "]" * 100_000 + "}]")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "task_queue_optimized.py"), "--tasks", path,
                           "--store", str(tmp_path / "s"), "--db", str(tmp_path / "t.db")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=30, env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "nests deeper" in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "t.db").exists()


@pytest.mark.parametrize("digits", [4301, 5000, 100_000])
def test_a_huge_integer_is_named_not_called_truncated(tmp_path, digits):
    path = write(tmp_path / "n.json", '[{"task_id": "a"}, {"task_id": "b", "object_bytes": ' + "9" * digits + "}]")
    with pytest.raises(TaskFileError) as info:
        check(path)
    message = one_line_error(info)
    assert "task #2" in message and "4300" in message and "truncated" not in message


@pytest.mark.parametrize("number", ["1.5e-3", "2.25", "1e5", "-7", "123456"])
def test_a_number_cut_by_a_read_boundary_is_read_whole(tmp_path, monkeypatch, number):
    """Found by the differential test below: `1.5e` at the end of a read parsed as 1.5, then 'e' was
    "expected ',' or ']'"; `2.` as 2. Every cut position of each number is tried."""
    text = f"[{number}, {number}]"
    path = write(tmp_path / "num.json", text)
    for read_size in range(1, len(text) + 1):
        monkeypatch.setattr(taskfile, "READ_SIZE", read_size)
        assert list(iter_elements(path)) == [json.loads(number)] * 2, read_size


TASKS = [{"task_id": f"t{i}", "image_key": f"img/{i}.raw", "size": "10x10"} for i in range(50)]


@pytest.fixture
def fifo(tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    path = str(tmp_path / "tasks.fifo")
    os.mkfifo(path)
    return path


def _feed(path, data):
    def run():
        with open(path, "wb") as f:
            f.write(data)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.timeout(20)
def test_a_fifo_is_read_once_and_iterated_as_often_as_needed(fifo, tmp_path):
    writer = _feed(fifo, json.dumps(TASKS).encode())
    with TaskFile(fifo, spool_dir=str(tmp_path)) as tasks:
        writer.join(timeout=5)
        assert tasks.spooled and tasks.count == 50
        assert list(tasks) == TASKS
        assert list(tasks) == TASKS              # a second pass: from the spool, not the FIFO
        spooled = os.listdir(tmp_path)
    assert sorted(spooled) == sorted(os.listdir(tmp_path)) == ["tasks.fifo"], "the spool is unnamed and gone"


@pytest.mark.timeout(20)
def test_a_fifo_with_a_bad_file_is_refused_before_anything_is_yielded(fifo):
    writer = _feed(fifo, json.dumps(TASKS).encode()[:-5])
    with pytest.raises(TaskFileError, match="truncated"):
        TaskFile(fifo)
    writer.join(timeout=5)


@pytest.mark.timeout(20)
def test_check_refuses_a_fifo_instead_of_consuming_it(fifo):
    """check() + iter_elements() open the file twice: on a FIFO the second open hung (or read an empty
    file); check() now says so at once without opening it."""
    with pytest.raises(TaskFileError, match="read only once"):
        check(fifo)


@pytest.mark.timeout(20)
def test_spooling_a_pipe_is_bounded(fifo):
    writer = _feed(fifo, b"[" + b"1, " * 5000 + b"1]")
    with pytest.raises(TaskFileError, match="regular file"):
        TaskFile(fifo, max_spool_bytes=4096)
    writer.join(timeout=5)


@pytest.mark.timeout(30)
@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash for <(...)")
def test_process_substitution_and_stdin(tmp_path):
    path = write(tmp_path / "tasks.json", json.dumps(TASKS))
    code = ("import sys; from lab.taskfile import TaskFile\n"
            "with TaskFile(sys.argv[1]) as t:\n"
            "    print(t.spooled, t.count, sum(1 for _ in t), sum(1 for _ in t))\n")
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run(["bash", "-c", '"$0" -c "$1" <(cat "$2")', sys.executable, code, path],
                          capture_output=True, text=True, timeout=20, env=env)
    assert proc.returncode == 0 and proc.stdout.split() == ["True", "50", "50", "50"], proc.stderr
    with open(path, "rb") as stdin:
        proc = subprocess.run([sys.executable, "-c", code, "-"], stdin=stdin, capture_output=True, text=True,
                              timeout=20, env=env)
    assert proc.returncode == 0 and proc.stdout.split() == ["False", "50", "50", "50"], proc.stderr
    proc = subprocess.run(["bash", "-c", 'cat "$2" | "$0" -c "$1" -', sys.executable, code, path],
                          capture_output=True, text=True, timeout=20, env=env)
    assert proc.returncode == 0 and proc.stdout.split() == ["True", "50", "50", "50"], proc.stderr


@pytest.mark.timeout(30)
@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash for <(...)")
def test_cli_runs_a_task_file_given_by_process_substitution(tmp_path):
    path = write(tmp_path / "tasks.json", json.dumps(TASKS[:5]))
    cli = os.path.join(ROOT, "task_queue_optimized.py")
    proc = subprocess.run(["bash", "-c", '"$0" "$1" --tasks <(cat "$2") --store "$3" --db "$4" --create-objects',
                           sys.executable, cli, path, str(tmp_path / "s"), str(tmp_path / "t.db")],
                          capture_output=True, text=True, timeout=25, cwd=tmp_path,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "success 5, dead 0" in proc.stdout


def test_a_regular_file_changed_after_the_check_is_refused(tmp_path):
    path = write(tmp_path / "tasks.json", json.dumps(TASKS))
    with TaskFile(path) as tasks:
        assert not tasks.spooled and tasks.count == 50
        with open(path, "a") as f:
            f.write(" ")
        with pytest.raises(TaskFileError, match="changed since it was checked"):
            list(tasks)


def test_a_new_iteration_voids_an_unfinished_one(tmp_path):
    path = write(tmp_path / "tasks.json", json.dumps(TASKS))
    with TaskFile(path) as tasks:
        first = iter(tasks)
        assert next(first) == TASKS[0]
        assert list(tasks) == TASKS
        with pytest.raises(RuntimeError):
            next(first)


def test_task_file_reports_what_check_reports(tmp_path):
    for text, fragment in [("", "empty file"), ("{}", "found an object"), ("[1, 2", "truncated"),
                           ('[{"a": 1} {"b": 2}]', "expected ',' or ']'"), ("[1] x", "extra data")]:
        path = write(tmp_path / "bad.json", text)
        with pytest.raises(TaskFileError, match=fragment):
            TaskFile(path)
        with pytest.raises(TaskFileError, match=fragment):
            check(path)
    with pytest.raises(TaskFileError, match="no such file"):
        TaskFile(tmp_path / "missing.json")
    with pytest.raises(TaskFileError, match="is a directory"):
        TaskFile(tmp_path)


# --- errors inside a long element are placed exactly ---
@pytest.mark.parametrize("read_size", [5, 64, 1 << 20])
def test_an_error_inside_a_long_element_is_placed_like_json_places_it(tmp_path, monkeypatch, read_size):
    monkeypatch.setattr(taskfile, "READ_SIZE", read_size)
    good = json.dumps({"note": "n" * 300, "list": list(range(50))}, indent=1)
    bad = good.replace('"list"', '"list" x', 1)
    text = "[\n" + good + ",\n" + bad + "\n]"
    path = write(tmp_path / "e.json", text)
    with pytest.raises(json.JSONDecodeError) as expected:
        json.loads(text)
    with pytest.raises(TaskFileError) as info:
        check(path)
    assert f"line {expected.value.lineno} column {expected.value.colno} (task #2)" in str(info.value)


# --- differential: the reader agrees with json.loads at every split ---
def _value(rng, depth=0):
    r = rng.random()
    if depth < 4 and r < 0.25:
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if depth < 4 and r < 0.5:
        return {rng.choice(["a", 'b"', "[", "{}", "\\", "é"]) + str(i): _value(rng, depth + 1)
                for i in range(rng.randint(0, 4))}
    if r < 0.7:
        return "".join(rng.choice(['a', '"', '\\', '[', ']', '{', '}', '\n', 'é', '😀', '\u2028', 'x' * 40])
                       for _ in range(rng.randint(0, 12)))
    if r < 0.8:
        return rng.randint(-10 ** 30, 10 ** 30)
    if r < 0.9:
        return rng.random() * 10 ** rng.randint(-5, 5)
    return rng.choice([True, False, None])


@pytest.mark.timeout(60)
def test_reader_agrees_with_json_loads_on_random_and_mutated_files(tmp_path, monkeypatch):
    rng = random.Random(13)
    path = str(tmp_path / "f.json")
    for trial in range(400):
        data = [_value(rng) for _ in range(rng.randint(0, 6))]
        raw = bytearray(json.dumps(data, ensure_ascii=rng.random() < 0.5, indent=rng.choice([None, 1])).encode())
        if trial % 2:                     # mutate: the reader must agree on valid vs invalid
            for _ in range(rng.randint(1, 3)):
                if raw:
                    k = rng.randrange(len(raw))
                    raw[k:k + 1] = rng.choice([b",", b"]", b"[", b"{", b"}", b'"', b"\\", b"", b"1e", b"-", b"."])
        monkeypatch.setattr(taskfile, "READ_SIZE", rng.choice([1, 2, 3, 7, 64, 4096]))
        with open(path, "wb") as f:
            f.write(raw)
        try:
            expected = json.loads(raw.decode("utf-8"))
            valid = isinstance(expected, list)
        except (ValueError, UnicodeDecodeError):
            valid = False
        try:
            got = list(iter_elements(path))
        except TaskFileError:
            assert not valid, (trial, bytes(raw[:300]))
        else:
            assert valid and got == expected, (trial, bytes(raw[:300]))
