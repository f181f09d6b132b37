"""Aligned selectors on held-out targets: the fold protocol of `insta bench --folds`.

    python benchmarks/alignment.py [--suites p3,niv2] [--folds 3] [--view auto|instructions|labels|self]

For each fold the embedder is aligned (paper and contrastive recipes) on the other folds'
tasks only; each held-out target then ranks its own held-out fold, with BM25 and the
off-the-shelf embedder under the same protocol. Writes benchmarks/results/<suite>-folds.json
and .png, and prints the Markdown rows of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from insta import Encoder
from insta.bench import build_suite, run_bench

METHODS = ["random", "bm25", "insta", "insta-aligned-paper", "insta-aligned-contrastive"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--suites", default="p3,niv2")
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--view", default="auto", help="alignment view (ablation); results get a -<view> suffix")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("INSTA_CACHE_DIR", tempfile.mkdtemp(prefix="insta-align-bench-"))
    for name in args.suites.split(","):
        start = time.perf_counter()
        suite = build_suite(name)
        result = run_bench(suite, args.methods.split(","), encoder=Encoder(), folds=args.folds, seed=args.seed,
                           align_config=None if args.view == "auto" else {"view": args.view},
                           progress=lambda what, done, total: print(f"  {what} {done}/{total}", file=sys.stderr)
                           if done == 0 else None)
        wall = time.perf_counter() - start
        stem = f"{name}-folds" + ("" if args.view == "auto" else f"-{args.view}")
        result.save(out / stem)
        print(f"\n### {name}, {args.folds} folds, view {args.view}: {result.n_scored} held-out targets scored of {result.n_targets} "
              f"({wall:.0f} s wall, alignment included)\n")
        print(result.to_markdown())
        sys.stdout.flush()


if __name__ == "__main__":
    main()
