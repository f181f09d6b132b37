"""P3 / promptsource reader.

A promptsource entry (``dataset`` or ``dataset/subset``) is a task; its templates are its
instructions. The templates come from the promptsource 0.2.3 sdist on PyPI, which this
module fetches with pip into the user cache the first time it is needed (or reads from a
directory / tarball the user points at).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from collections.abc import Iterator, Mapping
import os
import re
import tempfile
from dataclasses import asdict, dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

from .. import t0
from ..errors import InstaError, did_you_mean
from ..io import read_yaml, surrogate_at, write_json_atomic
from ..log import log
from ..paths import cache_dir
from .base import PoolSpec, Reader
from ..tasks import Instruction, Task, TaskPool, clean_text

PROMPTSOURCE_VERSION = "0.2.3"
PIP_COMMAND = f"pip download --no-deps --ignore-requires-python promptsource=={PROMPTSOURCE_VERSION}"
ENV_TEMPLATES = "INSTA_PROMPTSOURCE"

# Benchmark collections whose subsets are distinct datasets: the subset, not the collection,
# is the source dataset (so grouping merges adversarial_qa/* but never glue/mrpc with glue/qqp).
COLLECTIONS = frozenset({"glue", "super_glue", "kilt_tasks", "tweet_eval"})

_PLACEHOLDER = re.compile(r"\{\{.*?\}\}", re.DOTALL)
_BLOCK = re.compile(r"\{%.*?%\}", re.DOTALL)
_COMMENT = re.compile(r"\{#.*?#\}", re.DOTALL)


def template_to_instruction(jinja: str) -> str:
    """Turn a promptsource Jinja template into the instruction text INSTA embeds.

    As the paper's authors did for P3: keep the prompt side (before ``|||``), drop the
    ``{{ ... }}`` placeholders and ``{% ... %}`` tags, collapse whitespace.
    """
    prompt = jinja.split("|||", 1)[0]
    prompt = _COMMENT.sub(" ", prompt)
    prompt = _BLOCK.sub(" ", prompt)
    prompt = _PLACEHOLDER.sub(" ", prompt)
    return clean_text(prompt)


@dataclass(frozen=True)
class Template:
    id: str
    name: str
    jinja: str
    answer_choices: str | None
    original_task: bool | None
    choices_in_prompt: bool | None
    metrics: tuple[str, ...]

    @cached_property
    def instruction(self) -> str:
        return template_to_instruction(self.jinja)


@lru_cache(maxsize=1)
def _loader() -> type:
    """Safe YAML loader that reads promptsource's !Template / !TemplateMetadata tags as mappings
    (built on first use: a warm start reads parsed entries from the cache and never needs yaml)."""
    import yaml

    class Loader(yaml.CSafeLoader if hasattr(yaml, "CSafeLoader") else yaml.SafeLoader):  # type: ignore[misc]
        pass

    def mapping(loader: Any, node: Any) -> dict[str, Any]:
        return loader.construct_mapping(node, deep=True)

    Loader.add_constructor("!Template", mapping)
    Loader.add_constructor("!TemplateMetadata", mapping)
    return Loader


# ---------------------------------------------------------------- locating the templates


def _templates_in(root: Path) -> Path | None:
    """Find the ``templates`` folder (holding dataset folders with templates.yaml) under root."""
    for candidate in (root, root / "templates", root / "promptsource" / "templates",
                      root / f"promptsource-{PROMPTSOURCE_VERSION}" / "promptsource" / "templates"):
        if candidate.is_dir() and any(candidate.glob("*/templates.yaml")) or (
            candidate.is_dir() and any(candidate.glob("*/*/templates.yaml"))
        ):
            return candidate
    return None


def _template_member(name: str) -> tuple[str, ...] | None:
    parts = name.split("/")
    if parts[-1] != "templates.yaml" or "templates" not in parts:
        return None
    rel = tuple(parts[parts.index("templates") + 1:])
    return None if any(p in ("", "..") for p in rel) else rel


def _extract_sdist(tarball: Path, dest: Path) -> Path:
    """Extract only templates/**/templates.yaml from the sdist into dest, atomically."""
    from ..fetch import extract_atomically

    return extract_atomically(tarball, dest, _template_member, what="promptsource sdist", redownload=PIP_COMMAND,
                              complete=lambda d: _templates_in(d) is not None)


def _download_sdist(into: Path) -> Path:
    from ..fetch import pip_download

    return pip_download(f"promptsource=={PROMPTSOURCE_VERSION}", into, pattern=f"promptsource-{PROMPTSOURCE_VERSION}.tar.gz",
                        sdist=True, hint=f"pass p3:...?templates=DIR/promptsource-{PROMPTSOURCE_VERSION}.tar.gz "
                                         f"(or set {ENV_TEMPLATES})")


def templates_root(location: str | os.PathLike[str] | None = None, *, download: bool = True) -> Path:
    """The promptsource ``templates`` folder: from ``location`` (dir or sdist), ``$INSTA_PROMPTSOURCE``,
    the user cache, or a fresh pip download into the cache."""
    location = location or os.environ.get(ENV_TEMPLATES)
    cached = cache_dir() / f"promptsource-{PROMPTSOURCE_VERSION}" / "templates"
    if location:
        path = Path(location).expanduser()
        if not path.exists():
            raise InstaError(f"promptsource templates: {path} does not exist; give the sdist tarball or its templates folder")
        if path.is_file():
            dest = cache_dir() / "promptsource-extracted" / re.sub(r"[^\w.-]", "_", str(path.resolve()))
            return _templates_in(dest) or _extract_sdist(path, dest)
        found = _templates_in(path)
        if not found:
            raise InstaError(f"promptsource templates: no */templates.yaml under {path}")
        return found
    if _templates_in(cached):
        return cached
    if not download:
        raise InstaError(f"promptsource templates are not in the cache ({cached}); run: {PIP_COMMAND}")
    with tempfile.TemporaryDirectory(prefix="insta-ps-") as tmp:
        tarball = _download_sdist(Path(tmp))
        return _extract_sdist(tarball, cached)


# ---------------------------------------------------------------- parsing


def _template(path: Path, tid: Any, tpl: Any) -> Template:
    """One template entry, its shape checked (a hand-edited templates.yaml can hold anything)."""
    where = f"{path}: templates[{tid!r}]"
    if not isinstance(tpl, dict):
        raise InstaError(f"{where} must be a !Template mapping (id, name, jinja, ...)")
    meta = tpl.get("metadata") or {}
    if not isinstance(meta, dict):
        raise InstaError(f"{where}.metadata must be a !TemplateMetadata mapping")
    for key in ("jinja", "answer_choices"):
        if tpl.get(key) is not None and not isinstance(tpl[key], str):
            raise InstaError(f"{where}.{key} must be text")
    metrics = meta.get("metrics") or ()
    if not isinstance(metrics, (list, tuple)):
        raise InstaError(f"{where}.metadata.metrics must be a list")
    return Template(id=str(tpl.get("id", tid)), name=str(tpl.get("name", tid)), jinja=tpl.get("jinja") or "",
                    answer_choices=tpl.get("answer_choices"), original_task=meta.get("original_task"),
                    choices_in_prompt=meta.get("choices_in_prompt"), metrics=tuple(str(m) for m in metrics))


@lru_cache(maxsize=1024)
def _read_entry(path: Path, key: str) -> tuple[str, str | None, tuple[Template, ...]]:
    """(dataset, subset, templates) of one templates.yaml."""
    doc = read_yaml(path, "promptsource templates", loader=_loader()) or {}
    if not isinstance(doc, dict) or not isinstance(doc.get("templates") or {}, dict):
        raise InstaError(f"{path}: expected a mapping with 'dataset' and 'templates' (id -> !Template)")
    templates = tuple(_template(path, tid, tpl) for tid, tpl in
                      sorted((doc.get("templates") or {}).items(), key=lambda kv: str(kv[0])))
    subset = doc.get("subset")
    return str(doc.get("dataset", key.split("/")[0])), None if subset is None else str(subset), templates


def _sound(entry: Any) -> bool:
    """Is a cached entry what the parser makes (texts where texts belong, no lone surrogates)?"""
    dataset, subset, templates = entry
    texts = [dataset, *([] if subset is None else [subset])]
    for t in templates:
        texts += [t.id, t.name, t.jinja, *([] if t.answer_choices is None else [t.answer_choices]), *t.metrics]
    return all(isinstance(x, str) and surrogate_at(x) is None for x in texts)


class Entries(Mapping[str, tuple[str, str | None, tuple[Template, ...]]]):
    """key -> (dataset, subset, templates) for every templates.yaml under a templates folder.

    Keys come from the file names; a file is parsed only when its entry is read (a pool of
    38 entries parses 38 files, not all 279), and what was parsed is kept as JSON in the
    cache, keyed by each file's size, modification and change times, so a warm start parses nothing.
    """

    def __init__(self, root: Path):
        self.root = root
        found = []
        for folder, _, files in os.walk(root):  # os.walk: a few ms where Path.rglob takes tens
            if "templates.yaml" in files:
                path = Path(folder) / "templates.yaml"
                found.append((path.parent.relative_to(root).as_posix(), path))
        self._paths = dict(sorted(found, key=lambda kv: kv[1]))
        self._parsed: dict[str, Any] | None = None
        self._dirty = False
        self._warned = False

    def _stamp(self, key: str) -> str:
        path = self._paths[key]
        if not path.is_file():  # a FIFO would block the read, a link loop fail it
            raise InstaError(f"{path} is not a regular file; promptsource templates are templates.yaml files")
        st = path.stat()
        # ctime too: an edit that keeps the size and restores the mtime (touch -r, rsync -a) changes it
        return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"

    @property
    def _store(self) -> Path:
        return cache_dir() / "promptsource-parsed" / f"{hashlib.sha256(str(self.root.resolve()).encode()).hexdigest()[:16]}.json"

    def _damaged(self, why: str) -> None:
        """Say once that the stored parse is unusable: it is parsed again and rewritten."""
        if not self._warned:
            self._warned = True
            log.warning("parsed promptsource templates %s are damaged (%s): the templates are parsed again and the "
                        "file rebuilt", self._store, why)

    def _load_store(self) -> dict[str, Any]:
        if self._parsed is None:
            self._parsed = {}
            try:
                doc = json.loads(self._store.read_text(encoding="utf-8"))
            except FileNotFoundError:  # the first start: nothing parsed yet
                return self._parsed
            except (ValueError, RecursionError) as exc:  # bad bytes, invalid JSON, nested too deep
                self._damaged(f"not valid JSON: {str(exc).splitlines()[0][:80] if str(exc) else type(exc).__name__}")
                return self._parsed
            except OSError as exc:
                self._damaged(f"cannot be read: {exc.strerror or exc}")
                return self._parsed
            if isinstance(doc, dict) and doc.get("version") == 2 and isinstance(doc.get("entries"), dict):
                # only entries of files that exist: a damaged key is dropped, never written back
                self._parsed = {k: v for k, v in doc["entries"].items() if k in self._paths}
            elif not (isinstance(doc, dict) and isinstance(doc.get("version"), int) and doc["version"] != 2):
                self._damaged("not what insta writes there")  # (another version's file is replaced silently)
        return self._parsed

    def __getitem__(self, key: str) -> tuple[str, str | None, tuple[Template, ...]]:
        path = self._paths[key]
        stored = self._load_store().get(key)
        stamp = self._stamp(key)
        if stored is not None and not isinstance(stored, dict):
            self._damaged(f"its entry {key!r} is not an object")
        if isinstance(stored, dict) and stored.get("stamp") == stamp:
            try:
                entry = (stored["dataset"], stored["subset"],
                         tuple(Template(**{**t, "metrics": tuple(t["metrics"])}) for t in stored["templates"]))
                if _sound(entry):
                    return entry
                self._damaged(f"its entry {key!r} holds values of the wrong type")
            except Exception:  # noqa: BLE001 - not what this version writes: parse again
                self._damaged(f"its entry {key!r} lacks fields")
        entry = _read_entry(path, key)
        self._parsed[key] = {"stamp": stamp, "dataset": entry[0], "subset": entry[1],  # type: ignore[index]
                             "templates": [asdict(t) for t in entry[2]]}
        self._dirty = True
        return entry

    def save(self) -> None:
        """Keep what was parsed for the next start (best effort: an unwritable cache is no error)."""
        if not self._dirty:
            return
        try:
            write_json_atomic(self._store, {"version": 2, "root": str(self.root), "entries": self._parsed},
                              what="promptsource cache")
            self._dirty = False
        except (InstaError, OSError):
            pass

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)

    def __contains__(self, key: object) -> bool:
        return key in self._paths


def read_templates(location: str | os.PathLike[str] | None = None) -> Entries:
    """All promptsource entries: key -> (dataset, subset, templates), parsed on access."""
    return Entries(templates_root(location))


# ---------------------------------------------------------------- the reader


def _selection(arg: str, available: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    """Resolve the reader argument to (keys, key -> label)."""
    clusters = t0.cluster_of()
    if arg in ("", "all"):
        return sorted(available), clusters
    if arg in t0.SELECTIONS:
        groups = t0.SELECTIONS[arg][1]
        keys = [k for cluster_keys in groups.values() for k in cluster_keys]
        labels = {k: c for c, cluster_keys in groups.items() for k in cluster_keys}
        return keys, labels
    keys: list[str] = []
    for part in (p.strip() for p in arg.split(",")):
        if not part:
            continue
        if any(ch in part for ch in "*?["):
            matched = [k for k in sorted(available) if fnmatch.fnmatchcase(k, part)]
            if not matched:
                raise InstaError(f"p3: pattern {part!r} matches no promptsource entry")
            keys.extend(m for m in matched if m not in keys)
        elif part in available:
            keys.append(part)
        elif part in t0.SELECTIONS or part == "all":
            raise InstaError(f"p3: {part!r} is a named selection; use it alone, e.g. p3:{part}")
        else:
            names = list(available) + list(t0.SELECTIONS)
            raise InstaError(
                f"p3: unknown promptsource entry or selection {part!r}{did_you_mean(part, names)}; "
                f"selections: {', '.join(t0.SELECTIONS)}, all"
            )
    return keys, clusters


def load_p3(spec: PoolSpec) -> TaskPool:
    entries = read_templates(spec.option("templates"))
    keys, labels = _selection(spec.arg, entries)
    original_only = spec.flag("original_only")
    group = spec.option("group", "none")
    if group not in ("none", "dataset"):
        raise InstaError(f"pool spec {spec.text!r}: group={group!r}; use group=dataset or group=none")
    tasks = []
    skipped = []
    for key in keys:
        if key not in entries:
            skipped.append(key)  # e.g. jigsaw_toxicity_pred has no templates in 0.2.3
            continue
        dataset, subset, templates = entries[key]
        instructions = [
            Instruction(text=tpl.instruction, raw=tpl.jinja, name=tpl.name)
            for tpl in templates
            if tpl.instruction and (not original_only or tpl.original_task)
        ]
        if not instructions:
            skipped.append(key)
            continue
        tasks.append(
            Task(
                id=key,
                instructions=instructions,
                label=labels.get(key),
                dataset=key if dataset in COLLECTIONS else dataset,
                source="p3",
                meta={"subset": subset},
                templates=tuple(t for t in templates if t.instruction),
            )
        )
    entries.save()
    description = f"promptsource {PROMPTSOURCE_VERSION}: {spec.arg or 'all'}"
    if skipped:
        description += f" (without usable templates: {', '.join(skipped)})"
    pool = TaskPool(tasks, name=f"p3:{spec.arg or 'all'}", description=description)
    return pool.group_by_dataset() if group == "dataset" else pool


READER = Reader(
    kind="p3",
    summary="P3 / promptsource 0.2.3 templates (fetched with pip into the cache on first use)",
    arg="all | a named selection | comma-separated entries or globs (super_glue/*)",
    options={
        "group": "dataset: merge subsets of one dataset into one task (adversarial_qa/*); none (default)",
        "original_only": "true: only templates of the original task (as T0's evaluation)",
        "templates": "a promptsource sdist tarball or templates folder (default: cache, else pip download)",
    },
    examples=["p3:t0-train", "p3:t0-train?group=dataset", "p3:t0-eval?original_only=true", "p3:super_glue/*"],
    load=load_p3,
    named={name: desc for name, (desc, _) in t0.SELECTIONS.items()} | {"all": "every promptsource entry"},
)
