"""From a selection to an evaluated specialist: the steps behind ``insta mix``, ``insta eval``
and ``insta run`` (select → mix → train → eval for several targets and methods).

A run directory holds ``<target>/<method>/selection.json`` per target and method, and the
work those selections share, addressed by content: ``mixtures/<key>/`` (one per distinct set
of selected tasks and mix settings), ``models/<key>/`` (one per mixture, base model and
training settings) and ``evals/<model key>/<target>.json``. Two methods that select the same
tasks, or a method whose selection does not depend on the target (``all``), train once.
The method ``base`` evaluates the untrained base model. ``results.json`` and ``results.md``
summarise the run (with its wall time and peak memory). Each step is skipped when its output
is already complete, so re-running a config after an interruption resumes.
"""

from __future__ import annotations

import hashlib
import json
import re
import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .checks import check_choice, check_int, check_seed
from .errors import InstaError, did_you_mean
from .io import read_json, read_yaml
from .evaluate import METRICS, EvalResult, Scorer, evaluate_examples
from .mix import MixConfig, Mixture, build_mixture, local_rows, read_selection, selected_tasks, write_mixture
from .pools import load_pool
from .tasks import Task, TaskPool
from .train import TrainConfig, train

Say = Callable[[str], None]


def mix_selection(selection_file: str | Path, out: str | Path, cfg: MixConfig, *, pool: str | None = None,
                  target: str | None = None, rows: str | None = None, loaded: TaskPool | None = None) -> Mixture:
    """Build and write the mixture of one selection of an ``insta select --out`` file.
    ``loaded``: the pool already in memory (else the spec is loaded)."""
    doc, sel = read_selection(selection_file, target)
    spec = pool or doc.get("pool")
    if not spec:
        raise InstaError(f"{selection_file}: no 'pool' recorded; give the pool with --pool")
    tasks = selected_tasks(loaded or load_pool(spec), sel, str(selection_file))
    mixture = build_mixture(tasks, cfg, rows=local_rows(rows) if rows else None)
    mixture.source = {"selection": str(selection_file), "pool": spec, "target": sel.get("target", {}).get("id"),
                      "method": doc.get("method"), "k": doc.get("k")}
    write_mixture(mixture, out)
    return mixture


def target_tasks(spec: str, ids: list[str] | None = None) -> list[Task]:
    """The tasks of a target spec with their instances, optionally only ``ids``."""
    loaded = load_pool(spec)
    return [t.with_instances() for t in ([loaded.get(i) for i in ids] if ids else loaded)]


def evaluate_model(model: str, tasks: list[Task], *, metric: str = "auto", max_examples: int = 100,
                   format: str = "def", rows: str | None = None, split: str = "validation", seed: int = 0,
                   device: str = "auto", max_new_tokens: int = 64,
                   progress: Callable[[int, int], None] | None = None) -> EvalResult:
    """Zero-shot metrics of ``model`` on up to ``max_examples`` examples of each target task."""
    check_choice(metric, "--metric", METRICS)
    check_int(max_examples, "--max-examples", min=1)
    check_int(max_new_tokens, "--max-new-tokens", min=1, max=1_000_000)
    check_seed(seed)
    examples = build_mixture(tasks, MixConfig(per_task_cap=max_examples, format=format, seed=seed),
                             rows=local_rows(rows) if rows else None, split=split)
    order = {t.id: i for i, t in enumerate(tasks)}
    scorer = Scorer(model, device=device, max_new_tokens=max_new_tokens)
    rows_sorted = sorted(examples.rows, key=lambda r: order[r["task"]])
    return EvalResult(model=model, tasks=evaluate_examples(scorer, rows_sorted, metric, progress=progress))


# ---------------------------------------------------------------- insta run CONFIG.yaml

BASE = "base"  # the method that trains nothing: the base model's own zero-shot figures


@dataclass
class MethodSpec:
    name: str  # how results name it
    method: str  # a method spec of insta select, or 'base'
    model: str | None = None  # embedder for insta (e.g. an aligned model folder)
    seed: int | None = None  # for random (several seeds = several methods); default: the run's seed


@dataclass
class RunConfig:
    out: str
    pool: str
    targets: list[str]
    train: TrainConfig
    base_model: str
    target_pool: str | None = None
    methods: list[MethodSpec] = field(default_factory=list)
    k: int = 5
    seed: int = 0
    embedder: str | None = None
    rows: str | None = None
    exclude_siblings: bool = False
    mix: MixConfig = field(default_factory=MixConfig)
    eval: dict[str, Any] = field(default_factory=dict)


RUN_KEYS = {"out", "pool", "targets", "target_pool", "methods", "k", "seed", "embedder", "rows", "exclude_siblings",
            "mix", "train", "eval"}
EVAL_KEYS = {"metric", "max_examples", "format", "split", "max_new_tokens"}


def _section(path: Path, name: str | None, value: Any, allowed: set[str]) -> dict[str, Any]:
    """A mapping of the config (the whole config when ``name`` is None) with only known keys."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InstaError(f"{path}: field '{name}' must be a mapping" if name else
                         f"{path}: a run config is a YAML mapping (out, pool, targets, methods, train, ...)")
    bad = sorted(set(value) - allowed, key=str)
    if bad:
        field = f"{name}.{bad[0]}" if name else str(bad[0])
        raise InstaError(f"{path}: unknown field '{field}'{did_you_mean(str(bad[0]), allowed)}; "
                         f"available: {', '.join(sorted(allowed))}")
    return dict(value)


def _typed(p: Path, doc: dict[str, Any], key: str, kind: type, default: Any = None) -> Any:
    value = doc.get(key, default)
    if value is None or (kind is str and isinstance(value, str)) or (kind is bool and isinstance(value, bool)):
        return value
    raise InstaError(f"{p}: field '{key}' must be {'text' if kind is str else 'true or false'}, got {value!r}")


def _check_eval(p: Path, section: dict[str, Any]) -> dict[str, Any]:
    """The eval section's values, checked now (not after hours of training)."""
    from .config import FORMATS

    checks = {"metric": lambda v, n: check_choice(v, n, METRICS), "format": lambda v, n: check_choice(v, n, FORMATS),
              "max_examples": lambda v, n: check_int(v, n, min=1), "max_new_tokens": lambda v, n: check_int(v, n, min=1),
              "split": lambda v, n: v if isinstance(v, str) and v else check_choice(v, n, ["train", "validation", "test"])}
    for key, value in section.items():
        try:
            checks[key](value, f"eval.{key}")
        except InstaError as exc:
            raise InstaError(f"{p}: {exc}") from None
    return section


def _methods(p: Path, value: Any) -> list[MethodSpec]:
    from .selectors import parse_method

    if value is None:
        value = ["insta", "random", "all"]
    if not isinstance(value, list) or not value:
        raise InstaError(f"{p}: field 'methods' must be a list, e.g. [base, insta, random, all]; got {value!r}")
    methods = []
    for i, m in enumerate(value):
        if isinstance(m, str):
            spec = MethodSpec(name=m, method=m)
        elif isinstance(m, dict) and isinstance(m.get("method"), str):
            extra = sorted(set(m) - {"name", "method", "model", "seed"})
            if extra:
                raise InstaError(f"{p}: methods[{i}]: unknown field '{extra[0]}'; available: method, model, name, seed")
            seed = m.get("seed")
            try:
                seed = None if seed is None else check_seed(seed, f"methods[{i}].seed")
            except InstaError as exc:
                raise InstaError(f"{p}: {exc}") from None
            for key in ("name", "model"):
                if m.get(key) is not None and not isinstance(m[key], str):
                    raise InstaError(f"{p}: methods[{i}].{key} must be text")
            default_name = f"{m['method']}-{seed}" if seed is not None else m["method"]
            spec = MethodSpec(name=m.get("name") or default_name, method=m["method"], model=m.get("model"), seed=seed)
        else:
            raise InstaError(f"{p}: methods[{i}] must be a method name or a mapping with 'method'")
        if spec.method != BASE:
            try:
                parse_method(spec.method)
            except InstaError as exc:
                raise InstaError(f"{p}: methods[{i}]: {exc} (or {BASE}: the untrained base model)") from None
        methods.append(spec)
    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise InstaError(f"{p}: two methods share the name {twice[0]!r}; give each a distinct 'name'")
    return methods


def load_run_config(path: str | Path) -> RunConfig:
    """A run config, every value checked before anything runs (file, field and fix in one line)."""
    p = Path(path).expanduser()
    doc = _section(p, None, read_yaml(p, "config", unique_keys=True), RUN_KEYS)
    if not doc:
        raise InstaError(f"{p}: a run config is a YAML mapping (out, pool, targets, methods, train, ...)")
    for key in ("out", "pool", "targets", "train"):
        if not doc.get(key):
            raise InstaError(f"{p}: field '{key}' is missing")
    targets = doc["targets"] if isinstance(doc["targets"], list) else [doc["targets"]]
    if not all(isinstance(t, str) and t for t in targets):
        raise InstaError(f"{p}: field 'targets' must be a task id or a list of task ids (text)")
    try:
        k = check_int(doc.get("k", 5), "field 'k'", min=1)
        seed = check_seed(doc.get("seed", 0), "field 'seed'")
    except InstaError as exc:
        raise InstaError(f"{p}: {exc}") from None
    train_section = _section(p, "train", doc["train"], {f.name for f in fields(TrainConfig)} | {"model"})
    if not isinstance(train_section.get("model"), str) or not train_section["model"]:
        raise InstaError(f"{p}: field 'train.model' is missing (the model to instruction-tune)")
    base_model = train_section.pop("model")
    mix_section = _section(p, "mix", doc.get("mix"), {f.name for f in fields(MixConfig)})
    try:
        train_cfg = TrainConfig(**train_section)
        mix_cfg = MixConfig(**mix_section)
    except InstaError as exc:
        raise InstaError(f"{p}: {exc}") from None
    return RunConfig(
        out=_typed(p, doc, "out", str), pool=_typed(p, doc, "pool", str), targets=list(targets), train=train_cfg,
        base_model=base_model, target_pool=_typed(p, doc, "target_pool", str), methods=_methods(p, doc.get("methods")),
        k=k, seed=seed, embedder=_typed(p, doc, "embedder", str), rows=_typed(p, doc, "rows", str),
        exclude_siblings=_typed(p, doc, "exclude_siblings", bool, False), mix=mix_cfg,
        eval=_check_eval(p, _section(p, "eval", doc.get("eval"), EVAL_KEYS)),
    )


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


def _key(doc: Any) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _done(model_dir: Path) -> bool:
    from .train import finished

    return finished(model_dir)


def _selected(sel_file: Path) -> list[str]:
    """The task ids of a run folder's selection file (written by insta run or insta select)."""
    from .mix import read_selection

    return [r["task_id"] for r in read_selection(sel_file)[1]["results"]]


def _keys(cfg: RunConfig, selected: list[str]) -> tuple[str, str]:
    """(mixture key, model key) of a selection: the content that decides each."""
    mix_key = _key({"tasks": sorted(selected), "pool": cfg.pool, "mix": asdict(cfg.mix), "rows": cfg.rows})
    return mix_key, _key({"mixture": mix_key, "base": cfg.base_model, "train": asdict(cfg.train)})


def collect_results(cfg: RunConfig) -> list[dict[str, Any]]:
    """The results a run folder already holds (target × method pairs evaluated so far), read
    without selecting, training or evaluating anything: a report on an unfinished run."""
    root = Path(cfg.out).expanduser()
    out = []
    for target in cfg.targets:
        for m in cfg.methods:
            selected: list[str] = []
            mix_key = None
            model_key = "base"
            if m.method != BASE:
                sel_file = root / _slug(target) / _slug(m.name) / "selection.json"
                if not sel_file.is_file():
                    continue
                selected = _selected(sel_file)
                mix_key, model_key = _keys(cfg, selected)
            if (root / "evals" / model_key / f"{_slug(target)}.json").is_file():
                out.append(_result_row(root, target, m.name, selected, mix_key, model_key))
    return out


def _result_row(root: Path, target: str, method: str, selected: list[str], mix_key: str | None,
                model_key: str) -> dict[str, Any]:
    """One line of results.json, from the files a finished target × method left in the run folder."""
    manifest = root / "mixtures" / str(mix_key) / "manifest.json"
    n = read_json(manifest, "mixture manifest", expect=dict).get("n_examples", 0) if mix_key and manifest.is_file() else 0
    metrics = read_json(root / "evals" / model_key / f"{_slug(target)}.json", "evaluation", expect=dict).get("average", {})
    return {"target": target, "method": method, "selected": selected, "mixture": mix_key, "model": model_key,
            "n_train_examples": n, "metrics": metrics}


def peak_rss_mb() -> float:
    """Peak resident memory of this process and its finished children, in MB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(max(own, kids) / 1024, 1)  # Linux reports KiB


def run(cfg: RunConfig, *, quiet: bool = True, say: Say | None = None) -> dict[str, Any]:
    """select → mix → train → eval for every target × method; returns (and writes) the results."""
    from .io import write_json_atomic
    from .encoder import Encoder
    from .select import Exclusions, Target
    from .selectors import make_selector

    say = say or (lambda _m: None)
    start = time.perf_counter()
    root = Path(cfg.out).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    pool: TaskPool = load_pool(cfg.pool)
    targets = target_tasks(cfg.target_pool or cfg.pool, cfg.targets)
    exclusions = Exclusions(siblings=cfg.exclude_siblings)
    results: list[dict[str, Any]] = []
    selectors: dict[str, tuple[Any, Encoder]] = {}
    for target in targets:
        for m in cfg.methods:
            where = root / _slug(target.id) / _slug(m.name)
            where.mkdir(parents=True, exist_ok=True)
            selected: list[str] = []
            mix_key = model_key = None
            if m.method == BASE:
                model_path, model_key = cfg.base_model, "base"
            else:
                sel_file = where / "selection.json"
                if not sel_file.is_file():
                    say(f"{target.id} / {m.name}: selecting")
                    if m.name not in selectors:  # one fitted selector per method, shared by every target
                        encoder = Encoder(m.model or cfg.embedder)
                        seed = cfg.seed if m.seed is None else m.seed
                        selectors[m.name] = make_selector(m.method, encoder=encoder, seed=seed).fit(pool), encoder
                    selector, encoder = selectors[m.name]
                    sel = selector.select(Target.from_task(target), min(cfg.k, len(pool) - (target.id in pool)),
                                          exclusions=exclusions)
                    write_json_atomic(sel_file, {"pool": cfg.pool, "method": selector.method, "k": cfg.k,
                                                 "model": encoder.describe(), "selections": [sel.to_dict()]})
                selected = _selected(sel_file)
                mix_key, model_key = _keys(cfg, selected)
                mix_dir = root / "mixtures" / mix_key
                if not (mix_dir / "manifest.json").is_file():
                    say(f"{target.id} / {m.name}: mixing {len(selected)} tasks")
                    mixture = build_mixture([pool.get(i) for i in sorted(selected)], cfg.mix,
                                            rows=local_rows(cfg.rows) if cfg.rows else None)
                    mixture.source = {"pool": cfg.pool, "tasks": sorted(selected)}
                    for warning in mixture.warnings:
                        say(f"{target.id} / {m.name}: warning: {warning}")
                    write_mixture(mixture, mix_dir)
                n_examples = read_json(mix_dir / "manifest.json", "mixture manifest", expect=dict).get("n_examples")
                model_dir = root / "models" / model_key
                if not _done(model_dir):
                    say(f"{target.id} / {m.name}: training {cfg.base_model} on {n_examples} examples")
                    train(mix_dir, cfg.base_model, model_dir, cfg.train, quiet=quiet)
                model_path = str(model_dir)
            eval_file = root / "evals" / model_key / f"{_slug(target.id)}.json"
            if not eval_file.is_file():
                say(f"{target.id} / {m.name}: evaluating")
                ev = evaluate_model(model_path, [target], rows=cfg.rows, seed=cfg.seed, device=cfg.train.device,
                                    **cfg.eval)
                write_json_atomic(eval_file, ev.to_dict(with_examples=True))
            results.append(_result_row(root, target.id, m.name, selected, mix_key, model_key))
    summary = {"config": _config_dict(cfg), "results": results,
               "wall_seconds": round(time.perf_counter() - start, 1), "peak_rss_mb": peak_rss_mb()}
    write_json_atomic(root / "results.json", summary)
    (root / "results.md").write_text(results_markdown(results))
    return summary


def _config_dict(cfg: RunConfig) -> dict[str, Any]:
    doc = asdict(cfg)
    doc["train"] = asdict(cfg.train)
    return doc


def results_markdown(results: list[dict[str, Any]]) -> str:
    metrics = sorted({k for r in results for k in r["metrics"]})
    lines = ["| target | method | tasks | train examples | " + " | ".join(metrics) + " |",
             "|---|---|---|---|" + "---|" * len(metrics)]
    for r in results:
        cells = [f"{r['metrics'][m]:.3f}" if m in r["metrics"] else "" for m in metrics]
        lines.append(f"| {r['target']} | {r['method']} | {len(r['selected'])} | {r['n_train_examples']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
