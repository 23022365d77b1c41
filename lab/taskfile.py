"""Reading a task file: a JSON list of task objects, parsed one element at a time, in linear time.

The file is never held whole: it is decoded as UTF-8 incrementally (1 MiB reads) and each list element is
parsed as soon as it is complete, so memory holds one element plus a read buffer; an element longer than
the buffer is scanned for its end chunk by chunk and decoded once (the parser: lab/taskfile_parser.py).

Limits, each refused with one line naming the task and where (TaskFileError; the CLI's exit 2):
- an element longer than `max_element_chars` (16 Mi characters by default: a task is a few hundred), so
  memory stays bounded whatever the file holds;
- nesting deeper than `max_depth` (100), instead of a RecursionError from the json module;
- an integer longer than Python's limit for converting text to int (4300 digits), instead of being
  mistaken for truncated JSON.

`TaskFile(path)` is what a caller that runs the tasks wants: it checks the whole file once when opened
(a file-level problem is reported before any task runs), then iterates it, as often as needed. A regular
file is read through the descriptor that was checked; a pipe, FIFO or process substitution
(`--tasks <(cat tasks.json)`) is read once, spooled to a private temporary file while it is checked,
and iterated from there. `check(path)` + `iter_elements(path)` remain for regular files (two opens).
"""
import os
import stat
import sys
import tempfile

from lab.taskfile_parser import MAX_DEPTH, MAX_ELEMENT_CHARS, READ_SIZE, ListReader, TaskFileError

# READ_SIZE (bytes per read) is looked up here each time a file is opened: tests lower it to cut tokens
# at every offset
MAX_SPOOL_BYTES = 2 << 30          # a pipe is spooled to a temporary file up to this size


def _open(path):
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise TaskFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise TaskFileError(f"{path}: is a directory, not a task file") from None
    except OSError as exc:
        raise TaskFileError(f"{path}: cannot be read: {exc.strerror}") from None


def iter_elements(path, max_element_chars=MAX_ELEMENT_CHARS, max_depth=MAX_DEPTH):
    """Yield each element of the top-level JSON list in `path`; TaskFileError on anything else."""
    f = _open(path)
    with f:
        yield from ListReader(path, f, max_element_chars, max_depth, READ_SIZE).elements()


def check(path, max_element_chars=MAX_ELEMENT_CHARS, max_depth=MAX_DEPTH):
    """Validate the file's structure without keeping it; return the number of elements. Only for a regular
    file: a pipe or FIFO would be consumed by the check (TaskFile reads those in one pass)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        mode = None                  # _open names the problem
    if mode is not None and not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        raise TaskFileError(f"{path}: is a pipe, FIFO or device, which can be read only once; give a regular "
                            f"file")
    count = 0
    for _ in iter_elements(path, max_element_chars, max_depth):
        count += 1
    return count


class TaskFile:
    """A task file checked once when opened, then iterated (sequentially, as many times as needed).

        with TaskFile(path) as tasks:      # TaskFileError: the file is unusable (nothing has run)
            total = tasks.count
            for task in tasks: ...

    `path` may be a regular file, a FIFO, a pipe such as /dev/fd/63 from `<(...)`, or "-" for stdin. A
    regular file is iterated through the descriptor that was checked, and must not change meanwhile (a
    change is a TaskFileError); anything else is copied, while it is checked, into a private temporary
    file in `spool_dir` (default: the system's), removed on close. Starting a new iteration invalidates
    an unfinished earlier one."""

    def __init__(self, path, max_element_chars=MAX_ELEMENT_CHARS, max_depth=MAX_DEPTH, spool_dir=None,
                 max_spool_bytes=MAX_SPOOL_BYTES):
        self.path = os.fspath(path)
        self.max_element_chars, self.max_depth = max_element_chars, max_depth
        self._file = None
        self._spool = None
        self._generation = 0
        if self.path == "-":
            source, owned = sys.stdin.buffer, False
        else:
            source, owned = _open(self.path), True
        try:
            mode = os.fstat(source.fileno()).st_mode
            if stat.S_ISDIR(mode):
                raise TaskFileError(f"{self.path}: is a directory, not a task file")
            if stat.S_ISREG(mode):
                self._file = source
                self.spooled = False
                self.count = self._count(source)
                self._fingerprint = self._stat(source)
            else:
                self._spool = tempfile.TemporaryFile(prefix="tq-tasks-", dir=spool_dir)
                self.spooled = True
                self.count = self._count(_Tee(self.path, source, self._spool, max_spool_bytes))
                self._fingerprint = None
                if owned:
                    source.close()
                owned = False
        except BaseException:
            if owned:
                source.close()
            self.close()
            raise

    def _count(self, f):
        count = 0
        for _ in ListReader(self.path, f, self.max_element_chars, self.max_depth, READ_SIZE).elements():
            count += 1
        return count

    @staticmethod
    def _stat(f):
        st = os.fstat(f.fileno())
        return st.st_size, st.st_mtime_ns, st.st_ino

    def __iter__(self):
        f = self._spool if self._spool is not None else self._file
        if f is None:
            raise ValueError("TaskFile is closed")
        if self._fingerprint is not None and self._stat(f) != self._fingerprint:
            raise TaskFileError(f"{self.path}: changed since it was checked")
        self._generation += 1
        return self._elements(f, self._generation)

    def _elements(self, f, generation):
        f.seek(0)
        for element in ListReader(self.path, f, self.max_element_chars, self.max_depth, READ_SIZE).elements():
            if generation != self._generation:
                raise RuntimeError("a newer iteration of this TaskFile started; this one is void")
            yield element

    def close(self):
        for f in (self._file, self._spool):
            if f is not None and f is not getattr(sys.stdin, "buffer", None):
                f.close()
        self._file = self._spool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _Tee:
    """Reads from `source` and writes what it read to `spool` (a pipe can be read only once)."""

    def __init__(self, path, source, spool, limit):
        self.path, self.source, self.spool, self.limit = path, source, spool, limit
        self.total = 0

    def read(self, n):
        data = self.source.read(n)
        if data:
            self.total += len(data)
            if self.total > self.limit:
                raise TaskFileError(f"{self.path}: more than {self.limit >> 20} MiB read from a pipe; pass a "
                                    f"regular file instead")
            try:
                self.spool.write(data)
            except OSError as exc:
                raise TaskFileError(f"{self.path}: cannot spool the piped task file to a temporary file: "
                                    f"{exc.strerror}") from None
        else:
            self.spool.flush()
        return data


__all__ = ["TaskFile", "TaskFileError", "check", "iter_elements", "READ_SIZE", "MAX_ELEMENT_CHARS", "MAX_DEPTH"]
