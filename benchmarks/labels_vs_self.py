"""NIV2 Definitions, the `labels` view against the label-free `self` view, side by side on the
folds whose aligned models exist (the alignment runs of benchmarks/alignment.py, reused).

    python benchmarks/labels_vs_self.py --self-root DIR/aligned --labels-root DIR/aligned [--folds-done 0]

Each fold's embedder is aligned on the other folds' tasks (contrastive recipe, source-unique
batches; `labels` batches are also label-unique) and ranks its held-out fold, as in
benchmarks/alignment.py; only the folds listed in --folds-done are scored (a labels-view
alignment takes ~35 min per fold on 2 cores). Prints MAP per method and the paired ΔMAP
labels − self with a bootstrap 95 % CI; writes benchmarks/results/niv2-labels-vs-self.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from insta import Encoder
from insta.bench import build_suite
from insta.bench.metrics import bootstrap_ci
from insta.bench.runner import _groups, _per_target, _selector
from insta.io import write_json_atomic

METHODS = ["bm25", "insta", "insta-aligned-contrastive", "hybrid-aligned-contrastive"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--self-root", required=True)
    ap.add_argument("--labels-root", required=True)
    ap.add_argument("--folds-done", default="0")
    args = ap.parse_args()
    suite = build_suite("niv2")
    groups = [g for i, g in enumerate(_groups(suite, 3, 0)) if str(i) in args.folds_done.split(",")]
    encoder = Encoder()
    values: dict[str, dict[str, dict[str, float]]] = {}
    for view, root in (("self", args.self_root), ("labels", args.labels_root)):
        for m in METHODS:
            if view == "labels" and "aligned" not in m:
                continue
            label = m if "aligned" not in m else f"{m} ({view})"
            values[label] = _per_target(suite, groups, lambda train, m=m, view=view, root=root: _selector(
                m, train, encoder, 0, {"view": view}, root, None), label, None)
    ids = sorted(set.intersection(*(set(v) for v in values.values())))
    rows = {label: np.array([v[i]["MAP"] for i in ids]) for label, v in values.items()}
    print(f"{len(ids)} held-out targets scored (folds {args.folds_done})\n")
    print("| method | MAP | 95 % CI |\n|---|---|---|")
    for label, arr in rows.items():
        lo, hi = bootstrap_ci(arr)
        print(f"| {label} | {arr.mean():.3f} | [{lo:.3f}, {hi:.3f}] |")
    print()
    deltas = {}
    for m in ("insta-aligned-contrastive", "hybrid-aligned-contrastive"):
        diff = rows[f"{m} (labels)"] - rows[f"{m} (self)"]
        lo, hi = bootstrap_ci(diff)
        deltas[m] = (float(diff.mean()), lo, hi)
        print(f"ΔMAP labels − self, {m}: {diff.mean():+.3f} [{lo:+.3f}, {hi:+.3f}]")
    write_json_atomic(Path(__file__).parent / "results" / "niv2-labels-vs-self.json",
                      {"folds": args.folds_done, "targets": ids, "values": values, "delta_labels_minus_self": deltas})


if __name__ == "__main__":
    main()
