"""Benchmark suites: a pool, its targets, and label ground truth none of us wrote.

Every suite ranks the pool for each target; a candidate is relevant when it has the
target's label (T0 cluster, NIV2 category). For leave-one-out suites the targets are the
pool's own tasks: a target never ranks itself, nor (``exclude_siblings``) tasks built on
its own source dataset.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from .. import t0
from ..errors import InstaError
from ..pools import PoolSpecs, distinct, load_pool, parse_spec, spec_list, union_of
from ..readers.niv2 import source_from_name
from ..registry import Registry
from ..select import Target
from ..tasks import TaskPool

TABLE_KINDS = ("jsonl", "csv", "hf")


@dataclass
class Suite:
    name: str
    description: str
    pool: TaskPool
    targets: list[Target]
    leave_one_out: bool = True
    exclude_siblings: bool = True
    methods: tuple[str, ...] = ("random", "bm25", "insta", "hybrid", "insta:mean", "insta:vote")
    notes: list[str] = field(default_factory=list)


def default_data_dir() -> Path | None:
    """``$INSTA_DATA``, else ``shared/data`` or ``../shared/data`` from the working directory."""
    env = os.environ.get("INSTA_DATA")
    if env:
        return Path(env).expanduser()
    for candidate in (Path("shared/data"), Path("../shared/data")):
        if candidate.is_dir():
            return candidate
    return None


def _data(path: str | None, sub: str, flag: str) -> Path:
    if path:
        p = Path(path).expanduser()
    else:
        root = default_data_dir()
        if root is None:
            raise InstaError(f"no data for this suite: pass {flag} PATH (or set INSTA_DATA to the folder holding {sub})")
        p = root / sub
    if not p.exists():
        raise InstaError(f"{flag} {p} does not exist")
    return p


def _loo(pool: TaskPool) -> list[Target]:
    return [Target.from_task(t) for t in pool]


def _p3(options: dict) -> Suite:
    spec = "p3:t0-train" + (f"?templates={options['templates']}" if options.get("templates") else "")
    pool = load_pool(spec)
    return Suite("p3", "P3: the 38 T0 training entries of promptsource 0.2.3, leave-one-out; relevant = same T0 cluster; "
                 "all templates of the target are its instructions; sibling subsets are not candidates", pool, _loo(pool))


def _p3_grouped(options: dict) -> Suite:
    spec = "p3:t0-train?group=dataset" + (f"&templates={options['templates']}" if options.get("templates") else "")
    pool = load_pool(spec)
    return Suite("p3-grouped", "P3 grouped: the 35 T0 training datasets (subsets merged), leave-one-out; relevant = same T0 cluster",
                 pool, _loo(pool))


def _p3_extra(options: dict) -> Suite:
    templates = f"?templates={options['templates']}" if options.get("templates") else ""
    pool = load_pool("p3:t0-train" + templates)
    clusters = set(pool.labels)
    wanted = {k: c for groups in (t0.T0P_ADDITIONAL_TRAIN, t0.T0PP_ADDITIONAL_TRAIN)
              for c, keys in groups.items() for k in keys if c in clusters}
    extra = load_pool("p3:" + ",".join(wanted) + templates)
    targets = [Target(t.id, t.texts, wanted[t.id], t.dataset) for t in extra]
    return Suite("p3-extra", "P3 extra: the T0+/T0++ additional datasets whose cluster exists in T0's training mixture, "
                 "as targets against the 38 T0 training entries; relevant = same cluster",
                 pool, targets, leave_one_out=False, exclude_siblings=False)


def _default_split(pool: TaskPool, name: str) -> TaskPool:
    """The default split's tasks (train + test), each with its source dataset (siblings), read
    from its name where the table has no Source field (task1385_anli_r1_entailment: anli)."""
    return TaskPool([replace(t, dataset=t.dataset or source_from_name(t.id)) for t in pool if t.split in ("train", "test")],
                    name, description=pool.description)


def _niv2(options: dict) -> Suite:
    path = _data(options.get("niv2"), "niv2", "--niv2")
    definitions = path if path.name == "definitions.jsonl" else path / "definitions.jsonl"
    if definitions.is_file():
        full = load_pool(f"jsonl:{definitions}?id=name&instruction=definition&label=categories&split=split_default")
        pool = _default_split(full, "niv2:default")
        return Suite("niv2", "NIV2: the 875 English tasks of the default split (train+test), leave-one-out; "
                     "instruction = the official Definition; relevant = same category (the first of its Categories); "
                     "tasks on the same source dataset (read from the task name) are not candidates", pool, _loo(pool))
    full = load_pool(f"niv2:{path}")
    pool = full.filter(lambda t: t.split in ("train", "test"), name="niv2:default")
    return Suite("niv2", f"NIV2 checkout {path}: the default split's tasks, leave-one-out; instruction = Definition; "
                 "relevant = same category; tasks on the same source dataset are not candidates", pool, _loo(pool))


def _niv2_summaries(options: dict) -> Suite:
    path = _data(options.get("niv2"), "niv2", "--niv2")
    table = path if path.is_file() else path / "tasks.jsonl"
    if not table.is_file():
        raise InstaError(f"--niv2 {path}: no tasks.jsonl (the NIV2 task table with one-line summaries)")
    full = load_pool(f"jsonl:{table}?id=name&instruction=summary&label=category&split=split_default")
    pool = _default_split(full, "niv2:default")
    return Suite("niv2-summaries", "NIV2: the 875 English tasks of the default split, leave-one-out; instruction = the "
                 "one-line task summary of the task table (not the Definition); relevant = same category; tasks on the "
                 "same source dataset are not candidates", pool, _loo(pool),
                 notes=["summaries stand in for Definitions: figures are not comparable to the paper's"])


def _niv2_files(options: dict) -> Suite:
    path = _data(options.get("niv2"), "niv2", "--niv2")
    if path.is_file():
        path = path.parent
    pool = load_pool(f"niv2:{path}?instances=100")
    return Suite("niv2-files", "NIV2 task files with instances (the 92 real files beside the checkout), leave-one-out; "
                 "instruction = Definition; relevant = same category",
                 pool, _loo(pool), methods=("random", "bm25", "insta", "samples"),
                 notes=["87 of the 92 shared files are Question Answering: the labels separate little; "
                        "this suite exists to run the instance-based 'samples' baseline on real task files"])


def dataset_key(name: str) -> str:
    """A source dataset's name reduced to lower-case letters and digits (``cosmos_qa``,
    ``CosmosQA``: ``cosmosqa``), the one rule by which the cross suite matches datasets across
    meta-datasets' naming conventions."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _cross(options: dict) -> Suite:
    """P3 templates, NIV2 Definitions and BIG-bench descriptions in one union pool; a task is
    related to the tasks of the other pools built on its source dataset."""
    path = _data(options.get("niv2"), "niv2", "--niv2")
    definitions = path if path.name == "definitions.jsonl" else path / "definitions.jsonl"
    if not definitions.is_file():
        raise InstaError(f"--niv2 {path}: no definitions.jsonl (the official Definitions of the default split)")
    templates = f"?templates={options['templates']}" if options.get("templates") else ""
    specs = [f"p3:all{templates}", "bigbench:all",
             f"jsonl:{definitions}?id=name&instruction=definition&label=categories&split=split_default"]
    p3, bigbench, niv2 = (load_pool(s) for s in specs)
    niv2 = _default_split(niv2, niv2.name)
    # each task's source dataset as its meta-dataset names it; a P3 entry DATASET/CONFIG names
    # two (super_glue/boolq, winogrande/winogrande_xl): the one another pool knows is taken;
    # a NIV2 name whose first word is such a collection names the dataset second
    # (task1288_glue_mrpc_paraphrasing: mrpc, else glue)
    collections = {dataset_key(t.id.split("/")[0]) for t in p3 if "/" in t.id}

    def niv2_names(t) -> list[str]:  # task380_boolq_yes_no_question: boolq
        first = dataset_key(source_from_name(t.id))
        words = t.id.split("_")
        return [dataset_key(words[2]), first] if first in collections and len(words) > 3 else [first]

    names = [
        [[dataset_key(part) for part in reversed((t.dataset or t.id).split("/"))] for t in p3],
        [[dataset_key((t.dataset or t.id).split("/")[0])] for t in bigbench],
        [niv2_names(t) for t in niv2],
    ]
    known = [{n for task_names in pool_names for n in task_names} for pool_names in names]
    pools = []
    for i, (spec, pool) in enumerate(zip(specs, (p3, bigbench, niv2))):
        elsewhere = set().union(*(k for j, k in enumerate(known) if j != i))
        tasks = []
        for t, options in zip(pool, names[i]):
            key = next((n for n in options if n in elsewhere), options[-1])
            # label = the dataset (relevance across pools); dataset = pool + dataset (siblings: same pool only)
            tasks.append(replace(t, label=key, dataset=f"{spec}|{key}"))
        pools.append(TaskPool(tasks, pool.name))
    union = union_of(pools, [parse_spec(s) for s in specs])
    where: dict[str, set[str | None]] = {}
    for t in union:
        where.setdefault(t.label or "", set()).add(t.origin)
    targets = [Target.from_task(t) for t in union if len(where[t.label or ""]) > 1]
    return Suite("cross", "P3 (all templates) + BIG-bench (all descriptions) + NIV2 (Definitions, default split) as one "
                 "union pool; targets: every task whose source dataset also has tasks in another of the three pools; "
                 "relevant = those tasks (dataset names matched in lower-case letters and digits: cosmos_qa = cosmosqa; of a "
                 "P3 entry's DATASET/CONFIG the part another pool knows); "
                 "tasks of the target's own pool on its dataset are not candidates",
                 union, targets, exclude_siblings=True, methods=("random", "bm25", "insta", "hybrid"),
                 notes=["dataset identity is the relation: NIV2's task names, P3's and BIG-bench's dataset names; "
                        "a name two different datasets share is matched too (e.g. hate), and a collection where "
                        "the config is not known elsewhere (glue/rte ~ task1344_glue_entailment_classification)"])


@dataclass(frozen=True)
class SuiteEntry:
    summary: str
    build: Callable[[dict], Suite]


SUITES: Registry[SuiteEntry] = Registry("suite", {
    "p3": SuiteEntry("38 T0 training entries, leave-one-out, T0 clusters", _p3),
    "p3-grouped": SuiteEntry("35 T0 training datasets (subsets merged), leave-one-out", _p3_grouped),
    "p3-extra": SuiteEntry("T0+/T0++ extra datasets as targets against the T0 training pool", _p3_extra),
    "niv2": SuiteEntry("875 English NIV2 tasks (default split) by their Definitions, leave-one-out, categories", _niv2),
    "niv2-summaries": SuiteEntry("the same 875 tasks by the task table's one-line summaries", _niv2_summaries),
    "niv2-files": SuiteEntry("NIV2 task files with instances (runs 'samples')", _niv2_files),
    "cross": SuiteEntry("P3 + BIG-bench + NIV2 Definitions as one union pool; relevant = the same dataset in another "
                        "pool (instruction styles compared)", _cross),
})


def relabeled(spec: str, field_name: str) -> TaskPool:
    """The pool a spec names, each task labelled by another field: ``dataset`` or ``split``
    for any pool, any column for a table pool (read again with ``label=FIELD``; a list-valued
    field, e.g. ``domains`` of the NIV2 table, gives its first value)."""
    parsed = parse_spec(spec)
    if field_name in ("dataset", "split"):
        loaded = load_pool(parsed)
        return TaskPool([replace(t, label=getattr(t, field_name)) for t in loaded], loaded.name,
                        description=loaded.description)
    if parsed.kind not in TABLE_KINDS:
        raise InstaError(f"--label-field {field_name!r}: a {parsed.kind} pool offers the fields dataset and split; "
                         f"any column works for table pools ({', '.join(TABLE_KINDS)})")
    return load_pool(replace(parsed, options={**parsed.options, "label": field_name}))


def build_suite(name: str | None = None, *, pool: PoolSpecs | None = None, niv2: str | None = None,
                templates: str | None = None, label_field: str | None = None) -> Suite:
    """A named suite, or a leave-one-out suite over any labelled pool spec (or union of specs)."""
    if label_field and not pool:
        raise InstaError("--label-field goes with --pool (named suites have their own labels)")
    if pool:
        if name:
            raise InstaError("give --suite or --pool, not both")
        specs = spec_list(pool)
        if label_field and len(specs) > 1:
            parsed = distinct([parse_spec(s) for s in specs])
            loaded = union_of([relabeled(s.text, label_field) for s in parsed], parsed)
        else:
            loaded = relabeled(specs[0], label_field) if label_field else load_pool(specs)
        shown = " + ".join(specs)
        labels = {t.label for t in loaded if t.label}
        if len(labels) < 2:
            raise InstaError(f"pool {shown!r} needs labels (at least two distinct) to benchmark on; "
                             "map one with ?label=FIELD or --label-field FIELD")
        has_instances = any(t.instances for t in loaded)
        return Suite("custom", f"{shown}: leave-one-out; relevant = same label", loaded, _loo(loaded),
                     methods=("random", "bm25", "insta") + (("samples",) if has_instances else ()))
    if not name:
        raise InstaError(f"give --suite NAME ({', '.join(SUITES)}) or --pool SPEC")
    return SUITES.get(name).build({"niv2": niv2, "templates": templates})
