"""Union pools: the instruction-style gap across P3, BIG-bench and NIV2, and which calibration
makes scores comparable across them (design declared in BENCHMARKS.md before the run).

    python benchmarks/union.py [--quick]     # writes benchmarks/results/union.{json,md,png}

1. Style gap: targets in each style (the 14 BIG-bench t0-eval tasks, the NIV2 default-split test
   tasks, the P3 t0-eval entries), each left out of the union with every task on its own source
   dataset; per target and source pool the best `insta` cosine; the share of each pool in the
   top-5 under each calibration.
2. The `cross` suite (relevant = the same source dataset in another pool) for random, bm25,
   insta, hybrid under each calibration, with paired ΔMAP against `none`.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

from insta import Encoder, InstructionSelector
from insta.bench import run_bench
from insta.bench.metrics import bootstrap_ci, bootstrap_indices
from insta.bench.suites import build_suite
from insta.calibrate import CALIBRATIONS, DEFAULT_CALIBRATION, calibrate_scores, pool_groups
from insta.io import write_json_atomic
from insta.pools import load_pool
from insta.select import Target

RESULTS = Path(__file__).parent / "results"
METHODS = ("random", "bm25", "insta", "hybrid")
STYLE = {"p3": "P3 templates", "bigbench": "BIG-bench descriptions", "jsonl": "NIV2 Definitions"}


def short(spec: str) -> str:
    return STYLE[spec.partition(":")[0]]


def style_gap(suite, encoder: Encoder, quick: bool) -> dict:
    union = suite.pool
    group, origins = pool_groups(union)
    by_origin = {o: i for i, o in enumerate(origins)}
    bb_eval = set(load_pool("bigbench:t0-eval").ids)
    p3_eval = set(load_pool("p3:t0-eval").ids)
    wanted = []
    for t in union:
        kind = t.origin.partition(":")[0]
        if (kind == "bigbench" and t.id in bb_eval) or (kind == "p3" and t.id in p3_eval) or (
                kind == "jsonl" and t.split == "test"):
            wanted.append(t)
    if quick:
        wanted = wanted[::6]
    labels = np.array([t.label for t in union], dtype=object)
    selector = InstructionSelector(encoder).fit(union)
    targets = [Target.from_task(t) for t in wanted]

    def left_out(target: Target) -> np.ndarray:  # itself and every task on its source dataset, in any pool
        return np.flatnonzero(labels == target.task.label)

    rows = []
    with selector.excluding(left_out):
        for target, scores in zip(targets, selector.iter_scores(targets, k=5)):
            candidate = np.ones(len(union), dtype=bool)
            candidate[left_out(target)] = False
            raw = np.asarray(scores.score, dtype=np.float64)
            row = {"target": target.id, "style": short(target.task.origin),
                   "best": {short(o): float(raw[candidate & (group == by_origin[o])].max()) for o in origins},
                   "top5": {}}
            row["best_calibrated"] = {}
            for how in CALIBRATIONS:
                cal = calibrate_scores(raw, group, candidate, how)
                if how == DEFAULT_CALIBRATION:
                    row["best_calibrated"] = {short(o): float(cal[candidate & (group == by_origin[o])].max())
                                              for o in origins}
                order = np.flatnonzero(candidate)[np.argsort(-cal[candidate], kind="stable")[:5]]
                row["top5"][how] = {short(o): int((group[order] == by_origin[o]).sum()) for o in origins}
            rows.append(row)
    summary: dict = {}
    for style in sorted({r["style"] for r in rows}):
        mine = [r for r in rows if r["style"] == style]
        summary[style] = {"targets": len(mine), "best_cosine": {}, "top5_share": {}}
        for source in STYLE.values():
            vals = np.array([r["best"][source] for r in mine])
            summary[style]["best_cosine"][source] = {"median": float(np.median(vals)),
                                                     "q25": float(np.percentile(vals, 25)),
                                                     "q75": float(np.percentile(vals, 75))}
        for how in CALIBRATIONS:
            summary[style]["top5_share"][how] = {s: float(np.mean([r["top5"][how][s] for r in mine]) / 5)
                                                 for s in STYLE.values()}
    return {"rows": rows, "summary": summary}


def cross(suite, encoder: Encoder, n_boot: int) -> dict:
    results = {}
    for how in CALIBRATIONS:
        start = time.perf_counter()
        res = run_bench(suite, METHODS, encoder=encoder, n_boot=n_boot, calibrate=how)
        results[how] = {"seconds": round(time.perf_counter() - start, 1), "n_scored": res.n_scored,
                        "methods": {m.method: {"metrics": m.metrics, "ci": m.ci, "per_target": m.per_target}
                                    for m in res.methods}}
    def paired(how: str, reference: str) -> dict:
        out = {}
        for method in METHODS:
            base = results[reference]["methods"][method]["per_target"]
            other = results[how]["methods"][method]["per_target"]
            ids = sorted(base)
            diff = np.array([other[i]["MAP"] - base[i]["MAP"] for i in ids])
            lo, hi = bootstrap_ci(diff, indices=bootstrap_indices(len(ids), n_boot, 0))
            out[method] = {"mean": float(diff.mean()), "ci": [lo, hi], "wins": int((diff > 1e-12).sum()),
                           "losses": int((diff < -1e-12).sum()), "n": len(ids)}
        return out

    vs_none: dict = {}
    for how in CALIBRATIONS:
        if how != "none":
            for method, d in paired(how, "none").items():
                vs_none.setdefault(method, {})[how] = d
    return {"by_calibration": results, "paired_vs_none": vs_none, "zscore_vs_rank": paired("zscore", "rank")}


def decide(cross_doc: dict) -> dict:
    """The declared rule: hybrid's best calibration if distinguishable from none; else insta's; else none."""
    for method in ("hybrid", "insta"):
        best = max(CALIBRATIONS, key=lambda h: cross_doc["by_calibration"][h]["methods"][method]["metrics"]["MAP"])
        if best != "none":
            lo, _ = cross_doc["paired_vs_none"][method][best]["ci"]
            if lo > 0:
                return {"default": best, "why": f"{method}: highest MAP, paired ΔMAP vs none CI excludes 0"}
    return {"default": "none", "why": "no calibration distinguishable from none on hybrid or insta"}


def markdown(doc: dict) -> str:
    lines = ["| target style | targets | best cosine, median [IQR], in: " + " | ".join(STYLE.values()) + " |",
             "|---|---|" + "---|" * len(STYLE)]
    for style, s in doc["style_gap"]["summary"].items():
        cells = [f"{v['median']:.3f} [{v['q25']:.3f}, {v['q75']:.3f}]" for v in s["best_cosine"].values()]
        lines.append(f"| {style} | {s['targets']} | " + " | ".join(cells) + " |")
    lines += ["", "| target style | calibration | share of top-5 from: " + " | ".join(STYLE.values()) + " |",
              "|---|---|" + "---|" * len(STYLE)]
    for style, s in doc["style_gap"]["summary"].items():
        for how, shares in s["top5_share"].items():
            lines.append(f"| {style} | {how} | " + " | ".join(f"{v:.2f}" for v in shares.values()) + " |")
    c = doc["cross"]
    n = c["by_calibration"]["none"]["n_scored"]
    lines += ["", f"| method | calibration | MAP [95% CI] | P@10 | nDCG@10 | ΔMAP vs none [95% CI] | wins/losses ({n} targets) |",
              "|---|---|---|---|---|---|---|"]
    for method in METHODS:
        for how in CALIBRATIONS:
            m = c["by_calibration"][how]["methods"][method]
            lo, hi = m["ci"]["MAP"]
            d = c["paired_vs_none"].get(method, {}).get(how)
            delta = f"{d['mean']:+.4f} [{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}]" if d else ""
            wl = f"{d['wins']}/{d['losses']}" if d else ""
            lines.append(f"| {method} | {how} | {m['metrics']['MAP']:.4f} [{lo:.4f}, {hi:.4f}] | "
                         f"{m['metrics']['P@10']:.4f} | {m['metrics']['nDCG@10']:.4f} | {delta} | {wl} |")
    lines += ["", "zscore − rank, paired ΔMAP [95% CI]: " + "; ".join(
        f"{m} {d['mean']:+.4f} [{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}]" for m, d in c["zscore_vs_rank"].items()
        if m != "random")]
    lines += ["", f"Default chosen by the declared rule: **{doc['decision']['default']}** ({doc['decision']['why']})."]
    return "\n".join(lines) + "\n"


def plot(doc: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from insta.bench.plot import save_figure

    rows = doc["style_gap"]["rows"]
    styles = sorted({r["style"] for r in rows})
    fig, axes = plt.subplots(2, len(styles), figsize=(4.2 * len(styles), 6.4), sharey="row")
    for row_axes, key, what in ((axes[0], "best", "raw: best cosine in the pool"),
                                (axes[1], "best_calibrated", f"{DEFAULT_CALIBRATION}: best calibrated score")):
        for ax, style in zip(row_axes, styles):
            mine = [r for r in rows if r["style"] == style]
            ax.boxplot([[r[key][s] for r in mine] for s in STYLE.values()], showfliers=True)
            ax.set_xticks(range(1, len(STYLE) + 1), [s.split()[0] for s in STYLE.values()], fontsize=8)
            ax.set_title(f"targets: {style} (n={len(mine)})", fontsize=9)
            ax.grid(axis="y", alpha=0.3)
        row_axes[0].set_ylabel(what, fontsize=9)
    fig.suptitle("The instruction-style gap: the best score a target reaches in each pool, before and after "
                 "calibration (all-MiniLM-L6-v2; its own dataset left out)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a sixth of the style-gap targets, 200 resamples (a smoke run)")
    ap.add_argument("--label", default="union")
    args = ap.parse_args()
    start = time.perf_counter()
    encoder = Encoder()
    suite = build_suite("cross")
    print(f"cross suite: {len(suite.pool)} tasks, {len(suite.targets)} targets", file=sys.stderr, flush=True)
    gap = style_gap(suite, encoder, args.quick)
    print(json.dumps(gap["summary"], indent=1), file=sys.stderr, flush=True)
    cross_doc = cross(suite, encoder, 200 if args.quick else 1000)
    doc = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.node()} ({platform.processor() or platform.machine()}, "
           f"2 vCPUs)", "encoder": encoder.describe(), "suite": suite.description, "n_tasks": len(suite.pool),
           "n_targets": len(suite.targets), "style_gap": gap, "cross": cross_doc, "decision": decide(cross_doc),
           "seconds": round(time.perf_counter() - start, 1)}
    RESULTS.mkdir(exist_ok=True)
    write_json_atomic(RESULTS / f"{args.label}.json", doc)
    (RESULTS / f"{args.label}.md").write_text(markdown(doc))
    plot(doc, RESULTS / f"{args.label}.png")
    print(markdown(doc))


if __name__ == "__main__":
    main()
