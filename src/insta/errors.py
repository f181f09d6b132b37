"""User-facing errors.

Every problem a user can fix (a bad path, a malformed line, an unknown id) is raised as
:class:`InstaError`, whose message is one line naming the file/line/field and the fix.
The CLI prints it and exits with code 2, without a traceback.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable


class InstaError(Exception):
    """An error caused by the user's input; the message says what to do about it."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class Terminated(BaseException):
    """SIGTERM, raised by the CLI where the process is, so that temporary files are removed and
    run states marked on the way out (a BaseException: no ``except Exception`` swallows it)."""

    def __str__(self) -> str:
        return "SIGTERM"


class NoExamples(InstaError):
    """A method that selects from examples met a pool or target that has none (a benchmark
    skips the method there; elsewhere it is an error like any other)."""


def did_you_mean(name: str, choices: Iterable[str], n: int = 3) -> str:
    """Return ' (did you mean: a, b?)' for the closest choices, or '' if none is close."""
    choices = list(choices)
    close = difflib.get_close_matches(name, choices, n=n, cutoff=0.6)
    if not close:
        lowered = name.lower()
        close = [c for c in choices if lowered and lowered in c.lower()][:n]
    return f" (did you mean: {', '.join(close)}?)" if close else ""


def unknown(kind: str, name: str, available: Iterable[str]) -> InstaError:
    """Registry-style error: "unknown pool kind 'x'; available: a, b, c"."""
    available = sorted(available)
    return InstaError(f"unknown {kind} {name!r}{did_you_mean(str(name), available)}; available: {', '.join(available)}")


def first_line(exc: BaseException, limit: int = 200) -> str:
    """What an exception says, as one line for an error or warning (its type when it says nothing)."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


#: what a terminal acts on instead of showing: C0 controls but tab and newline (ESC starts
#: colour, cursor and title sequences), DEL, C1 controls, and the bidirectional embeddings,
#: overrides and isolates that reorder the text around them, and the line and paragraph
#: separators (U+2028/9) that some terminals and viewers break lines at
_UNSHOWABLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` with every character a terminal would act on shown as its escape (``\\x1b``,
    ``\\u202e``): data (a task's id or instruction) and arguments never drive the terminal."""
    return _UNSHOWABLE.sub(lambda m: f"\\x{ord(m[0]):02x}" if ord(m[0]) < 0x100 else f"\\u{ord(m[0]):04x}", text)
