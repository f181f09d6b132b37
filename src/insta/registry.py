"""Registries: named, lazily imported plug-ins (pool readers, selection methods, benchmark
suites, alignment recipes).

An entry is either the object itself or a ``"module:attribute"`` string imported on first
use, so listing names costs nothing and a registry never imports its plug-ins at import time
(no import cycles, no registration by side effect). Unknown names give one line with the
closest names and every available one::

    unknown pool kind 'jsnol' (did you mean: jsonl?); available: bigbench, csv, hf, jsonl, niv2, p3
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Generic, TypeVar

from .errors import InstaError, did_you_mean

T = TypeVar("T")


def import_object(location: str):
    """The object a ``"module:attribute"`` string names."""
    module, _, attr = location.partition(":")
    return getattr(importlib.import_module(module), attr)


class Registry(Generic[T]):
    """A mapping name -> plug-in, filled with objects or ``"module:attribute"`` strings."""

    def __init__(self, kind: str, entries: dict[str, T | str] | None = None):
        self.kind = kind
        self._entries: dict[str, T | str] = dict(entries or {})

    def register(self, name: str, entry: T | str) -> None:
        """Add (or replace) an entry: the object, or where to import it from."""
        self._entries[name] = entry

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return list(self._entries)

    def unknown(self, name: str) -> InstaError:
        return InstaError(f"unknown {self.kind} {name!r}{did_you_mean(name, self._entries)}; "
                          f"available: {', '.join(sorted(self._entries))}")

    def get(self, name: str) -> T:
        """The plug-in called ``name`` (imported now if it was registered by location)."""
        try:
            entry = self._entries[name]
        except (KeyError, TypeError):
            raise self.unknown(str(name)) from None
        if isinstance(entry, str):
            entry = import_object(entry)
            self._entries[name] = entry
        return entry  # type: ignore[return-value]

    def items(self) -> list[tuple[str, T]]:
        return [(name, self.get(name)) for name in self._entries]
