"""Real image variants end to end through the engine: a folder of photos in, thumbnails out, sources untouched;
bad images dead-lettered with their own class (one attempt, no retry loop, no traceback, the run exits 0);
recovery accepts a variant only if it is complete and was made from the current source."""
import hashlib
import io
import json
import os

import pytest
from helpers_crash import PY, cli_args, dead_letters, rows, run_cli, snapshot_tree, write_tasks
from PIL import Image, ImageOps

from tests.engine_helpers import engine_config
from tqengine import WorkerPool
from tqengine.objects.local import LocalObjectStore
from tqengine.processor import Processor


def _photo(path, size, fmt="JPEG", orientation=None):
    """A user's photo: not made by the project, a size no task states."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.linear_gradient("L").resize(size).convert("RGB")
    im.paste((230, 20, 20), (0, 0, size[0] // 4, size[1] // 4))
    params = {"quality": 80} if fmt == "JPEG" else {}
    if orientation:
        im = im.transpose(Image.Transpose.ROTATE_90)     # stored rotated; orientation 6 turns it upright
        exif = Image.Exif()
        exif[0x0112] = orientation
        params["exif"] = exif.tobytes()
    im.save(path, fmt, **params)
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.timeout(60)
def test_cli_create_objects_never_overwrites_a_users_photos(tmp_path):
    """Regression (issue 10): --create-objects replaced real JPEGs/PNGs whose size differed from object_bytes
    with 16 KiB of random bytes. Now only missing keys are created, and the photos get real thumbnails."""
    store = tmp_path / "photos"
    digests = {"beach.jpg": _photo(store / "beach.jpg", (333, 222)),
               "2024/icon.png": _photo(store / "2024" / "icon.png", (120, 90), "PNG"),
               "2024/tall.jpg": _photo(store / "2024" / "tall.jpg", (300, 200), orientation=6)}
    tasks = [{"task_id": "a", "image_key": "beach.jpg", "size": "200x200", "object_bytes": 16384,
              "source_size": "4000x3000"},
             {"task_id": "b", "image_key": "2024/icon.png", "size": "800x600", "object_bytes": 16384},
             {"task_id": "c", "image_key": "2024/tall.jpg", "size": "100x100"},
             {"task_id": "d", "image_key": "made/new.webp", "size": "50x50", "source_size": "80x60"}]
    before = snapshot_tree(store)
    proc = run_cli(cli_args(write_tasks(tmp_path / "t.json", tasks), store, tmp_path / "t.db", "--create-objects"),
                   tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "success 4, dead 0" in proc.stdout, proc.stdout
    for key, digest in digests.items():
        assert hashlib.sha256((store / key).read_bytes()).hexdigest() == digest, f"{key} was changed"
    after = snapshot_tree(store)
    assert {p: v for p, v in after.items() if p in before} == before          # nothing that was there changed
    assert (store / "made" / "new.webp").is_file()                            # the one missing source was made
    expect = {"beach.jpg@200x200": ("JPEG", (200, 133)), "2024/icon.png@800x600": ("PNG", (120, 90)),
              "2024/tall.jpg@100x100": ("JPEG", (100, 67)), "made/new.webp@50x50": ("WEBP", (50, 38))}
    for key, (fmt, size) in expect.items():
        with Image.open(store / "variants" / key) as im:
            assert (im.format, im.size) == (fmt, size), key
            if key.startswith("2024/tall"):        # EXIF orientation 6 applied: the red block is top-left again
                r, g, b = im.convert("RGB").getpixel((3, 3))
                assert r > 150 and g < 100


def _bad_store(store):
    from runners.workload import image_bytes
    store.mkdir(parents=True, exist_ok=True)
    good = image_bytes("ok.jpg", 120, 90)
    (store / "ok.jpg").write_bytes(good)
    (store / "notes.jpg").write_bytes(b"these are my notes, not a photo\n" * 40)
    (store / "cut.jpg").write_bytes(good[:len(good) // 2])
    (store / "huge.png").write_bytes(image_bytes("huge.png", 400, 300))       # over the limit set below
    (store / "empty.png").write_bytes(b"")
    return {"ok.jpg": "success", "notes.jpg": "NotAnImage", "cut.jpg": "ImageTruncated",
            "huge.png": "DecompressionBomb", "empty.png": "NotAnImage"}


@pytest.mark.timeout(60)
def test_cli_bad_images_are_dead_letters_with_their_class_and_the_run_exits_0(tmp_path):
    store, db = tmp_path / "store", tmp_path / "t.db"
    expected = _bad_store(store)
    tasks = [{"task_id": key, "image_key": key, "size": "64x64"} for key in expected]
    args = cli_args(write_tasks(tmp_path / "t.json", tasks), store, db, "--max-attempts", "3")
    env_args = dict(TQ_MAX_IMAGE_PIXELS="50000")
    import subprocess

    from helpers_crash import cli_env
    proc = subprocess.run(args, cwd=str(tmp_path), env=cli_env(**env_args), capture_output=True, text=True,
                          timeout=45)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert "success 1, dead 4" in proc.stdout, proc.stdout
    by_key = {r["idempotency_key"].split("#")[0]: r for r in rows(db)}
    letters = {d["task_id"]: d for d in dead_letters(db)}
    for key, outcome in expected.items():
        row = by_key[key]
        if outcome == "success":
            assert row["status"] == "success"
            continue
        assert row["status"] == "dead" and row["attempts"] == 1, row          # permanent: never retried
        letter = letters[key]
        assert letter["error_class"] == outcome, letter
        assert letter["error_message"] and "\n" not in letter["error_message"]
    logged = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    classes = {e.get("error_class") for e in logged if e.get("event") == "attempt_failed"}
    assert classes == {"NotAnImage", "ImageTruncated", "DecompressionBomb"}
    assert not (store / "variants" / "notes.jpg@64x64").exists()


@pytest.mark.timeout(60)
def test_api_bad_image_classes_and_a_good_one_alongside(tmp_path):
    expected = _bad_store(tmp_path / "store")
    with WorkerPool(engine_config(tmp_path, max_image_pixels=50_000, max_attempts=3)) as pool:
        results = {key: pool.submit({"image_key": key, "size": "64x64"}).result(20) for key in expected}
    for key, outcome in expected.items():
        res = results[key]
        if outcome == "success":
            assert res.status == "success" and res.output_key == f"variants/{key}@64x64"
        else:
            assert (res.status, res.error_class, res.attempts) == ("dead", outcome, 1), res


@pytest.mark.timeout(30)
def test_completed_output_only_accepts_a_variant_of_the_current_source(tmp_path):
    from runners.workload import image_bytes
    store = LocalObjectStore(str(tmp_path))
    store.write_all("p/a.jpg", image_bytes("p/a.jpg", 300, 200))
    processor = Processor(store)
    output_key, digest, nbytes = processor.process("p/a.jpg", "100x100", "k", 1)
    assert processor.completed_output("p/a.jpg", "100x100") == (output_key, digest, nbytes)
    assert processor.completed_output("p/a.jpg", "50x50") is None                      # no such variant
    variant_path = tmp_path / "variants" / "p" / "a.jpg@100x100"
    good = variant_path.read_bytes()
    variant_path.write_bytes(good[: len(good) // 2])                                   # truncated variant
    assert processor.completed_output("p/a.jpg", "100x100") is None
    big = io.BytesIO()
    Image.new("RGB", (300, 200)).save(big, "JPEG", comment=f"tq:sourceSha256={digest}".encode())
    variant_path.write_bytes(big.getvalue())                                           # decodes, does not fit
    assert processor.completed_output("p/a.jpg", "100x100") is None
    plain = io.BytesIO()
    Image.new("RGB", (100, 67)).save(plain, "JPEG")
    variant_path.write_bytes(plain.getvalue())                                         # fits, records no source
    assert processor.completed_output("p/a.jpg", "100x100") is None
    variant_path.write_bytes(good)
    assert processor.completed_output("p/a.jpg", "100x100") == (output_key, digest, nbytes)
    store.write_all("p/a.jpg", image_bytes("p/a.jpg", 301, 200))                      # the source changed
    assert processor.completed_output("p/a.jpg", "100x100") is None


def test_readme_photo_folder_commands(tmp_path):
    """The three commands docs/IMAGES.md proposes for the README: generate a task file for a folder of photos,
    run the engine on it, and the thumbnails open with Pillow while every source stays byte-identical."""
    import subprocess

    from helpers_crash import CLI, ROOT, cli_env
    photos = tmp_path / "Pictures"
    originals = {"a.jpg": _photo(photos / "a.jpg", (640, 427)), "sub/b.png": _photo(photos / "sub" / "b.png",
                                                                                     (200, 300), "PNG")}
    gen = subprocess.run([PY, os.path.join(ROOT, "input_new", "generate_tasks.py"), "--from-dir", str(photos),
                          "--sizes", "200x200,800x600", "--out", str(tmp_path / "photos.json")],
                         capture_output=True, text=True, timeout=30, env=cli_env(), cwd=str(tmp_path))
    assert gen.returncode == 0, gen.stderr
    run = subprocess.run([PY, CLI, "--tasks", str(tmp_path / "photos.json"), "--store", str(photos), "--db",
                          str(tmp_path / "photos.db")], capture_output=True, text=True, timeout=45, env=cli_env(),
                         cwd=str(tmp_path))
    assert run.returncode == 0, run.stderr
    assert "success 4, dead 0" in run.stdout
    for key, digest in originals.items():
        assert hashlib.sha256((photos / key).read_bytes()).hexdigest() == digest
        with Image.open(photos / key) as src:
            sw, sh = ImageOps.exif_transpose(src).size
        for box in ((200, 200), (800, 600)):
            with Image.open(photos / "variants" / f"{key}@{box[0]}x{box[1]}") as im:
                im.load()
                assert im.width <= box[0] and im.height <= box[1] and im.width <= sw
                assert abs(im.width / im.height - sw / sh) < 0.02


@pytest.mark.timeout(60)
def test_ensure_objects_creates_only_missing_keys_locally_and_over_http(tmp_path):
    from runners.server_process import start_server_process
    from runners.workload import ensure_objects, image_bytes
    from tqengine.objects.http import HttpObjectStore
    tasks = [{"image_key": "keep/me.jpg", "size": "10x10", "source_size": "640x480"},
             {"image_key": "new/one.png", "size": "10x10", "source_size": "30x20"}]
    local = tmp_path / "local"
    (local / "keep").mkdir(parents=True)
    (local / "keep" / "me.jpg").write_bytes(b"mine")
    assert ensure_objects(tasks, str(local)) == 1
    assert (local / "keep" / "me.jpg").read_bytes() == b"mine"
    assert (local / "new" / "one.png").read_bytes() == image_bytes("new/one.png", 30, 20)
    with start_server_process(str(tmp_path / "server")) as srv, HttpObjectStore(srv.url) as remote:
        remote.write_all("keep/me.jpg", b"mine too")
        assert ensure_objects(tasks, None, store=remote) == 1
        assert remote.read_all("keep/me.jpg") == b"mine too"
        assert remote.read_all("new/one.png") == image_bytes("new/one.png", 30, 20)
