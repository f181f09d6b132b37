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

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Union
from urllib.parse import parse_qsl

from .errors import InstaError, did_you_mean
from .readers.base import PoolSpec, Reader
from .registry import Registry
from .tasks import TaskPool

__all__ = ["READERS", "PoolSpec", "PoolSpecs", "Reader", "distinct", "load_pool", "load_union", "union_of", "parse_spec", "pool_field", "readers", "spec_list"]


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


#: what names a pool: a spec, or several (their union, see :func:`load_union`)
PoolSpecs = Union[str, PoolSpec, Sequence[Union[str, PoolSpec]]]


def load_pool(spec: PoolSpecs) -> TaskPool:
    """Load the pool a spec names, or the union of several (a list of specs). Errors are
    :class:`InstaError` with one-line messages."""
    if not isinstance(spec, (str, PoolSpec)):
        return load_union(spec)
    if isinstance(spec, str):
        spec = parse_spec(spec)
    pool = READERS.get(spec.kind).load(spec)
    if len(pool) == 0:
        raise InstaError(f"pool {spec.text!r} has no tasks; check its filters")
    return pool


def spec_list(spec: PoolSpecs | None) -> list[str]:
    """The spec texts of a pool argument: one spec, or the specs of a union."""
    if spec is None:
        return []
    if isinstance(spec, (str, PoolSpec)):
        return [spec.text if isinstance(spec, PoolSpec) else spec]
    return [s.text if isinstance(s, PoolSpec) else s for s in spec]


def pool_field(specs: Sequence[str]) -> str | list[str]:
    """How a command records its pool (a selection file's ``pool``): the spec, or the list of
    specs of a union, which :func:`load_pool` reads back."""
    return specs[0] if len(specs) == 1 else list(specs)


def _same_tasks(pools: Sequence[TaskPool], parsed: Sequence[PoolSpec]) -> None:
    """The same pool spelt twice (a path and its absolute form, ``jsonl:`` or not, a default
    option written out) is an error; pools that share some tasks (``bigbench:all`` and
    ``bigbench:t0-eval``) get a warning: those tasks count twice."""
    from .log import log

    keys = [{(t.id, tuple(t.texts)) for t in pool} for pool in pools]
    for j in range(len(pools)):
        for i in range(j):
            shared = len(keys[i] & keys[j])
            if shared and keys[i] == keys[j]:
                raise InstaError(f"pools {parsed[i].text!r} and {parsed[j].text!r} hold the same {shared} tasks (the "
                                 "same pool given twice?); give each pool once")
            if shared:
                log.warning(f"pools {parsed[i].text!r} and {parsed[j].text!r} share {shared} task(s) (same id and "
                            "instructions): each is a candidate twice, and a selection may hold both copies")


def union_tags(specs: Sequence[PoolSpec]) -> list[str]:
    """The prefix that makes a colliding id distinct, per pool: its kind (``p3``, ``jsonl``),
    with the pool's position (``jsonl#2``) where two pools share a kind."""
    kinds = [s.kind for s in specs]
    return [k if kinds.count(k) == 1 else f"{k}#{i}" for i, k in enumerate(kinds, start=1)]


def load_union(specs: Sequence[str | PoolSpec]) -> TaskPool:
    """The union of several pools, in the order given. Each task records the spec it came from
    (``Task.origin``). An id that occurs in more than one pool is made distinct in every pool
    that has it, as ``TAG:ID`` with TAG the pool's kind (``p3:cb``, ``jsonl:cb``), or the kind
    and the pool's position where two pools share a kind (``jsonl#1:cb``, ``jsonl#3:cb``): strip
    ``TAG:`` to get the id back in its own pool. A spec given twice is an error, not one pool
    silently dropped or doubled."""
    parsed = [parse_spec(s) if isinstance(s, str) else s for s in specs]
    if not parsed:
        raise InstaError("no pool given; give --pool SPEC (repeat it for a union of pools)")
    if len(parsed) == 1:
        return load_pool(parsed[0])
    return union_of([load_pool(p) for p in distinct(parsed)], parsed)


def distinct(parsed: Sequence[PoolSpec]) -> Sequence[PoolSpec]:
    """``parsed``, checked to name no pool twice."""
    first: dict[str, int] = {}
    for i, p in enumerate(parsed, start=1):
        if p.text in first:
            raise InstaError(f"pool {p.text!r} is given twice (pools {first[p.text]} and {i}); give each pool once")
        first[p.text] = i
    return parsed


def union_of(pools: Sequence[TaskPool], parsed: Sequence[PoolSpec]) -> TaskPool:
    """The union of loaded pools (``parsed``: the spec each came from), as :func:`load_union`."""
    owners: dict[str, int] = {}
    for pool in pools:
        for tid in pool.ids:
            owners[tid] = owners.get(tid, 0) + 1
    _same_tasks(pools, parsed)
    tags = union_tags(parsed)
    tasks = [replace(t, id=f"{tag}:{t.id}", origin=spec.text, source_id=t.id) if owners[t.id] > 1
             else replace(t, origin=spec.text) for spec, tag, pool in zip(parsed, tags, pools) for t in pool]
    taken = {t.id: t for t in tasks if t.source_id is None}
    for t in tasks:
        if t.source_id is not None and t.id in taken:
            raise InstaError(f"pool {t.origin!r}: its task {t.source_id!r}, which another pool holds too, would be named "
                             f"{t.id!r}, but pool {taken[t.id].origin!r} has a task with that id; rename one of them")
    clashes = sum(1 for n in owners.values() if n > 1)
    note = f"; {clashes} id(s) in several pools made distinct as KIND:ID" if clashes else ""
    return TaskPool(tasks, " + ".join(p.name for p in pools),
                    description=f"union of {len(pools)} pools ({', '.join(p.text for p in parsed)}){note}")


def readers() -> dict[str, Reader]:
    """Every registered reader by kind (imports them all)."""
    return dict(READERS.items())
