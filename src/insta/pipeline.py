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

from .calibrate import DEFAULT_CALIBRATION, check_calibration, for_union
from .checks import check_choice, check_int, check_seed
from .errors import InstaError, did_you_mean
from .io import out_dir, read_json, read_yaml
from .log import log
from .evaluate import METRICS, EvalResult, Scorer, evaluate_examples
from .config import FeatureConfig
from .mix import (MixConfig, Mixture, build_example_mixture, build_mixture, local_rows, read_selection, selected_examples,
                  selected_tasks, write_mixture)
from .pools import PoolSpecs, distinct, load_pool, parse_spec, spec_list
from .tasks import Task, TaskPool
from .train import TrainConfig, train

Say = Callable[[str], None]


def mix_selection(selection_file: str | Path, out: str | Path, cfg: MixConfig, *, pool: PoolSpecs | None = None,
                  target: str | None = None, rows: str | None = None, loaded: TaskPool | None = None) -> Mixture:
    """Build and write the mixture of one selection of an ``insta select --out`` file.
    ``loaded``: the pool already in memory (else the spec is loaded)."""
    doc, sel = read_selection(selection_file, target)
    spec = pool or doc.get("pool")
    if not spec:
        raise InstaError(f"{selection_file}: no 'pool' recorded; give the pool with --pool")
    mixture = mixture_of(loaded or load_pool(spec), sel, cfg, rows, str(selection_file))
    mixture.source = {"selection": str(selection_file), "pool": spec, "target": sel.get("target", {}).get("id"),
                      "method": doc.get("method"), "k": doc.get("k")}
    write_mixture(mixture, out)
    return mixture


def target_tasks(spec: PoolSpecs, ids: list[str] | None = None) -> list[Task]:
    """The tasks of a target spec with their instances, optionally only ``ids``."""
    loaded = load_pool(spec)
    return [t.with_instances() for t in ([loaded.get(i) for i in ids] if ids else loaded)]


def without_examples(task: Task, held: list[dict[str, Any]]) -> Task:
    """``task`` without the examples a selector saw (``target_examples`` of a selection): the
    instances at those positions, and every instance whose input, as rendered or as written,
    is one of theirs (duplicates in the task's data, examples the user gave in either form)."""
    from dataclasses import replace

    from .examples import rendered

    if not held:
        return task
    full = task.with_instances()
    positions = {e["index"] for e in held if isinstance(e.get("index"), int) and e["index"] >= 0}
    inputs = {" ".join(str(e.get("input", "")).split()) for e in held} - {""}
    keys = {e.get("key") for e in held} - {None}
    positions |= {ex.index for ex in rendered(full) if ex.key in keys
                  or " ".join(ex.input.split()) in inputs or " ".join(ex.raw.split()) in inputs}
    kept = [x for i, x in enumerate(full.instances or []) if i not in positions]
    if not kept:
        raise InstaError(f"target {task.id!r}: every example was seen by a selector; nothing is left to evaluate on")
    return replace(full, instances=kept, instance_loader=None)


def seen_examples(selection_files: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Per target id, the target examples that the selections of these files saw."""
    from .mix import read_selections
    from .selectors import METHODS

    held: dict[str, list[dict[str, Any]]] = {}
    for path in selection_files:
        doc = read_selections(path)
        for i, sel in enumerate(doc["selections"]):
            method = str(sel.get("method") or doc.get("method") or "")
            if "target_examples" not in sel and method in METHODS and METHODS.get(method).examples:
                raise InstaError(f"{path}: selections[{i}] was made by {method!r} from the target's examples but records "
                                 "no 'target_examples', so they cannot be left out; select again with insta select --out")
            examples = sel.get("target_examples") or []
            if not isinstance(examples, list) or not all(isinstance(e, dict) and isinstance(e.get("key"), str)
                                                         for e in examples):
                raise InstaError(f"{path}: selections[{i}].target_examples must be a list of objects with 'index' and "
                                 "'key'; write the file with insta select --out")
            held.setdefault(str(sel["target"].get("id")), []).extend(examples)
    return held


def evaluate_model(model: str, tasks: list[Task], *, metric: str = "auto", max_examples: int = 100,
                   format: str = "def", rows: str | None = None, split: str = "validation", seed: int = 0,
                   device: str = "auto", max_new_tokens: int = 64, held: dict[str, list[dict[str, Any]]] | None = None,
                   progress: Callable[[int, int], None] | None = None) -> EvalResult:
    """Zero-shot metrics of ``model`` on up to ``max_examples`` examples of each target task;
    ``held``: per task id, the examples a selector saw, which are never evaluated on."""
    check_choice(metric, "--metric", METRICS)
    check_int(max_examples, "--max-examples", min=1)
    check_int(max_new_tokens, "--max-new-tokens", min=1, max=1_000_000)
    check_seed(seed)
    tasks = [without_examples(t, (held or {}).get(t.id, [])) for t in tasks]
    if (split != "validation" or rows) and not any(t.source == "p3" for t in tasks):
        given = " and ".join(f"--{n}" for n, v in (("split", split != "validation"), ("rows", rows)) if v)
        log.warning(f"{given} only apply to P3 target tasks and none of the {len(tasks)} target task(s) is one; "
                    "ignored (BIG-bench, NIV2 and table tasks carry their own examples)")
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
    model: str | None = None  # embedder for insta (e.g. an aligned model folder); the LM for less/rds
    seed: int | None = None  # for random (several seeds = several methods); default: the run's seed
    budget: int | None = None  # less/rds/samples: select this many examples instead of k tasks
    k: int | None = None  # this method's number of tasks (default: the run's k)
    #: [b, n]: rank the whole pool with the method, split the ranking into n equal bins and train
    #: on k tasks drawn (seeded) from bin b (1 = the most similar): a distance-quantile experiment
    quantile: list[int] | None = None


@dataclass
class RunConfig:
    out: str
    pool: str | list[str]  # a spec, or several: their union
    targets: list[str]
    train: TrainConfig
    base_model: str
    target_pool: str | list[str] | None = None
    methods: list[MethodSpec] = field(default_factory=list)
    k: int = 5
    seed: int = 0
    embedder: str | None = None
    rows: str | None = None
    exclude_siblings: bool = False
    mix: MixConfig = field(default_factory=MixConfig)
    eval: dict[str, Any] = field(default_factory=dict)
    #: less/rds/samples: the LM (default: the model trained), examples per task, query examples, ...
    features: FeatureConfig | None = None
    #: False: delete a trained model's weights once it is evaluated (its train.json and the
    #: evaluation stay; a resumed run does not train it again). Models of target-independent
    #: methods (all) are kept, since every target evaluates them.
    keep_models: bool = True
    #: a union pool: how scores compare across its pools (insta.calibrate)
    calibrate: str = DEFAULT_CALIBRATION


RUN_KEYS = {"out", "pool", "targets", "target_pool", "methods", "k", "seed", "embedder", "rows", "exclude_siblings",
            "mix", "train", "eval", "features", "keep_models", "calibrate"}
METHOD_KEYS = {"name", "method", "model", "seed", "budget", "k", "quantile"}
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


def _calibration(p: Path, doc: dict[str, Any]) -> str:
    try:
        return check_calibration(_typed(p, doc, "calibrate", str, DEFAULT_CALIBRATION))
    except InstaError as exc:
        raise InstaError(f"{p}: field 'calibrate': {exc}") from None


def _pool_field(p: Path, doc: dict[str, Any], key: str) -> str | list[str] | None:
    """A config's pool: a spec, or a list of specs (their union)."""
    value = doc.get(key)
    if isinstance(value, list):
        if not value or not all(isinstance(x, str) and x for x in value):
            raise InstaError(f"{p}: field '{key}' must be a pool spec or a list of pool specs (text), got {value!r}")
        distinct([parse_spec(x) for x in value])
        return value[0] if len(value) == 1 else list(value)
    return _typed(p, doc, key, str)


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
    from .selectors import METHODS, parse_method

    if value is None:
        value = ["insta", "random", "all"]
    if not isinstance(value, list) or not value:
        raise InstaError(f"{p}: field 'methods' must be a list, e.g. [base, insta, random, all]; got {value!r}")
    methods = []
    for i, m in enumerate(value):
        if isinstance(m, str):
            spec = MethodSpec(name=m, method=m)
        elif isinstance(m, dict) and isinstance(m.get("method"), str):
            extra = sorted(set(m) - METHOD_KEYS, key=str)
            if extra:
                raise InstaError(f"{p}: methods[{i}]: unknown field '{extra[0]}'; available: {', '.join(sorted(METHOD_KEYS))}")
            seed, budget, k, quantile = m.get("seed"), m.get("budget"), m.get("k"), m.get("quantile")
            try:
                seed = None if seed is None else check_seed(seed, f"methods[{i}].seed")
                budget = None if budget is None else check_int(budget, f"methods[{i}].budget", min=1)
                k = None if k is None else check_int(k, f"methods[{i}].k", min=1)
                quantile = None if quantile is None else _check_quantile(quantile, f"methods[{i}].quantile")
            except InstaError as exc:
                raise InstaError(f"{p}: {exc}") from None
            for key in ("name", "model"):
                if m.get(key) is not None and not isinstance(m[key], str):
                    raise InstaError(f"{p}: methods[{i}].{key} must be text")
            default_name = f"{m['method']}-{seed}" if seed is not None else m["method"]
            if budget is not None and not default_name.endswith(f"@{budget}"):
                default_name = f"{default_name}@{budget}"
            spec = MethodSpec(name=m.get("name") or default_name, method=m["method"], model=m.get("model"), seed=seed,
                              budget=budget, k=k, quantile=quantile)
        else:
            raise InstaError(f"{p}: methods[{i}] must be a method name or a mapping with 'method'")
        if spec.method == BASE and (spec.budget, spec.k, spec.quantile) != (None, None, None):
            raise InstaError(f"{p}: methods[{i}]: budget, k and quantile choose what to train on; the base model trains "
                             "on nothing")
        if spec.quantile and spec.method.partition(":")[0] in ("random", "all"):
            raise InstaError(f"{p}: methods[{i}].quantile bins a method's ranking of the pool; {spec.method!r} ranks "
                             "nothing (use it without quantile)")
        if spec.quantile and spec.budget is not None:
            raise InstaError(f"{p}: methods[{i}]: quantile draws tasks from a bin of the ranking; it does not combine "
                             "with an example budget")
        if spec.method != BASE:
            try:
                name, _ = parse_method(spec.method)
            except InstaError as exc:
                raise InstaError(f"{p}: methods[{i}]: {exc} (or {BASE}: the untrained base model)") from None
            if spec.budget is not None and not METHODS.get(name).budget:
                raise InstaError(f"{p}: methods[{i}].budget selects examples; it applies to "
                                 f"{', '.join(n for n, x in METHODS.items() if x.budget)}, not {name!r}")
        methods.append(spec)
    _one_folder_each(p, [m.name for m in methods], "methods", "two methods share the name {!r}; give each a distinct "
                     "'name'", "give them names that differ in letters, digits, '.', '_' or '-'")
    return methods


def _one_folder_each(p: Path, names: list[str], what: str, twice: str, fix: str) -> None:
    """Each of ``names`` (methods, targets) gets its own folder in a run: none given twice, and
    no two that the same folder name (the name made safe for a path) would hold."""
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InstaError(f"{p}: " + twice.format(repeated[0]))
    folders: dict[str, str] = {}
    for n in names:
        if _slug(n) in folders:
            raise InstaError(f"{p}: {what} {folders[_slug(n)]!r} and {n!r} would share the folder {_slug(n)!r} in the "
                             f"run; {fix}")
        folders[_slug(n)] = n


MAX_BINS = 1_000_000


def _check_quantile(value: Any, name: str) -> list[int]:
    if (not isinstance(value, list) or len(value) != 2 or not all(isinstance(v, int) and not isinstance(v, bool)
                                                                   for v in value)
            or not 1 <= value[0] <= value[1] <= MAX_BINS):
        raise InstaError(f"{name} must be [b, n] with 1 <= b <= n <= {MAX_BINS:,} (bin b of n over the method's "
                         f"ranking), got {value!r}")
    return list(value)


def load_run_config(path: str | Path) -> RunConfig:
    """A run config, every value checked before anything runs (file, field and fix in one line)."""
    p = Path(path).expanduser()
    doc = _section(p, None, read_yaml(p, "config", unique_keys=True), RUN_KEYS)
    if not doc:
        raise InstaError(f"{p}: a run config is a YAML mapping (out, pool, targets, methods, train, ...)")
    for key in ("out", "pool", "targets", "train"):
        if doc.get(key) is None:
            raise InstaError(f"{p}: field '{key}' is missing")
        if isinstance(doc[key], (str, list, dict)) and not doc[key]:
            raise InstaError(f"{p}: field '{key}' is empty; give it a value")
    targets = doc["targets"] if isinstance(doc["targets"], list) else [doc["targets"]]
    if not all(isinstance(t, str) and t for t in targets):
        raise InstaError(f"{p}: field 'targets' must be a task id or a list of task ids (text)")
    _one_folder_each(p, targets, "targets", "field 'targets' names {!r} twice; list each target once",
                     "run them in separate configs (or out folders)")
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
    features_section = _section(p, "features", doc.get("features"), {f.name for f in fields(FeatureConfig)})
    try:
        train_cfg = TrainConfig(**train_section)
        mix_cfg = MixConfig(**mix_section)
        # the examples are represented by the model that is trained, unless the config names another
        features = FeatureConfig(**{"lm": base_model, "seed": doc.get("seed", 0), **features_section})
    except InstaError as exc:
        raise InstaError(f"{p}: {exc}") from None
    out = _typed(p, doc, "out", str)
    out_dir(out, f"{p}: field 'out'", create=False)  # a file, a cache folder: refused before any work
    return RunConfig(
        out=out, pool=_pool_field(p, doc, "pool"), targets=list(targets), train=train_cfg,
        base_model=base_model, target_pool=_pool_field(p, doc, "target_pool"), methods=_methods(p, doc.get("methods")),
        k=k, seed=seed, embedder=_typed(p, doc, "embedder", str), rows=_typed(p, doc, "rows", str),
        exclude_siblings=_typed(p, doc, "exclude_siblings", bool, False), mix=mix_cfg,
        keep_models=_typed(p, doc, "keep_models", bool, True),
        calibrate=_calibration(p, doc),
        eval=_check_eval(p, _section(p, "eval", doc.get("eval"), EVAL_KEYS)), features=features,
    )


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


def _key(doc: Any) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _done(model_dir: Path) -> bool:
    from .train import finished

    return finished(model_dir)


def _selected(sel_file: Path) -> list[str]:
    """What a run folder's selection file (written by insta run or insta select) selected: task
    ids, or ``TASK#INDEX`` per example of an example-level selection."""
    sel = read_selection(sel_file)[1]
    chosen = selected_examples(sel, str(sel_file))
    if chosen is None:
        return [r["task_id"] for r in sel["results"]]
    return [f"{r['task_id']}#{e['index']}" for r, examples in zip(sel["results"], chosen) for e in examples]


def _keys(cfg: RunConfig, selected: list[str]) -> tuple[str, str]:
    """(mixture key, model key) of a selection: the content that decides each."""
    mix_key = _key({"tasks": sorted(selected), "pool": cfg.pool, "mix": asdict(cfg.mix), "rows": cfg.rows})
    return mix_key, _key({"mixture": mix_key, "base": cfg.base_model, "train": asdict(cfg.train)})


def _uses_examples(cfg: RunConfig) -> bool:
    from .selectors import METHODS, parse_method

    return any(m.method != BASE and METHODS.get(parse_method(m.method)[0]).examples for m in cfg.methods)


def held_out(cfg: RunConfig, target: Task) -> list[dict[str, Any]]:
    """The target's query examples when the run has a method that selects from examples: every
    such method sees exactly these, and no method is evaluated on them (so that all methods
    of the run are evaluated on the same examples)."""
    from .examples import query_examples
    from .select import Target

    if not _uses_examples(cfg):
        return []
    features = cfg.features or FeatureConfig(lm=cfg.base_model, seed=cfg.seed)
    return [e.to_dict() for e in query_examples(Target.from_task(target), features.query_examples, features.seed)]


def _eval_file(root: Path, model_key: str, target: str, held: list[dict[str, Any]]) -> Path:
    """Where a model's evaluation on a target is kept; with held-out query examples, named by them."""
    tag = f".held-{_key(sorted(e['key'] for e in held))[:8]}" if held else ""
    return root / "evals" / model_key / f"{_slug(target)}{tag}.json"


def collect_results(cfg: RunConfig) -> list[dict[str, Any]]:
    """The results a run folder already holds (target × method pairs evaluated so far), read
    without selecting, training or evaluating anything: a report on an unfinished run."""
    root = Path(cfg.out).expanduser()
    out = []
    tasks = {t.id: t for t in load_pool(cfg.target_pool or cfg.pool)} if _uses_examples(cfg) else {}
    for target in cfg.targets:
        held = held_out(cfg, tasks[target]) if target in tasks else []
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
            if _eval_file(root, model_key, target, held).is_file():
                out.append(_result_row(root, target, m.name, selected, mix_key, model_key, held))
    return out


def _result_row(root: Path, target: str, method: str, selected: list[str], mix_key: str | None,
                model_key: str, held: list[dict[str, Any]]) -> dict[str, Any]:
    """One line of results.json, from the files a finished target × method left in the run folder."""
    manifest = root / "mixtures" / str(mix_key) / "manifest.json"
    n = read_json(manifest, "mixture manifest", expect=dict).get("n_examples", 0) if mix_key and manifest.is_file() else 0
    evaluation = read_json(_eval_file(root, model_key, target, held), "evaluation", expect=dict)
    row = {"target": target, "method": method, "selected": selected, "mixture": mix_key, "model": model_key,
           "n_train_examples": n, "metrics": evaluation.get("average", {})}
    from .train import recorded_seconds

    seconds = {"train_seconds": recorded_seconds(root / "models" / model_key), "eval_seconds": evaluation.get("seconds")}
    row.update({k: v for k, v in seconds.items() if isinstance(v, (int, float))})  # wall time, where recorded
    if held:
        row["held_out_query_examples"] = [e["index"] for e in held]
    return row


def peak_rss_mb() -> float:
    """Peak resident memory of this process and its finished children, in MB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(max(own, kids) / 1024, 1)  # Linux reports KiB


def run(cfg: RunConfig, *, quiet: bool = True, say: Say | None = None,
        after_target: Callable[[str, list[dict[str, Any]]], None] | None = None) -> dict[str, Any]:
    """select → mix → train → eval for every target × method; returns (and writes) the results.
    ``after_target(target id, results so far)`` is called as each target is done (e.g. to
    write a report that an interruption cannot lose)."""
    from .io import write_json_atomic
    from .encoder import Encoder
    from .mix import reusable_mixture
    from .select import Exclusions

    say = say or (lambda _m: None)
    start = time.perf_counter()
    root = out_dir(cfg.out, "the run's out folder")
    pool: TaskPool = load_pool(cfg.pool)
    targets = target_tasks(cfg.target_pool or cfg.pool, cfg.targets)
    exclusions = Exclusions(siblings=cfg.exclude_siblings)
    results: list[dict[str, Any]] = []
    selectors: dict[str, tuple[Any, Encoder]] = {}
    for target in targets:
        held = held_out(cfg, target)
        for m in cfg.methods:
            where = root / _slug(target.id) / _slug(m.name)
            where.mkdir(parents=True, exist_ok=True)
            selected: list[str] = []
            mix_key = model_key = None
            if m.method == BASE:
                model_path, model_key = cfg.base_model, "base"
            else:
                sel_file = where / "selection.json"
                settings = _selection_settings(cfg, m, held)
                if sel_file.is_file():
                    _check_settings(sel_file, settings)
                else:
                    say(f"{target.id} / {m.name}: selecting")
                    if m.name not in selectors:  # one fitted selector per method, shared by every target
                        selectors[m.name] = _fitted(cfg, m, pool)
                    selector, encoder = selectors[m.name]
                    k = m.k or cfg.k
                    candidates = len(pool) - (target.id in pool)
                    if m.quantile:
                        sel = quantile_selection(selector.select(_target(target, held), candidates, exclusions=exclusions),
                                                 m.quantile, min(k, candidates), seed=_quantile_seed(cfg, m, target.id))
                    else:
                        sel = selector.select(_target(target, held), min(k, candidates), exclusions=exclusions)
                    if k > candidates:
                        say(f"{target.id} / {m.name}: warning: k={k} is larger than the {candidates} candidate tasks; "
                            "all of them are selected")
                    doc = {"pool": cfg.pool, "method": selector.method, "k": k, "model": encoder.describe(),
                           "settings": settings, "selections": [sel.to_dict()]}
                    if m.quantile:
                        doc["quantile"] = m.quantile
                    if hasattr(selector, "describe"):
                        doc["representation"] = selector.describe()
                    write_json_atomic(sel_file, doc)
                selected = _selected(sel_file)
                mix_key, model_key = _keys(cfg, selected)
                mix_dir = root / "mixtures" / mix_key
                if not reusable_mixture(mix_dir):  # absent, or damaged/incomplete (removed, with a warning)
                    say(f"{target.id} / {m.name}: mixing {len(selected)} {'examples' if '#' in selected[0] else 'tasks'}")
                    mixture = mixture_of(pool, read_selection(sel_file)[1], cfg.mix, cfg.rows, str(sel_file), by_id=True)
                    mixture.source = {"pool": cfg.pool, "tasks": sorted(selected)}
                    for warning in mixture.warnings:
                        say(f"{target.id} / {m.name}: warning: {warning}")
                    write_mixture(mixture, mix_dir)
                n_examples = read_json(mix_dir / "manifest.json", "mixture manifest", expect=dict).get("n_examples")
                model_dir = root / "models" / model_key
                if not _eval_file(root, model_key, target.id, held).is_file() and not (
                        _done(model_dir) and (model_dir / "config.json").is_file()):
                    if _done(model_dir):  # its weights were dropped (keep_models: false): train it again
                        drop_weights(model_dir)
                        (model_dir / "train.json").unlink()
                    say(f"{target.id} / {m.name}: training {cfg.base_model} on {n_examples} examples")
                    train(mix_dir, cfg.base_model, model_dir, cfg.train, quiet=quiet)
                model_path = str(model_dir)
            eval_file = _eval_file(root, model_key, target.id, held)
            if not eval_file.is_file():
                say(f"{target.id} / {m.name}: evaluating")
                began = time.perf_counter()
                ev = evaluate_model(model_path, [target], rows=cfg.rows, seed=cfg.seed, device=cfg.train.device,
                                    held={target.id: _seen(root, cfg, target.id, held)}, **cfg.eval)
                write_json_atomic(eval_file, {**ev.to_dict(with_examples=True), "seconds": round(time.perf_counter() - began, 1)})
            if not cfg.keep_models and m.method not in (BASE, "all"):
                drop_weights(root / "models" / str(model_key))
            results.append(_result_row(root, target.id, m.name, selected, mix_key, model_key, held))
        if after_target:
            after_target(target.id, results)
    summary = {"config": _config_dict(cfg), "results": results,
               "wall_seconds": round(time.perf_counter() - start, 1), "peak_rss_mb": peak_rss_mb()}
    write_json_atomic(root / "results.json", summary)
    (root / "results.md").write_text(results_markdown(results))
    return summary


def drop_weights(model_dir: Path) -> None:
    """Delete a trained model's weights and tokenizer, keeping train.json (what was trained, how)."""
    import shutil

    if not model_dir.is_dir():
        return
    for item in model_dir.iterdir():
        if item.name != "train.json":
            shutil.rmtree(item) if item.is_dir() and not item.is_symlink() else item.unlink()


def quantile_selection(ranked: Any, quantile: list[int], k: int, *, seed: int) -> Any:
    """Of a selection ranking the whole pool, ``k`` tasks drawn (seeded) from bin ``b`` of ``n``
    equal bins of the ranking (bin 1: the most similar); their ranks stay the pool ranks."""
    from dataclasses import replace

    import numpy as np

    b, n = quantile
    bins = np.array_split(np.arange(len(ranked.results)), n)
    members = bins[b - 1]
    if len(members) < k:
        raise InstaError(f"quantile bin {b} of {n} holds {len(members)} tasks, fewer than k = {k}; use fewer bins or "
                         "a smaller k")
    chosen = sorted(np.random.default_rng(seed).choice(members, size=k, replace=False).tolist())
    return replace(ranked, results=[ranked.results[i] for i in chosen], k=k)


def _quantile_seed(cfg: RunConfig, m: MethodSpec, target: str) -> int:
    """The draw within a bin: the method's seed, and a different draw per target."""
    return int(hashlib.sha256(f"{cfg.seed if m.seed is None else m.seed}:{target}".encode()).hexdigest()[:8], 16)


def _selection_settings(cfg: RunConfig, m: MethodSpec, held: list[dict[str, Any]]) -> dict[str, Any]:
    """What decides a method's selection in a run: compared when a run resumes, so that a
    selection made under other settings is never reused silently."""
    from .selectors import METHODS, parse_method

    name = parse_method(m.method)[0]
    doc: dict[str, Any] = {"method": m.method, "pool": cfg.pool, "k": m.k or cfg.k,
                           "seed": cfg.seed if m.seed is None else m.seed,
                           "model": m.model or cfg.embedder, "budget": m.budget, "exclude_siblings": cfg.exclude_siblings,
                           "held_out": sorted(e["key"] for e in held)}
    if m.quantile:
        doc["quantile"] = m.quantile
    if len(spec_list(cfg.pool)) > 1:
        doc["calibrate"] = cfg.calibrate
    if METHODS.get(name).uses_features:
        features = asdict(cfg.features or FeatureConfig(lm=cfg.base_model, seed=cfg.seed))
        doc["features"] = {k: v for k, v in features.items() if k not in ("device", "engine", "actors")}
    return doc


def _check_settings(sel_file: Path, settings: dict[str, Any]) -> None:
    stored = read_json(sel_file, "selection file", expect=dict).get("settings")
    if stored is None:  # written by an older insta: nothing to compare
        return
    if not isinstance(stored, dict):
        raise InstaError(f"{sel_file}: field 'settings' is damaged; delete {sel_file.parent} to select again")
    changed = sorted(k for k in set(stored) | set(settings) if stored.get(k) != settings.get(k))
    if changed:
        detail = changed
        if "features" in changed:
            old, new = stored.get("features") or {}, settings.get("features") or {}
            detail = [c for c in changed if c != "features"] + [f"features.{k}" for k in sorted(set(old) | set(new))
                                                                if old.get(k) != new.get(k)]
        raise InstaError(f"{sel_file} was selected with other settings ({', '.join(detail)} changed since); delete "
                         f"{sel_file.parent} to select again with the new ones, or give the run another 'out'")


def _fitted(cfg: RunConfig, m: MethodSpec, pool: TaskPool):
    """(the method's selector fitted on the pool, its embedder)."""
    from dataclasses import replace

    from .encoder import Encoder
    from .selectors import METHODS, make_selector, parse_method

    name, _ = parse_method(m.method)
    model_aware = METHODS.get(name).uses_features
    encoder = Encoder(cfg.embedder if model_aware else (m.model or cfg.embedder))
    seed = cfg.seed if m.seed is None else m.seed
    features = cfg.features or FeatureConfig(lm=cfg.base_model, seed=cfg.seed)
    if model_aware and m.model:
        features = replace(features, lm=m.model)
    selector = make_selector(m.method, encoder=encoder, seed=seed, features=features, budget=m.budget)
    return for_union(selector, spec_list(cfg.pool), cfg.calibrate).fit(pool), encoder


def _target(task: Task, held: list[dict[str, Any]]):
    """The selection target for a task: with its held-out query examples as the examples a
    selector may see, when the run has any."""
    from dataclasses import replace

    from .examples import Example
    from .select import Target

    target = Target.from_task(task)
    if held:
        target = replace(target, examples=[Example(task.id, e["index"], e["input"], e["target"]) for e in held])
    return target


def _seen(root: Path, cfg: RunConfig, target: str, held: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The examples of ``target`` that no evaluation may use: the run's held-out query examples
    and any other that a selection of this target recorded (a selection file written by hand)."""
    seen = list(held)
    keys = {e["key"] for e in held}
    for m in cfg.methods:
        sel_file = root / _slug(target) / _slug(m.name) / "selection.json"
        if m.method == BASE or not sel_file.is_file():
            continue
        for e in read_selection(sel_file)[1].get("target_examples") or []:
            if isinstance(e, dict) and e.get("key") not in keys:
                seen.append(e)
                keys.add(e.get("key"))
    return seen


def mixture_of(pool: TaskPool, sel: dict[str, Any], cfg: MixConfig, rows: str | None, where: str, *,
               by_id: bool = False) -> Mixture:
    """The mixture of one selection: its tasks' examples (in the selection's order, or by task id:
    ``insta run``'s mixtures are addressed by their set of tasks), or exactly the examples an
    example-level selection (--budget) chose."""
    tasks = selected_tasks(pool, sel, where)  # every selected task is in the pool
    if by_id:
        tasks = sorted(tasks, key=lambda t: t.id)
    chosen = selected_examples(sel, where)
    if chosen is not None:
        return build_example_mixture([pool.get(r["task_id"]) for r in sel["results"]], chosen, cfg, where)
    return build_mixture(tasks, cfg, rows=local_rows(rows) if rows else None)


def _config_dict(cfg: RunConfig) -> dict[str, Any]:
    doc = asdict(cfg)
    doc["train"] = asdict(cfg.train)
    return doc


def results_markdown(results: list[dict[str, Any]]) -> str:
    metrics = sorted({k for r in results for k in r["metrics"]})
    lines = ["| target | method | selected | train examples | " + " | ".join(metrics) + " |",
             "|---|---|---|---|" + "---|" * len(metrics)]
    for r in results:
        cells = [f"{r['metrics'][m]:.3f}" if m in r["metrics"] else "" for m in metrics]
        lines.append(f"| {r['target']} | {r['method']} | {len(r['selected'])} | {r['n_train_examples']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
