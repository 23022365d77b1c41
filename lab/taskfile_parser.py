"""The parser of a task file: its top-level JSON list, one element at a time, in linear time.

The text is decoded as UTF-8 incrementally (`read_size` bytes at a time) and each list element is parsed
with json.JSONDecoder.raw_decode as soon as it is complete, so memory holds one element plus a read buffer.
An element that does not fit in the buffer is not re-decoded on every read (that was quadratic: a 256 MB
string took a minute): a small scanner (`_Extent`) finds where it ends, chunk by chunk, and it is decoded
once. The limits (element length, nesting depth, integer digits) and their one-line errors are described
in lab/taskfile.py, which opens the file and hands it to `ListReader`.
"""
import codecs
import json
import re
import sys

READ_SIZE = 1 << 20
MAX_ELEMENT_CHARS = 16 << 20
MAX_DEPTH = 100
_WS = " \t\n\r"
_OUTSIDE_STRING = re.compile(r'["\[\]{}]')
_INSIDE_STRING = re.compile(r'["\\]')
_NUMBER_TAIL = re.compile(r"[0-9.eE+-]*")    # what may follow a number cut by the buffer's end
_NEAR_END = 64                     # a decode error this close to the buffer's end may be a cut token


class TaskFileError(ValueError):
    """The file as a whole is unusable: one line naming the problem and where."""


class _TooDeep(Exception):
    """Raised by _Extent at the offset where the nesting passed the limit."""


class _Extent:
    """Finds where one JSON value ends, fed text piece by piece, tracking string state and nesting (it does
    not validate: the value is decoded once its end is known)."""

    __slots__ = ("depth", "in_string", "escaped", "max_depth")

    def __init__(self, max_depth):
        self.depth = 0
        self.in_string = False
        self.escaped = False
        self.max_depth = max_depth

    def feed(self, text, pos):
        """The offset just past the value's end in `text`, or -1 if it goes on; _TooDeep(offset)."""
        n = len(text)
        while pos < n:
            if self.in_string:
                if self.escaped:
                    self.escaped = False
                    pos += 1
                    continue
                m = _INSIDE_STRING.search(text, pos)
                if m is None:
                    return -1
                pos = m.end()
                if m.group() == "\\":
                    self.escaped = True
                else:
                    self.in_string = False
                    if self.depth == 0:
                        return pos
                continue
            m = _OUTSIDE_STRING.search(text, pos)
            if m is None:
                return -1
            c = m.group()
            pos = m.end()
            if c == '"':
                self.in_string = True
            elif c in "[{":
                self.depth += 1
                if self.depth > self.max_depth:
                    raise _TooDeep(pos - 1)
            else:
                self.depth -= 1
                if self.depth <= 0:
                    return pos
        return -1


class ListReader:
    """The elements of the JSON list in the binary file `f` (`elements()`), read `read_size` bytes at a
    time. A cursor over the decoded text: `buf[i:]` is what is not consumed yet; (line, col) is the
    position of buf[0] in the file."""

    def __init__(self, path, f, max_element_chars=MAX_ELEMENT_CHARS, max_depth=MAX_DEPTH, read_size=READ_SIZE):
        self.path, self.f = path, f
        self.read_size = read_size
        self.max_element_chars = sys.maxsize if max_element_chars is None else max_element_chars
        self.max_depth = max_depth
        # an element this short can neither nest deeper than max_depth (each level takes two characters)
        # nor be longer than max_element_chars: no check needed
        self._short = min(2 * max_depth + 1, self.max_element_chars)
        self.decoder = json.JSONDecoder()
        self.utf8 = codecs.getincrementaldecoder("utf-8")("strict")
        self.buf, self.i = "", 0
        self.bytes_read = 0
        self.eof = False
        self.line, self.col = 1, 1

    # --- reading ---
    def _read_text(self):
        """The next piece of decoded text; "" (and eof set) at the end of the file."""
        while True:
            try:
                raw = self.f.read(self.read_size)
            except OSError as exc:
                raise TaskFileError(f"{self.path}: cannot be read: {exc.strerror}") from None
            carried = len(self.utf8.getstate()[0])   # bytes of a character split by the previous read
            try:
                text = self.utf8.decode(raw, final=not raw)
            except UnicodeDecodeError as exc:
                raise TaskFileError(f"{self.path}: not UTF-8 text (bad byte at byte "
                                    f"{self.bytes_read - carried + exc.start})") from None
            self.bytes_read += len(raw)
            if not raw:
                self.eof = True
                return text
            if text:
                return text

    def fill(self):
        """Read more text; drop the consumed prefix first so the buffer never grows with the file."""
        if self.i:
            self._advance(self.buf, self.i)
            self.buf, self.i = self.buf[self.i:], 0
        self.buf += self._read_text()

    def _advance(self, text, upto):
        """Move (line, col) past text[:upto]."""
        line, col = self._position_after(text, upto, self.line, self.col)
        self.line, self.col = line, col

    @staticmethod
    def _position_after(text, upto, line, col):
        newlines = text.count("\n", 0, upto)
        if newlines:
            return line + newlines, upto - text.rfind("\n", 0, upto)
        return line, col + upto

    def where(self, offset=None):
        offset = self.i if offset is None else offset
        line, col = self._position_after(self.buf, offset, self.line, self.col)
        return f"line {line} column {col}"

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

    # --- the list ---
    def elements(self):
        path = self.path
        self.fill()
        if self.buf.startswith("\ufeff"):
            self.buf = self.buf[1:]
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

    # --- one element ---
    def _decode_one(self, index):
        """The element starting at buf[i]. Fast path: raw_decode in the buffer. When the element runs
        past the buffer (or nests too deep for the json module), _decode_long finds its end first."""
        while True:
            buf, i = self.buf, self.i
            try:
                element, end = self.decoder.raw_decode(buf, i)
            except RecursionError:
                return self._decode_long(index)
            except json.JSONDecodeError as exc:
                if self.eof:
                    self._raise_decode_error(exc, buf, i, index)
                if exc.pos < len(buf) - _NEAR_END and not exc.msg.startswith("Unterminated string"):
                    self._raise_decode_error(exc, buf, i, index)     # a real error, whatever follows
                if buf[i] not in '[{"':      # a number or literal cut by the buffer's end: short, read on
                    self.fill()
                    continue
                return self._decode_long(index)
            except ValueError:               # int() refused a number: more than 4300 digits
                raise TaskFileError(self._too_big_number(index, self.where(i))) from None
            if end + 2 >= len(buf) and not self.eof and isinstance(element, (int, float)) \
                    and _NUMBER_TAIL.fullmatch(buf, end):
                self.fill()                  # a number cut by the buffer's end ("12", "1.", "1e-") may go on
                continue
            if end - i > self._short:       # long enough to pass a limit (a typical task is not)
                self._check_size_and_depth(buf, i, end, index)
            self.i = end
            return element

    def _check_size_and_depth(self, buf, start, end, index):
        """The limits for an element decoded in the buffer, the same as _decode_long applies."""
        if end - start > self.max_element_chars:
            raise TaskFileError(self._too_long(index, self.where(start)))
        # every '[' or '{' counted (strings included) bounds the depth from above; scan only when it could
        # pass the limit
        if buf.count("[", start, end) + buf.count("{", start, end) > self.max_depth:
            try:
                _Extent(self.max_depth).feed(buf, start)
            except _TooDeep as deep:
                raise TaskFileError(self._too_deep(index, self.where(deep.args[0]))) from None

    def _decode_long(self, index):
        """Collect the element's text piece by piece until its end is found (linear in its length, never
        more than max_element_chars held), then decode it once."""
        start_where = self.where()
        self._advance(self.buf, self.i)
        start_line, start_col = self.line, self.col
        first = self.buf[self.i:]
        pieces = [first]
        have = len(first)
        extent = _Extent(self.max_depth)
        text, offset, base = first, 0, 0     # `base`: offset of the current piece in the element's text
        while True:
            try:
                end = extent.feed(text, offset)
            except _TooDeep as deep:
                line, col = self._position_after("".join(pieces), base + deep.args[0], start_line, start_col)
                raise TaskFileError(self._too_deep(index, f"line {line} column {col}")) from None
            if end >= 0:
                break
            if have > self.max_element_chars:
                self._fail_long(pieces, index, start_where, start_line, start_col, "too long")
            if self.eof:
                self._fail_long(pieces, index, start_where, start_line, start_col, "truncated")
            text = self._read_text()
            offset = 0
            base = have
            if text:
                pieces.append(text)
                have += len(text)
        length = base + end
        if length > self.max_element_chars:
            raise TaskFileError(self._too_long(index, start_where))
        rest = pieces[-1][end:]
        pieces[-1] = pieces[-1][:end]
        whole = pieces[0] if len(pieces) == 1 else "".join(pieces)
        del pieces
        try:
            element, stop = self.decoder.raw_decode(whole)
        except json.JSONDecodeError as exc:
            line, col = self._position_after(whole, exc.pos, start_line, start_col)
            raise TaskFileError(f"{self.path}: not valid JSON at line {line} column {col} (task #{index + 1}): "
                                f"{exc.msg}") from None
        except ValueError:
            raise TaskFileError(self._too_big_number(index, start_where)) from None
        if stop != len(whole):
            line, col = self._position_after(whole, stop, start_line, start_col)
            raise TaskFileError(f"{self.path}: not valid JSON at line {line} column {col} (task #{index + 1}): "
                                f"unbalanced brackets")
        self.line, self.col = self._position_after(whole, len(whole), start_line, start_col)
        self.buf, self.i = rest, 0
        return element

    def _fail_long(self, pieces, index, start_where, start_line, start_col, why):
        """The element did not end (within the limit, or before the end of the file): report a real JSON
        error inside it if there is one, else what happened."""
        whole = "".join(pieces)
        try:
            self.decoder.raw_decode(whole)
        except json.JSONDecodeError as exc:
            if exc.pos < len(whole) - _NEAR_END and not exc.msg.startswith("Unterminated string"):
                line, col = self._position_after(whole, exc.pos, start_line, start_col)
                raise TaskFileError(f"{self.path}: not valid JSON at line {line} column {col} "
                                    f"(task #{index + 1}): {exc.msg}") from None
        except (ValueError, RecursionError):
            pass
        if why == "too long":
            raise TaskFileError(self._too_long(index, start_where))
        raise TaskFileError(f"{self.path}: truncated JSON inside task #{index + 1} (starting at {start_where})")

    def _raise_decode_error(self, exc, buf, start, index):
        truncated = exc.pos >= len(buf.rstrip()) or exc.msg.startswith("Unterminated string")
        if not truncated:
            raise TaskFileError(f"{self.path}: not valid JSON at {self.where(exc.pos)} "
                                f"(task #{index + 1}): {exc.msg}") from None
        raise TaskFileError(f"{self.path}: truncated JSON inside task #{index + 1} "
                            f"(starting at {self.where(start)})") from None

    def _too_long(self, index, where):
        return (f"{self.path}: task #{index + 1} (starting at {where}) is longer than the limit of "
                f"{self.max_element_chars:,} characters for one task")

    def _too_deep(self, index, where):
        return (f"{self.path}: task #{index + 1} nests deeper than {self.max_depth} levels (at {where})")

    def _too_big_number(self, index, where):
        return (f"{self.path}: task #{index + 1} (starting at {where}) holds a number with more digits than "
                f"Python converts (4300)")
