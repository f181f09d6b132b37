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
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import InstaError, unknown
from .tasks import Task, TaskPool

FORMATS = ("def", "def+pos")
PIPE = "|||"
_PIPE_GUARD = "\x00pipe\x00"
#: a task whose outputs take at most this many distinct values is treated as classification:
#: those values become every example's answer choices for rank classification
MAX_LABEL_CHOICES = 12

RowSource = Callable[[str, str | None, str], Sequence[dict[str, Any]]]


@dataclass
class MixConfig:
    per_task_cap: int = 5000
    format: str = "def"
    n_positive: int = 2
    seed: int = 0
    #: at most this many examples in all, drawn evenly across the tasks (a task with fewer
    #: examples than its share leaves the rest to the others); None: no total budget
    total_examples: int | None = None

    def __post_init__(self) -> None:
        for name in ("per_task_cap", "total_examples", "seed", "n_positive"):
            value = getattr(self, name)
            if (value is not None or name != "total_examples") and (not isinstance(value, int) or isinstance(value, bool)):
                raise InstaError(f"mix setting {name} (--{name.replace('_', '-')}) must be an integer, got {value!r}")
        if self.per_task_cap <= 0:
            raise InstaError(f"--per-task-cap must be a positive integer, got {self.per_task_cap}")
        if self.total_examples is not None and self.total_examples <= 0:
            raise InstaError(f"--total-examples must be a positive integer, got {self.total_examples}")
        if self.format not in FORMATS:
            raise InstaError(f"unknown format {self.format!r}; available: {', '.join(FORMATS)}")


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
        raise InstaError(f"task {task.id!r} has no instances to train on; is its task file empty?")
    definition = task.instructions[0].raw or task.instructions[0].text
    positives = (task.meta.get("positive_examples") or [])[: cfg.n_positive] if cfg.format == "def+pos" else []
    choices = label_choices(task)
    for inst in task.instances:
        outs = _outputs(inst.get("output"))
        if not outs:
            continue
        yield {"task": task.id, "input": niv2_prompt(definition, str(inst.get("input", "")), positives),
               "target": outs[0], "references": outs, "choices": choices, "source": "niv2"}


# ---------------------------------------------------------------- BIG-bench (prompts as BIG-bench formats them)

def bigbench_examples(task: Task) -> Iterable[dict[str, Any]]:
    """The reader renders BIG-bench prompts (task prefix, input prefix, choices, output prefix)."""
    if not task.instances:
        raise InstaError(f"BIG-bench task {task.id!r} has no usable example: each needs a 'target', or 'target_scores' "
                         "with one choice scored above the others")
    for inst in task.instances:
        yield {"task": task.id, "input": inst["prompt"], "target": inst["output"][0], "references": list(inst["output"]),
               "choices": list(inst.get("choices") or []), "source": "bigbench"}


# ---------------------------------------------------------------- P3 (promptsource templates)

def _environment(rng: random.Random):
    from jinja2.sandbox import SandboxedEnvironment

    def most_frequent(items):
        from collections import Counter

        if not items:
            return None
        counts = Counter(items).most_common()
        return [item for item, n in counts if n == counts[0][1]]

    env = SandboxedEnvironment()
    env.globals["zip"] = zip
    env.filters["choice"] = lambda xs: rng.choice(list(xs))
    env.filters["most_frequent"] = most_frequent
    env.filters["highlight"] = lambda s: s
    return env


def _guard(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.replace(PIPE, _PIPE_GUARD) if isinstance(v, str) else v for k, v in row.items()}


def render_template(env, jinja: str, answer_choices: str | None, row: dict[str, Any]) -> tuple[str, str, list[str]] | None:
    """Render one promptsource template over one row: (prompt, target, choices), or None
    when the template yields no target for the row (promptsource skips those too)."""
    safe = _guard(row)
    if "answer_choices" in safe:
        raise InstaError("a P3 row holds the reserved field 'answer_choices'; rename it")
    choices: list[str] = []
    if answer_choices:
        choices = [c.strip().replace(_PIPE_GUARD, PIPE) for c in env.from_string(answer_choices).render(**safe).split(PIPE)]
    parts = [p.strip().replace(_PIPE_GUARD, PIPE) for p in env.from_string(jinja).render(**safe, answer_choices=choices or None).split(PIPE)]
    if len(parts) < 2 or not parts[0] or not parts[1]:
        return None
    return parts[0], parts[1], choices


def hub_rows(dataset: str, subset: str | None, split: str = "train") -> Sequence[dict[str, Any]]:
    """A split of a P3 source dataset from the Hugging Face hub (needs network or a warm HF cache)."""
    import datasets

    try:
        return datasets.load_dataset(dataset, subset, split=split)
    except Exception as exc:  # noqa: BLE001 - any hub/loading failure becomes one actionable line
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
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
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise InstaError(f"{path}:{lineno}: malformed JSON line ({exc.msg})") from None
        return rows

    return read


def p3_examples(task: Task, rows: RowSource, rng: random.Random, split: str = "train") -> Iterable[dict[str, Any]]:
    templates = task.meta.get("templates")
    if not templates or task.meta.get("members"):
        raise InstaError(f"task {task.id!r} is not a single promptsource entry; mix from an ungrouped p3 pool")
    dataset, _, subset = task.id.partition("/")
    data = rows(dataset, subset or None, split)
    if not len(data):
        raise InstaError(f"P3 entry {task.id!r} has no rows to render")
    env = _environment(rng)
    order = list(range(len(data)))
    rng.shuffle(order)
    for i in order:
        tpl = templates[rng.randrange(len(templates))]  # one template per row, as in T0's mixture
        rendered = render_template(env, tpl.jinja, tpl.answer_choices, dict(data[i]))
        if rendered is not None:
            prompt, target, choices = rendered
            yield {"task": task.id, "input": prompt, "target": target, "references": [target], "choices": choices,
                   "source": "p3"}


# ---------------------------------------------------------------- the mixture

def _task_examples(task: Task, cfg: MixConfig, rows: RowSource | None, split: str, rng: random.Random):
    if task.source == "p3" or "members" in task.meta:
        return p3_examples(task, rows or hub_rows, rng, split)
    examples = list(bigbench_examples(task) if task.source == "bigbench" else niv2_examples(task, cfg))
    rng.shuffle(examples)
    return examples


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
        for ex in _task_examples(task.with_instances(), cfg, rows, split, rng):
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
    """(document, the chosen selection) from an ``insta select --out`` file."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise InstaError(f"selection file {p} does not exist; write one with insta select ... --out {p.name}")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InstaError(f"{p}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("selections"), list) or not doc["selections"]:
        raise InstaError(f"{p}: field 'selections' is missing or empty; is this an insta select --out file?")
    sels = doc["selections"]
    ids = [str(s.get("target", {}).get("id")) for s in sels]
    if target is None:
        if len(sels) > 1:
            raise InstaError(f"{p} holds {len(sels)} selections; pick one with --target (one of: {', '.join(ids[:10])}"
                             f"{', …' if len(ids) > 10 else ''})")
        return doc, sels[0]
    if target not in ids:
        raise unknown("target", target, ids)
    return doc, sels[ids.index(target)]


def selected_tasks(pool: TaskPool, selection: dict[str, Any], where: str) -> list[Task]:
    ids = [r["task_id"] for r in selection.get("results", [])]
    missing = [i for i in ids if i not in pool]
    if missing:
        raise InstaError(f"{where}: selected task {missing[0]!r} is not in pool {pool.name}"
                         f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}; give the pool it was selected from with --pool")
    return [pool.get(i) for i in ids]


def write_mixture(mixture: Mixture, out: str | Path) -> Path:
    """Write dataset/, mixture.jsonl and manifest.json into a new folder ``out``, atomically."""
    import shutil
    import tempfile

    import datasets

    dest = Path(out).expanduser()
    if dest.exists() and not dest.is_dir():
        raise InstaError(f"--out {dest} is a file; give a new folder")
    if dest.exists() and any(dest.iterdir()):
        raise InstaError(f"--out {dest} already exists and is not empty; give a new folder")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        features = datasets.Features({k: datasets.Value("string") for k in ("task", "input", "target", "source")}
                                     | {k: datasets.Sequence(datasets.Value("string")) for k in ("references", "choices")})
        datasets.Dataset.from_list(mixture.rows, features=features).save_to_disk(str(tmp / "dataset"))
        with (tmp / "mixture.jsonl").open("w", encoding="utf-8") as fh:
            for row in mixture.rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        (tmp / "manifest.json").write_text(json.dumps(mixture.manifest(), indent=1, ensure_ascii=False) + "\n")
        if dest.exists():
            dest.rmdir()
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def load_mixture(path: str | Path):
    """The mixture's HF dataset and manifest."""
    import datasets

    p = Path(path).expanduser()
    if not (p / "manifest.json").is_file() or not (p / "dataset").is_dir():
        raise InstaError(f"--mixture {p} is not a mixture folder (no manifest.json / dataset/); build one with insta mix")
    return datasets.load_from_disk(str(p / "dataset")), json.loads((p / "manifest.json").read_text())
