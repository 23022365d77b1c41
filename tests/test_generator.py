"""input_new/generate_tasks.py: reproducible bytes, fractions as asked, real images per the contract, tasks for a
folder of the user's own images, and no existing file ever replaced."""
import io
import json
import os
import subprocess
import sys

import pytest

from runners.workload import image_bytes, image_format_for, parse_size
from tqengine.errors import ValidationError
from tqengine.tasks import validate

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
                "--duplicate-fraction", "0.2", "--invalid-fraction", "0.1", "--image-size", "16x12-120x90", *extra)
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
    from PIL import Image, ImageOps
    formats = set()
    for task in valid:
        data = objects[os.path.join(*task["image_key"].split("/"))]
        width, height = parse_size(task["source_size"])
        assert 16 <= width <= 120 and 12 <= height <= 90
        assert data == image_bytes(task["image_key"], width, height)     # the same bytes as runners.workload
        with Image.open(io.BytesIO(data)) as im:
            assert im.format == image_format_for(task["image_key"])
            assert ImageOps.exif_transpose(im).size == (width, height)
            formats.add(im.format)
    assert formats == {"JPEG", "PNG", "WEBP"}
    assert not any(".." in name.split(os.sep) for name in objects)


@pytest.mark.timeout(30)
def test_without_objects_dir_writes_only_tasks(tmp_path):
    out = tmp_path / "t.json"
    assert _gen("--count", "3", "--out", str(out)).returncode == 0
    assert len(json.loads(out.read_text())) == 3 and os.listdir(tmp_path) == ["t.json"]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("args", [
    ["--count", "-1"], ["--count", "x"], ["--duplicate-fraction", "1.5"], ["--invalid-fraction", "-0.1"],
    ["--duplicate-fraction", "0.6", "--invalid-fraction", "0.6"], ["--image-size", "10x10-5x5"],
    ["--image-size", "0x10"], ["--sizes", "100x100,abc"], ["--from-dir", "/nonexistent"],
    ["--duplicate-fraction", "0.5", "--invalid-fraction", "0.5"], ["--nonsense"]])
def test_bad_arguments_exit_2(tmp_path, args):
    base = ["--count", "10", "--out", str(tmp_path / "t.json")]
    proc = _gen(*base, *args)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not (tmp_path / "t.json").exists()


@pytest.mark.timeout(30)
def test_objects_dir_gets_only_the_missing_images(tmp_path):
    """Regression (issue 10): an existing file is never replaced, whatever its size or content."""
    out, objects = tmp_path / "t.json", tmp_path / "objects"
    first = objects / "img" / "0" / "000000.jpg"
    first.parent.mkdir(parents=True)
    first.write_bytes(b"the user's own file")
    proc = _gen("--count", "3", "--out", str(out), "--objects", str(objects))
    assert proc.returncode == 0, proc.stderr
    assert first.read_bytes() == b"the user's own file"
    assert sorted(_tree(objects)) == [os.path.join("img", "0", n) for n in ("000000.jpg", "000001.png", "000002.webp")]
    assert "2 new images" in proc.stderr


@pytest.mark.timeout(30)
def test_from_dir_makes_tasks_for_the_users_images_and_writes_nothing_there(tmp_path):
    from helpers_crash import snapshot_tree
    photos = tmp_path / "photos"
    (photos / "2024" / "trip").mkdir(parents=True)
    (photos / "variants").mkdir()
    for rel in ("a.JPG", "2024/b.png", "2024/trip/c.webp", "2024/trip/d.jpeg", "variants/old.jpg"):
        (photos / rel).write_bytes(b"x")
    (photos / "notes.txt").write_text("not an image")
    before = snapshot_tree(photos)
    out = tmp_path / "photos.json"
    proc = _gen("--from-dir", str(photos), "--sizes", "200x200,800x600", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    tasks = json.loads(out.read_text())
    assert [(t["image_key"], t["size"]) for t in tasks] == [
        (k, s) for k in ("2024/b.png", "2024/trip/c.webp", "2024/trip/d.jpeg", "a.JPG") for s in ("200x200", "800x600")]
    assert len({t["task_id"] for t in tasks}) == len(tasks)
    for task in tasks:
        validate(task)
    assert snapshot_tree(photos) == before
    inside = _gen("--from-dir", str(photos), "--sizes", "200x200", "--out", str(photos / "t.json"))
    assert inside.returncode == 2 and "inside" in inside.stderr and not (photos / "t.json").exists()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case", ["out-folder", "out-under-a-file", "objects-a-file", "huge-count"])
def test_paths_and_a_huge_count_are_refused_before_any_work(tmp_path, case):
    """--out naming a folder, or a file under a file, or --objects naming a file, ended in exit 1 with a temp
    file's name ("cannot write: ... '.gen-....tq-tmp' -> ..."), after the images were made; a count of 10**20
    ran until memory gave out. Each is one line and exit 2 now, with nothing written."""
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    args = {"out-folder": ["--count", "3", "--out", str(tmp_path)],
            "out-under-a-file": ["--count", "3", "--out", str(a_file / "t.json")],
            "objects-a-file": ["--count", "3", "--out", str(tmp_path / "t.json"), "--objects", str(a_file)],
            "huge-count": ["--count", str(10 ** 20), "--out", str(tmp_path / "t.json")]}[case]
    proc = _gen(*args)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and ".tq-tmp" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"] and a_file.read_text() == "mine"
