"""Reading a task file: a JSON list of task objects, parsed one element at a time.

The file is never held whole: it is decoded as UTF-8 incrementally and each list element is parsed
with json.JSONDecoder.raw_decode as soon as it is complete, so memory holds one element plus a read
buffer. `check` makes a first pass that only validates the structure (so a file-level problem is
reported before any task runs); `iter_tasks` yields the elements.
"""
import codecs
import json

READ_SIZE = 1 << 20
_WS = " \t\n\r"


class TaskFileError(ValueError):
    """The file as a whole is unusable: one line naming the problem and where."""


def iter_elements(path):
    """Yield each element of the top-level JSON list in `path`; TaskFileError on anything else."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise TaskFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise TaskFileError(f"{path}: is a directory, not a task file") from None
    except OSError as exc:
        raise TaskFileError(f"{path}: cannot be read: {exc.strerror}") from None
    with f:
        state = _Reader(path, f)
        yield from state.elements()


class _Reader:
    """Cursor over the decoded text: `buf[i:]` is what is not consumed yet."""

    def __init__(self, path, f):
        self.path, self.f = path, f
        self.decoder = json.JSONDecoder()
        self.utf8 = codecs.getincrementaldecoder("utf-8")("strict")
        self.buf, self.i = "", 0
        self.bytes_read = 0
        self.eof = False
        self.line, self.line_start = 1, 0   # line number at buf[i], and the buf offset where it began
        self.col_base = 1                    # column of buf[line_start]

    def fill(self):
        """Read more text; drop the consumed prefix first so the buffer never grows with the file."""
        if self.i:
            self._count_lines(self.i)
            self.col_base = self.column(self.i)
            self.buf, self.i, self.line_start = self.buf[self.i:], 0, 0
        raw = self.f.read(READ_SIZE)
        carried = len(self.utf8.getstate()[0])   # bytes of a character split by the previous read
        try:
            text = self.utf8.decode(raw, final=not raw)
        except UnicodeDecodeError as exc:
            raise TaskFileError(f"{self.path}: not UTF-8 text (bad byte at byte "
                                f"{self.bytes_read - carried + exc.start})") from None
        if not raw:
            self.eof = True
        self.bytes_read += len(raw)
        self.buf += text

    def _count_lines(self, upto):
        """Move the line bookkeeping forward to buffer offset `upto`."""
        segment = self.buf[self.line_start:upto]
        newlines = segment.count("\n")
        if newlines:
            self.line += newlines
            self.line_start = self.line_start + segment.rfind("\n") + 1
            self.col_base = 1

    def column(self, offset):
        return self.col_base + (offset - self.line_start)

    def where(self, offset=None):
        offset = self.i if offset is None else offset
        self._count_lines(offset)
        return f"line {self.line} column {self.column(offset)}"

    def skip_ws(self):
        """Skip whitespace; return the next character or "" at the end of the file."""
        while True:
            n = len(self.buf)
            i = self.i
            while i < n and self.buf[i] in _WS:
                i += 1
            self.i = i
            if i < n:
                return self.buf[i]
            if self.eof:
                return ""
            self.fill()

    def elements(self):
        path = self.path
        self.fill()
        if self.buf.startswith("\ufeff"):
            self.i = 1
            self.line_start = 1
        c = self.skip_ws()
        if c == "":
            raise TaskFileError(f"{path}: empty file (expected a JSON list of tasks)")
        if c == "{":
            raise TaskFileError(f"{path}: expected a JSON list of tasks, found an object at {self.where()}")
        if c != "[":
            raise TaskFileError(f"{path}: not a JSON list of tasks (unexpected {c!r} at {self.where()})")
        self.i += 1
        index = 0
        c = self.skip_ws()
        if c == "]":
            self.i += 1
        else:
            while True:
                if c == "":
                    raise TaskFileError(f"{path}: truncated JSON: the list is not closed (at {self.where()})")
                element = self._decode_one(index)
                yield element
                index += 1
                c = self.skip_ws()
                if c == ",":
                    self.i += 1
                    c = self.skip_ws()
                    continue
                if c == "]":
                    self.i += 1
                    break
                if c == "":
                    raise TaskFileError(f"{path}: truncated JSON after task #{index} (the list is not closed)")
                raise TaskFileError(f"{path}: not valid JSON at {self.where()}: expected ',' or ']' "
                                    f"after task #{index}")
        if self.skip_ws() != "":
            raise TaskFileError(f"{path}: extra data after the task list at {self.where()}")

    def _decode_one(self, index):
        while True:
            try:
                element, end = self.decoder.raw_decode(self.buf, self.i)
                if end == len(self.buf) and not self.eof and isinstance(element, (int, float)):
                    raise ValueError("a number at the end of the buffer may continue")
            except ValueError as exc:
                if self.eof:
                    truncated = not isinstance(exc, json.JSONDecodeError) or exc.pos >= len(self.buf.rstrip()) \
                        or exc.msg.startswith("Unterminated string")
                    if not truncated:
                        raise TaskFileError(f"{self.path}: not valid JSON at {self.where(exc.pos)} "
                                            f"(task #{index + 1}): {exc.msg}") from None
                    raise TaskFileError(f"{self.path}: truncated JSON inside task #{index + 1} "
                                        f"(starting at {self.where()})") from None
                self.fill()
                continue
            self.i = end
            return element


def check(path):
    """Validate the file's structure without keeping it; return the number of elements."""
    count = 0
    for _ in iter_elements(path):
        count += 1
    return count
