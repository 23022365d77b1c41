#!/usr/bin/env python3
"""Write a reproducible task file and the real source images it names, or a task file for your own photos.

    python input_new/generate_tasks.py --count 1000 --seed 7 --out data/tasks.json --objects data/objects
    python input_new/generate_tasks.py --from-dir ~/Pictures --sizes 200x200,800x600 --out data/photos.json

Generated mode: same arguments, same bytes (with the same Pillow): the task file and every image are
functions of the arguments only. Keys are `img/<seed>/<n>.jpg|png|webp` (the format cycles with n); each
image's displayed size is drawn per key within `--image-size` (WxH, or a range WxH-WxH; default
64x48-320x240) and recorded in the task as `source_size`. The images are those of docs/CONTRACTS.md
("Source objects"): a colour field with grain, a red block top-left as displayed, alpha on a third of the
PNG/WebP ones, an EXIF orientation on a third of the JPEG/WebP ones. This file carries its own copy of
runners.workload's image code (deliberately: it imports nothing of the project; Pillow only), and
tests/test_generator.py checks the two give the same bytes. A `--duplicate-fraction` share of the tasks
repeat another task's image_key + size under a new task_id; an `--invalid-fraction` share are malformed
(bad size, missing field, key escaping the store) and must fail. With `--objects DIR` the images are
written there, but only those missing: an existing file is never replaced, whatever it holds.

From-dir mode: one task per image file under DIR (.jpg .jpeg .png .webp .gif .bmp, any case) and per
`--sizes` entry, keys relative to DIR; DIR is only read (use it as the engine's --store; the variants go
to DIR/variants/, which is skipped here). The task file may not be written inside DIR.

Exit codes: 0 ok, 1 writing failed, 2 bad arguments (one line on stderr).
"""
import argparse
import io
import json
import math
import os
import random
import re
import sys
import tempfile

SIZES = ("100x100", "200x200", "320x240", "400x300", "640x480", "800x600", "1024x768")
# Each kind of invalid task the generator can produce, cycled through in order.
INVALID_KINDS = ("bad_size", "missing_size", "missing_key", "escaping_key", "zero_size")
EXTENSIONS = ("jpg", "png", "webp")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")
DEFAULT_IMAGE_SIZE = "64x48-320x240"
_WXH = re.compile(r"([0-9]{1,5})x([0-9]{1,5})")
MAX_SOURCE_SIDE = 16383
MAX_COUNT = 10_000_000      # tasks a call may generate


# -- a deliberate copy of runners.workload's source images (tests/test_generator.py checks they agree) ----
FORMAT_BY_EXTENSION = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP"}
SOURCE_QUALITY = 90
_STORE = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE", 6: "ROTATE_90",
          7: "TRANSVERSE", 8: "ROTATE_270"}


def image_format_for(image_key):
    return FORMAT_BY_EXTENSION.get(os.path.splitext(image_key)[1].lower(), "PNG")


def draw_size(image_key, size_range):
    (w0, h0), (w1, h1) = size_range
    rng = random.Random(f"size|{image_key}")
    width = rng.randint(w0, w1)
    low, high = max(h0, math.ceil(width * 0.6)), min(h1, math.floor(width / 0.6))
    return width, (rng.randint(low, high) if low <= high else rng.randint(h0, h1))


def image_spec(image_key, width, height):
    fmt = image_format_for(image_key)
    rng = random.Random(f"spec|{image_key}")
    alpha = fmt in ("PNG", "WEBP") and rng.random() < 1 / 3
    orientation = rng.randint(2, 8) if fmt in ("JPEG", "WEBP") and rng.random() < 1 / 3 else 1
    return {"format": fmt, "width": width, "height": height, "alpha": alpha, "orientation": orientation}


def upright_image(image_key, width, height, alpha=False):
    from PIL import Image
    rng = random.Random(f"image|{image_key}")
    grid = Image.frombytes("RGB", (8, 6), rng.randbytes(8 * 6 * 3))
    im = grid.resize((width, height), Image.Resampling.BILINEAR)
    nw, nh = max(1, width // 2), max(1, height // 2)
    grain = Image.frombytes("L", (nw, nh), rng.randbytes(nw * nh)).resize((width, height), Image.Resampling.NEAREST)
    im = Image.blend(im, Image.merge("RGB", (grain, grain, grain)), 0.15)
    mark_w, mark_h = max(1, width // 4), max(1, height // 4)
    im.paste((230, 20, 20), (0, 0, mark_w, mark_h))
    if alpha:
        mask = Image.linear_gradient("L").resize((width, height), Image.Resampling.BILINEAR)
        mask.paste(255, (0, 0, mark_w, mark_h))
        im.putalpha(mask)
    return im


def image_bytes(image_key, width, height):
    from PIL import Image
    spec = image_spec(image_key, width, height)
    im = upright_image(image_key, width, height, spec["alpha"])
    params = {}
    if spec["orientation"] != 1:
        im = im.transpose(getattr(Image.Transpose, _STORE[spec["orientation"]]))
        exif = Image.Exif()
        exif[0x0112] = spec["orientation"]
        params["exif"] = exif.tobytes()
    if spec["format"] == "JPEG":
        params.update(quality=SOURCE_QUALITY)
    elif spec["format"] == "WEBP":
        params.update(quality=SOURCE_QUALITY, method=0)
    else:
        params.update(compress_level=1)
    out = io.BytesIO()
    im.save(out, format=spec["format"], **params)
    return out.getvalue()
# ---------------------------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def build_parser():
    p = _Parser(prog="generate_tasks.py",
                description="Write COUNT image tasks (a JSON list) to OUT and their real source images under "
                            "DIR (the same arguments always give the same bytes), or, with --from-dir, a task "
                            "file for the images in a folder of your own.")
    p.add_argument("--count", type=int, help="number of generated tasks (>= 0; required without --from-dir)")
    p.add_argument("--seed", type=int, default=0, help="seed of everything random here (default 0)")
    p.add_argument("--out", required=True, metavar="FILE", help="task file to write (atomically)")
    p.add_argument("--objects", metavar="DIR",
                   help="store directory to create the missing source images in (existing files are never "
                        "replaced); omitted: tasks file only")
    p.add_argument("--image-size", default=DEFAULT_IMAGE_SIZE, metavar="WxH[-WxH]",
                   help=f"displayed size of the generated images, or a range to draw each from "
                        f"(default {DEFAULT_IMAGE_SIZE})")
    p.add_argument("--sizes", metavar="WxH,...",
                   help="variant sizes: with --from-dir one task per image and size (required there); "
                        f"generated tasks draw from them (default {','.join(SIZES)})")
    p.add_argument("--from-dir", metavar="DIR",
                   help="make tasks for the image files under DIR (keys relative to DIR; DIR is only read)")
    p.add_argument("--duplicate-fraction", type=float, default=0.0, metavar="F",
                   help="share of tasks that repeat another task's image_key + size (default 0)")
    p.add_argument("--invalid-fraction", type=float, default=0.0, metavar="F",
                   help="share of malformed tasks that must fail validation (default 0)")
    return p


def parse_wxh(text, low=1, high=MAX_SOURCE_SIDE):
    match = _WXH.fullmatch(text.strip())
    if not match:
        return None
    w, h = int(match.group(1)), int(match.group(2))
    return (w, h) if low <= w <= high and low <= h <= high else None


def parse_size_range(text):
    """((wmin, hmin), (wmax, hmax)) of 'WxH' or 'WxH-WxH', else None."""
    parts = text.split("-")
    if len(parts) == 1:
        size = parse_wxh(parts[0])
        return (size, size) if size else None
    if len(parts) == 2:
        lo, hi = parse_wxh(parts[0]), parse_wxh(parts[1])
        if lo and hi and lo[0] <= hi[0] and lo[1] <= hi[1]:
            return lo, hi
    return None


def parse_sizes(text):
    sizes = [s.strip() for s in text.split(",") if s.strip()]
    if not sizes or any(parse_wxh(s, high=8192) is None for s in sizes):
        return None
    return sizes


def check_args(args):
    """Return a one-line complaint about the arguments, or None."""
    problem = _check_paths(args)
    if problem:
        return problem
    if args.sizes is not None and parse_sizes(args.sizes) is None:
        return "--sizes must be a comma-separated list of WxH with 1 <= W,H <= 8192"
    if args.from_dir is not None:
        if not os.path.isdir(args.from_dir):
            return f"--from-dir {args.from_dir}: not a directory"
        if args.sizes is None:
            return "--from-dir needs --sizes WxH,..."
        for flag, given in (("--count", args.count is not None), ("--objects", args.objects is not None),
                            ("--duplicate-fraction", args.duplicate_fraction), ("--invalid-fraction",
                                                                               args.invalid_fraction)):
            if given:
                return f"{flag} does not go with --from-dir (the images are DIR's own)"
        if _inside(args.out, args.from_dir):
            return "--out may not be inside --from-dir: that folder is only read"
        return None
    if args.count is None:
        return "--count is required (or --from-dir DIR)"
    if not 0 <= args.count <= MAX_COUNT:
        return f"--count must be within 0..{MAX_COUNT:,} (the task list is built in memory)"
    if parse_size_range(args.image_size) is None:
        return f"--image-size must be WxH or WxH-WxH (1..{MAX_SOURCE_SIDE} a side, low <= high)"
    for name in ("duplicate_fraction", "invalid_fraction"):
        value = getattr(args, name)
        if not 0.0 <= value <= 1.0:
            return f"--{name.replace('_', '-')} must be within 0..1"
    if args.duplicate_fraction + args.invalid_fraction > 1.0:
        return "--duplicate-fraction + --invalid-fraction must not exceed 1"
    n_dup, n_inv = counts(args)
    if n_dup and args.count - n_dup - n_inv < 1:
        return "duplicates need at least one valid task to repeat; lower the fractions"
    return None


def _check_paths(args):
    """A complaint about --out or --objects, found before any work (not in a traceback after it), or None."""
    if os.path.isdir(args.out):
        return f"--out {args.out}: is a folder; give a file name"
    for flag, folder in (("--out", os.path.dirname(os.path.abspath(args.out))),
                         ("--objects", os.path.abspath(args.objects) if args.objects else None)):
        if folder is None:
            continue
        existing = folder
        while not os.path.exists(existing):
            existing = os.path.dirname(existing)
        if not os.path.isdir(existing):
            return f"{flag}: {existing} exists and is not a folder"
        if not os.access(existing, os.W_OK | os.X_OK):
            return f"{flag}: cannot write in {existing}"
    return None


def _inside(path, directory):
    path, directory = os.path.realpath(path), os.path.realpath(directory)
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


def counts(args):
    """(duplicates, invalid): exact counts, rounded from the fractions."""
    return round(args.count * args.duplicate_fraction), round(args.count * args.invalid_fraction)


def invalid_task(kind, index, rng, sizes):
    key = f"img/bad/{index:06d}.jpg"
    if kind == "bad_size":
        return {"image_key": key, "size": "abc"}
    if kind == "missing_size":
        return {"image_key": key}
    if kind == "missing_key":
        return {"size": rng.choice(sizes)}
    if kind == "escaping_key":
        return {"image_key": f"../outside/{index:06d}.jpg", "size": rng.choice(sizes)}
    return {"image_key": key, "size": "0x0"}


def make_tasks(args):
    """The task list: valid tasks, duplicates of them and invalid ones, shuffled, then numbered."""
    rng = random.Random(f"generate_tasks|{args.seed}")
    sizes = parse_sizes(args.sizes) if args.sizes else list(SIZES)
    size_range = parse_size_range(args.image_size)
    n_dup, n_inv = counts(args)
    n_valid = args.count - n_dup - n_inv
    valid = []
    for i in range(n_valid):
        key = f"img/{args.seed}/{i:06d}.{EXTENSIONS[i % len(EXTENSIONS)]}"
        width, height = draw_size(key, size_range)
        valid.append({"image_key": key, "size": rng.choice(sizes), "source_size": f"{width}x{height}"})
    duplicates = [dict(valid[rng.randrange(n_valid)]) for _ in range(n_dup)]
    invalid = [invalid_task(INVALID_KINDS[i % len(INVALID_KINDS)], i, rng, sizes) for i in range(n_inv)]
    tasks = valid + duplicates + invalid
    rng.shuffle(tasks)
    return [{"task_id": f"t{args.seed}-{i:06d}", **task} for i, task in enumerate(tasks)]


def tasks_from_dir(directory, sizes):
    """One task per image file under `directory` (sorted, links and variants/ skipped) and per size."""
    keys = []
    for dirpath, dirs, names in os.walk(directory):
        rel_dir = os.path.relpath(dirpath, directory)
        dirs[:] = sorted(d for d in dirs if not (rel_dir == "." and d in ("variants", ".tq-tmp"))
                         and not d.startswith(".") and not os.path.islink(os.path.join(dirpath, d)))
        for name in sorted(names):
            path = os.path.join(dirpath, name)
            if name.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(path) and not os.path.islink(path):
                keys.append(os.path.relpath(path, directory).replace(os.sep, "/"))
    return [{"task_id": f"p{n:06d}", "image_key": key, "size": size}
            for n, (key, size) in enumerate((k, s) for k in sorted(keys) for s in sizes)]


def object_keys(tasks):
    """{image_key: (w, h)} for every task whose key is a safe relative path (invalid keys are skipped)."""
    keys = {}
    for task in tasks:
        key = task.get("image_key")
        if not isinstance(key, str) or key in keys or "source_size" not in task:
            continue
        parts = key.split("/")
        if key.startswith("/") or "\\" in key or any(part in ("", ".", "..") for part in parts):
            continue
        keys[key] = parse_wxh(task["source_size"])
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


def create_missing(root, keys):
    """Write each image that does not exist under root yet; return how many were written."""
    made = 0
    for key, (width, height) in sorted(keys.items()):
        path = os.path.join(root, *key.split("/"))
        if os.path.lexists(path):
            continue            # never replace an existing file, whatever it holds
        atomic_write(path, [image_bytes(key, width, height)])
        made += 1
    return made


def main(argv=None):
    args = build_parser().parse_args(argv)
    problem = check_args(args)
    if problem:
        print(f"generate_tasks.py: error: {problem}", file=sys.stderr)
        return 2
    try:
        if args.from_dir is not None:
            tasks = tasks_from_dir(args.from_dir, parse_sizes(args.sizes))
            made = 0
        else:
            tasks = make_tasks(args)
            made = create_missing(args.objects, object_keys(tasks)) if args.objects else 0
        text = json.dumps(tasks, indent=1) + "\n"
        atomic_write(args.out, [text.encode("utf-8")])
    except OSError as exc:
        print(f"generate_tasks.py: error: cannot write: {exc}", file=sys.stderr)
        return 1
    if args.from_dir is not None:
        print(f"wrote {len(tasks)} tasks for {len(tasks) // max(1, len(parse_sizes(args.sizes)))} images under "
              f"{args.from_dir} to {args.out}", file=sys.stderr)
    else:
        n_dup, n_inv = counts(args)
        print(f"wrote {len(tasks)} tasks ({n_dup} duplicates, {n_inv} invalid) to {args.out}"
              + (f", {made} new images under {args.objects}" if args.objects else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
