"""The downstream benchmark: does training on a selection make a better model?

For every target of a pool (``bigbench:t0-eval`` by default), ``insta run`` selects k source
tasks with each method, fine-tunes the same base model on the same example budget with the
same steps, learning rate and seed, and evaluates zero-shot on held-out examples of the
target (rank-classification accuracy and the mean log-likelihood of the gold answer). This
module builds that run's config and summarises its results: per-target figures, the mean
of each method, and paired bootstrap CIs over targets of one method minus another
(``random`` is the mean of its seeds).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InstaError
from ..config import FeatureConfig
from ..mix import MixConfig
from ..pipeline import BASE, MethodSpec, RunConfig
from ..readers.bigbench import T0_EVAL
from ..train import TrainConfig
from .metrics import bootstrap_ci, bootstrap_indices

#: the CPU subset, named from task metadata alone before any result was seen: the 8 targets of
#: bigbench:t0-eval with the shortest prompts (mean characters of the rendered prompt), i.e.
#: the cheapest to evaluate on 2 cores
CPU_TARGETS = ("strategyqa", "known_unknowns", "hindu_knowledge", "misconceptions", "novel_concepts", "winowhy",
               "conceptual_combinations", "code_line_description")
METRICS = ("accuracy", "gold_loglik")
COMPARISONS = (("insta", "random"), ("insta", "all"), ("insta", BASE), ("bm25", "random"), ("insta", "bm25"))


def downstream_config(out: str, *, targets: Sequence[str] = CPU_TARGETS, model: str = "smollm2", k: int = 5,
                      budget: int = 64, steps: int = 8, batch_size: int = 8, lr: float = 1e-4, lora: bool = False,
                      random_seeds: Sequence[int] = (1, 2), max_examples: int = 100, max_input_length: int = 256,
                      device: str = "auto", seed: int = 0, extra_methods: Sequence[str] = ()) -> RunConfig:
    """The run: pool = BIG-bench without any T0 evaluation task, targets from t0-eval.
    ``extra_methods``: more methods of insta select, e.g. ``less``, ``rds`` (task level, same k) or
    ``less@64`` (example level: that many examples), ``hybrid-less``; the model-aware ones
    represent examples with the model being trained, and when any is present every method is
    evaluated without the target examples they saw."""
    unknown = [t for t in targets if t not in T0_EVAL]
    if unknown:
        raise InstaError(f"downstream targets must be bigbench:t0-eval tasks; not: {', '.join(unknown)}")
    methods = [MethodSpec(BASE, BASE), MethodSpec("insta", "insta"), MethodSpec("bm25", "bm25")]
    methods += [MethodSpec(f"random-{s}", "random", seed=s) for s in random_seeds]
    for spec in extra_methods:
        name, _, n = spec.partition("@")
        methods.append(MethodSpec(spec, name, budget=int(n) if n else None))
    methods.append(MethodSpec("all", "all"))
    return RunConfig(
        out=out, pool="bigbench:all?exclude=t0-eval", target_pool="bigbench:t0-eval", targets=list(targets),
        base_model=model, methods=methods, k=k, seed=seed,
        mix=MixConfig(per_task_cap=budget, total_examples=budget, seed=seed),
        features=FeatureConfig(lm=model, seed=seed, max_length=max_input_length, device=device),
        train=TrainConfig(max_steps=steps, batch_size=batch_size, lr=lr, lora=lora, max_input_length=max_input_length,
                          max_target_length=64, device=device, seed=seed),
        eval={"metric": "rank", "max_examples": max_examples},
    )


def _family(method: str) -> str:
    return "random" if method.startswith("random-") else method


def summarize(results: list[dict[str, Any]], *, n_boot: int = 10000, seed: int = 0) -> dict[str, Any]:
    """Per-target table, method means and paired bootstrap CIs from ``insta run`` results."""
    table: dict[str, dict[str, dict[str, list[float]]]] = {}
    for r in results:
        fam = table.setdefault(r["target"], {}).setdefault(_family(r["method"]), {})
        for m in METRICS:
            if m in r["metrics"]:
                fam.setdefault(m, []).append(float(r["metrics"][m]))
    methods = sorted({f for row in table.values() for f in row}, key=lambda f: (f != BASE, f))
    complete = sorted(t for t, row in table.items() if all(f in row for f in methods))
    per_target = {t: {f: {m: float(np.mean(v)) for m, v in table[t][f].items()} for f in methods} for t in complete}
    idx = bootstrap_indices(len(complete), n_boot, seed) if complete else None
    means: dict[str, dict[str, Any]] = {}
    deltas: list[dict[str, Any]] = []
    for m in METRICS:
        values = {f: np.array([per_target[t][f].get(m, np.nan) for t in complete]) for f in methods}
        for f, v in values.items():
            if len(v) and not np.isnan(v).any():
                means.setdefault(f, {})[m] = {"mean": float(v.mean()), "ci": bootstrap_ci(v, indices=idx)}
        for a, b in COMPARISONS:
            if a in values and b in values and len(complete) and not np.isnan(values[a] - values[b]).any():
                d = values[a] - values[b]
                lo, hi = bootstrap_ci(d, indices=idx)
                deltas.append({"metric": m, "a": a, "b": b, "mean": float(d.mean()), "ci": (lo, hi),
                               "wins": int((d > 0).sum()), "losses": int((d < 0).sum()), "n": len(d)})
    return {"targets": complete, "methods": methods, "per_target": per_target, "means": means, "deltas": deltas,
            "n_boot": n_boot}


def markdown(summary: dict[str, Any]) -> str:
    """BENCHMARKS.md tables: per target (accuracy / gold log-likelihood) and paired deltas."""
    methods = summary["methods"]
    lines = ["| target | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for t in summary["targets"]:
        cells = [f"{summary['per_target'][t][f].get('accuracy', float('nan')):.2f} / "
                 f"{summary['per_target'][t][f].get('gold_loglik', float('nan')):.2f}" for f in methods]
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    cells = []
    for f in methods:
        acc, ll = summary["means"].get(f, {}).get("accuracy"), summary["means"].get(f, {}).get("gold_loglik")
        cells.append(f"**{acc['mean']:.3f} / {ll['mean']:.3f}**" if acc and ll else "")
    lines.append("| **mean** | " + " | ".join(cells) + " |")
    lines += ["", "| comparison | metric | mean Δ | 95% CI (paired bootstrap over targets) | wins / losses |",
              "|---|---|---|---|---|"]
    for d in summary["deltas"]:
        lo, hi = d["ci"]
        sign = " (+)" if lo > 0 else " (−)" if hi < 0 else ""
        lines.append(f"| {d['a']} − {d['b']} | {d['metric']} | {d['mean']:+.3f}{sign} | [{lo:+.3f}, {hi:+.3f}] | "
                     f"{d['wins']} / {d['losses']} of {d['n']} |")
    return "\n".join(lines) + "\n"


def plot(summary: dict[str, Any], path: str | os.PathLike[str], title: str = "") -> Path:
    """Per-target change of the gold answer's log-likelihood over the base model, per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .plot import save_figure

    targets = summary["targets"]
    methods = [f for f in summary["methods"] if f != BASE]
    fig, axes = plt.subplots(1, 2, figsize=(max(8.0, 0.9 * len(targets) + 4), 4.4),
                             gridspec_kw={"width_ratios": [max(1, len(targets)), 2]})
    width = 0.8 / max(1, len(methods))
    x = np.arange(len(targets))
    for j, f in enumerate(methods):
        d = [summary["per_target"][t][f]["gold_loglik"] - summary["per_target"][t][BASE]["gold_loglik"] for t in targets]
        axes[0].bar(x + (j - (len(methods) - 1) / 2) * width, d, width, label=f)
    axes[0].axhline(0, color="black", linewidth=0.6)
    axes[0].set_xticks(x)
    axes[0].set_xticklabels(targets, rotation=35, ha="right", fontsize=7)
    axes[0].set_ylabel("gold log-likelihood − base model")
    axes[0].legend(fontsize=7)
    acc = [summary["means"][f]["accuracy"] for f in summary["methods"]]
    means = np.array([a["mean"] for a in acc])
    err = np.array([[a["mean"] - a["ci"][0] for a in acc], [a["ci"][1] - a["mean"] for a in acc]])
    axes[1].bar(range(len(acc)), means, yerr=err, capsize=3, color="tab:gray")
    axes[1].set_xticks(range(len(acc)))
    axes[1].set_xticklabels(summary["methods"], rotation=35, ha="right", fontsize=7)
    axes[1].set_ylabel("mean accuracy (95% CI over targets)")
    axes[1].set_ylim(0, 1)
    fig.suptitle(title or f"downstream: {len(targets)} BIG-bench targets", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)
