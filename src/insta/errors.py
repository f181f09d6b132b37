"""User-facing errors.

Every problem a user can fix (a bad path, a malformed line, an unknown id) is raised as
:class:`InstaError`, whose message is one line naming the file/line/field and the fix.
The CLI prints it and exits with code 2, without a traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class InstaError(Exception):
    """An error caused by the user's input; the message says what to do about it."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


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
