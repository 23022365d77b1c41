"""Text that reaches a terminal: keys and messages come from task files, so their control characters
(ESC, BEL, CR, ...) are shown escaped, never sent raw to a terminal that would act on them."""


def printable(text: object) -> str:
    """`text` with every non-printable character written as a Python escape (\\x1b, \\u202e, ...)."""
    s = "" if text is None else str(text)
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in s)
