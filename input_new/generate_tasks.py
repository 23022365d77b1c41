#!/usr/bin/env python3
"""Write a reproducible task file and the source objects it names.

    python input_new/generate_tasks.py --count 1000 --seed 7 --out data/tasks.json --objects data/objects

Same arguments, same bytes: the task file and every object are functions of the arguments only. A
`--duplicate-fraction` share of the tasks repeat another task's image_key + size under a new task_id; an
`--invalid-fraction` share are malformed (bad size, missing field, key escaping the store) and must fail.
Object content follows docs/CONTRACTS.md (block i of key k = Random(f"{k}|{i}").randbytes(65536)); this
file carries its own copy of that function (deliberately: standard library only, no `lab` import).
Exit codes: 0 ok, 1 writing failed, 2 bad arguments (one line on stderr).
"""
import argparse
import json
import os
import random
import sys
import tempfile

BLOCK = 65536
SIZES = ("100x100", "200x200", "320x240", "400x300", "640x480", "800x600", "1024x768")
# Each kind of invalid task the generator can produce, cycled through in order.
INVALID_KINDS = ("bad_size", "missing_size", "missing_key", "escaping_key", "zero_size")


def object_chunks(image_key, nbytes):
    """Deterministic content of object `image_key` (deliberate copy of runners.workload.object_chunks)."""
    index = 0
    while nbytes > 0:
        block = random.Random(f"{image_key}|{index}").randbytes(BLOCK)
        yield block[:min(BLOCK, nbytes)]
        nbytes -= BLOCK
        index += 1


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def build_parser():
    p = _Parser(prog="generate_tasks.py",
                description="Write COUNT tasks (a JSON list) to OUT and their source objects under DIR; the "
                            "same arguments always give the same bytes.")
    p.add_argument("--count", type=int, required=True, help="number of tasks (>= 0)")
    p.add_argument("--seed", type=int, default=0, help="seed of everything random here (default 0)")
    p.add_argument("--out", required=True, metavar="FILE", help="task file to write (atomically)")
    p.add_argument("--objects", metavar="DIR",
                   help="store directory to write the source objects into; omitted: tasks file only")
    p.add_argument("--duplicate-fraction", type=float, default=0.0, metavar="F",
                   help="share of tasks that repeat another task's image_key + size (default 0)")
    p.add_argument("--invalid-fraction", type=float, default=0.0, metavar="F",
                   help="share of malformed tasks that must fail validation (default 0)")
    p.add_argument("--min-bytes", type=int, default=16384, help="smallest source object (default 16384)")
    p.add_argument("--max-bytes", type=int, default=16384, help="largest source object (default 16384)")
    return p


def check_args(args):
    """Return a one-line complaint about the arguments, or None."""
    if args.count < 0:
        return "--count must be >= 0"
    for name in ("duplicate_fraction", "invalid_fraction"):
        value = getattr(args, name)
        if not 0.0 <= value <= 1.0:
            return f"--{name.replace('_', '-')} must be within 0..1"
    if args.duplicate_fraction + args.invalid_fraction > 1.0:
        return "--duplicate-fraction + --invalid-fraction must not exceed 1"
    if args.min_bytes < 0 or args.max_bytes < args.min_bytes:
        return "need 0 <= --min-bytes <= --max-bytes"
    n_dup, n_inv = counts(args)
    if n_dup and args.count - n_dup - n_inv < 1:
        return "duplicates need at least one valid task to repeat; lower the fractions"
    return None


def counts(args):
    """(duplicates, invalid): exact counts, rounded from the fractions."""
    return round(args.count * args.duplicate_fraction), round(args.count * args.invalid_fraction)


def invalid_task(kind, index, rng):
    key = f"img/bad/{index:06d}.raw"
    if kind == "bad_size":
        return {"image_key": key, "size": "abc", "object_bytes": 1024}
    if kind == "missing_size":
        return {"image_key": key, "object_bytes": 1024}
    if kind == "missing_key":
        return {"size": rng.choice(SIZES), "object_bytes": 1024}
    if kind == "escaping_key":
        return {"image_key": f"../outside/{index:06d}.raw", "size": rng.choice(SIZES), "object_bytes": 1024}
    return {"image_key": key, "size": "0x0", "object_bytes": 1024}


def make_tasks(args):
    """The task list: valid tasks, duplicates of them and invalid ones, shuffled, then numbered."""
    rng = random.Random(f"generate_tasks|{args.seed}")
    n_dup, n_inv = counts(args)
    n_valid = args.count - n_dup - n_inv
    valid = [{"image_key": f"img/{args.seed}/{i:06d}.raw", "size": rng.choice(SIZES),
              "object_bytes": rng.randint(args.min_bytes, args.max_bytes)} for i in range(n_valid)]
    duplicates = [dict(valid[rng.randrange(n_valid)]) for _ in range(n_dup)]
    invalid = [invalid_task(INVALID_KINDS[i % len(INVALID_KINDS)], i, rng) for i in range(n_inv)]
    tasks = valid + duplicates + invalid
    rng.shuffle(tasks)
    return [{"task_id": f"t{args.seed}-{i:06d}", **task} for i, task in enumerate(tasks)]


def object_keys(tasks):
    """{image_key: nbytes} for every task whose key is a safe relative path (invalid keys are skipped)."""
    keys = {}
    for task in tasks:
        key = task.get("image_key")
        if not isinstance(key, str) or key in keys:
            continue
        parts = key.split("/")
        if key.startswith("/") or "\\" in key or any(part in ("", ".", "..") for part in parts):
            continue
        keys[key] = task["object_bytes"]
    return keys


def atomic_write(path, chunks):
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".gen-", suffix=".tq-tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            if hasattr(os, "fchmod"):   # the mode a plain open() would give (mkstemp makes it 0600)
                mask = os.umask(0o022)
                os.umask(mask)
                os.fchmod(f.fileno(), 0o666 & ~mask)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def main(argv=None):
    args = build_parser().parse_args(argv)
    problem = check_args(args)
    if problem:
        print(f"generate_tasks.py: error: {problem}", file=sys.stderr)
        return 2
    tasks = make_tasks(args)
    try:
        if args.objects:
            for key, nbytes in sorted(object_keys(tasks).items()):
                atomic_write(os.path.join(args.objects, *key.split("/")), object_chunks(key, nbytes))
        text = json.dumps(tasks, indent=1) + "\n"
        atomic_write(args.out, [text.encode("utf-8")])
    except OSError as exc:
        print(f"generate_tasks.py: error: cannot write: {exc}", file=sys.stderr)
        return 1
    n_dup, n_inv = counts(args)
    print(f"wrote {len(tasks)} tasks ({n_dup} duplicates, {n_inv} invalid) to {args.out}"
          + (f", objects under {args.objects}" if args.objects else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
