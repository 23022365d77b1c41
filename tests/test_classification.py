"""The retry classification table: every built-in exception class and every engine error, one row each.

The documented rule (tqengine/retry.py): PermanentError / TransientError subclasses by their base;
TimeoutError and ConnectionError (and subclasses) transient; ValueError, TypeError, KeyError, LookupError,
UnicodeError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError (and subclasses)
permanent; anything else transient. The table below is written out by hand so that a changed rule shows
up as a visible diff here, not as a silently different retry behaviour.
"""
import builtins
import errno
import inspect

import pytest

from runners.workload import ensure_objects, make_tasks
from tests.engine_helpers import engine_config
from tqengine import WorkerPool, errors
from tqengine.retry import PERMANENT, RESOURCE, TRANSIENT, classify

P, T, R = PERMANENT, TRANSIENT, RESOURCE

# Every Exception subclass in builtins of CPython 3.11, by name.
BUILTIN_TABLE = {
    "ArithmeticError": T, "AssertionError": T, "AttributeError": T, "BlockingIOError": T,
    "BrokenPipeError": T, "BufferError": T, "BytesWarning": T, "ChildProcessError": T,
    "ConnectionAbortedError": T, "ConnectionError": T, "ConnectionRefusedError": T,
    "ConnectionResetError": T, "DeprecationWarning": T, "EOFError": T, "EncodingWarning": T,
    "EnvironmentError": T, "Exception": T, "ExceptionGroup": T, "FileExistsError": T,
    "FileNotFoundError": P, "FloatingPointError": T, "FutureWarning": T, "IOError": T, "ImportError": T,
    "ImportWarning": T, "IndentationError": T, "IndexError": P, "InterruptedError": T,
    "IsADirectoryError": P, "KeyError": P, "LookupError": P, "MemoryError": T, "ModuleNotFoundError": T,
    "NameError": T, "NotADirectoryError": P, "NotImplementedError": T, "OSError": T, "OverflowError": T,
    "PendingDeprecationWarning": T, "PermissionError": P, "ProcessLookupError": T, "RecursionError": T,
    "ReferenceError": T, "ResourceWarning": T, "RuntimeError": T, "RuntimeWarning": T,
    "StopAsyncIteration": T, "StopIteration": T, "SyntaxError": T, "SyntaxWarning": T, "SystemError": T,
    "TabError": T, "TimeoutError": T, "TypeError": P, "UnboundLocalError": T, "UnicodeDecodeError": P,
    "UnicodeEncodeError": P, "UnicodeError": P, "UnicodeTranslateError": P, "UnicodeWarning": T,
    "UserWarning": T, "ValueError": P, "Warning": T, "ZeroDivisionError": T,
}

# Every error class of tqengine.errors.
ENGINE_TABLE = {
    "TaskError": T, "TransientError": T, "PermanentError": P, "ValidationError": P, "ObjectNotFound": P,
    "InjectedTransient": T, "InjectedPermanent": P, "StoreConnectionError": T, "StoreTimeout": T,
    "StoreServerError": T, "StoreClientError": P, "ConfigError": P,
    # images: permanent, each its own class in the dead-letter table
    "ImageError": P, "NotAnImage": P, "ImageTruncated": P, "ImageCorrupt": P, "DecompressionBomb": P,
    "UnsupportedImage": P, "UnsupportedImageMode": P, "ZeroSizedVariant": P,
    # limits and path safety
    "AttemptTimeout": T, "SourceTooLarge": P, "UnsafeObject": P,
    # the machine's fault, not the task's: the engine stops and leaves the task queued
    "ResourceError": R, "StoreResourceError": R,
    # state-store errors are not raised by attempts; if one were, it would be an unknown (transient) one
    "StoreError": T, "StoreCorrupt": T, "StoreLocked": T, "SchemaMismatch": P,
}

_RULE_PERMANENT = (ValueError, TypeError, KeyError, LookupError, UnicodeError, FileNotFoundError,
                   NotADirectoryError, IsADirectoryError, PermissionError)


def documented_rule(cls):
    """The rule as the module docstring states it, written independently of retry.py."""
    if issubclass(cls, errors.ResourceError):
        return R
    if issubclass(cls, errors.PermanentError):
        return P
    if issubclass(cls, errors.TransientError):
        return T
    if issubclass(cls, (TimeoutError, ConnectionError)):
        return T
    if issubclass(cls, _RULE_PERMANENT):
        return P
    return T


def instance_of(cls):
    """An instance of `cls` as code would raise it (some classes need their constructor arguments)."""
    if issubclass(cls, BaseExceptionGroup):
        return cls("group", [ValueError("inner")])
    if cls is UnicodeDecodeError:
        return cls("utf-8", b"\xff", 0, 1, "invalid start byte")
    if cls is UnicodeEncodeError:
        return cls("ascii", "\u00e9", 0, 1, "ordinal not in range")
    if cls is UnicodeTranslateError:
        return cls("\u00e9", 0, 1, "cannot translate")
    return cls("message")


def _builtin_exception_classes():
    return {name: value for name, value in vars(builtins).items()
            if isinstance(value, type) and issubclass(value, Exception)}


def _engine_error_classes():
    return {name: value for name, value in vars(errors).items()
            if inspect.isclass(value) and issubclass(value, Exception) and value.__module__ == errors.__name__}


def test_the_table_states_the_documented_rule():
    """The hand-written table and the rule in words agree, row by row (so the table has no typo)."""
    for table, classes in ((BUILTIN_TABLE, _builtin_exception_classes()), (ENGINE_TABLE, _engine_error_classes())):
        for name, kind in table.items():
            if name in classes:
                assert documented_rule(classes[name]) == kind, name


@pytest.mark.parametrize("name", sorted(_builtin_exception_classes()))
def test_every_builtin_exception_class_is_classified_by_the_rule(name):
    cls = _builtin_exception_classes()[name]
    expected = BUILTIN_TABLE.get(name, documented_rule(cls))   # a class newer than 3.11: by the rule
    assert classify(instance_of(cls)) == expected, f"{name} should be {expected}"


def test_the_table_covers_every_builtin_of_this_python():
    missing = sorted(n for n in _builtin_exception_classes() if n not in BUILTIN_TABLE)
    gone = sorted(n for n in BUILTIN_TABLE if n not in _builtin_exception_classes())
    # Python 3.11 has exactly the table; a newer Python may add classes (classified by the rule above)
    assert not gone, gone
    import sys
    if sys.version_info[:2] == (3, 11):
        assert not missing, missing


@pytest.mark.parametrize("name", sorted(_engine_error_classes()))
def test_every_engine_error_is_classified_by_its_base(name):
    cls = _engine_error_classes()[name]
    assert name in ENGINE_TABLE, f"new error class {name}: add it to ENGINE_TABLE with its intended kind"
    assert classify(instance_of(cls)) == ENGINE_TABLE[name], name


@pytest.mark.parametrize("code, kind", [
    (errno.EACCES, P), (errno.EPERM, P), (errno.ENOENT, P), (errno.ENOTDIR, P), (errno.EISDIR, P),
    (errno.ENAMETOOLONG, P),    # a name past the file system's limit: was retried max_attempts times
    (errno.ETIMEDOUT, T), (errno.ECONNRESET, T), (errno.ECONNREFUSED, T), (errno.EPIPE, T),
    (errno.EIO, T), (errno.EEXIST, T), (errno.EAGAIN, T), (errno.EINTR, T),
    (errno.ENOSPC, R), (errno.EDQUOT, R), (errno.EROFS, R), (errno.EMFILE, R), (errno.ENFILE, R),
])
def test_oserror_as_the_os_raises_it_is_classified_by_its_errno(code, kind):
    """open()/os.* raise OSError(errno, ...), which Python turns into the matching subclass."""
    assert classify(OSError(code, "os says no", "/some/path")) == kind


def test_user_subclasses_follow_their_base():
    class Forbidden(PermissionError):
        pass

    class Flaky(ConnectionResetError):
        pass

    class BadInput(errors.ValidationError):
        pass

    class Odd(RuntimeError):
        pass

    class PermanentButLooksTransient(errors.PermanentError, TimeoutError):
        pass

    class TransientButLooksPermanent(errors.TransientError, ValueError):
        pass

    assert classify(Forbidden()) == P and classify(Flaky()) == T and classify(BadInput()) == P
    assert classify(Odd()) == T
    # the engine's own bases win over whatever built-in a class also derives from
    assert classify(PermanentButLooksTransient()) == P
    assert classify(TransientButLooksPermanent()) == T


@pytest.mark.timeout(30)
def test_a_permanent_os_error_in_a_real_attempt_dead_letters_at_once(tmp_path):
    """Through the engine: the output path is a directory, so publishing the variant is refused
    (ValidationError, permanent): one attempt, dead. The other task succeeds."""
    import os
    tasks = make_tasks(2, seed=41, object_bytes=500)
    ensure_objects(tasks, str(tmp_path / "store"))
    blocked = tasks[0]
    out_dir = os.path.join(str(tmp_path / "store"), "variants", *blocked["image_key"].split("/"))
    os.makedirs(out_dir[:out_dir.rfind(os.sep)], exist_ok=True)
    os.makedirs(out_dir + "@" + blocked["size"])
    cfg = engine_config(tmp_path, max_workers=2, max_attempts=4)
    with WorkerPool(cfg) as pool:
        dead, ok = [h.result(10) for h in pool.submit_many(tasks)]
    assert dead.status == "dead" and dead.error_class == "ValidationError" and "folder" in dead.error, dead
    assert dead.attempts == 1, f"a permanent error was retried: {dead}"
    assert ok.status == "success" and ok.attempts == 1
