"""Hybrid selection (reciprocal-rank fusion of BM25 and INSTA) against each side alone, and the
paper's prompt-count ablation.

    python benchmarks/hybrid.py                 # all of it (a few minutes on 2 cores, MiniLM)
    python benchmarks/hybrid.py --only ablation

Protocols: P3 (38 T0 training entries) and NIV2 (875 default-split tasks by their official
Definitions, siblings by source dataset excluded), each leave-one-out and 3-fold held-out (each
target ranks only its own held-out fold); relevant = same T0 cluster / NIV2 category. The
fusion rule (k = 60) is fixed a priori: nothing here is tuned on the targets. The ablation
selects with the first 1, 2, 4 or all promptsource templates of each P3 target (its other
templates unused), as the paper's prompt-count study does.

Writes benchmarks/results/hybrid.json (every BenchResult, per-target values included) and
prints the Markdown tables of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from insta import Encoder
from insta.bench import build_suite, run_bench
from insta.io import write_json_atomic

HERE = Path(__file__).resolve().parent
METHODS = ["random", "bm25", "insta", "hybrid"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=["protocols", "ablation"], default=None)
    ap.add_argument("--bootstrap", type=int, default=1000)
    args = ap.parse_args()
    encoder = Encoder()
    doc: dict = {"machine": platform.platform(), "model": encoder.describe(), "runs": []}
    if args.only in (None, "protocols"):
        for suite_name in ("p3", "niv2"):
            suite = build_suite(suite_name)
            for folds in (0, 3):
                start = time.perf_counter()
                result = run_bench(suite, METHODS if not folds else METHODS[1:], encoder=encoder, folds=folds,
                                   n_boot=args.bootstrap)
                wall = round(time.perf_counter() - start, 1)
                doc["runs"].append({"suite": suite_name, "folds": folds, "wall_seconds": wall,
                                    "result": result.to_dict(per_target=True)})
                print(f"\n### {suite_name}, {'leave-one-out' if not folds else f'{folds} folds, held-out'}: "
                      f"{result.n_scored} targets scored ({wall:.0f} s)\n")
                print(result.to_markdown())
    if args.only in (None, "ablation"):
        suite = build_suite("p3")
        rows = []
        for n in (1, 2, 4, None):
            result = run_bench(suite, METHODS[1:], encoder=encoder, n_boot=args.bootstrap, n_instructions=n)
            doc["runs"].append({"suite": "p3", "folds": 0, "n_instructions": n, "result": result.to_dict(per_target=True)})
            rows.append((n, {m.method: (m.metrics["MAP"], m.ci["MAP"]) for m in result.methods}))
        print("\n### P3 leave-one-out, MAP by the number of target templates used\n")
        print("| target templates | " + " | ".join(METHODS[1:]) + " |")
        print("|---" * (len(METHODS)) + "|")
        for n, cells in rows:
            print(f"| {n or 'all'} | " + " | ".join(f"{v:.3f} [{lo:.3f}, {hi:.3f}]" for v, (lo, hi) in cells.values()) + " |")
    write_json_atomic(HERE / "results" / ("hybrid.json" if args.only is None else f"hybrid-{args.only}.json"), doc)
    print(json.dumps({"written": "benchmarks/results/hybrid.json"}))


if __name__ == "__main__":
    main()
