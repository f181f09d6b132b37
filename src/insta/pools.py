"""Pool specs and the reader registry.

A pool spec names a reader, an argument and options, URL-query style::

    KIND[:ARG][?OPTION=VALUE&OPTION=VALUE]

    p3:t0-train?group=dataset
    niv2:/data/natural-instructions?split=train&exclude_categories=Translation
    jsonl:tasks.jsonl?id=name&instruction=summary&label=category
    hf:my/dataset?split=train&instruction=definition

A bare path ending in ``.jsonl``/``.json``/``.csv`` is read as that table kind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from .errors import InstaError, unknown
from .tasks import TaskPool


@dataclass(frozen=True)
class PoolSpec:
    kind: str
    arg: str
    options: dict[str, str]
    text: str

    def option(self, name: str, default: str | None = None) -> str | None:
        return self.options.get(name, default)

    def flag(self, name: str, default: bool = False) -> bool:
        value = self.options.get(name)
        if value is None:
            return default
        lowered = value.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise InstaError(f"pool spec {self.text!r}: option {name}={value!r} is not a boolean; use true or false")

    def integer(self, name: str, default: int) -> int:
        value = self.options.get(name)
        if value is None:
            return default
        try:
            return int(value)
        except ValueError:
            raise InstaError(f"pool spec {self.text!r}: option {name}={value!r} is not an integer") from None

    def listing(self, name: str) -> list[str]:
        value = self.options.get(name)
        return [v.strip() for v in value.split(",") if v.strip()] if value else []


@dataclass(frozen=True)
class Reader:
    """A registered pool reader: how to spell it, what it takes, and the loader."""

    kind: str
    summary: str
    arg: str
    options: dict[str, str]
    examples: list[str]
    load: Callable[[PoolSpec], TaskPool]
    named: dict[str, str] = field(default_factory=dict)  # named pools: arg -> description


READERS: dict[str, Reader] = {}

TABLE_SUFFIXES = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv"}


def register(reader: Reader) -> Reader:
    READERS[reader.kind] = reader
    return reader


def _ensure_registered() -> None:
    # Importing the reader modules registers them.
    from .readers import bigbench, niv2, promptsource, table  # noqa: F401


def parse_spec(text: str) -> PoolSpec:
    """Parse ``KIND[:ARG][?opts]`` (or a bare table path) into a :class:`PoolSpec`."""
    _ensure_registered()
    if not text or not text.strip():
        raise InstaError("empty pool spec; give e.g. p3:t0-train or jsonl:FILE (see 'insta pools')")
    text = text.strip()
    body, _, query = text.partition("?")
    kind, sep, arg = body.partition(":")
    if not sep or kind not in READERS:
        lowered = body.lower()
        for suffix, table_kind in TABLE_SUFFIXES.items():
            if lowered.endswith(suffix):
                kind, arg = table_kind, body
                break
        else:
            if not sep and kind in READERS:
                arg = ""
            else:
                raise unknown("pool kind", kind, READERS)
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise InstaError(f"pool spec {text!r}: options must look like ?name=value&name=value") from None
    options: dict[str, str] = {}
    reader = READERS[kind]
    for key, value in pairs:
        if key not in reader.options:
            raise InstaError(
                f"pool spec {text!r}: unknown option {key!r} for {kind}; available: {', '.join(sorted(reader.options))}"
            )
        options[key] = value
    return PoolSpec(kind=kind, arg=arg, options=options, text=text)


def load_pool(spec: str | PoolSpec) -> TaskPool:
    """Load the pool a spec names. Errors are :class:`InstaError` with one-line messages."""
    if isinstance(spec, str):
        spec = parse_spec(spec)
    pool = READERS[spec.kind].load(spec)
    if len(pool) == 0:
        raise InstaError(f"pool {spec.text!r} has no tasks; check its filters")
    return pool


def readers() -> dict[str, Reader]:
    _ensure_registered()
    return dict(READERS)
