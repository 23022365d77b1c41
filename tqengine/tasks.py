"""What a task is: validation, its idempotency key and its payload fingerprint.

Validation never raises anything but ValidationError, whatever the input, so a bad task can always be
turned into a permanent-failure record instead of crashing a run.
"""
from __future__ import annotations

import json
import re
import reprlib
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
# the C function _CANONICAL.encode() ends in, called directly for a flat dict (nothing nested, so no cycle to
# mark): JSONEncoder.encode and iterencode are two Python-level calls around it on every task
_C_MAKE_ENCODER = getattr(json.encoder, "c_make_encoder", None)     # None without the C module
_FLAT_ENCODE = None if _C_MAKE_ENCODER is None else _C_MAKE_ENCODER(
    None, repr, json.encoder.encode_basestring_ascii, None, ":", ",", True, False, True)


def fingerprint(task: object) -> str:
    """Canonical JSON of the task without its task_id: two submissions conflict when these differ."""
    if not isinstance(task, dict):
        return _CANONICAL.encode(task)
    if "task_id" in task:
        task = {k: v for k, v in task.items() if k != "task_id"}
    return _CANONICAL.encode(task)


def flat_fingerprint(task: dict[str, Any]) -> str:
    """fingerprint(task) of a dict whose names are all str and whose values are all str, int, float, bool or
    None (exact types, nothing nested): the same text, through the encoder's C function alone. ValueError for
    an integer past the interpreter's digit limit, as fingerprint()."""
    if _FLAT_ENCODE is None:            # an interpreter without the json C module
        return fingerprint(task)
    if "task_id" in task:
        task = dict(task)
        del task["task_id"]
    return "".join(_FLAT_ENCODE(task, 0))


def exact(value: Any) -> Any:
    """`value` as its exact built-in type when it is a str, int or float of a subclass (copied by the base
    type's own method, so none of the subclass's is called); any other value as it is."""
    kind = type(value)
    if kind is str or kind is int or kind is float or kind is bool or value is None:
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    return value


def plain(task: dict[Any, Any]) -> dict[Any, Any]:
    """The task's top-level fields as a plain dict, keys and scalar values of exact built-in types, read
    through dict's own methods: a dict or str subclass cannot then show validation one value and the store
    another (an overridden get, split or startswith is never called). Its JSON is the task's own: json
    encodes a str, int or float subclass by the base type's value. Raises whatever reading the task
    raises (a key's own __hash__ or __eq__)."""
    exact_types = _EXACT
    return {k if type(k) is str else exact(k): v if type(v) in exact_types else exact(v)
            for k, v in dict.items(task)}


_EXACT = frozenset((str, int, float, bool, type(None), list, dict))    # plain() keeps these as they are


def check_key(key: object) -> str:
    """Refuse an object key that could name anything outside the store root; the key as an exact str (a
    subclass's own methods could show the checks another string than the one that is used)."""
    if not isinstance(key, str):
        raise ValidationError("image_key must be a non-empty string")
    key = str.__str__(key)          # exact(): the string itself, whatever a subclass's methods say
    if not key:
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


def shown(value: object) -> str:
    """A short repr of `value` (reprlib's limits) for a message or a dead letter; never raises (repr of an
    integer of more than 4300 digits does, and so may any value's own __repr__)."""
    try:
        return exact(reprlib.repr(value))
    except Exception as exc:
        return f"<a {type_name(value)} that cannot be shown: {type_name(exc)}>"


def type_name(value: object) -> str:
    """The name of `value`'s type, for a message; never raises (a metaclass may make __name__ raise)."""
    try:
        return exact(type(value).__name__)[:100]
    except Exception:
        return "object"


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
    """Return (image_key, variant) of a well-formed task, else raise ValidationError with the reason (as
    exact strs: the checks run on plain(task))."""
    if not isinstance(task, dict):
        raise ValidationError(f"a task must be a JSON object, not {type_name(task)}")
    try:
        task = plain(task)
    except Exception as exc:        # a key's own __hash__ or __eq__ raised, or a subclass refused the copy
        raise ValidationError(f"a task must be plain JSON data (reading it raised {type_name(exc)})") from None
    return validate_plain(task)


def validate_plain(task: dict[Any, Any]) -> tuple[str, str]:
    """validate() of a task that is plain(task) already."""
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
    variant = variant_of(task)      # an exact str: task is plain(task)
    if variant is None:
        raise ValidationError("size/variant must be a string like '200x200'")
    parse_variant(variant)
    if "object_bytes" in task:
        nbytes = task["object_bytes"]
        if not isinstance(nbytes, int) or isinstance(nbytes, bool) or nbytes < 0:
            raise ValidationError("object_bytes must be a non-negative integer")
    return key, variant
