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


def _comparable(ident):
    """An Identity with its error as (class, message): two ValidationErrors are never == otherwise."""
    error = ident.error
    return ident._replace(error=None if error is None else (type(error).__name__, str(error)))


def _random_task(rng):
    """A task near the usual shape: keys from pieces that are plain, just not plain, or hostile."""
    pieces = ["img", "a.jpg", "variants", ".tq-tmp", "..", ".", "", "b@200x200", "x y", "é", "\\", "\x00",
              "a\"b", "photo-1_2.JPG", "v" * 300, "\ud800", "variantsx", ".hidden", "a..b"]
    if rng.random() < 0.5:
        pieces = ["img", "a.jpg", "photo-1_2.JPG", "a..b", "variantsx", "2026", "x.tq-tmp", "v" * 300]
    key = "/".join(rng.choice(pieces) for _ in range(rng.randint(1, 4)))
    if rng.random() < 0.1:
        key = "/" + key
    sizes = ["200x200", "1x1", "8192x8192", "8193x1", "0x5", "0200x200", "200X200", "200x", " 200x200", "99999x1"]
    task = {"image_key": key, "size": rng.choice(sizes)}
    roll = rng.random()
    if roll < 0.7:
        task["task_id"] = rng.choice(["t-1", "", "x" * 201, "é", "\ud800", 7, -3, True, None, 2 ** 63,
                                      -(2 ** 63), 2 ** 63 - 1, 1.5, "a\"\\b", ["t"]])
    if rng.random() < 0.1:
        task[rng.choice(["object_bytes", "variant", "extra"])] = rng.choice([0, "1x1", None, -1])
    if rng.random() < 0.3:      # fields of the task's own, plain or hostile (identify() must never raise)
        for _ in range(rng.choice([1, 1, 2, 3, 9])):
            plain = rng.random() < 0.7
            name = rng.choice(["source_size", "object_bytes", "variant", "extra"] if plain else
                              ["object_bytes", "bad-name", "é", "", "x" * 65, 5])
            task[name] = rng.choice(["640x480", 0, 7, 2 ** 63 - 1, "", "x y"] if plain else
                                    [2 ** 63, -1, True, 10 ** 5000, "a\"b", "a\\b", "é", "\ud800", "x" * 201,
                                     None, 1.5, ["x"], {"a": 1}])
    if rng.random() < 0.05:
        task["image_key"] = rng.choice([None, 5, b"a", ["a"]])
    if rng.random() < 0.05:
        del task["size"]
    return task


def test_the_short_path_for_plain_tasks_gives_what_the_general_path_gives():
    """identify() takes a short path for the usual plain task; over 30,000 tasks near that shape (plain, just
    not plain, hostile) it must give exactly the general path's Identity, error messages included."""
    import random

    from tqengine.admission import _identify, _identify_plain, identify
    rng = random.Random(11)
    short = with_own_fields = 0
    for _ in range(30_000):
        task = _random_task(rng)
        if _identify_plain(task) is not None:
            short += 1
            with_own_fields += len(task) > 2 + ("task_id" in task)
        assert _comparable(identify(task)) == _comparable(_identify(task)), task
    # the short path was taken often enough for the comparison to mean something, fields of a task's own too
    assert short > 1_500 and with_own_fields > 300


@pytest.mark.parametrize("value", ["640x480", "", "é", "\ud800", "a\"b\\c\n", "\x00\x7f", 0, 7, -1, 2 ** 63,
                                   10 ** 4000, True, False, None, 1.5, -0.0, float("nan"), float("inf"),
                                   float("-inf")])
@pytest.mark.parametrize("name", ["source_size", "é", "a\"b", "", "zzz", "AAA"])
def test_the_short_paths_payload_is_fingerprints_encoding(name, value):
    """The short path encodes a flat task through the encoder's C function alone (flat_fingerprint): byte for
    byte what fingerprint() gives, whatever the names sort to and however the strings escape, and the task
    itself keeps its task_id."""
    from tqengine.admission import _own_fields_payload
    from tqengine.tasks import fingerprint
    task = {"image_key": "img/a.jpg", "size": "200x200", "task_id": "t-1", name: value}
    assert _own_fields_payload(task) == fingerprint(task)
    assert task["task_id"] == "t-1"


def test_the_short_paths_payload_leaves_an_integer_past_the_digit_limit_to_the_general_path():
    from tqengine.admission import _own_fields_payload, identify
    task = {"image_key": "img/a.jpg", "size": "200x200", "huge": 10 ** 5000}
    assert _own_fields_payload(task) is None
    assert identify(task).error is not None         # the general path: a dead letter, not a crash


def test_the_labs_tasks_take_the_short_path():
    """The lab's tasks carry fields of their own (source_size, object_bytes): they went the general path
    (measured: tasks/s x1.02 on the no-op durable path, x1.09 with 1 ms tasks; CPU per task x0.97, x0.93)."""
    from runners.workload import make_tasks
    from tqengine.admission import _identify, _identify_plain
    for task in make_tasks(50, seed=3, object_bytes=7):
        assert _identify_plain(task) == _identify(task)


@pytest.mark.parametrize("task_id", [2 ** 63, -(2 ** 63) - 1, 10 ** 5000], ids=["2^63", "-2^63-1", "5000 digits"])
def test_an_integer_task_id_beyond_64_bits_is_refused_not_a_crash(task_id):
    """A 5000-digit integer task_id made identify() raise (str() of it exceeds Python's digit limit), so a
    hostile task crashed submit(); now it is a ValidationError and the task a dead letter."""
    from tqengine.admission import identify
    with pytest.raises(ValidationError, match="64-bit"):
        validate({"task_id": task_id, "image_key": "a.jpg", "size": "1x1"})
    ident = identify({"task_id": task_id, "image_key": "a.jpg", "size": "1x1"})
    assert ident.error is not None and ident.task_id is None


def test_a_field_holding_an_integer_beyond_the_digit_limit_is_a_dead_letter_not_a_crash():
    """JSON cannot write a 5000-digit integer, and the fallback repr of the task for its dead letter raised the
    same ValueError, so identify() raised and submit() crashed on such a task; now it is a ValidationError."""
    from tqengine.admission import identify
    ident = identify({"task_id": "t1", "image_key": "a.jpg", "size": "1x1", "extra": 10 ** 5000})
    assert ident.error is not None and "plain JSON data" in str(ident.error)
    assert ident.key == "/invalid/a.jpg#1x1" and ident.task_id == "t1"
    assert "cannot be shown" in ident.payload


# -- values whose own methods raise or lie (only the API can pass them: a task file holds plain JSON) --------
class _RaisingGet(dict):
    def get(self, *args):
        raise RuntimeError("get")


class _RaisingItems(dict):
    def items(self):
        raise RuntimeError("items")

    def __iter__(self):
        raise RuntimeError("iter")


class _RaisingRepr:
    def __repr__(self):
        raise RuntimeError("repr")


class _RaisingIter(list):
    def __iter__(self):
        raise RuntimeError("iter")


class _RaisingEq(str):
    __hash__ = str.__hash__

    def __eq__(self, other):
        raise RuntimeError("eq")


class _RaisingNameMeta(type):
    @property
    def __name__(cls):
        raise RuntimeError("name")


class _Nameless(metaclass=_RaisingNameMeta):
    def __repr__(self):
        raise RuntimeError("repr")


class _LyingKey(str):
    """Shows validation a harmless key: split() and startswith() lie about the string it is."""
    def split(self, *args, **kwargs):
        return ["harmless"]

    def startswith(self, *args, **kwargs):
        return False

    def __format__(self, spec):
        return "harmless"


_GOOD = {"image_key": "a.jpg", "size": "10x10"}


# made in the test from their names: pytest's own report of a failing test cannot show a _Nameless argument
_UNREADABLE = {
    "value-repr": lambda: {**_GOOD, "extra": _RaisingRepr()},         # json's default=repr calls it
    "task-repr": _RaisingRepr,
    "value-iter": lambda: {**_GOOD, "extra": _RaisingIter([1])},
    "nameless-task": _Nameless,
    "nameless-value": lambda: {**_GOOD, "extra": _Nameless()},
}


@pytest.mark.parametrize("name", list(_UNREADABLE))
def test_a_task_that_raises_as_it_is_read_is_dead_not_a_crash(name):
    """identify() raised each of these out of submit_many() (tests/test_hostile.py has what that did to the
    engine); now each is a task that is not plain JSON data."""
    from tqengine.admission import identify
    task = _UNREADABLE[name]()
    try:
        ident = identify(task)
    except Exception as exc:        # reported without its traceback: pytest cannot show these values
        pytest.fail(f"identify() raised {type(exc).__name__}", pytrace=False)
    assert isinstance(ident.error, ValidationError) and "plain JSON data" in str(ident.error)
    assert ident.key.startswith("/invalid/") and ident.image_key is None
    assert identify(task).key == ident.key          # the same bad task again is a duplicate of the first


@pytest.mark.parametrize("task", [
    _RaisingGet(_GOOD), _RaisingItems(_GOOD), {_RaisingEq("image_key"): "a.jpg", "size": "10x10"},
], ids=["dict-get", "dict-items-iter", "key-eq"])
def test_a_task_is_read_through_dicts_own_methods(task):
    """A dict subclass's overridden methods, or a key's __eq__, are never called: the task is its data."""
    from tqengine.admission import identify
    ident = identify(task)
    assert ident.error is None and ident.key == "a.jpg#10x10"
    assert ident.payload == fingerprint(_GOOD)


def test_a_str_subclass_cannot_show_validation_another_key():
    """`../outside.jpg` whose split() and startswith() lie passed validation before: it was refused only by
    the store, and the task's key was what its __format__ said. Now validation sees the string itself."""
    from tqengine.admission import identify
    from tqengine.tasks import check_key
    task = {"image_key": _LyingKey("../outside.jpg"), "size": "10x10"}
    with pytest.raises(ValidationError, match=r"'\.\.'"):
        validate(task)
    with pytest.raises(ValidationError, match=r"'\.\.'"):
        check_key(_LyingKey("../outside.jpg"))
    ident = identify(task)
    assert isinstance(ident.error, ValidationError) and ident.key == "/invalid/../outside.jpg#10x10"
    assert type(check_key(_LyingKey("a/b.jpg"))) is str


def test_subclasses_of_plain_types_identify_as_their_plain_data():
    """An OrderedDict, or str and int subclasses, are the task they hold: the same key, payload and task_id
    (so idempotency treats them as that task), every field an exact built-in type."""
    import collections

    from tqengine.admission import identify

    class Text(str):
        pass

    class Number(int):
        pass

    task = {"task_id": "t1", "image_key": "a/b.jpg", "size": "10x10", "object_bytes": 7}
    wrapped = collections.OrderedDict(task_id=Text("t1"), image_key=Text("a/b.jpg"), size=Text("10x10"),
                                      object_bytes=Number(7))
    assert identify(wrapped) == identify(task)
    ident = identify(wrapped)
    assert {type(ident.key), type(ident.image_key), type(ident.variant), type(ident.task_id)} == {str}


def test_flat_fingerprint_without_the_json_c_module_is_fingerprint(monkeypatch):
    from tqengine import tasks
    task = {"image_key": "img/a.jpg", "size": "200x200", "task_id": "t-1", "n": 3, "f": 0.5, "s": "é"}
    fast = tasks.flat_fingerprint(task)
    monkeypatch.setattr(tasks, "_FLAT_ENCODE", None)
    assert tasks.flat_fingerprint(task) == fast == tasks.fingerprint(task)
    assert "task_id" in task
