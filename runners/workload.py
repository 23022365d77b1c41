"""Deterministic source objects and task sets, shared by the CLI, the benchmark and the lab trials.

Object content is defined in docs/CONTRACTS.md: block i of object k is Random(f"{k}|{i}").randbytes(65536).
"""
import os
import random

BLOCK = 65536


def object_chunks(image_key, nbytes):
    """Yield the deterministic content of object `image_key` with `nbytes` bytes, block by block."""
    index = 0
    remaining = nbytes
    while remaining > 0:
        block = random.Random(f"{image_key}|{index}").randbytes(BLOCK)
        take = min(BLOCK, remaining)
        yield block[:take]
        remaining -= take
        index += 1


def write_object(root, image_key, nbytes):
    """Create <root>/<image_key> with its deterministic content, streamed through the object store
    (temp file in its temp area, then rename); returns the path."""
    from tqengine.objects.local import LocalObjectStore
    store = LocalObjectStore(root)
    store.write_chunks(image_key, object_chunks(image_key, nbytes))
    return store.path_for(image_key)


MAX_CREATE_BYTES = 1 << 30


def ensure_objects(tasks, root, default_bytes=16 * 1024, max_bytes=MAX_CREATE_BYTES, store=None):
    """Create every source object the tasks name that is missing; skip tasks too broken to name one and
    keys that would land outside the root (checked like the object store does, links resolved).

    `store`: an HTTP object store (tqengine.objects.http) to create them through instead of the local
    directory `root`; an object is then missing when the server has none of the expected size."""
    from tqengine.errors import ValidationError
    from tqengine.objects.local import LocalObjectStore
    if store is not None and not isinstance(store, LocalObjectStore):
        return _ensure_remote_objects(tasks, store, default_bytes, max_bytes)
    store = LocalObjectStore(root)
    confine = store.path_for
    seen = set()
    for task in tasks:
        if not isinstance(task, dict):
            continue
        key = task.get("image_key")
        if not isinstance(key, str) or not key or key in seen:
            continue
        seen.add(key)
        try:
            path = confine(key)
        except ValidationError:
            continue
        if os.path.islink(path):
            continue
        nbytes = _object_bytes(task, default_bytes)
        if nbytes > max_bytes:
            continue   # not created: the task will fail with ObjectNotFound, which says why
        if os.path.isfile(path) and os.path.getsize(path) == nbytes:
            continue
        try:
            store.write_chunks(key, object_chunks(key, nbytes))
        except (OSError, ValidationError):
            continue   # cannot exist here (or only through a link) (name too long, a file where a folder must be): the task will say so


def _object_bytes(task, default_bytes):
    """The source size a task asks for (`object_bytes`), or default_bytes when it names none usable."""
    nbytes = task.get("object_bytes", default_bytes)
    if not isinstance(nbytes, int) or isinstance(nbytes, bool) or nbytes < 0:
        return default_bytes
    return nbytes


def _ensure_remote_objects(tasks, store, default_bytes, max_bytes):
    from tqengine.errors import PermanentError, TransientError
    seen = set()
    for task in tasks:
        key = task.get("image_key") if isinstance(task, dict) else None
        if not isinstance(key, str) or not key or key in seen:
            continue
        seen.add(key)
        nbytes = _object_bytes(task, default_bytes)
        if nbytes > max_bytes:
            continue
        try:
            if store.size(key) != nbytes:
                store.write_chunks(key, object_chunks(key, nbytes))
        except (PermanentError, TransientError):
            continue   # a refused key, or a server that fails: the task itself will say so


def make_tasks(count, seed=0, object_bytes=16 * 1024, duplicate_rate=0.0, distinct_images=None,
               sizes=("100x100", "200x200", "400x300", "800x600")):
    """A reproducible list of `count` tasks; a `duplicate_rate` share repeat an earlier task's key."""
    rng = random.Random(f"tasks|{seed}")
    tasks = []
    for i in range(count):
        if tasks and duplicate_rate and rng.random() < duplicate_rate:
            original = tasks[rng.randrange(len(tasks))]
            tasks.append(dict(original, task_id=f"t{i:06d}"))
            continue
        image = i if distinct_images is None else rng.randrange(distinct_images)
        tasks.append({"task_id": f"t{i:06d}", "image_key": f"img/{seed}/{image:06d}.raw",
                      "size": sizes[i % len(sizes)], "object_bytes": object_bytes})
    return tasks
