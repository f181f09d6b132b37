"""The downstream benchmark: does training on a selection make a better model?

For every target of a pool (``bigbench:t0-eval`` by default), ``insta run`` selects source
tasks (or examples) with each method, fine-tunes the same base model on the same example
budget with the same steps, learning rate and seed, and evaluates zero-shot on held-out
examples of the target. The primary figure is the **query loss**: the mean negative
log-likelihood per gold-answer token (so that long-answer targets do not dominate);
rank-classification accuracy stays beside it. Every evaluation leaves out the target
examples that the model-aware selectors saw.

The experiment comes in parts, all of one run folder (models are shared by content, so a
part that trains what another already trained costs nothing):

* ``methods``: base, random (3 seeds), all, bm25, insta, hybrid, and the model-aware less
  and rds at task level (same k) and at example level (the same example budget);
* ``kcurve``: insta and random with k ∈ {1, 3, 5, 10, 20} at the same budget (``all`` is
  the k = every-task end);
* ``align``: insta with the embedder aligned on the pool (``insta align``, default recipe)
  against the off-the-shelf one;
* ``quantile``: per representation (instruction embedding, BM25, LESS gradients, RDS hidden
  states) the pool ranked per target, split into 5 bins, k tasks drawn from bins 1, 3 and 5:
  does the trained model's query loss rise with distance under that representation?

This module builds the run's config and summarises its results (paired bootstrap CIs over
targets; ``random`` is the mean of its seeds).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..config import FeatureConfig
from ..errors import InstaError
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
#: the primary metric first; query_loss is better when lower
METRICS = ("query_loss", "accuracy", "gold_loglik")
LOWER_IS_BETTER = {"query_loss"}
PARTS = ("methods", "kcurve", "align", "quantile")
K_CURVE = (1, 3, 5, 10, 20)
RANDOM_SEEDS = (1, 2, 3)
#: representation -> the method that ranks the pool with it
REPRESENTATIONS = {"instruction": "insta", "bm25": "bm25", "grad": "less", "hidden": "rds"}
QUANTILE_BINS = (1, 3, 5)
N_BINS = 5
ALIGNED = "insta-aligned"


def design_methods(parts: Sequence[str], *, budget: int, aligned_model: str | None = None,
                   extra_methods: Sequence[str] = ()) -> list[MethodSpec]:
    """The methods of the declared design's parts, each named as the summary expects."""
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise InstaError(f"unknown part {unknown[0]!r}; available: {', '.join(PARTS)}")
    methods = [MethodSpec(BASE, BASE), MethodSpec("insta", "insta"), MethodSpec("bm25", "bm25")]
    methods += [MethodSpec(f"random-{s}", "random", seed=s) for s in RANDOM_SEEDS]
    if "methods" in parts:
        methods += [MethodSpec("hybrid", "hybrid"), MethodSpec("less", "less"), MethodSpec("rds", "rds"),
                    MethodSpec(f"less@{budget}", "less", budget=budget), MethodSpec(f"rds@{budget}", "rds", budget=budget)]
    if "kcurve" in parts:
        for k in K_CURVE:
            if k != 5:  # k = 5 is the run's k: the methods above
                methods += [MethodSpec(f"insta-k{k}", "insta", k=k), MethodSpec(f"random-k{k}", "random", k=k, seed=1)]
    if "align" in parts:
        if not aligned_model:
            raise InstaError("the align part needs the aligned embedder's folder (insta align --pool POOL --out DIR)")
        methods.append(MethodSpec(ALIGNED, "insta", model=aligned_model))
    if "quantile" in parts:
        for rep, method in REPRESENTATIONS.items():
            methods += [MethodSpec(f"{rep}-q{b}", method, quantile=[b, N_BINS]) for b in QUANTILE_BINS]
    for spec in extra_methods:
        name, _, n = spec.partition("@")
        if spec not in {m.name for m in methods}:
            methods.append(MethodSpec(spec, name, budget=int(n) if n else None))
    methods.append(MethodSpec("all", "all"))
    return methods


def downstream_config(out: str, *, targets: Sequence[str] = CPU_TARGETS, model: str = "smollm2", k: int = 5,
                      budget: int = 64, steps: int = 8, batch_size: int = 8, lr: float = 1e-4, lora: bool = False,
                      parts: Sequence[str] = ("methods",), aligned_model: str | None = None,
                      max_examples: int = 100, max_input_length: int = 256, device: str = "auto", seed: int = 0,
                      extra_methods: Sequence[str] = (), keep_models: bool = False) -> RunConfig:
    """The run: pool = BIG-bench without any T0 evaluation task, targets from t0-eval.
    ``extra_methods``: more methods of insta select (``name`` or ``name@N`` for N examples).
    The model-aware methods represent examples with the model being trained; every method is
    evaluated without the target examples they saw."""
    unknown = [t for t in targets if t not in T0_EVAL]
    if unknown:
        raise InstaError(f"downstream targets must be bigbench:t0-eval tasks; not: {', '.join(unknown)}")
    return RunConfig(
        out=out, pool="bigbench:all?exclude=t0-eval", target_pool="bigbench:t0-eval", targets=list(targets),
        base_model=model, methods=design_methods(parts, budget=budget, aligned_model=aligned_model,
                                                 extra_methods=extra_methods),
        k=k, seed=seed, mix=MixConfig(per_task_cap=budget, total_examples=budget, seed=seed),
        features=FeatureConfig(lm=model, seed=seed, max_length=max_input_length, device=device),
        train=TrainConfig(max_steps=steps, batch_size=batch_size, lr=lr, lora=lora, max_input_length=max_input_length,
                          max_target_length=64, device=device, seed=seed),
        eval={"metric": "rank", "max_examples": max_examples}, keep_models=keep_models,
    )


def family(method: str) -> str:
    """The name a method is reported under: random-1, random-2, ... are 'random'."""
    return "random" if re.fullmatch(r"random-\d+", method) else method


def _sign(d: np.ndarray, metric: str) -> np.ndarray:
    """+1 where the first method is better."""
    return -np.sign(d) if metric in LOWER_IS_BETTER else np.sign(d)


def t_interval(d: np.ndarray, alpha: float = 0.05) -> tuple[float, float]:
    """Student-t CI of the mean paired difference. Over a handful of targets the percentile
    bootstrap is too narrow (it cannot see beyond the spread of the few values it has); the t
    interval is what the declared design's power estimate assumes. NaN below 2 values."""
    from scipy import stats

    d = np.asarray(d, dtype=np.float64)
    if len(d) < 2:
        return float("nan"), float("nan")
    half = float(stats.t.ppf(1 - alpha / 2, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)))
    return float(d.mean() - half), float(d.mean() + half)


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact sign test p-value of wins against losses (ties dropped)."""
    from scipy import stats

    return float(stats.binomtest(wins, wins + losses).pvalue) if wins + losses else 1.0


def paired(values_a: np.ndarray, values_b: np.ndarray, metric: str, idx: np.ndarray) -> dict[str, Any]:
    d = values_a - values_b
    lo, hi = bootstrap_ci(d, indices=idx)
    s = _sign(d, metric)
    wins, losses = int((s > 0).sum()), int((s < 0).sum())
    return {"mean": float(d.mean()), "ci": (lo, hi), "t_ci": t_interval(d), "wins": wins, "losses": losses,
            "sign_p": sign_test(wins, losses), "n": len(d)}


def metric_value(result: dict[str, Any], metric: str) -> float | None:
    """A result's metric as a finite float; None when missing or not finite (a diverged
    evaluation stores NaN as null)."""
    metrics = result.get("metrics")
    v = metrics.get(metric) if isinstance(metrics, dict) else None
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) else None


def summarize(results: list[dict[str, Any]], *, n_boot: int = 10000, seed: int = 0) -> dict[str, Any]:
    """Per-target table, method means with CIs, the spread of random's seeds, and paired
    bootstrap CIs over targets of every method against random and against insta."""
    table: dict[str, dict[str, dict[str, list[float]]]] = {}
    left_out: list[str] = []  # values that are missing or not finite (a diverged run stores NaN as null)
    for r in results:
        fam = table.setdefault(r["target"], {}).setdefault(family(r["method"]), {})
        metrics = r.get("metrics") if isinstance(r.get("metrics"), dict) else {}
        for m in METRICS:
            v = metric_value(r, m)
            if v is not None:
                fam.setdefault(m, []).append(v)
            elif m in metrics or m != "gold_loglik":  # gold_loglik is optional; the other two are expected
                left_out.append(f"{r['target']}/{r['method']}/{m}")
    methods = sorted({f for row in table.values() for f in row}, key=lambda f: (f != BASE, f))
    # a method counts where every target has it; the targets are those with every such core method
    core = [f for f in ("base", "random", "insta") if f in methods]
    complete = sorted(t for t, row in table.items() if all(f in row for f in core))
    methods = [f for f in methods if all(f in table[t] for t in complete)]
    # per target every method it has: a part run on some targets only (the k curve, the aligned
    # embedder) is compared over the targets that have both sides (see _targets_with)
    per_target = {t: {f: {m: float(np.mean(v)) for m, v in table[t][f].items()} for f in table[t]} for t in sorted(table)}
    spread = {t: {m: float(np.std(v, ddof=1)) for m, v in table[t]["random"].items() if len(v) > 1}
              for t in complete if "random" in table[t]}
    idx = bootstrap_indices(len(complete), n_boot, seed) if complete else None
    means: dict[str, dict[str, Any]] = {}
    deltas: list[dict[str, Any]] = []
    for m in METRICS:
        values = {f: np.array([per_target[t][f].get(m, np.nan) for t in complete]) for f in methods}
        for f, v in values.items():
            if len(v) and not np.isnan(v).any():
                means.setdefault(f, {})[m] = {"mean": float(v.mean()), "ci": bootstrap_ci(v, indices=idx)}
        for b in ("random", "insta"):
            for a in methods:
                if a == b or b not in values or (b == "insta" and a in ("random", BASE)):
                    continue
                if len(complete) and not np.isnan(values[a] - values[b]).any():
                    deltas.append({"metric": m, "a": a, "b": b, **paired(values[a], values[b], m, idx)})
    seeds = {m: float(np.mean([s[m] for s in spread.values() if m in s])) for m in METRICS
             if any(m in s for s in spread.values())}
    return {"targets": complete, "methods": methods, "per_target": per_target, "means": means, "deltas": deltas,
            "random_seed_sd": seeds, "n_boot": n_boot, "left_out": left_out}


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's ρ (average ranks for ties); NaN when either side is constant."""
    def ranks(v: Sequence[float]) -> np.ndarray:
        v = np.asarray(v, dtype=float)
        order = np.argsort(v, kind="mergesort")
        r = np.empty(len(v))
        r[order] = np.arange(len(v))
        for value in np.unique(v):
            r[v == value] = r[v == value].mean()
        return r

    a, b = ranks(x), ranks(y)
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def quantile_curves(summary: dict[str, Any], *, metric: str = "query_loss", seed: int = 0) -> dict[str, Any]:
    """Per representation: the mean metric per bin over targets, and the mean over targets of
    Spearman's ρ between bin and metric (with a bootstrap CI over targets). ρ > 0 on the query
    loss: the farther the tasks under this representation, the worse the trained model."""
    out: dict[str, Any] = {}
    for rep in REPRESENTATIONS:
        names = [f"{rep}-q{b}" for b in QUANTILE_BINS]
        targets = _targets_with(summary, names, metric)
        if not targets:
            continue
        rows = np.array([[summary["per_target"][t][n][metric] for n in names] for t in targets])
        rhos = np.array([spearman(QUANTILE_BINS, row) for row in rows])
        ok = rhos[~np.isnan(rhos)]
        out[rep] = {"bins": list(QUANTILE_BINS), "mean_per_bin": rows.mean(axis=0).tolist(),
                    "rho_mean": float(ok.mean()) if len(ok) else float("nan"),
                    "rho_ci": bootstrap_ci(ok, n_boot=10000, seed=seed) if len(ok) else (float("nan"),) * 2,
                    "rho_t_ci": t_interval(ok),
                    "rho_per_target": dict(zip(targets, rhos.tolist())), "n": int(len(ok))}
    return out


def k_curve(summary: dict[str, Any], *, seed: int = 0) -> list[dict[str, Any]]:
    """insta and random at each k (same example budget), their paired difference, and ``all``
    (the every-task end). Per metric, every k is taken over the same targets: those that have
    insta and random at every k run so far (``n``; a curve over different targets would show
    which targets were run, not what k does)."""
    def names(k: int) -> list[str]:
        return ["insta", "random"] if k == 5 else [f"insta-k{k}", f"random-k{k}"]

    common: dict[str, list[str]] = {}
    for m in ("query_loss", "accuracy"):
        per_k = [set(_targets_with(summary, names(k), m)) for k in K_CURVE]
        per_k = [ts for ts in per_k if ts]
        common[m] = sorted(set.intersection(*per_k)) if per_k else []
    out = []
    for k in K_CURVE:
        ins, rnd = names(k)
        row: dict[str, Any] = {"k": k}
        for m in ("query_loss", "accuracy"):
            targets = common[m] if _targets_with(summary, [ins, rnd], m) else []
            if not targets:
                continue
            a, b = (np.array([summary["per_target"][t][f][m] for t in targets]) for f in (ins, rnd))
            row[m] = {"insta": float(a.mean()), "random": float(b.mean()), "n": len(targets), "targets": targets,
                      "per_target": {"insta": dict(zip(targets, a.tolist())), "random": dict(zip(targets, b.tolist()))},
                      "insta_minus_random": paired(a, b, m, bootstrap_indices(len(targets), 10000, seed))}
            if set(targets) <= set(_targets_with(summary, ["all"], m)):
                row[m]["all"] = float(np.mean([summary["per_target"][t]["all"][m] for t in targets]))
        if "query_loss" in row or "accuracy" in row:
            first = row.get("query_loss") or row["accuracy"]
            out.append(row | {"n": first["n"], "targets": first["targets"]})
    return out


def k_trend(curve: list[dict[str, Any]], metric: str = "query_loss") -> dict[str, Any]:
    """Over the targets of the k curve: per target Spearman's ρ between k and the metric for
    insta and for random (ρ > 0 on the query loss: more tasks, worse model — negative
    transfer), its mean with a paired t interval, and on how many targets each k was best."""
    rows = [row for row in curve if metric in row]
    if len(rows) < 3:  # a trend over fewer than 3 values of k says nothing
        return {}
    ks = [row["k"] for row in rows]
    targets = rows[0][metric]["targets"]
    out: dict[str, Any] = {"k": ks, "n": len(targets)}
    for f in ("insta", "random"):
        values = np.array([[row[metric]["per_target"][f][t] for row in rows] for t in targets])
        rhos = np.array([spearman(ks, v) for v in values])
        ok = rhos[~np.isnan(rhos)]
        best = values.argmin(axis=1) if metric in LOWER_IS_BETTER else values.argmax(axis=1)
        out[f] = {"rho_mean": float(ok.mean()) if len(ok) else float("nan"), "rho_t_ci": t_interval(ok),
                  "rho_per_target": dict(zip(targets, rhos.tolist())),
                  "best_k": {k: int((best == i).sum()) for i, k in enumerate(ks)}}
    return out


def _targets_with(summary: dict[str, Any], methods: Sequence[str], metric: str) -> list[str]:
    """Every target of the summary (not only those of the methods table) that has ``metric``
    for each of ``methods``."""
    return [t for t, row in summary["per_target"].items() if all(metric in row.get(f, {}) for f in methods)]


def delta(summary: dict[str, Any], a: str, b: str, metric: str) -> dict[str, Any] | None:
    """A paired difference a − b over the targets that have both (None when none has)."""
    targets = _targets_with(summary, [a, b], metric)
    if not targets:
        return None
    x = np.array([summary["per_target"][t][a][metric] for t in targets])
    y = np.array([summary["per_target"][t][b][metric] for t in targets])
    return paired(x, y, metric, bootstrap_indices(len(targets), summary["n_boot"], 0)) | {"targets": targets}


def _cell(value: float | None, metric: str) -> str:
    return "" if value is None else f"{value:.3f}" if metric == "query_loss" else f"{value:.2f}"


def table_method(method: str) -> bool:
    """Whether a method belongs in the methods table and its deltas; the k curve's, the
    quantile bins' and the aligned embedder's have tables of their own."""
    return not re.fullmatch(rf"(insta|random)-k\d+|({'|'.join(REPRESENTATIONS)})-q\d+|{ALIGNED}", method)


def markdown(summary: dict[str, Any]) -> str:
    """BENCHMARKS.md tables: per target (query loss / accuracy), means with CIs, paired deltas."""
    if not summary["targets"]:
        return "No target has results of base, random and insta yet: nothing to summarise.\n"
    methods = [f for f in summary["methods"] if table_method(f)]
    lines = ["| target | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for t in summary["targets"]:
        cells = [f"{_cell(summary['per_target'][t][f].get('query_loss'), 'query_loss')} / "
                 f"{_cell(summary['per_target'][t][f].get('accuracy'), 'accuracy')}" for f in methods]
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    cells = []
    for f in methods:
        q, acc = summary["means"].get(f, {}).get("query_loss"), summary["means"].get(f, {}).get("accuracy")
        cells.append(f"**{q['mean']:.3f} / {acc['mean']:.3f}**" if q and acc else "")
    lines.append("| **mean** | " + " | ".join(cells) + " |")
    lines += ["", "| comparison | metric | mean Δ | 95% CI, paired bootstrap over targets | 95% CI, paired t | "
              "better / worse | sign test p |", "|---|---|---|---|---|---|---|"]
    for d in summary["deltas"]:
        if d["metric"] == "gold_loglik" or not table_method(d["a"]):
            continue
        lo, hi = d["ci"]
        tlo, thi = d.get("t_ci", (float("nan"),) * 2)
        sign = "" if d["n"] < 3 else " (+)" if lo > 0 else " (−)" if hi < 0 else ""  # a CI of 1-2 targets says nothing
        sign += "" if not sign else " ‡" if (tlo > 0 or thi < 0) else ""  # the t interval excludes 0 as well
        p = d.get("sign_p")
        lines.append(f"| {d['a']} − {d['b']} | {d['metric']} | {d['mean']:+.3f}{sign} | [{lo:+.3f}, {hi:+.3f}] | "
                     f"{_interval(d, 't_ci')} | {d['wins']} / {d['losses']} of {d['n']} | "
                     f"{'' if p is None else f'{p:.3g}'} |")
    lines += ["", "(+)/(−): the bootstrap CI excludes 0 (the declared rule); ‡: the paired t interval excludes 0 "
              "as well. Neither is corrected for the number of comparisons."]
    if summary.get("left_out"):
        shown = ", ".join(summary["left_out"][:10]) + (", …" if len(summary["left_out"]) > 10 else "")
        lines += ["", f"Left out, missing or not finite ({len(summary['left_out'])}; target/method/metric): {shown}. "
                  "A method without a value on a target has no mean and no comparison on that metric."]
    return "\n".join(lines) + "\n"


def interval_text(ci: Sequence[float] | None, places: int = 3) -> str:
    """An interval as ``[lo, hi]``; undefined (one target, a constant, missing) is a dash, never "nan"."""
    if ci is None or not np.isfinite(np.asarray(ci, dtype=float)).all():
        return "—"
    return f"[{ci[0]:+.{places}f}, {ci[1]:+.{places}f}]"


def _interval(d: dict[str, Any], key: str) -> str:
    return interval_text(d.get(key))


def parts_markdown(summary: dict[str, Any]) -> str:
    """BENCHMARKS.md tables of the k curve (insta and random at each k, paired) and of the
    aligned embedder against the off-the-shelf one, each over the targets that have them."""
    lines: list[str] = []
    curve = k_curve(summary)
    if len(curve) >= 2:  # k = 5 alone is part methods, no curve
        lines += ["", "| k | targets | query loss: insta / random / all | insta − random, query loss: Δ, 95% CI bootstrap, "
                  "t | accuracy: insta / random / all | insta − random, accuracy: Δ, 95% CI bootstrap, t | "
                  "better / worse (query loss) |", "|---|---|---|---|---|---|---|"]
        for row in curve:
            cells = []
            for m in ("query_loss", "accuracy"):
                if m not in row:
                    cells += ["—", "—"]
                    continue
                r, d = row[m], row[m]["insta_minus_random"]
                other = f" (over other targets: {', '.join(r['targets'])})" if r["targets"] != row["targets"] else ""
                cells += [" / ".join(_cell(r.get(f), m) for f in ("insta", "random", "all")),
                          f"{d['mean']:+.3f} {_interval(d, 'ci')} {_interval(d, 't_ci')}{other}"]
            d = row.get("query_loss", row.get("accuracy"))["insta_minus_random"]
            lines.append(f"| {row['k']} | {row['n']} | " + " | ".join(cells) + f" | {d['wins']} / {d['losses']} |")
        trend = k_trend(curve)
        if trend:
            lines.append("")
            for f in ("insta", "random"):
                t = trend[f]
                best = ", ".join(f"k={k}: {c}" for k, c in t["best_k"].items() if c)
                rho = "—" if not np.isfinite(t["rho_mean"]) else f"{t['rho_mean']:+.2f} {_interval(t, 'rho_t_ci')}"
                lines.append(f"- {f}: ρ(k, query loss) per target, mean {rho} over "
                             f"{trend['n']} targets (> 0: more tasks, worse model); lowest loss at {best}")
        lines += ["", "Every k over the same targets: those that have every k so far. k = 5 is part `methods` "
                  "(random: mean of 3 seeds); the other k train random with seed 1 only. The same 64 examples at "
                  "every k: larger k, fewer examples per task."]
    aligned = [(m, delta(summary, "insta-aligned", "insta", m)) for m in ("query_loss", "accuracy")]
    if any(d for _, d in aligned):
        lines += ["", "| insta-aligned − insta | targets | mean Δ | 95% CI, bootstrap | 95% CI, paired t | "
                  "better / worse | sign test p |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {m} | {d['n']} | {d['mean']:+.3f} | {_interval(d, 'ci')} | {_interval(d, 't_ci')} | "
                  f"{d['wins']} / {d['losses']} | {d['sign_p']:.3g} |" for m, d in aligned if d]
    return "\n".join(lines) + ("\n" if lines else "")


def plot(summary: dict[str, Any], path: str | os.PathLike[str], title: str = "",
         quantiles: dict[str, Any] | None = None) -> Path:
    """Method means of the query loss and accuracy with 95% CIs over targets; with
    ``quantiles``, the query loss per distance bin for each representation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .plot import save_figure

    def shown(metric: str) -> list[str]:
        return [f for f in summary["methods"] if metric in summary["means"].get(f, {}) and table_method(f)]

    versus = [d for d in summary["deltas"] if d["b"] == "random" and d["metric"] == "query_loss" and table_method(d["a"])
              and len(summary["targets"]) >= 3]  # paired intervals over 1-2 targets say nothing
    curve = [row for row in k_curve(summary)  # over 1-2 targets a curve says nothing
             if "query_loss" in row and row["query_loss"]["n"] >= 3]
    curve = curve if len(curve) >= 2 else []
    panels = 2 + bool(versus) + bool(curve) + bool(quantiles)
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4.4))
    for ax, metric, label in ((axes[0], "query_loss", "query loss per gold token (nats; lower is better)"),
                              (axes[1], "accuracy", "accuracy (rank classification)")):
        methods = shown(metric)
        stats = [summary["means"][f][metric] for f in methods]
        means = np.array([s["mean"] for s in stats])
        err = np.array([[s["mean"] - s["ci"][0] for s in stats], [s["ci"][1] - s["mean"] for s in stats]])
        ax.bar(range(len(methods)), means, yerr=err, capsize=3,
               color=["tab:gray" if f == BASE else "tab:blue" for f in methods])
        ax.set_xticks(range(len(methods)))
        ax.set_xticklabels(methods, rotation=45, ha="right", fontsize=7)
        ax.set_ylabel(f"mean over targets, 95% CI\n{label}", fontsize=8)
    if versus:  # the paired view: what decides between methods, free of the spread between targets
        ax = axes[2]
        y = np.arange(len(versus))
        lo = np.array([d["mean"] - d["ci"][0] for d in versus])
        hi = np.array([d["ci"][1] - d["mean"] for d in versus])
        t_lo = np.array([d["mean"] - d["t_ci"][0] for d in versus])
        t_hi = np.array([d["t_ci"][1] - d["mean"] for d in versus])
        ax.errorbar([d["mean"] for d in versus], y + 0.12, xerr=[lo, hi], fmt="o", capsize=3, label="95% CI, bootstrap")
        ax.errorbar([d["mean"] for d in versus], y - 0.12, xerr=[t_lo, t_hi], fmt="s", capsize=3, color="tab:orange",
                    label="95% CI, paired t")
        ax.axvline(0, color="gray", lw=0.8)
        ax.set_yticks(y)
        ax.set_yticklabels([d["a"] for d in versus], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("method − random, query loss per gold token\n(paired over targets; left of 0 = better)", fontsize=8)
        ax.legend(fontsize=7)
    if curve:  # the number of tasks at one example budget: insta and random, paired Δ with its t interval
        ax = axes[2 + bool(versus)]
        ks = [row["k"] for row in curve]
        for f, style in (("insta", "o-"), ("random", "s--")):
            ax.plot(ks, [row["query_loss"][f] for row in curve], style, label=f)
        if all("all" in row["query_loss"] for row in curve):
            ax.axhline(float(np.mean([row["query_loss"]["all"] for row in curve])), color="gray", lw=0.8, ls=":",
                       label="all (every task)")
        ax.set_xscale("log")
        ax.set_xticks(ks)
        ax.set_xticklabels([f"{row['k']}\n(n={row['query_loss']['n']})" for row in curve], fontsize=7)
        ax.set_xlabel("k tasks selected (same 64 examples)", fontsize=8)
        ax.set_ylabel("mean query loss per gold token", fontsize=8)
        ax.legend(fontsize=7)
    if quantiles:
        ax = axes[-1]
        for rep, q in quantiles.items():
            ax.plot(q["bins"], q["mean_per_bin"], marker="o",
                    label=f"{rep}: ρ {q['rho_mean']:+.2f} [{q['rho_ci'][0]:+.2f}, {q['rho_ci'][1]:+.2f}]")
        ax.set_xlabel(f"distance bin (1 = most similar of {N_BINS})")
        ax.set_ylabel("mean query loss over targets")
        ax.legend(fontsize=7)
    fig.suptitle(title or f"downstream: {len(summary['targets'])} BIG-bench targets", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)
