"""Training mixtures: turn a selection into (input, target) examples for instruction tuning.

A mixture is a folder holding a Hugging Face dataset (``dataset/``, ``save_to_disk``), the
same rows as ``mixture.jsonl``, and ``manifest.json`` (source selection, tasks, counts,
seed, format). Rows have ``task``, ``input``, ``target``, ``choices`` (answer options for
rank classification, or empty) and ``source`` (``niv2`` / ``p3``).

* NIV2 tasks: the Tk-Instruct encoding — ``def`` puts the Definition before the instance,
  ``def+pos`` adds up to two positive examples; the target is the first output.
* P3 entries: each row of the underlying dataset is rendered through one of the entry's
  promptsource templates (Jinja2, sandboxed), the prompt and target split at ``|||``, the
  template's answer choices kept.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import InstaError, first_line, unknown
from .config import MixConfig  # noqa: F401 - re-exported (insta.mix.MixConfig)
from .io import atomic_dir, check_text, dumps, iter_jsonl, read_json
from .tasks import Task, TaskPool

PIPE = "|||"
_PIPE_GUARD = "\x00pipe\x00"
#: a task whose outputs take at most this many distinct values is treated as classification:
#: those values become every example's answer choices for rank classification
MAX_LABEL_CHOICES = 12

RowSource = Callable[[str, str | None, str], Sequence[dict[str, Any]]]


@dataclass
class Mixture:
    rows: list[dict[str, Any]]
    counts: dict[str, int]
    config: MixConfig
    dropped_duplicates: int = 0
    source: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def manifest(self) -> dict[str, Any]:
        return {
            "n_examples": len(self.rows),
            "tasks": self.counts,
            "dropped_duplicates": self.dropped_duplicates,
            "warnings": self.warnings,
            "config": asdict(self.config),
            "source": self.source,
        }


# ---------------------------------------------------------------- NIV2 (Tk-Instruct encoding)

def _outputs(value: Any) -> list[str]:
    values = value if isinstance(value, list) else [value]
    return [str(v) for v in values if v is not None and str(v).strip()]


def niv2_prompt(definition: str, text: str, positives: Sequence[dict[str, Any]] = ()) -> str:
    """The Tk-Instruct prompt: definition, optional positive examples, then the instance."""
    parts = [f"Definition: {definition.strip()}"]
    for i, ex in enumerate(positives, start=1):
        out = _outputs(ex.get("output"))
        parts.append(f"Positive Example {i} -\nInput: {str(ex.get('input', '')).strip()}\n"
                     f"Output: {out[0] if out else ''}")
    parts.append(f"Now complete the following example -\nInput: {text.strip()}\nOutput:")
    return "\n\n".join(parts)


def label_choices(task: Task) -> list[str]:
    """The label space of a classification-like task (few distinct outputs), else []."""
    firsts = {o[0] for o in (_outputs(i.get("output")) for i in task.instances or []) if o}
    return sorted(firsts) if 1 < len(firsts) <= MAX_LABEL_CHOICES else []


def niv2_examples(task: Task, cfg: MixConfig) -> Iterable[dict[str, Any]]:
    if not task.instances:
        if task.source == "table":  # a row of a jsonl/csv/hf pool: an instruction, no examples, no task file
            raise InstaError(f"task {task.id!r} comes from a table pool (jsonl/csv/hf: one row per task, its "
                             "instructions but no examples), so it has no examples to train or evaluate on; take the "
                             "tasks from a pool with examples: niv2:DIR, bigbench:NAME or p3:NAME")
        raise InstaError(f"task {task.id!r} has no instances (examples) to train or evaluate on; is its task file empty?")
    render = instance_renderer(task, cfg)
    for i, inst in enumerate(task.instances):
        row = render(i, inst)
        if row is not None:
            yield row


# ---------------------------------------------------------------- BIG-bench (prompts as BIG-bench formats them)

def bigbench_examples(task: Task) -> Iterable[dict[str, Any]]:
    """The reader renders BIG-bench prompts (task prefix, input prefix, choices, output prefix)."""
    if not task.instances:
        raise InstaError(f"BIG-bench task {task.id!r} has no usable example: each needs a 'target', or 'target_scores' "
                         "with one choice scored above the others")
    render = instance_renderer(task, MixConfig())
    for i, inst in enumerate(task.instances):
        row = render(i, inst)
        if row is not None:
            yield row


def instance_renderer(task: Task, cfg: MixConfig) -> Callable[[int, dict[str, Any]], dict[str, Any] | None]:
    """How one instance of ``task`` becomes a training row (``task``, ``input``, ``target``,
    ``references``, ``choices``, ``source``, ``index``: its position among the task's instances),
    or None when it has no output. The one rendering of instances, shared by mixtures,
    evaluation and the example representations (insta.examples)."""
    if task.source == "bigbench":
        def render(i: int, inst: dict[str, Any]) -> dict[str, Any] | None:
            if not inst.get("output"):
                return None
            return {"task": task.id, "input": inst["prompt"], "target": inst["output"][0],
                    "references": list(inst["output"]), "choices": list(inst.get("choices") or []),
                    "source": "bigbench", "index": i}
        return render
    definition = task.instructions[0].raw or task.instructions[0].text
    positives = task.demonstrations[: cfg.n_positive] if cfg.format == "def+pos" else []
    choices = label_choices(task)

    def render_niv2(i: int, inst: dict[str, Any]) -> dict[str, Any] | None:
        outs = _outputs(inst.get("output"))
        if not outs:
            return None
        return {"task": task.id, "input": niv2_prompt(definition, str(inst.get("input", "")), positives),
                "target": outs[0], "references": outs, "choices": choices, "source": "niv2", "index": i}
    return render_niv2


# ---------------------------------------------------------------- P3 (promptsource templates)

def _environment(rng: random.Random):
    from jinja2.sandbox import SandboxedEnvironment

    def most_frequent(items):
        from collections import Counter

        if not items:
            return None
        counts = Counter(items).most_common()
        return [item for item, n in counts if n == counts[0][1]]

    from jinja2 import Undefined

    holes = [0]

    class Hole(Undefined):
        """A value the row lacks (a label past the answer choices, a missing key), printed as
        nothing: counted, so that the example with a hole in it is skipped, not trained on."""

        def __str__(self) -> str:
            holes[0] += 1
            return ""

    env = SandboxedEnvironment(undefined=Hole)
    env.holes = holes  # type: ignore[attr-defined]
    env.globals["zip"] = zip
    env.filters["choice"] = lambda xs: rng.choice(list(xs))
    env.filters["most_frequent"] = most_frequent
    env.filters["highlight"] = lambda s: s
    return env


#: promptsource's ``apply(truncate=True)`` (how P3 was rendered) cuts every text field to this many characters
TEXT_VAR_LENGTH = 2048


def _guard(row: dict[str, Any]) -> dict[str, Any]:
    """The row as promptsource renders it: text fields cut to TEXT_VAR_LENGTH, '|||' in the data kept
    apart from the template's own separator."""
    return {k: v[:TEXT_VAR_LENGTH].replace(PIPE, _PIPE_GUARD) if isinstance(v, str) else v for k, v in row.items()}


def render_template(env, jinja: str, answer_choices: str | None, row: dict[str, Any]) -> tuple[str, str, list[str]] | None:
    """Render one promptsource template over one row: (prompt, target, choices), or None
    when the template yields no target for the row (promptsource skips those too)."""
    safe = _guard(row)
    if "answer_choices" in safe:
        raise InstaError("a P3 row holds the reserved field 'answer_choices'; rename it")
    env.holes[0] = 0
    choices: list[str] = []
    if answer_choices:
        choices = [c.strip().replace(_PIPE_GUARD, PIPE) for c in env.from_string(answer_choices).render(**safe).split(PIPE)]
    parts = [p.strip().replace(_PIPE_GUARD, PIPE) for p in env.from_string(jinja).render(**safe, answer_choices=choices or None).split(PIPE)]
    if env.holes[0]:
        raise _RowHole()
    if len(parts) < 2 or not parts[0] or not parts[1]:
        return None
    return parts[0], parts[1], choices


class _RowHole(Exception):
    """A template printed a value the row lacks: its example would have a hole."""


def hub_rows(dataset: str, subset: str | None, split: str = "train") -> Sequence[dict[str, Any]]:
    """A split of a P3 source dataset from the Hugging Face hub (needs network or a warm HF cache)."""
    import datasets

    from .models import hub_reachable

    if not hub_reachable():  # offline: datasets would retry for half a minute, line by line, then fail;
        datasets.config.HF_HUB_OFFLINE = True  # offline mode still reads a warm HF cache
    try:
        return datasets.load_dataset(dataset, subset, split=split)
    except Exception as exc:  # noqa: BLE001 - any hub/loading failure becomes one actionable line
        first = first_line(exc, 10_000)
        raise InstaError(
            f"cannot load {dataset}{'/' + subset if subset else ''} with datasets.load_dataset ({first}); "
            "offline, give local rows with --rows DIR (DIR/<entry>.jsonl, e.g. DIR/super_glue/rte.jsonl)"
        ) from None


def local_rows(root: str | Path) -> RowSource:
    """Rows of P3 source datasets from JSONL files: ``ROOT/<dataset>[/<subset>].jsonl`` (any split)."""
    base = Path(root).expanduser()
    if not base.is_dir():
        raise InstaError(f"--rows {base} is not a folder")

    def read(dataset: str, subset: str | None, split: str = "train") -> list[dict[str, Any]]:
        path = base / (f"{dataset}/{subset}.jsonl" if subset else f"{dataset}.jsonl")
        if not path.is_file():
            raise InstaError(f"no rows for P3 entry {dataset}{'/' + subset if subset else ''}: {path} does not exist")
        rows = []
        for lineno, row in iter_jsonl(path, "P3 rows file"):
            if not isinstance(row, dict):
                raise InstaError(f"{path}:{lineno}: each row must be a JSON object (the dataset's fields)")
            if rows and set(row) != set(rows[0]):  # a template would render the missing field as nothing
                missing, extra = sorted(set(rows[0]) - set(row)), sorted(set(row) - set(rows[0]))
                raise InstaError(f"{path}:{lineno}: its fields differ from the first row's (missing: "
                                 f"{', '.join(missing) or 'none'}; extra: {', '.join(extra) or 'none'}); every row "
                                 "holds the dataset's fields")
            rows.append(row)
        return rows

    return read


def _check_fields(task: Task, templates, env, row: dict[str, Any]) -> None:
    """Every field a template reads must be in the rows: a missing one renders as nothing (a
    prompt without its review), which would train on garbage without a word."""
    from jinja2 import meta

    for tpl in templates:
        wanted = set()
        for source in (tpl.jinja, tpl.answer_choices or ""):
            try:
                wanted |= meta.find_undeclared_variables(env.parse(source))
            except Exception:  # noqa: BLE001 - a template jinja cannot parse fails where it is rendered
                continue
        missing = sorted(wanted - set(row) - set(env.globals) - {"answer_choices"})
        if missing:
            raise InstaError(f"P3 entry {task.id!r}: its rows lack the field(s) {', '.join(missing)} that template "
                             f"{getattr(tpl, 'name', '?')!r} reads (rows have: {', '.join(sorted(map(str, row)))}); "
                             "give the dataset's own rows")


def p3_examples(task: Task, rows: RowSource, rng: random.Random, split: str = "train") -> Iterable[dict[str, Any]]:
    templates = task.templates
    if not templates:
        raise InstaError(f"task {task.id!r} has no promptsource templates to render its rows with")
    dataset, _, subset = task.own_id.partition("/")  # (a union may have renamed it p3#1:DATASET/SUBSET)
    data = rows(dataset, subset or None, split)
    if not len(data):
        raise InstaError(f"P3 entry {task.id!r} has no rows to render")
    env = _environment(rng)
    _check_fields(task, templates, env, data[0])
    order = list(range(len(data)))
    rng.shuffle(order)
    holes = 0
    try:
        for i in order:
            tpl = templates[rng.randrange(len(templates))]  # one template per row, as in T0's mixture
            try:
                rendered = render_template(env, tpl.jinja, tpl.answer_choices, dict(data[i]))
            except _RowHole:
                holes += 1
                continue
            if rendered is not None:
                prompt, target, choices = rendered
                yield {"task": task.id, "input": prompt, "target": target, "references": [target], "choices": choices,
                       "source": "p3"}
    finally:
        if holes:
            from .log import log

            log.warning(f"P3 entry {task.id!r}: {holes} row(s) skipped: a template printed a value the row lacks (a "
                        "label past the answer choices, a missing key); check the rows")


# ---------------------------------------------------------------- the mixture

def _task_examples(task: Task, cfg: MixConfig, rows: RowSource | None, split: str, rng: random.Random):
    if task.members:
        raise InstaError(f"task {task.id!r} merges {len(task.members)} tasks (group=dataset), whose examples are "
                         "rendered differently; build mixtures from an ungrouped pool")
    if task.source == "p3":
        return p3_examples(task, rows or hub_rows, rng, split)
    examples = list(bigbench_examples(task) if task.source == "bigbench" else niv2_examples(task, cfg))
    rng.shuffle(examples)
    return examples


def _check_example(task_id: str, n: int, ex: dict[str, Any]) -> None:
    """Every text of an example must be writable (no lone surrogate from a JSON '\\ud800' escape)."""
    for name in ("input", "target", "references", "choices"):
        for text in ([ex[name]] if isinstance(ex[name], str) else ex[name]):
            check_text(text, f"task {task_id!r}: example {n + 1} ({name})")


def build_mixture(tasks: Sequence[Task], cfg: MixConfig, *, rows: RowSource | None = None, split: str = "train",
                  progress: Callable[[int, int], None] | None = None) -> Mixture:
    """Examples of every task, at most ``per_task_cap`` per task (seeded sample), exact
    duplicates (same input and target) removed across the whole mixture; with
    ``total_examples``, that many drawn round-robin across the tasks. ``split`` is the split
    of P3 source datasets to render (NIV2 and BIG-bench tasks use their instances)."""
    if not tasks:
        raise InstaError("nothing to mix: the selection holds no tasks")
    rng = random.Random(cfg.seed)
    seen: set[tuple[str, str]] = set()
    per_task: list[list[dict[str, Any]]] = []
    dropped = 0
    cap = min(cfg.per_task_cap, cfg.total_examples or cfg.per_task_cap)
    for n, task in enumerate(tasks):
        if progress:
            progress(n, len(tasks))
        kept: list[dict[str, Any]] = []
        duplicates = 0
        for n_ex, ex in enumerate(_task_examples(task.with_instances(), cfg, rows, split, rng)):
            ex.pop("index", None)  # rows carry no position: mixtures of the same examples are equal
            _check_example(task.id, n_ex, ex)
            key = (ex["input"], ex["target"])
            if key in seen:
                duplicates += 1
                continue
            seen.add(key)
            kept.append(ex)
            if len(kept) >= cap:
                break
        if not kept and not duplicates:
            raise InstaError(f"task {task.id!r} gave no usable examples (no instance with an output)")
        dropped += duplicates  # a task whose examples all repeat earlier tasks' adds nothing
        per_task.append(kept)
    if progress:
        progress(len(tasks), len(tasks))
    if cfg.total_examples is not None:  # round-robin: an even share each, the rest to tasks that have more
        drawn: list[list[dict[str, Any]]] = [[] for _ in per_task]
        budget, depth = cfg.total_examples, 0
        while budget and any(depth < len(k) for k in per_task):
            order = list(range(len(per_task)))
            rng.shuffle(order)  # which tasks get the last, partial round is up to chance, not to task order
            for i in order:
                if budget and depth < len(per_task[i]):
                    drawn[i].append(per_task[i][depth])
                    budget -= 1
            depth += 1
        per_task = drawn
    counts = {task.id: len(k) for task, k in zip(tasks, per_task) if k}
    out = [ex for k in per_task for ex in k]
    rng.shuffle(out)
    warnings = []
    if cfg.total_examples is not None and len(out) < cfg.total_examples:
        warnings.append(f"the tasks hold only {len(out)} usable examples, fewer than the budget of {cfg.total_examples}: "
                        "this mixture is smaller than the others (give every method the same steps to compare them)")
    return Mixture(rows=out, counts=counts, config=cfg, dropped_duplicates=dropped, warnings=warnings)


def read_selection(path: str | Path, target: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(document, the chosen selection) from an ``insta select --out`` file, its shape checked."""
    p = Path(path).expanduser()
    doc = read_selections(p)
    return _pick(p, doc, doc["selections"], target)


def read_selections(path: str | Path) -> dict[str, Any]:
    """The whole document of an ``insta select --out`` file (``.json``, or ``.jsonl`` with one
    selection a line), every selection's shape checked."""
    p = Path(path).expanduser()
    if not p.exists():
        raise InstaError(f"selection file {p} does not exist; write one with insta select ... --out {p.name}")
    if p.suffix.lower() == ".jsonl":  # insta select --out FILE.jsonl: one selection per line
        lines = [(n, x) for n, x in iter_jsonl(p, "selection file")]
        bad = next((n for n, x in lines if not isinstance(x, dict)), None)
        if bad is not None:
            raise InstaError(f"{p}:{bad}: a line must be one selection object; write the file with insta select --out")
        first = lines[0][1] if lines else {}
        doc = {"pool": first.get("pool"), "method": first.get("method"), "k": first.get("k"),
               "selections": [x for _, x in lines]}
    else:
        doc = read_json(p, "selection file", expect=dict)
    sels = doc.get("selections")
    if not isinstance(sels, list) or not sels:
        raise InstaError(f"{p}: field 'selections' is missing or empty; is this an insta select --out file?")
    for i, sel in enumerate(sels):
        if not isinstance(sel, dict) or not isinstance(sel.get("target"), dict) or not isinstance(sel.get("results"), list):
            raise InstaError(f"{p}: selections[{i}] must be an object with 'target' and 'results'; write the file with insta select --out")
        for j, r in enumerate(sel["results"]):
            if not isinstance(r, dict) or not isinstance(r.get("task_id"), str):
                raise InstaError(f"{p}: selections[{i}].results[{j}] must be an object with a text 'task_id'")
    spec = doc.get("pool")
    if spec is not None and not isinstance(spec, str) and not (
            isinstance(spec, list) and spec and all(isinstance(x, str) and x for x in spec)):
        raise InstaError(f"{p}: field 'pool' must be a pool spec (text) or a list of them (a union)")
    return doc


def _pick(p: Path, doc: dict[str, Any], sels: list[dict[str, Any]], target: str | None):
    ids = [str(s["target"].get("id")) for s in sels]
    if target is None:
        if len(sels) > 1:
            raise InstaError(f"{p} holds {len(sels)} selections; pick one with --target (one of: {', '.join(ids[:10])}"
                             f"{', …' if len(ids) > 10 else ''})")
        chosen = 0
    elif target not in ids:
        raise unknown("target", target, ids)
    else:
        chosen = ids.index(target)
    if not sels[chosen]["results"]:
        raise InstaError(f"{p}: selections[{chosen}] (target {ids[chosen]!r}) selects no task")
    return doc, sels[chosen]


def selected_tasks(pool: TaskPool, selection: dict[str, Any], where: str) -> list[Task]:
    ids = list(dict.fromkeys(r["task_id"] for r in selection["results"]))
    missing = [i for i in ids if i not in pool]
    if missing:
        raise InstaError(f"{where}: selected task {missing[0]!r} is not in pool {pool.name}"
                         f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}; give the pool it was selected from with --pool")
    for r in selection["results"]:  # a union: each task must come from the pool it was selected from
        origin = r.get("origin")
        task = pool.get(r["task_id"])
        if isinstance(origin, str) and task.origin != origin:
            raise InstaError(f"{where}: selected task {r['task_id']!r} came from pool {origin!r}, but in the pools "
                             f"given now it is a task of {task.origin or pool.name!r}; give the pools in the order the "
                             "selection recorded (its 'pool' list)")
    return [pool.get(i) for i in ids]


def example_key(input: str, target: str) -> str:
    """The content key of a rendered example (what a selection records; checked when mixing)."""
    import hashlib

    return hashlib.sha256(input.encode("utf-8", "surrogatepass") + b"\0" + target.encode("utf-8", "surrogatepass")).hexdigest()[:20]


def selected_examples(selection: dict[str, Any], where: str) -> list[list[dict[str, Any]]] | None:
    """The examples an example-level selection (``--budget``) chose, per result; None for a
    selection of tasks. Their shape is checked here, their content against the pool later."""
    results = selection["results"]
    if not any("examples" in r for r in results):
        if selection.get("budget") is not None:
            raise InstaError(f"{where}: the selection has a 'budget' (it selected examples) but its results list no "
                             "'examples'; write the file with insta select --budget")
        return None
    out = []
    for j, r in enumerate(results):
        chosen = r.get("examples")
        if not isinstance(chosen, list) or not chosen:
            raise InstaError(f"{where}: results[{j}] (task {r['task_id']!r}) has no 'examples' list, though others do; "
                             "write the file with insta select --budget")
        for e in chosen:
            if (not isinstance(e, dict) or isinstance(e.get("index"), bool) or not isinstance(e.get("index"), int)
                    or e["index"] < 0 or not isinstance(e.get("key"), str)):
                raise InstaError(f"{where}: results[{j}].examples must hold objects with an 'index' (a position, >= 0) "
                                 "and a 'key'; write the file with insta select --budget")
        out.append(chosen)
    return out


def build_example_mixture(tasks: Sequence[Task], chosen: Sequence[Sequence[dict[str, Any]]], cfg: MixConfig,
                          where: str = "selection") -> Mixture:
    """A mixture of exactly the chosen examples of each task (an example-level selection),
    each checked against the pool: the instance at that position must still render to the
    example the selector saw (its ``key``), else the pool changed since selecting."""
    rng = random.Random(cfg.seed)
    rows: list[dict[str, Any]] = []
    counts: dict[str, int] = {}
    taken: set[tuple[str, int]] = set()
    dropped = 0
    for task, examples in zip(tasks, chosen):
        full = task.with_instances()
        instances = full.instances or []
        seen_as = instance_renderer(full, MixConfig())  # as the selector rendered it
        render = instance_renderer(full, cfg)
        for e in examples:
            i = e["index"]
            if (task.id, i) in taken:  # listed twice (an edited file): one row
                dropped += 1
                continue
            taken.add((task.id, i))
            check = seen_as(i, instances[i]) if i < len(instances) and isinstance(instances[i], dict) else None
            if check is None or example_key(check["input"], str(check["target"])) != e["key"]:
                raise InstaError(f"{where}: example {i} of task {task.id!r} is not the one that was selected (the task's "
                                 "data changed since, or the file was edited); select again")
            row = render(i, instances[i])
            row.pop("index", None)
            _check_example(task.id, len(rows), row)
            rows.append(row)
            counts[task.id] = counts.get(task.id, 0) + 1
    rng.shuffle(rows)
    warnings = []
    if cfg.total_examples is not None and cfg.total_examples != len(rows):
        warnings.append(f"the selection chose {len(rows)} examples; the mixture holds exactly those "
                        f"(--total-examples {cfg.total_examples} does not apply to an example-level selection)")
    return Mixture(rows=rows, counts=counts, config=cfg, dropped_duplicates=dropped, warnings=warnings)


def write_mixture(mixture: Mixture, out: str | Path) -> Path:
    """Write dataset/, mixture.jsonl and manifest.json into a new folder ``out``, atomically."""
    import datasets

    with atomic_dir(out) as tmp:
        features = datasets.Features({k: datasets.Value("string") for k in ("task", "input", "target", "source")}
                                     | {k: datasets.Sequence(datasets.Value("string")) for k in ("references", "choices")})
        datasets.Dataset.from_list(mixture.rows, features=features).save_to_disk(str(tmp / "dataset"))
        with (tmp / "mixture.jsonl").open("w", encoding="utf-8") as fh:
            for row in mixture.rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        (tmp / "manifest.json").write_text(dumps(mixture.manifest(), indent=1) + "\n", encoding="utf-8")
    return Path(out).expanduser()


def mixture_problem(path: str | Path) -> str | None:
    """What keeps a folder from being a whole mixture as :func:`write_mixture` leaves it, or
    None: manifest.json an object with its 'n_examples' (an integer) and 'tasks' (an object),
    dataset/ with its state.json and every data file that names. Cheap (the data is not read);
    :func:`load_mixture` checks the rest when training."""
    p = Path(path).expanduser()
    if not (p / "manifest.json").is_file():
        return "has no manifest.json"
    try:
        manifest = read_json(p / "manifest.json", "mixture manifest", expect=dict)
        n = manifest.get("n_examples")
        if isinstance(n, bool) or not isinstance(n, int) or n < 0 or not isinstance(manifest.get("tasks"), dict):
            return "has a manifest.json without its 'n_examples' (an integer) or 'tasks' (an object)"
        if not (p / "dataset").is_dir():
            return "has no dataset/"
        state = read_json(p / "dataset" / "state.json", "mixture dataset state", expect=dict)
        files = state.get("_data_files")
        if not isinstance(files, list) or not files or not all(
                isinstance(f, dict) and isinstance(f.get("filename"), str) and (p / "dataset" / f["filename"]).is_file()
                for f in files):
            return "has a dataset/ whose data files are missing"
    except InstaError as exc:  # unreadable, not JSON, not an object
        return f"cannot be read ({exc})"
    return None


def reusable_mixture(path: str | Path) -> bool:
    """Whether the mixture folder a run built before can be used again. A damaged or incomplete
    one (edited, partly deleted) is removed, with a one-line warning, to be built again (from
    its selection: the same rows); an absent one is simply built."""
    import shutil

    from .log import log

    p = Path(path).expanduser()
    if not p.exists() and not p.is_symlink():
        return False
    if p.is_dir() and not p.is_symlink() and not any(p.iterdir()):
        return False  # empty: write_mixture fills it
    problem = mixture_problem(p)
    if problem is None:
        return True
    if p.is_symlink() or not p.is_dir():
        raise InstaError(f"mixture folder {p} {problem} and is not a folder insta wrote; delete it and run again")
    log.warning("mixture folder %s %s: it is built again", p, problem)
    try:
        shutil.rmtree(p)
    except OSError as exc:
        raise InstaError(f"mixture folder {p} {problem} and cannot be deleted ({exc.strerror or exc}); "
                         "delete it and run again") from None
    return False


def load_mixture(path: str | Path):
    """The mixture's HF dataset and manifest, or one line saying what is wrong with the folder."""
    import datasets

    p = Path(path).expanduser()
    if not (p / "manifest.json").is_file() or not (p / "dataset").is_dir():
        raise InstaError(f"--mixture {p} is not a mixture folder (no manifest.json / dataset/); build one with insta mix")
    manifest = read_json(p / "manifest.json", "mixture manifest", expect=dict)
    n = manifest.get("n_examples")
    if isinstance(n, bool) or not isinstance(n, int) or not isinstance(manifest.get("tasks"), dict):
        raise InstaError(f"--mixture {p}: manifest.json lacks its 'n_examples' (an integer) or 'tasks' (an object); "
                         "it was not written by insta mix or was edited: build the mixture again with insta mix")
    try:
        dataset = datasets.load_from_disk(str(p / "dataset"))
    except Exception as exc:  # noqa: BLE001 - datasets raises many types for damaged folders
        first = first_line(exc, 160)
        raise InstaError(f"--mixture {p}: dataset/ cannot be read ({first}); build the mixture again with insta mix") from None
    missing = {"input", "target", "source"} - set(getattr(dataset, "column_names", None) or [])
    if not isinstance(dataset, datasets.Dataset) or missing:
        raise InstaError(f"--mixture {p}: dataset/ is not an insta mixture (columns {', '.join(sorted(missing))} missing); "
                         "build it with insta mix")
    if len(dataset) != n:
        raise InstaError(f"--mixture {p}: manifest.json says {n} examples but dataset/ holds {len(dataset)}; "
                         "build the mixture again with insta mix")
    return dataset, manifest
