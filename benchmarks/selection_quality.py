"""Selection-quality benchmark: every suite, every default method, from an empty cache.

    python benchmarks/selection_quality.py [--suites p3,p3-grouped,p3-extra,niv2,niv2-files] [--out benchmarks/results]

Writes <suite>.json (with per-target values) and <suite>.png per suite, and prints the
Markdown rows recorded in BENCHMARKS.md (mean [95% bootstrap CI], paired ΔMAP vs BM25,
wall seconds from a cold embedding cache, peak RSS).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

from insta import Encoder, __version__
from insta.bench import build_suite, run_bench


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--suites", default="p3,p3-grouped,p3-extra,niv2,niv2-files")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--niv2", default=None, help="NIV2 data (default: ../shared/data/niv2)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ["INSTA_CACHE_DIR"] = tempfile.mkdtemp(prefix="insta-bench-cache-")  # cold cache: honest timings
    print(f"insta-select {__version__}, Python {platform.python_version()}, {platform.machine()}, "
          f"{os.cpu_count()} CPUs, cache {os.environ['INSTA_CACHE_DIR']}", file=sys.stderr)
    for name in args.suites.split(","):
        start = time.perf_counter()
        suite = build_suite(name, niv2=args.niv2)
        result = run_bench(suite, encoder=Encoder(), seed=args.seed)
        wall = time.perf_counter() - start
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        result.save(out / name)
        print(f"\n### {name}: {result.n_scored} targets scored of {result.n_targets}, {result.n_tasks} tasks "
              f"({wall:.0f} s wall in the run, peak RSS {rss:.0f} MiB so far; one cache for all suites, cold at the start)\n")
        print(result.to_markdown())
        sys.stdout.flush()


if __name__ == "__main__":
    main()
