"""Task validation at its boundaries, called directly: what is just allowed and what is just refused
(docs/CONTRACTS.md, "Task"). The hostile-input tests cover the attacks; these cover the edges."""
import pytest

from tqengine.errors import ValidationError
from tqengine.tasks import MAX_KEY_LEN, MAX_SIDE, fingerprint, parse_variant, validate, variant_of


def _task(**fields):
    return {"task_id": "t", "image_key": "img/a.raw", "size": "200x200", **fields}


@pytest.mark.parametrize("task, expected", [
    (_task(image_key="k" * MAX_KEY_LEN), ("k" * MAX_KEY_LEN, "200x200")),       # exactly the longest key
    (_task(size=f"{MAX_SIDE}x{MAX_SIDE}"), ("img/a.raw", f"{MAX_SIDE}x{MAX_SIDE}")),
    (_task(size="1x1"), ("img/a.raw", "1x1")),
    (_task(object_bytes=0), ("img/a.raw", "200x200")),                        # an empty source object
    (_task(task_id=0), ("img/a.raw", "200x200")),
    (_task(image_key="a/variants/b.raw"), ("a/variants/b.raw", "200x200")),   # only the top-level area is taken
    (_task(image_key="variantsx/b.raw"), ("variantsx/b.raw", "200x200")),
    (_task(image_key="a/.tq-tmp"), ("a/.tq-tmp", "200x200")),                 # only the store's own temp area
    (_task(image_key="x.tq-tmp/b"), ("x.tq-tmp/b", "200x200")),
    (_task(image_key="a..b/c.raw"), ("a..b/c.raw", "200x200")),               # '..' inside a name is a name
    ({"image_key": "img/a.raw", "variant": "30x40"}, ("img/a.raw", "30x40")),
    ({"image_key": "img/a.raw", "size": "10x20", "variant": "30x40"}, ("img/a.raw", "10x20")),  # size wins
])
def test_valid_at_the_edge(task, expected):
    assert validate(task) == expected


@pytest.mark.parametrize("task, words", [
    (_task(image_key="k" * (MAX_KEY_LEN + 1)), "longer"),
    (_task(size=f"{MAX_SIDE + 1}x1"), "outside"),
    (_task(size=f"1x{MAX_SIDE + 1}"), "outside"),
    (_task(size="0x10"), "outside"),
    (_task(size="10x0"), "outside"),
    (_task(size="10x"), "not a size"),
    (_task(size=" 10x10"), "not a size"),
    (_task(size="10X10"), "not a size"),
    (_task(size=200), "must be a string"),
    (_task(object_bytes=-1), "object_bytes"),
    (_task(object_bytes=True), "object_bytes"),
    (_task(object_bytes=1.5), "object_bytes"),
    (_task(task_id=True), "task_id"),
    (_task(task_id=""), "task_id"),
    (_task(task_id=1.5), "task_id"),
    (_task(task_id="\ud800"), "surrogate"),
    (_task(image_key="variants/a.raw"), "variants/"),
    (_task(image_key="variants"), "variants/"),
    (_task(image_key=".tq-tmp/a.raw"), ".tq-tmp"),
    (_task(image_key="/abs.raw"), "absolute"),
    (_task(image_key="a/../b.raw"), "'..'"),
    (_task(image_key="a/./b.raw"), "'.'"),
    (_task(image_key="a//b.raw"), "empty"),
    (_task(image_key="a/"), "empty"),
    (_task(image_key="a\\b.raw"), "backslash"),
    (_task(image_key="a\x00b"), "NUL"),
    (_task(image_key="\udcff.raw"), "surrogate"),
    (_task(image_key=""), "non-empty"),
    (_task(image_key=7), "non-empty"),
    ({"image_key": "img/a.raw"}, "missing field size"),
    ({"size": "1x1"}, "missing field image_key"),
    (["img/a.raw", "1x1"], "JSON object"),
])
def test_refused_at_the_edge(task, words):
    with pytest.raises(ValidationError) as info:
        validate(task)
    assert words in str(info.value), str(info.value)


def test_parse_variant_and_variant_of():
    assert parse_variant("8192x1") == (8192, 1)
    assert parse_variant("007x08") == (7, 8)
    assert variant_of({"size": "1x2", "variant": "3x4"}) == "1x2"
    assert variant_of({"variant": "3x4"}) == "3x4"
    assert variant_of({"size": 5}) is None and variant_of("1x1") is None


def test_fingerprint_is_canonical_and_ignores_task_id():
    a = {"task_id": "1", "image_key": "k", "size": "1x1", "extra": {"b": 1, "a": 2}}
    b = {"extra": {"a": 2, "b": 1}, "size": "1x1", "image_key": "k", "task_id": "other"}
    assert fingerprint(a) == fingerprint(b) == '{"extra":{"a":2,"b":1},"image_key":"k","size":"1x1"}'
    assert fingerprint(dict(a, quality=5)) != fingerprint(a)
