"""Speed and memory of `insta select`: cold (empty embedding cache) vs warm (all cached).

    python benchmarks/select_speed.py [--repeats 3]

Each case runs the real CLI in a subprocess, so import and model-load time count;
peak RSS is the child's maximum resident set. Prints the Markdown rows of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

INSTA = str(Path(sys.executable).parent / "insta")
NIV2 = os.environ.get("INSTA_NIV2_TABLE", str(Path(__file__).resolve().parents[2] / "shared/data/niv2/tasks.jsonl"))

CASES = [
    ("P3 T0 train (38 tasks, 306 instructions)", ["-p", "p3:t0-train"]),
    ("P3 all (279 entries, 2,056 instructions)", ["-p", "p3"]),
    ("NIV2 table (1,613 summaries)", ["-p", NIV2]),
]


def run_once(args: list[str], cache: str) -> tuple[float, float]:
    env = dict(os.environ, INSTA_CACHE_DIR=cache, INSTA_PROMPTSOURCE=os.environ.get("INSTA_PROMPTSOURCE", ""))
    if not env["INSTA_PROMPTSOURCE"]:
        env.pop("INSTA_PROMPTSOURCE")
    cmd = [INSTA, "select", *args, "-i", "Is this review positive or negative?", "-k", "5", "-q", "--json"]
    # a wrapper process per run, so the peak RSS is this run's alone
    wrapper = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
               "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
               "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", wrapper, *cmd], env=env, check=True, capture_output=True, text=True)
    wall, rss_kib = out.stdout.split()
    return float(wall), float(rss_kib) / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    # promptsource templates are fetched once outside the timings
    templates = tempfile.mkdtemp(prefix="insta-speed-templates-")
    subprocess.run([INSTA, "tasks", "-p", "p3:t0-train", "--json"], env=dict(os.environ, INSTA_CACHE_DIR=templates),
                   check=True, stdout=subprocess.DEVNULL)
    os.environ["INSTA_PROMPTSOURCE"] = str(Path(templates) / "promptsource-0.2.3" / "templates")
    print(f"{os.cpu_count()} CPUs; median of {args.repeats} runs\n")
    print("| pool | cold: empty cache (s) | warm: all cached (s) | peak RSS cold (MiB) |")
    print("|---|---|---|---|")
    for label, case in CASES:
        cold, warm, rss = [], [], 0.0
        for _ in range(args.repeats):
            cache = tempfile.mkdtemp(prefix="insta-speed-")
            w, r = run_once(case, cache)
            cold.append(w)
            rss = max(rss, r)
            warm.append(run_once(case, cache)[0])
            shutil.rmtree(cache, ignore_errors=True)
        print(f"| {label} | {statistics.median(cold):.1f} | {statistics.median(warm):.1f} | {rss:.0f} |")
        sys.stdout.flush()
    shutil.rmtree(templates, ignore_errors=True)


if __name__ == "__main__":
    main()
