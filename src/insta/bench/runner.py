"""Run selectors on a suite and score their rankings (with bootstrap CIs over targets)."""

from __future__ import annotations

from typing import Any

import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from ..encoder import Encoder
from ..calibrate import DEFAULT_CALIBRATION, check_calibration, for_union
from ..errors import InstaError, NoExamples
from ..select import InstructionSelector, PoolArrays, Target, order_candidates, truncate
from ..selectors import METHODS, make_selector, method_label, parse_method
from ..tasks import TaskPool
from .folds import make_folds
from .metrics import METRICS, bootstrap_ci, bootstrap_indices
from .suites import Suite

Progress = Callable[[str, int, int], None]
REFERENCES = ("bm25", "insta")  # paired differences are reported against these, when run


@dataclass
class MethodResult:
    method: str
    metrics: dict[str, float] = field(default_factory=dict)
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    per_label: dict[str, dict[str, float]] = field(default_factory=dict)
    per_target: dict[str, dict[str, float]] = field(default_factory=dict)
    n_targets: int = 0
    seconds: float = 0.0
    skipped: str | None = None


@dataclass
class BenchResult:
    suite: str
    description: str
    n_tasks: int
    n_targets: int
    n_scored: int
    folds: int
    seed: int
    n_boot: int
    model: dict[str, str]
    methods: list[MethodResult]
    notes: list[str]
    n_instructions: int | None = None  # targets used only their first N instructions
    calibrate: str | None = None  # a union pool: how scores were compared across its pools
    # paired bootstrap over targets: reference -> method -> metric -> (mean difference, CI low, CI high)
    paired: dict[str, dict[str, dict[str, tuple[float, float, float]]]] = field(default_factory=dict)

    def save(self, stem: str | os.PathLike[str]) -> None:
        """Write ``<stem>.json`` (with per-target values) and ``<stem>.png``, each atomically."""
        from ..io import write_json_atomic
        from .plot import plot_result

        write_json_atomic(f"{stem}.json", self.to_dict(per_target=True))
        plot_result(self, f"{stem}.png")

    def to_dict(self, per_target: bool = False) -> dict:
        d = asdict(self)
        if not per_target:
            for m in d["methods"]:
                m.pop("per_target")
        return d

    def delta(self, reference: str, method: str, metric: str = "MAP") -> str:
        """'+0.041 [-0.029, +0.109]' (paired difference vs the reference), or '' if none."""
        d = self.paired.get(reference, {}).get(method, {}).get(metric)
        return f"{d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}]" if d else ""

    def to_markdown(self) -> str:
        """The figures as a Markdown table: mean [95% CI] per metric, paired ΔMAP vs each reference."""
        refs = list(self.paired)
        lines = ["| method | " + " | ".join(METRICS) + "".join(f" | ΔMAP vs {r}" for r in refs) + " | s |",
                 "|---" * (len(METRICS) + len(refs) + 2) + "|"]
        for m in self.methods:
            if m.skipped:
                lines.append(f"| {m.method} | skipped: {m.skipped} |")
                continue
            cells = [f"{m.metrics[k]:.3f} [{m.ci[k][0]:.3f}, {m.ci[k][1]:.3f}]" for k in METRICS]
            cells += [self.delta(r, m.method) or "—" for r in refs]
            lines.append(f"| {m.method} | " + " | ".join(cells) + f" | {m.seconds:.1f} |")
        return "\n".join(lines)

    def best(self, metric: str = "MAP") -> MethodResult | None:
        done = [m for m in self.methods if m.skipped is None]
        return max(done, key=lambda m: m.metrics[metric]) if done else None


def _relevance(arrays: PoolArrays, labels: np.ndarray, scores, target: Target, candidates: np.ndarray) -> np.ndarray:
    """Relevance (same label as the target) of the candidates in ranked order."""
    return labels[candidates[order_candidates(scores, arrays.tie_order, candidates)]] == target.label


def _candidates(arrays: PoolArrays, target: Target, exclude_siblings: bool) -> np.ndarray:
    keep = np.ones(len(arrays.ids), dtype=bool)
    keep[arrays.excluded_for(target, exclude_siblings)] = False
    return np.flatnonzero(keep)


def _check_answerable(suite: Suite, groups) -> None:
    """Refuse a benchmark in which no target has another task with its label to find (every
    metric would be undefined)."""
    for _, pool, targets in groups:
        counts = Counter(t.label for t in pool if t.label is not None)
        in_pool = set(pool.ids)
        if any(t.label is not None and counts[t.label] - (t.id in in_pool) > 0 for t in targets):
            return
    raise InstaError(f"{suite.name}: no target has a relevant task (another task with its label) to rank first; "
                     "every label is unique here: label the tasks by something they share (?label=FIELD, --label-field)")


Group = tuple[TaskPool | None, TaskPool, list[Target]]


def _groups(suite: Suite, folds: int, seed: int) -> list[Group]:
    """(pool to align on, pool to rank, its targets): the whole suite, or one per fold."""
    if not folds:
        return [(None, suite.pool, suite.targets)]
    by_id = {t.id: t for t in suite.targets}
    out: list[Group] = []
    for fold in make_folds(suite.pool, folds, seed):
        test, train = set(fold.test), set(fold.train)
        out.append((suite.pool.filter(lambda t: t.id in train, name=f"{suite.pool.name}[train {fold.index}]"),
                    suite.pool.filter(lambda t: t.id in test, name=f"{suite.pool.name}[fold {fold.index}]"),
                    [by_id[i] for i in fold.test]))
    return out


def _selector(m: str, train_pool: TaskPool | None, encoder: Encoder, seed: int, align_config: dict | None,
              align_root: str | None, progress: Progress | None, features: Any = None):
    """The selector of method ``m``; learned methods are first aligned on ``train_pool`` (cached)."""
    name, agg = parse_method(m)
    recipe = METHODS.get(name).recipe
    if recipe is None:
        return make_selector(m, encoder=encoder, seed=seed, features=features)
    from ..align import AlignConfig, aligned_model
    from ..paths import cache_dir

    cfg = AlignConfig(**{"recipe": recipe, "seed": seed, "base": encoder.model_name
                         if encoder.model_name != "all-MiniLM-L6-v2" else None, **(align_config or {})})
    assert train_pool is not None
    if progress:
        progress(f"{method_label(name, agg)}: aligning on {train_pool.name} ({len(train_pool)} tasks)", 0, 0)
    model_dir = aligned_model(train_pool, cfg, align_root or cache_dir() / "aligned")
    aligned = Encoder(str(model_dir), cache=encoder.cache or False)
    if METHODS.get(name).fused:
        from ..baselines import HybridSelector

        return HybridSelector(aligned, aggregate=agg or "max")
    return InstructionSelector(aligned, aggregate=agg or "max")


def _per_target(suite: Suite, groups: list[Group], make, label: str,
                progress: Progress | None) -> dict[str, dict[str, float]]:
    """Every metric of every target that has a relevant candidate, for one method."""
    values: dict[str, dict[str, float]] = {}
    for train_pool, pool, targets in groups:
        selector = make(train_pool)
        if progress:
            progress(f"{label}: indexing {pool.name}", 0, len(targets))
        selector.fit(pool)
        if progress:
            progress(f"{label}: ranking", 0, len(targets))
        arrays = PoolArrays(pool)
        labels = np.array([t.label for t in pool], dtype=object)
        everything = np.arange(len(pool))

        def left_out(target: Target) -> np.ndarray:  # the target itself (and its siblings): no candidates, no votes
            return np.setdiff1d(everything, _candidates(arrays, target, suite.exclude_siblings))

        # streamed: only one chunk of targets' full score vectors is alive at a time
        with selector.excluding(left_out):
            for n, (target, scores) in enumerate(zip(targets, selector.iter_scores(targets, k=10)), start=1):
                rel = _relevance(arrays, labels, scores, target, _candidates(arrays, target, suite.exclude_siblings))
                if rel.any():
                    values[target.id] = {metric: fn(rel) for metric, fn in METRICS.items()}
                if progress:
                    progress(f"{label}: ranking", n, len(targets))
    return values


def _summarise(res: MethodResult, values: dict[str, dict[str, float]], suite: Suite, n_boot: int, seed: int) -> None:
    """Means, bootstrap CIs and per-label means of a method's per-target values."""
    ids = sorted(values)
    res.per_target = values
    res.n_targets = len(ids)
    idx = bootstrap_indices(len(ids), n_boot, seed) if ids else None
    label_of = {t.id: t.label for t in suite.targets}
    for metric in METRICS:
        arr = np.array([values[i][metric] for i in ids])
        res.metrics[metric] = float(arr.mean()) if len(arr) else float("nan")
        res.ci[metric] = bootstrap_ci(arr, indices=idx) if len(arr) else (float("nan"), float("nan"))
        by_label: dict[str, list[float]] = {}
        for i in ids:
            by_label.setdefault(label_of[i] or "", []).append(values[i][metric])
        for lab, vals in by_label.items():
            res.per_label.setdefault(lab, {})[metric] = float(np.mean(vals))


def _paired(results: list[MethodResult], scored_ids: list[str], n_boot: int,
            seed: int) -> dict[str, dict[str, dict[str, tuple[float, float, float]]]]:
    """Paired bootstrap of each method's difference to each reference method, over the same targets."""
    paired: dict[str, dict[str, dict[str, tuple[float, float, float]]]] = {}
    done = {m.method: m for m in results if m.skipped is None}
    if not scored_ids:
        return paired
    idx = bootstrap_indices(len(scored_ids), n_boot, seed)
    for ref_name in REFERENCES:
        reference = done.get(ref_name)
        if reference is None:
            continue
        paired[ref_name] = {}
        for m in done.values():
            if m is reference:
                continue
            paired[ref_name][m.method] = {}
            for metric in METRICS:
                diff = np.array([m.per_target[i][metric] - reference.per_target[i][metric] for i in scored_ids])
                lo, hi = bootstrap_ci(diff, indices=idx)
                paired[ref_name][m.method][metric] = (float(diff.mean()), lo, hi)
    return paired


def run_bench(
    suite: Suite,
    methods: Sequence[str] | None = None,
    *,
    encoder: Encoder | None = None,
    folds: int = 0,
    seed: int = 0,
    n_boot: int = 1000,
    progress: Progress | None = None,
    align_config: dict | None = None,
    align_root: str | None = None,
    n_instructions: int | None = None,
    features: Any = None,
    calibrate: str | None = None,
) -> BenchResult:
    """Rank the suite's pool for every target with each method; score the rankings.
    ``features`` (a :class:`insta.config.FeatureConfig`) sets the LM of less/rds; ``calibrate``
    how scores compare across the pools of a union pool (default: insta's default calibration).

    Learned methods (``insta-aligned-*``) need ``folds``: for each fold the embedder is
    aligned on the other folds' tasks only (kept under ``align_root``, reused across runs)
    and then ranks the held-out fold for its targets. ``n_instructions`` keeps only each
    target's first N instructions (the paper's prompt-count ablation)."""
    if n_instructions is not None:
        suite = replace(suite, targets=[truncate(t, n_instructions) for t in suite.targets])
    methods = list(methods or suite.methods)
    twice = sorted({m for m in methods if methods.count(m) > 1})
    if twice:
        raise InstaError(f"--methods names {twice[0]!r} twice; list each method once")
    for m in methods:
        name = parse_method(m)[0]
        if name == "all":
            raise InstaError("method 'all' has no ranking (it selects every task); it is for training comparisons")
        if METHODS.get(name).recipe and not folds:
            raise InstaError(f"method {m!r} is trained on the pool: benchmark it with --folds K (K >= 2), "
                             "so it is scored only on tasks it never saw")
    encoder = encoder or Encoder()
    if folds and not suite.leave_one_out:
        raise InstaError(f"--folds applies to leave-one-out suites; {suite.name} has external targets")
    groups = _groups(suite, folds, seed)
    _check_answerable(suite, groups)
    check_calibration(calibrate or DEFAULT_CALIBRATION)
    origins = sorted({t.origin for t in suite.pool if t.origin is not None})
    results = []
    scored_ids: list[str] | None = None
    for m in methods:
        name, agg = parse_method(m)
        res = MethodResult(method=method_label(name, agg))
        start = time.perf_counter()
        try:
            values = _per_target(suite, groups, lambda train_pool: for_union(
                _selector(m, train_pool, encoder, seed, align_config, align_root, progress, features), origins,
                calibrate or DEFAULT_CALIBRATION), res.method, progress)
        except NoExamples as exc:  # methods that select from examples are skipped where there are none
            res.skipped = str(exc)
            results.append(res)
            continue
        res.seconds = round(time.perf_counter() - start, 2)
        _summarise(res, values, suite, n_boot, seed)
        scored_ids = sorted(values) if scored_ids is None else scored_ids
        results.append(res)

    return BenchResult(
        paired=_paired(results, scored_ids or [], n_boot, seed),
        suite=suite.name,
        description=suite.description,
        n_tasks=len(suite.pool),
        n_targets=len(suite.targets),
        n_scored=len(scored_ids or []),
        folds=folds,
        seed=seed,
        n_boot=n_boot,
        n_instructions=n_instructions,
        model=encoder.describe() if any(METHODS.get(parse_method(m)[0]).uses_encoder for m in methods) else {},
        methods=results,
        notes=list(suite.notes),
        calibrate=(calibrate or DEFAULT_CALIBRATION) if len(origins) > 1 else None,
    )
