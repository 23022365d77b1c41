"""What a task is: validation, its idempotency key and its payload fingerprint.

Validation never raises anything but ValidationError, whatever the input, so a bad task can always be
turned into a permanent-failure record instead of crashing a run.
"""
from __future__ import annotations

import json
import re
from typing import Any

from .errors import ValidationError

MAX_KEY_LEN = 1024
MAX_SIDE = 8192
MIN_TASK_ID, MAX_TASK_ID = -(1 << 63), (1 << 63) - 1     # an integer task_id: what SQLite's INTEGER holds
_VARIANT = re.compile(r"([0-9]{1,5})x([0-9]{1,5})")
_VARIANT_FOLDER = re.compile(r"@[0-9]{1,5}x[0-9]{1,5}/")    # a folder whose name ends like a variant


def variant_of(task: object) -> str | None:
    """The task's variant string (its `size`, else its `variant`), or None."""
    if not isinstance(task, dict):
        return None
    value = task.get("size", task.get("variant"))
    return value if isinstance(value, str) else None


# one encoder for every fingerprint: json.dumps with options builds a new JSONEncoder on every call
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=repr)


def fingerprint(task: object) -> str:
    """Canonical JSON of the task without its task_id: two submissions conflict when these differ."""
    if not isinstance(task, dict):
        return _CANONICAL.encode(task)
    if "task_id" in task:
        task = {k: v for k, v in task.items() if k != "task_id"}
    return _CANONICAL.encode(task)


def check_key(key: object) -> str:
    """Refuse an object key that could name anything outside the store root."""
    if not isinstance(key, str) or not key:
        raise ValidationError("image_key must be a non-empty string")
    if len(key) > MAX_KEY_LEN:
        raise ValidationError(f"image_key is longer than {MAX_KEY_LEN} characters")
    if "\x00" in key:
        raise ValidationError("image_key contains a NUL byte")
    if not _encodable(key):
        raise ValidationError("image_key is not valid Unicode text (lone surrogate)")
    if "\\" in key:
        raise ValidationError("image_key contains a backslash")
    if key.startswith("/"):
        raise ValidationError("image_key is an absolute path")
    parts = key.split("/")
    if parts[0] == ".tq-tmp":
        raise ValidationError("image_key may not name the store's .tq-tmp/ temporary area")
    if any(part in ("", ".", "..") for part in parts):
        raise ValidationError("image_key has an empty, '.' or '..' path component")
    return key


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def parse_variant(variant: object) -> tuple[int, int]:
    """(width, height) of a `WxH` variant within 1..8192, else ValidationError."""
    if not isinstance(variant, str):
        raise ValidationError("size/variant must be a string like '200x200'")
    match = _VARIANT.fullmatch(variant)
    if not match:
        raise ValidationError(f"variant {variant[:40]!r} is not a size like '200x200'")
    width, height = int(match.group(1)), int(match.group(2))
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
        raise ValidationError(f"variant {variant!r} is outside 1..{MAX_SIDE} on a side")
    return width, height


def validate(task: Any) -> tuple[str, str]:
    """Return (image_key, variant) of a well-formed task, else raise ValidationError with the reason."""
    if not isinstance(task, dict):
        raise ValidationError(f"a task must be a JSON object, not {type(task).__name__}")
    task_id = task.get("task_id")
    if task_id is not None and (not isinstance(task_id, (str, int)) or isinstance(task_id, bool)
                                or task_id == ""):
        raise ValidationError("task_id must be a non-empty string or an integer")
    if isinstance(task_id, int) and not MIN_TASK_ID <= task_id <= MAX_TASK_ID:
        raise ValidationError("task_id is an integer outside the 64-bit range")
    if isinstance(task_id, str) and not _encodable(task_id):
        raise ValidationError("task_id is not valid Unicode text (lone surrogate)")
    if "image_key" not in task:
        raise ValidationError("missing field image_key")
    key = check_key(task["image_key"])
    if key.startswith("variants/") or key == "variants":
        raise ValidationError("image_key may not name the variants/ output area")
    if "@" in key and _VARIANT_FOLDER.search(key):
        # variants/<image_key>@<WxH> would then be a folder of this task's output: another task's output name
        raise ValidationError("image_key has a folder named like a variant (ending in @WxH): its output folder "
                              "would take the name of another task's output")
    if "size" not in task and "variant" not in task:
        raise ValidationError("missing field size (or variant)")
    variant = variant_of(task)
    if variant is None:
        raise ValidationError("size/variant must be a string like '200x200'")
    parse_variant(variant)
    if "object_bytes" in task:
        nbytes = task["object_bytes"]
        if not isinstance(nbytes, int) or isinstance(nbytes, bool) or nbytes < 0:
            raise ValidationError("object_bytes must be a non-negative integer")
    return key, variant
