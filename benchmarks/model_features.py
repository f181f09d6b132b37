"""Model-aware representations on a CPU: how fast are ``hidden`` (RDS+) and ``grad`` (LESS)
features of SmolLM2-135M-Instruct, what does featurising the downstream benchmark's pool
cost once, and what does a second run cost (the cache).

    python benchmarks/model_features.py                      # the declared run (below)
    python benchmarks/model_features.py --per-task 4 --label smoke

Declared before running: pool ``bigbench:all?exclude=t0-eval`` (153 JSON tasks), 16 examples per
task (FeatureConfig defaults: 256 tokens, batch 8, LoRA r=8 on all linear layers, 16-step warm-up
on 64 pool examples, projection to 8,192 dimensions), target ``winowhy`` with its 8 query
examples; phases in this order, each timed (wall) with the process's peak RSS after it:
1. sampling the pool's examples (reads every task file once; cached afterwards);
2. ``hidden`` features of the pool, cold;
3. ``grad``: the LoRA warm-up, then the pool's Adam-preconditioned gradients, cold;
4. both again in a new selector (warm cache): the "second run";
5. ``insta``-style use: task-level (-k 5) and example-level (--budget 64) selection for the
   target with ``less`` and ``rds`` (warm).
Target: the pool featurised in <= 45 min once (issue 17); examples/s is computed examples over
the seconds spent computing them. Its own cache root (``benchmarks/runs/features-cache``; the
BIG-bench files and the converted model are linked in), so "cold" is cold. Results are written
after every phase to benchmarks/results/model-features-<label>.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def peak_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-task", type=int, default=16)
    ap.add_argument("--target", default="winowhy")
    ap.add_argument("--label", default="cpu")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--cache", default=str(HERE / "runs" / "features-cache"))
    args = ap.parse_args()

    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    from platformdirs import user_cache_dir

    home = Path(os.environ.get("INSTA_CACHE_DIR") or user_cache_dir("insta-select"))
    for shared in ("bigbench-1.0.0", "models"):  # the data and the converted model, not the features
        if (home / shared).is_dir() and not (cache / shared).exists():
            (cache / shared).symlink_to(home / shared)
    os.environ["INSTA_CACHE_DIR"] = str(cache)

    import torch

    from insta.config import FeatureConfig
    from insta.example_select import LessSelector, RdsSelector
    from insta.examples import task_sample
    from insta.io import write_json_atomic
    from insta.pools import load_pool
    from insta.select import Target

    out = HERE / "results" / f"model-features-{args.label}.json"
    doc = {"args": vars(args), "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                                           "torch": torch.__version__, "threads": torch.get_num_threads(),
                                           "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
           "date": time.strftime("%Y-%m-%d"), "phases": {}}

    def record(name: str, **values) -> None:
        doc["phases"][name] = {**values, "peak_rss_mb": peak_mb()}
        write_json_atomic(out, doc)
        print(name, doc["phases"][name], file=sys.stderr, flush=True)

    cfg = FeatureConfig(per_task=args.per_task, device=args.device)
    pool = load_pool("bigbench:all?exclude=t0-eval")
    target = Target.from_task(load_pool("bigbench:t0-eval").get(args.target))
    start = time.perf_counter()
    n = sum(len(task_sample(t, cfg.per_task, cfg.seed)) for t in pool)
    record("sample", tasks=len(pool), examples=n, seconds=round(time.perf_counter() - start, 1))

    for phase, cls in (("hidden", RdsSelector), ("grad", LessSelector)):
        start = time.perf_counter()
        sel = cls(features=cfg).fit(pool)
        wall = time.perf_counter() - start
        rep = sel.representation
        warm = rep.warmup_info.get("seconds", 0.0) if phase == "grad" else 0.0
        featurise = rep.seconds - warm  # the warm-up runs inside the first featurising call
        record(f"{phase}-cold", examples=rep.computed, wall_seconds=round(wall, 1), warmup_seconds=warm,
               featurise_seconds=round(featurise, 1),
               examples_per_second=round(rep.computed / featurise, 3) if featurise else None)

    for phase, cls in (("hidden", RdsSelector), ("grad", LessSelector)):
        start = time.perf_counter()
        sel = cls(features=cfg).fit(pool)
        record(f"{phase}-warm", examples_computed=sel.representation.computed,
               wall_seconds=round(time.perf_counter() - start, 1))

    for name, cls in (("rds", RdsSelector), ("less", LessSelector)):
        for budget in (None, 64):
            start = time.perf_counter()
            sel = cls(features=cfg, budget=budget).fit(pool)
            fitted = time.perf_counter() - start
            result = sel.select(target, k=5)
            record(f"select-{name}-{'k5' if budget is None else f'budget{budget}'}",
                   fit_seconds=round(fitted, 1), select_seconds=round(time.perf_counter() - start - fitted, 1),
                   target_examples_computed=sel.representation.computed,
                   selected=[(r.task_id, len(r.examples or [])) for r in result.results])


if __name__ == "__main__":
    main()
