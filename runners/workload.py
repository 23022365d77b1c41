"""Deterministic source images and task sets, shared by the CLI, the benchmark and the lab trials.

A source image is a function of its key and its size only (docs/CONTRACTS.md, "Source objects"): the
format follows the key's extension (.jpg/.jpeg JPEG, .png PNG, .webp WebP, anything else PNG); the
picture is a smooth colour field drawn from Random(f"image|{key}") with fine noise on it (so JPEG and
WebP sizes and decode times are those of a photo, not of a flat gradient) and a red block in its
top-left corner as displayed; a third of the PNG and WebP sources have an alpha channel, and a third of
the JPEG and WebP sources are stored rotated or mirrored with the EXIF orientation (2..8) that turns them
upright again, so a variant that ignores EXIF shows the red block elsewhere. Same Pillow, same bytes.

Task sets name their source's size in `source_size` ("WxH", as displayed); `ensure_objects` creates a
missing source at that size (or at the preset it is given), and never touches an existing object,
whatever its size or content: a user's folder is never written over.

`object_chunks` (opaque random bytes, block i of key k = Random(f"{k}|{i}").randbytes(65536)) stays for
tests of the object stores and of non-image sources.
"""
from __future__ import annotations

import io
import math
import os
import random
import re

BLOCK = 65536
# image_size presets: (smallest, largest) displayed size; each source draws its own within the range
IMAGE_SIZES = {
    "tiny": ((16, 12), (32, 24)),          # tests and the synthetic (latency-bound) grids: JPEG only, ~0.5 ms
    "small": ((640, 480), (640, 480)),     # a web image
    "large": ((4000, 3000), (4000, 3000)), # a 12-megapixel photo
}
DEFAULT_IMAGE_SIZE = "tiny"
FORMAT_BY_EXTENSION = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP"}
EXTENSIONS = ("jpg", "png", "webp")
# what make_tasks names its sources when not told: the synthetic "tiny" workload is the cheapest real
# thumbnail there is (a JPEG: PNG and WebP encoders cost 0.3-0.5 ms more per task, fixed), so that
# queue-mechanics figures stay about the queue; every real size mixes the three formats
DEFAULT_EXTENSIONS = {"tiny": ("jpg",)}
SOURCE_QUALITY = 90
_WXH = re.compile(r"([0-9]{1,5})x([0-9]{1,5})")
MAX_SOURCE_SIDE = 16383     # WebP's limit, and far beyond any preset


def object_chunks(image_key, nbytes):
    """Yield the deterministic opaque content of object `image_key` with `nbytes` bytes, block by block."""
    index = 0
    remaining = nbytes
    while remaining > 0:
        block = random.Random(f"{image_key}|{index}").randbytes(BLOCK)
        take = min(BLOCK, remaining)
        yield block[:take]
        remaining -= take
        index += 1


def write_object(root, image_key, nbytes):
    """Create <root>/<image_key> with opaque deterministic bytes (not an image), streamed through the object
    store (temp file, then rename); returns the path."""
    from tqengine.objects.local import LocalObjectStore
    store = LocalObjectStore(root)
    store.write_chunks(image_key, object_chunks(image_key, nbytes))
    return store.path_for(image_key)


# -- source images ---------------------------------------------------------------------------------
def image_format_for(image_key):
    """JPEG, PNG or WEBP, from the key's extension (PNG when it has none of .jpg/.jpeg/.png/.webp)."""
    return FORMAT_BY_EXTENSION.get(os.path.splitext(image_key)[1].lower(), "PNG")


def parse_size(text):
    """(w, h) of a 'WxH' string with 1 <= w, h <= 16383, else None."""
    match = _WXH.fullmatch(text) if isinstance(text, str) else None
    if not match:
        return None
    w, h = int(match.group(1)), int(match.group(2))
    return (w, h) if 1 <= w <= MAX_SOURCE_SIDE and 1 <= h <= MAX_SOURCE_SIDE else None


def size_range(image_size):
    """((wmin, hmin), (wmax, hmax)) for a preset name, a (w, h) pair, a 'WxH' string, or a pair of pairs."""
    if isinstance(image_size, str):
        if image_size in IMAGE_SIZES:
            return IMAGE_SIZES[image_size]
        fixed = parse_size(image_size)
        if fixed:
            return fixed, fixed
        raise ValueError(f"image_size {image_size!r}: expected one of {', '.join(IMAGE_SIZES)} or WxH")
    if (isinstance(image_size, (tuple, list)) and len(image_size) == 2
            and all(isinstance(v, int) for v in image_size)):
        return tuple(image_size), tuple(image_size)
    if (isinstance(image_size, (tuple, list)) and len(image_size) == 2
            and all(isinstance(p, (tuple, list)) and len(p) == 2 for p in image_size)):
        (w0, h0), (w1, h1) = image_size
        if 1 <= w0 <= w1 and 1 <= h0 <= h1:
            return (w0, h0), (w1, h1)
    raise ValueError(f"image_size {image_size!r}: expected one of {', '.join(IMAGE_SIZES)}, (w, h) or WxH")


def draw_size(image_key, image_size=DEFAULT_IMAGE_SIZE):
    """The displayed size of `image_key`'s source within the image_size range (deterministic per key)."""
    (w0, h0), (w1, h1) = size_range(image_size)
    rng = random.Random(f"size|{image_key}")
    width = rng.randint(w0, w1)
    # keep the aspect ratio within 0.6..1/0.6 where the range allows, so even a 1x1 variant has no side of 0
    low, high = max(h0, math.ceil(width * 0.6)), min(h1, math.floor(width / 0.6))
    return width, (rng.randint(low, high) if low <= high else rng.randint(h0, h1))


def image_spec(image_key, width, height):
    """{format, width, height, alpha, orientation} of the deterministic source `image_key` at width x height."""
    fmt = image_format_for(image_key)
    rng = random.Random(f"spec|{image_key}")
    alpha = fmt in ("PNG", "WEBP") and rng.random() < 1 / 3
    orientation = rng.randint(2, 8) if fmt in ("JPEG", "WEBP") and rng.random() < 1 / 3 else 1
    return {"format": fmt, "width": width, "height": height, "alpha": alpha, "orientation": orientation}


# the stored pixels for each orientation: upright.transpose(STORE[o]) is what a camera writes, and
# ImageOps.exif_transpose turns it back (the inverse transposition)
_STORE = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE", 6: "ROTATE_90",
          7: "TRANSVERSE", 8: "ROTATE_270"}


def upright_image(image_key, width, height, alpha=False):
    """The source as displayed: a Pillow image, RGB or RGBA."""
    from PIL import Image
    rng = random.Random(f"image|{image_key}")
    grid = Image.frombytes("RGB", (8, 6), rng.randbytes(8 * 6 * 3))
    im = grid.resize((width, height), Image.Resampling.BILINEAR)
    nw, nh = max(1, width // 2), max(1, height // 2)
    grain = Image.frombytes("L", (nw, nh), rng.randbytes(nw * nh)).resize((width, height), Image.Resampling.NEAREST)
    im = Image.blend(im, Image.merge("RGB", (grain, grain, grain)), 0.15)
    mark_w, mark_h = max(1, width // 4), max(1, height // 4)
    im.paste((230, 20, 20), (0, 0, mark_w, mark_h))         # the red block: top-left as displayed
    if alpha:
        mask = Image.linear_gradient("L").resize((width, height), Image.Resampling.BILINEAR)
        mask.paste(255, (0, 0, mark_w, mark_h))
        im.putalpha(mask)
    return im


def image_bytes(image_key, width, height):
    """The encoded deterministic source image `image_key` at width x height (displayed)."""
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


def image_chunks(image_key, width, height, chunk_size=BLOCK):
    data = image_bytes(image_key, width, height)
    for start in range(0, len(data), chunk_size):
        yield data[start:start + chunk_size]


def source_size_of(task, image_size=DEFAULT_IMAGE_SIZE):
    """The displayed size a task's source is created at: its `source_size`, else drawn from image_size."""
    fixed = parse_size(task.get("source_size")) if isinstance(task, dict) else None
    return fixed or draw_size(task["image_key"], image_size)


def write_image(root, image_key, width, height):
    """Create (or replace: only for callers that own `root`) <root>/<image_key> as the deterministic source."""
    from tqengine.objects.local import LocalObjectStore
    store = LocalObjectStore(root)
    store.write_chunks(image_key, image_chunks(image_key, width, height))
    return store.path_for(image_key)


def ensure_objects(tasks, root, store=None, image_size=DEFAULT_IMAGE_SIZE):
    """Create every source image the tasks name that does not exist yet; an existing object (any size,
    any content) is left exactly as it is. Skips tasks too broken to name an object and keys that would
    land outside the root (checked like the object store does, links resolved).

    `store`: an HTTP object store (tqengine.objects.http) to create them through instead of the local
    directory `root`. `image_size`: the preset, WxH or range for tasks without a `source_size`."""
    from tqengine.errors import PermanentError, TransientError, ValidationError
    from tqengine.objects.local import LocalObjectStore
    remote = store is not None and not isinstance(store, LocalObjectStore)
    if not remote:
        store = LocalObjectStore(root)
    seen = set()
    created = 0
    for task in tasks:
        if not isinstance(task, dict):
            continue
        key = task.get("image_key")
        if not isinstance(key, str) or not key or key in seen:
            continue
        seen.add(key)
        try:
            if remote:
                if store.exists(key):
                    continue
            else:
                path = store.path_for(key)
                if os.path.lexists(path):
                    continue          # whatever it is (a user's photo, a link, a folder): never written over
            width, height = source_size_of(task, image_size)
            store.write_chunks(key, image_chunks(key, width, height))
            created += 1
        except (ValidationError, PermanentError, TransientError):
            continue   # a refused key, or a server that fails: the task itself will say so
        except OSError:
            continue   # cannot exist here (name too long, a file where a folder must be): the task will say so
    return created


def make_tasks(count, seed=0, object_bytes=None, duplicate_rate=0.0, distinct_images=None,
               sizes=("100x100", "200x200", "400x300", "800x600"), image_size=DEFAULT_IMAGE_SIZE,
               extensions=None):
    """A reproducible list of `count` tasks on real images (`img/<seed>/<n>.jpg|png|webp`, the extension
    cycling with n through `extensions`); each names its `source_size` (drawn from image_size). A
    `duplicate_rate` share repeat an earlier task's key; `distinct_images` reuses that many sources (their
    tasks differ by size).
    `object_bytes`, when given, is recorded in each task as before (it no longer sizes the source).
    `extensions`: the cycle of source formats; default JPEG only for "tiny", all three otherwise."""
    if extensions is None:
        preset = image_size if isinstance(image_size, str) else None
        extensions = DEFAULT_EXTENSIONS.get(preset, EXTENSIONS)
    rng = random.Random(f"tasks|{seed}")
    tasks = []
    for i in range(count):
        if tasks and duplicate_rate and rng.random() < duplicate_rate:
            original = tasks[rng.randrange(len(tasks))]
            tasks.append(dict(original, task_id=f"t{i:06d}"))
            continue
        image = i if distinct_images is None else rng.randrange(distinct_images)
        key = f"img/{seed}/{image:06d}.{extensions[image % len(extensions)]}"
        width, height = draw_size(key, image_size)
        task = {"task_id": f"t{i:06d}", "image_key": key, "size": sizes[i % len(sizes)],
                "source_size": f"{width}x{height}"}
        if object_bytes is not None:
            task["object_bytes"] = object_bytes
        tasks.append(task)
    return tasks
