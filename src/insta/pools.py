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

from pathlib import Path
from urllib.parse import parse_qsl

from .errors import InstaError, did_you_mean
from .readers.base import PoolSpec, Reader
from .registry import Registry
from .tasks import TaskPool

__all__ = ["READERS", "PoolSpec", "Reader", "load_pool", "parse_spec", "readers"]


#: pool kinds -> their readers (imported when a spec names them)
READERS: Registry[Reader] = Registry("pool kind", {
    "p3": "insta.readers.promptsource:READER",
    "niv2": "insta.readers.niv2:READER",
    "bigbench": "insta.readers.bigbench:READER",
    "jsonl": "insta.readers.table:JSONL",
    "csv": "insta.readers.table:CSV",
    "hf": "insta.readers.table:HF",
})

TABLE_SUFFIXES = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv"}


def parse_spec(text: str) -> PoolSpec:
    """Parse ``KIND[:ARG][?opts]`` (or a bare table path) into a :class:`PoolSpec`."""
    if not text or not text.strip():
        raise InstaError("empty pool spec; give e.g. p3:t0-train or jsonl:FILE (see 'insta pools')")
    text = text.strip()
    body, _, query = text.partition("?")
    kind, sep, arg = body.partition(":")
    if sep and kind not in READERS and kind.isidentifier() and not Path(body).expanduser().exists():
        raise READERS.unknown(kind)  # 'jsnl:tasks.jsonl' is a misspelt kind, not a file called that
    if not sep or kind not in READERS:
        lowered = body.lower()
        for suffix, table_kind in TABLE_SUFFIXES.items():
            if lowered.endswith(suffix):
                kind, arg = table_kind, body
                break
        else:
            if not sep and kind in READERS:
                arg = ""
            elif not sep and (Path(body).suffix or Path(body).expanduser().exists()):
                raise _not_a_pool_file(body)
            else:
                raise READERS.unknown(kind)
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise InstaError(f"pool spec {text!r}: options must look like ?name=value&name=value") from None
    options: dict[str, str] = {}
    reader = READERS.get(kind)
    for key, value in pairs:
        if key not in reader.options:
            raise InstaError(
                f"pool spec {text!r}: unknown option {key!r} for {kind}{did_you_mean(key, reader.options)}; "
                f"available: {', '.join(sorted(reader.options))}"
            )
        if key in options:  # the last would win silently, and a later error blame the other
            raise InstaError(f"pool spec {text!r}: option {key!r} is given twice ({key}={options[key]!r}, "
                             f"{key}={value!r}); give it once (several values: {key}=A,B where the option takes a list)")
        if not value.strip():
            raise InstaError(f"pool spec {text!r}: option {key!r} has no value; give {key}=VALUE or leave the option "
                             "out (see 'insta pools')")
        options[key] = value
    return PoolSpec(kind=kind, arg=arg, options=options, text=text)


def _not_a_pool_file(body: str) -> InstaError:
    """A path that is no pool file: say which files a pool may be, not 'unknown pool kind'."""
    path = Path(body).expanduser()
    if path.is_dir():
        return InstaError(f"pool {body!r} is a folder; name its kind: niv2:{body} (a natural-instructions checkout) "
                          f"or hf:{body} (a saved dataset); see 'insta pools'")
    hint = "; a .txt of target instructions (one per line) is --targets-file" if path.suffix.lower() in (".txt", ".text") else ""
    return InstaError(f"pool file {body!r}: a pool file is a table of tasks, .jsonl, .json or .csv (one task per row, "
                      f"e.g. id and instruction), not {path.suffix or 'a file without a suffix'}{hint}; or give a "
                      "pool spec KIND:ARG (see 'insta pools')")


def load_pool(spec: str | PoolSpec) -> TaskPool:
    """Load the pool a spec names. Errors are :class:`InstaError` with one-line messages."""
    if isinstance(spec, str):
        spec = parse_spec(spec)
    pool = READERS.get(spec.kind).load(spec)
    if len(pool) == 0:
        raise InstaError(f"pool {spec.text!r} has no tasks; check its filters")
    return pool


def readers() -> dict[str, Reader]:
    """Every registered reader by kind (imports them all)."""
    return dict(READERS.items())
