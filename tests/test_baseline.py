"""The baseline does the contract's work, keeps its documented defects, and its CLI keeps its promises."""
import importlib.util
import json
import os
import subprocess
import sys
import time

import pytest

from runners.workload import ensure_objects, image_bytes, image_chunks, source_size_of
from tqengine import faults
from tqengine.transform import make_variant, verify_output

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "input_new", "baseline_task_queue_v2.py")
SAMPLE = os.path.join(ROOT, "input_new", "sample_tasks_small.json")


def _load():
    spec = importlib.util.spec_from_file_location("baseline_task_queue_v2", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bl = _load()


def _task(i, size="200x200", source="64x48", ext="png"):
    return {"task_id": f"t{i}", "image_key": f"img/{i}.{ext}", "size": size, "source_size": source}


def _run(queue, tasks, timeout=10):
    queue.start()
    try:
        tickets = [queue.submit(t) for t in tasks]
        return [t.result(timeout=timeout) for t in tickets]
    finally:
        assert queue.stop(timeout=5)


def _verify(root, task):
    variant = task.get("size", task.get("variant"))
    with open(os.path.join(root, "variants", *f"{task['image_key']}@{variant}".split("/")), "rb") as f:
        out = f.read()
    return verify_output([out], variant, image_chunks(task["image_key"], *source_size_of(task)))


@pytest.mark.timeout(20)
def test_processes_tasks_and_outputs_verify(tmp_path):
    tasks = [_task(i, source=src, ext=ext) for i, (src, ext) in
             enumerate((("1x1", "png"), ("64x48", "jpg"), ("300x200", "webp"), ("500x400", "jpg"), ("90x300", "png")))]
    ensure_objects(tasks, str(tmp_path))
    results = _run(bl.BaselineTaskQueue(str(tmp_path), workers=3, latency_ms=0), tasks)
    assert [r["status"] for r in results] == ["success"] * 5
    for task, result in zip(tasks, results, strict=True):
        assert result["task_id"] == task["task_id"]
        assert result["output_key"] == f"variants/{task['image_key']}@200x200"
        assert result["error"] is None and result["latency_ms"] >= 0
        assert _verify(str(tmp_path), task) is None


@pytest.mark.timeout(20)
def test_copies_agree_with_the_shared_contract():
    for i in range(300):
        args = (i % 7, f"img/{i}.raw#200x200", 1 + i % 3, 5.0, 2.0, 0.3, 0.1)
        assert bl.plan(*args) == faults.plan(*args)


@pytest.mark.timeout(20)
def test_duplicates_are_processed_again(tmp_path):
    first = _task(1)
    tasks = [first, dict(first, task_id="again"), dict(first, task_id="third")]
    ensure_objects(tasks, str(tmp_path))
    queue = bl.BaselineTaskQueue(str(tmp_path), workers=2, latency_ms=0)
    results = _run(queue, tasks)
    assert [r["status"] for r in results] == ["success"] * 3
    assert queue.processed == 3 and queue.failed == 0      # three transforms of the same key


def _fault_key(seed, fault, rates, then=None):
    """A task index whose attempt 1 gets `fault` (and attempt 2 gets `then`) under `rates`, per the shared plan."""
    for i in range(10000):
        key = f"img/{i}.png#200x200"
        if (faults.plan(seed, key, 1, 0, 0, *rates)[1] == fault
                and faults.plan(seed, key, 2, 0, 0, *rates)[1] == then):
            return i
    raise AssertionError("no such key")


@pytest.mark.timeout(20)
def test_transient_fault_is_final_no_retry(tmp_path):
    i = _fault_key(5, "transient", (0.5, 0.0), then=None)    # a second attempt would have succeeded
    task = _task(i)
    ensure_objects([task], str(tmp_path))
    queue = bl.BaselineTaskQueue(str(tmp_path), workers=1, latency_ms=0, transient_rate=0.5, seed=5)
    (result,) = _run(queue, [task])
    assert result["status"] == "failed" and "transient" in result["error"]
    assert queue.failed == 1 and queue.processed == 0
    assert not os.path.exists(os.path.join(tmp_path, "variants", f"img/{i}.png@200x200"))


@pytest.mark.timeout(20)
def test_permanent_fault_fails(tmp_path):
    i = _fault_key(1, "permanent", (0.0, 0.5), then="permanent")
    task = _task(i)
    ensure_objects([task], str(tmp_path))
    (result,) = _run(bl.BaselineTaskQueue(str(tmp_path), workers=1, latency_ms=0, permanent_rate=0.5, seed=1),
                     [task])
    assert result["status"] == "failed" and "permanent" in result["error"]


@pytest.mark.timeout(20)
def test_bad_tasks_fail_without_crashing(tmp_path):
    bad = [{"task_id": "nokey", "size": "10x10"}, {"task_id": "nosize", "image_key": "a.raw"},
           {"task_id": "abc", "image_key": "a.raw", "size": "abc"},
           {"task_id": "big", "image_key": "a.raw", "size": "9000x10"},
           {"task_id": "esc", "image_key": "../../etc/passwd", "size": "10x10"},
           {"task_id": "abs", "image_key": "/etc/passwd", "size": "10x10"},
           {"task_id": "missing", "image_key": "nothere.raw", "size": "10x10"},
           "not a dict", None, 42, {"task_id": "bytes", "image_key": "a.raw", "size": "1x1", "object_bytes": -1}]
    good = _task(9)
    ensure_objects([good], str(tmp_path))
    queue = bl.BaselineTaskQueue(str(tmp_path), workers=2, latency_ms=0)
    results = _run(queue, bad + [good])
    assert [r["status"] for r in results] == ["failed"] * len(bad) + ["success"]
    assert all(r["error"] for r in results[:-1])
    assert "does not exist" in results[6]["error"]
    assert queue.failed == len(bad) and queue.processed == 1


@pytest.mark.timeout(20)
def test_symlink_escaping_the_store_fails(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.raw").write_bytes(b"secret")
    root = tmp_path / "store"
    root.mkdir()
    os.symlink(outside, root / "link")
    (result,) = _run(bl.BaselineTaskQueue(str(root), workers=1, latency_ms=0),
                     [{"task_id": "s", "image_key": "link/secret.raw", "size": "10x10"}])
    assert result["status"] == "failed" and "outside" in result["error"]


@pytest.mark.timeout(20)
def test_global_lock_serialises_the_workers(tmp_path):
    tasks = [_task(i) for i in range(8)]
    ensure_objects(tasks, str(tmp_path))
    queue = bl.BaselineTaskQueue(str(tmp_path), workers=4, latency_ms=20)
    queue.start()
    try:
        start = time.perf_counter()
        tickets = [queue.submit(t) for t in tasks]
        results = [t.result(timeout=10) for t in tickets]
        elapsed = time.perf_counter() - start
    finally:
        queue.stop()
    assert all(r["status"] == "success" for r in results)
    # 4 workers in parallel would need ~2 x 20 ms; under the global lock it is 8 x 20 ms
    assert elapsed >= 8 * 0.020 * 0.95, elapsed


class _MemStore:
    def __init__(self):
        self.objects = {}

    def read_all(self, key):
        return self.objects[key]

    def write_all(self, key, data):
        self.objects[key] = data


@pytest.mark.timeout(20)
def test_uses_a_given_store(tmp_path):
    store = _MemStore()
    task = _task(3, source="640x480", ext="jpg")
    store.objects[task["image_key"]] = image_bytes(task["image_key"], 640, 480)
    (result,) = _run(bl.BaselineTaskQueue(str(tmp_path / "unused"), workers=1, latency_ms=0, store=store),
                     [task])
    assert result["status"] == "success"
    out = store.objects[result["output_key"]]
    assert verify_output([out], "200x200", [store.objects[task["image_key"]]]) is None
    assert not (tmp_path / "unused").exists()


@pytest.mark.timeout(20)
def test_ticket_timeout_and_stop_fails_queued_tasks(tmp_path):
    queue = bl.BaselineTaskQueue(str(tmp_path), workers=1, latency_ms=0)   # never started
    ticket = queue.submit(_task(1))
    assert not ticket.done()
    with pytest.raises(TimeoutError):
        ticket.result(timeout=0.01)
    queue.stop(timeout=1)
    assert ticket.done() and ticket.result(0)["status"] == "failed"
    assert queue.submit(_task(2)).result(0)["status"] == "failed"


def _cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, SCRIPT, *args], cwd=cwd, capture_output=True, text=True, timeout=30)


@pytest.mark.timeout(40)
def test_cli_json_has_the_metrics_shape(tmp_path):
    out = tmp_path / "m.json"
    proc = _cli("--count", "30", "--clients", "4", "--workers", "2", "--latency-ms", "1",
                "--transient-rate", "0.2", "--json", str(out), cwd=os.path.join(ROOT, "input_new"))
    assert proc.returncode == 0, proc.stderr
    assert "throughput" in proc.stdout and "p95" in proc.stdout
    m = json.loads(out.read_text())
    assert set(m) >= {"impl", "params", "tasks_submitted", "elapsed_s", "throughput_tps", "latency_ms",
                      "error_rate", "counters", "queue_depth", "rates", "thread_utilization", "ceiling_tps",
                      "efficiency", "peak_rss_mb", "env"}
    assert m["impl"] == "baseline" and m["tasks_submitted"] == 30
    assert set(m["latency_ms"]) == {"mean", "p50", "p95", "p99", "max"}
    c = m["counters"]
    assert set(c) == {"enqueued", "dequeued", "succeeded", "failed", "retried", "rejected", "duplicates",
                      "dead_lettered"}
    assert c["enqueued"] == c["dequeued"] == 30 and c["succeeded"] + c["failed"] == 30
    assert c["rejected"] == 0 and c["retried"] is None and c["duplicates"] is None and c["dead_lettered"] is None
    assert m["queue_depth"] == {"max": None, "mean": None, "p95": None} and m["thread_utilization"] is None
    assert m["error_rate"] == pytest.approx(c["failed"] / 30) and c["failed"] > 0
    assert m["throughput_tps"] == pytest.approx(c["succeeded"] / m["elapsed_s"])
    assert m["ceiling_tps"] == pytest.approx(2000.0)
    assert m["efficiency"] == pytest.approx(m["throughput_tps"] / 2000.0)


@pytest.mark.timeout(40)
def test_cli_runs_the_sample_file(tmp_path):
    proc = _cli("--tasks", SAMPLE, "--store", str(tmp_path), "--latency-ms", "0", "--json", str(tmp_path / "m.json"))
    assert proc.returncode == 0, proc.stderr
    m = json.loads((tmp_path / "m.json").read_text())
    with open(SAMPLE) as f:
        sample = json.load(f)
    assert m["tasks_submitted"] == len(sample)
    assert m["counters"]["failed"] == 1                      # the "abc" size; the duplicate runs again
    assert m["counters"]["succeeded"] == len(sample) - 1
    for task in sample:
        if task.get("size", task.get("variant")) != "abc":
            assert _verify(str(tmp_path), task) is None


@pytest.mark.timeout(40)
@pytest.mark.parametrize("content", ["{not json", '{"a": 1}', "\xff"])
def test_cli_bad_tasks_file_exits_2(tmp_path, content):
    path = tmp_path / "tasks.json"
    path.write_bytes(content.encode("latin-1"))
    proc = _cli("--tasks", str(path))
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


@pytest.mark.timeout(40)
@pytest.mark.parametrize("args", [["--workers", "0"], ["--transient-rate", "2"], ["--count", "x"],
                                  ["--tasks", "/nonexistent/tasks.json"]])
def test_cli_bad_arguments_exit_2(args):
    proc = _cli(*args)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_notes_line_references():
    """input_new/notes.md cites `Lnnn `text``: the text must really be on that line of the baseline."""
    import re
    with open(SCRIPT, encoding="utf-8") as f:
        lines = f.read().splitlines()
    with open(os.path.join(ROOT, "input_new", "notes.md"), encoding="utf-8") as f:
        notes = f.read()
    refs = re.findall(r"L(\d+) `([^`\n]+)`", notes)
    assert len(refs) >= 15
    for number, text in refs:
        assert text in lines[int(number) - 1], (number, text, lines[int(number) - 1])


def _odd_sources():
    """Sources beyond the generated ones: GIF, BMP, palette with transparency, LA, CMYK JPEG."""
    import io

    from PIL import Image
    base = Image.linear_gradient("L").resize((120, 90)).convert("RGB")
    made = {}
    for name, im, fmt in (("g.gif", base.convert("P"), "GIF"), ("b.bmp", base, "BMP"),
                          ("la.png", Image.merge("LA", (base.convert("L"), base.convert("L"))), "PNG"),
                          ("cmyk.jpg", base.convert("CMYK"), "JPEG")):
        out = io.BytesIO()
        im.save(out, fmt, **({"transparency": 0} if fmt == "GIF" else {}))
        made[name] = out.getvalue()
    return made


@pytest.mark.timeout(60)
def test_baseline_transform_is_the_engines_byte_for_byte():
    """Same inputs, same variant bytes (so every ratio compares like with like), and the same failures."""
    sources = {f"agree/{n}.{ext}": image_bytes(f"agree/{n}.{ext}", *size)
               for n, (ext, size) in enumerate([("jpg", (640, 480)), ("png", (300, 200)), ("webp", (200, 260)),
                                                ("jpg", (2000, 1500)), ("png", (40, 30)), ("webp", (64, 48))]
                                               + [(("jpg", "png", "webp")[k % 3], (97, 61)) for k in range(12)])}
    sources.update(_odd_sources())
    compared = 0
    for key, data in sources.items():
        for box in ((1, 1), (50, 50), (200, 200), (100, 30), (8192, 8192)):
            made = make_variant([data], *box)
            try:
                engine = b"".join(made.chunks())
            finally:
                made.close()
            assert bl.transform(*box, data) == engine, (key, box)
            compared += 1
    assert compared == len(sources) * 5
    jpeg = sources["agree/0.jpg"]
    for bad, engine_class in ((b"", "NotAnImage"), (b"hello world" * 100, "NotAnImage"),
                              (jpeg[:len(jpeg) // 2], "ImageTruncated")):
        with pytest.raises(Exception) as engine_err:
            make_variant([bad], 100, 100)
        assert type(engine_err.value).__name__ == engine_class
        with pytest.raises(bl.TaskFailed, match=f"^{engine_class}: "):
            bl.transform(100, 100, bad)
    with pytest.raises(bl.TaskFailed, match="^DecompressionBomb: "):
        bl.transform(100, 100, jpeg, max_pixels=1000)


def _photo(path, size=(333, 222)):
    """A 'user's photo': a real JPEG whose size is not what the tasks say."""
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.linear_gradient("L").resize(size).convert("RGB").save(path, "JPEG", quality=70)
    return path.read_bytes()


@pytest.mark.timeout(40)
def test_cli_never_overwrites_an_existing_source(tmp_path):
    """Regression (issue 10): the baseline replaced a user's JPEG whose size differed from object_bytes."""
    store = tmp_path / "photos"
    before = _photo(store / "holiday" / "beach.jpg")
    odd = store / "notes.png"
    odd.write_bytes(b"not really a png")              # any content, any size: still left alone
    tasks = [{"task_id": "a", "image_key": "holiday/beach.jpg", "size": "100x100", "source_size": "4000x3000",
              "object_bytes": 16384},
             {"task_id": "b", "image_key": "notes.png", "size": "100x100"},
             {"task_id": "c", "image_key": "new/made.webp", "size": "100x100", "source_size": "80x60"}]
    task_file = tmp_path / "tasks.json"
    task_file.write_text(json.dumps(tasks))
    proc = _cli("--tasks", str(task_file), "--store", str(store), "--latency-ms", "0", "--json",
                str(tmp_path / "m.json"))
    assert proc.returncode == 0, proc.stderr
    assert (store / "holiday" / "beach.jpg").read_bytes() == before
    assert odd.read_bytes() == b"not really a png"
    assert (store / "new" / "made.webp").read_bytes() == image_bytes("new/made.webp", 80, 60)   # only the missing one
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["counters"]["succeeded"] == 2 and m["counters"]["failed"] == 1    # notes.png is not an image
    from PIL import Image
    with Image.open(store / "variants" / "holiday" / "beach.jpg@100x100") as im:
        assert im.format == "JPEG" and im.size == (100, 67)                    # 333x222 fitted, not 4000x3000


def test_generated_tasks_and_sources_are_the_engines():
    """The baseline's CLI workload is runners.workload.make_tasks' (same tasks, same source bytes), so the
    two command lines compare like with like."""
    from runners.workload import make_tasks
    assert bl.generate_tasks(40, 3) == make_tasks(40, seed=3)
    gen = bl._sibling("generate_tasks")
    for task in make_tasks(6, seed=2):
        assert gen.image_bytes(task["image_key"], *source_size_of(task)) == \
            image_bytes(task["image_key"], *source_size_of(task))


@pytest.mark.timeout(40)
@pytest.mark.parametrize("flag, where", [("--json", "folder"), ("--json", "under-a-file"), ("--store", "a-file")])
def test_cli_output_paths_are_checked_before_the_run(tmp_path, flag, where):
    """--json naming a folder failed only after the whole run (exit 1, the figures lost), and --store naming a
    file ended in a FileExistsError (exit 1): both are one line and exit 2 now, before any work."""
    a_file = tmp_path / "tasks.json"
    a_file.write_text("[]")
    target = {"folder": tmp_path, "under-a-file": a_file / "m.json", "a-file": a_file}[where]
    proc = _cli("--count", "20000", "--latency-ms", "0", flag, str(target))
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and flag in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ""            # no run happened
    assert a_file.read_text() == "[]"
