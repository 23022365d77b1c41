"""input_new/generate_tasks.py: reproducible bytes, fractions as asked, objects per the contract."""
import json
import os
import subprocess
import sys

import pytest

from tqengine.errors import ValidationError
from tqengine.tasks import validate
from runners.workload import object_chunks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "input_new", "generate_tasks.py")


def _gen(*args):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, timeout=30)


def _tree(root):
    """{relative path: bytes} of every file under root."""
    files = {}
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, root)] = f.read()
    return files


def _make(tmp_path, name, seed, *extra):
    out, objects = tmp_path / name / "tasks.json", tmp_path / name / "objects"
    proc = _gen("--count", "60", "--seed", str(seed), "--out", str(out), "--objects", str(objects),
                "--duplicate-fraction", "0.2", "--invalid-fraction", "0.1", "--min-bytes", "0",
                "--max-bytes", "70000", *extra)
    assert proc.returncode == 0, proc.stderr
    return out.read_bytes(), _tree(objects)


@pytest.mark.timeout(30)
def test_same_seed_same_bytes_different_seed_differs(tmp_path):
    tasks_a, objects_a = _make(tmp_path, "a", 7)
    tasks_b, objects_b = _make(tmp_path, "b", 7)
    assert tasks_a == tasks_b and objects_a == objects_b
    tasks_c, objects_c = _make(tmp_path, "c", 8)
    assert tasks_c != tasks_a and objects_c != objects_a
    assert not any(name.endswith(".tq-tmp") for name in objects_a)


@pytest.mark.timeout(30)
def test_fractions_and_object_content(tmp_path):
    raw, objects = _make(tmp_path, "a", 3)
    tasks = json.loads(raw)
    assert len(tasks) == 60 and len({t["task_id"] for t in tasks}) == 60
    valid, invalid = [], []
    for task in tasks:
        try:
            validate(task)
            valid.append(task)
        except ValidationError:
            invalid.append(task)
    assert len(invalid) == 6                                   # 0.1 of 60
    keys = [(t["image_key"], t["size"]) for t in valid]
    assert len(keys) - len(set(keys)) == 12                    # 0.2 of 60 repeat an earlier key
    for task in valid:
        data = objects[os.path.join(*task["image_key"].split("/"))]
        assert len(data) == task["object_bytes"] and 0 <= len(data) <= 70000
        assert data == b"".join(object_chunks(task["image_key"], task["object_bytes"]))
    assert not any(".." in name.split(os.sep) for name in objects)


@pytest.mark.timeout(30)
def test_without_objects_dir_writes_only_tasks(tmp_path):
    out = tmp_path / "t.json"
    assert _gen("--count", "3", "--out", str(out)).returncode == 0
    assert len(json.loads(out.read_text())) == 3 and os.listdir(tmp_path) == ["t.json"]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("args", [
    ["--count", "-1"], ["--count", "x"], ["--duplicate-fraction", "1.5"], ["--invalid-fraction", "-0.1"],
    ["--duplicate-fraction", "0.6", "--invalid-fraction", "0.6"], ["--min-bytes", "10", "--max-bytes", "5"],
    ["--duplicate-fraction", "0.5", "--invalid-fraction", "0.5"], ["--nonsense"]])
def test_bad_arguments_exit_2(tmp_path, args):
    base = ["--count", "10", "--out", str(tmp_path / "t.json")]
    proc = _gen(*base, *args)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not (tmp_path / "t.json").exists()
