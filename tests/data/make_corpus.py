"""Regenerate the hostile-input corpus in this directory: `python tests/data/make_corpus.py`.

File-level problems (each must give exit code 2 and one line on stderr naming the problem and where):
  not_json.json, truncated_after_task.json, truncated_in_object.json, truncated_in_string.json,
  object_not_list.json, empty_file.json, non_utf8.json, utf16.json, trailing_garbage.json,
  missing_comma.json; and empty_list.json, which is fine (exit 0).
Task-level problems: hostile_tasks.json, a list mixing good tasks ("case": "good") with bad ones, each
bad one carrying "case" (what it is) and "expect" (a fragment of the reason it must be refused with).
The 50 MB file, the 1 MB key, surrogates and symlinks are made at test time (see tests/test_hostile.py).
"""
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))


def w(name, data):
    with open(os.path.join(HERE, name), "wb" if isinstance(data, bytes) else "w", encoding=None
              if isinstance(data, bytes) else "utf-8") as f:
        f.write(data)


def good(i, **kw):
    return {"task_id": f"good-{i}", "image_key": f"good/{i:03d}.raw", "size": "10x10", "object_bytes": 1000 + i,
            "case": "good", **kw}


BAD = [
    # (case, expected reason fragment, task)
    ("missing image_key", "missing field image_key", {"size": "10x10"}),
    ("missing size", "missing field size", {"image_key": "bad/missing-size.raw"}),
    ("image_key not a string", "image_key must be a non-empty string", {"image_key": 5, "size": "10x10"}),
    ("image_key null", "image_key must be a non-empty string", {"image_key": None, "size": "10x10"}),
    ("image_key list", "image_key must be a non-empty string", {"image_key": ["a"], "size": "10x10"}),
    ("size not a string", "size/variant must be a string", {"image_key": "bad/int-size.raw", "size": 100}),
    ("object_bytes a string", "object_bytes", {"image_key": "bad/ob.raw", "size": "10x10", "object_bytes": "lots"}),
    ("object_bytes negative", "object_bytes", {"image_key": "bad/obneg.raw", "size": "10x10", "object_bytes": -1}),
    ("task_id an object", "task_id", {"task_id": {"x": 1}, "image_key": "bad/tid.raw", "size": "10x10"}),
    ("empty image_key", "image_key must be a non-empty string", {"image_key": "", "size": "10x10"}),
    ("empty size", "not a size", {"image_key": "bad/empty-size.raw", "size": ""}),
    ("empty task_id", "task_id", {"task_id": "", "image_key": "bad/empty-tid.raw", "size": "10x10"}),
    ("dotdot escape", "'..' path component", {"image_key": "../../etc/passwd", "size": "10x10"}),
    ("absolute path", "absolute path", {"image_key": "/etc/passwd", "size": "10x10"}),
    ("inner dotdot", "'..' path component", {"image_key": "a/../../b", "size": "10x10"}),
    ("NUL byte", "NUL byte", {"image_key": "a\u0000b.raw", "size": "10x10"}),
    ("backslash", "backslash", {"image_key": "..\\..\\etc\\passwd", "size": "10x10"}),
    ("dot component", "path component", {"image_key": ".", "size": "10x10"}),
    ("empty component", "empty", {"image_key": "a//b.raw", "size": "10x10"}),
    ("output area", "variants/", {"image_key": "variants/x.raw", "size": "10x10"}),
    ("variant 0x0", "outside 1..8192", {"image_key": "bad/v0.raw", "size": "0x0"}),
    ("variant 99999x1", "outside 1..8192", {"image_key": "bad/v9.raw", "size": "99999x1"}),
    ("variant abc", "not a size", {"image_key": "bad/vabc.raw", "size": "abc"}),
    ("variant -5x5", "not a size", {"image_key": "bad/vneg.raw", "size": "-5x5"}),
    ("variant 8193x1", "outside 1..8192", {"image_key": "bad/v8193.raw", "size": "8193x1"}),
    ("variant field", "not a size", {"image_key": "bad/vfield.raw", "variant": "10x10x10"}),
    ("missing source object", "does not exist", {"image_key": "bad/no-such-object.raw", "size": "10x10"}),
]
NOT_OBJECTS = [42, "a task", None, [], True]


def main():
    first = json.dumps(good(1, task_id="g1"))
    w("not_json.json", "this is not JSON, it is a sentence.\n")
    w("truncated_after_task.json", "[\n  " + first + ",\n")
    w("truncated_in_object.json", "[\n  " + first + ',\n  {"task_id": "g2", "image_key": "good/b.raw"')
    w("truncated_in_string.json", "[\n  " + first + ',\n  {"task_id": "g2", "image_key": "good/b.r')
    w("object_not_list.json", first + "\n")
    w("empty_list.json", "[]\n")
    w("empty_file.json", "")
    w("non_utf8.json", b'[\n  {"task_id": "g1", "image_key": "caf\xe9.raw", "size": "10x10"}\n]\n')
    w("utf16.json", "[]".encode("utf-16"))
    w("trailing_garbage.json", "[\n  " + first + "\n]\nrm -rf /\n")
    w("missing_comma.json", "[\n  " + first + "\n  " + first + "\n]\n")

    tasks = [good(i) for i in range(6)]
    for n, (case, expect, task) in enumerate(BAD):
        t = dict(task)
        if "task_id" not in t:
            t["task_id"] = f"bad-{n:02d}"
        t.update(case=case, expect=expect)
        tasks.append(t)
        if n % 5 == 0:
            tasks.append(good(100 + n))
    tasks += NOT_OBJECTS
    variant_abc = next(t for t in tasks if isinstance(t, dict) and t.get("case") == "variant abc")
    tasks.append(dict(variant_abc, task_id="bad-again"))           # a duplicate of a dead task: one row
    tasks.append(good(0, task_id="conflict-1", object_bytes=9999, case="conflict", expect="conflict"))
    tasks.append(good(1, task_id="dup-1"))                          # a duplicate of a good task
    w("hostile_tasks.json", json.dumps(tasks, indent=1) + "\n")


if __name__ == "__main__":
    main()
