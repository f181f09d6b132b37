"""Power of the downstream benchmark, estimated BEFORE the new run from the 48 runs of the first
one (benchmarks/results/downstream-cpu.json: 8 targets × base, insta, bm25, random-1, random-2,
all; 64 examples, 8 steps, 100 evaluation examples, one training seed).

    python benchmarks/downstream_power.py        # writes benchmarks/results/downstream-power.json

1. Per-token query loss of those runs: their mean summed gold log-likelihood divided by the
   mean token count of the gold answers of the same evaluation examples (the same seeded
   sample of ≤ 100 examples, tokenized by SmolLM2's tokenizer exactly as the scorer does):
   Σ NLL / Σ tokens, the new primary metric, recovered exactly up to which gold string
   scored best where a target has several.
2. The SD over targets of the paired difference between two trained selectors (every pair of
   insta, bm25, random, all), and of random-1 − random-2 (seed-to-seed noise of one method).
3. The smallest true mean difference detected with 80% power by a two-sided paired t-test at
   95% over n targets: MDE = (t_.975,n−1 + t_.80,n−1) · SD / √n, for designs that differ in
   targets (8, 14) and random seeds averaged (2, 3, 5): averaging r seeds of random leaves
   var = var_int + var_seed / r for "X − random". The evaluation-sample component for
   accuracy is √(q / n_eval) per target with q the share of examples on which two models
   disagree (q bounded by the observed SD; see the output).
"""

from __future__ import annotations

import json
import math
from itertools import combinations
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
#: Student t quantiles (two-sided 95% → .975; power 80% → .80) for the degrees of freedom used
T975 = {5: 2.571, 6: 2.447, 7: 2.365, 9: 2.262, 11: 2.201, 13: 2.160, 19: 2.093, 27: 2.052}
T80 = {5: 0.920, 6: 0.906, 7: 0.896, 9: 0.883, 11: 0.876, 13: 0.870, 19: 0.861, 27: 0.856}


def mde(sd: float, n: int) -> float:
    return (T975[n - 1] + T80[n - 1]) * sd / math.sqrt(n)


def gold_tokens(targets: list[str]) -> dict[str, float]:
    """Mean gold-answer tokens over each target's evaluation sample of the first run."""
    from insta.mix import MixConfig, build_mixture
    from insta.models import resolve_lm
    from insta.pipeline import target_tasks
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_lm("smollm2"))
    out = {}
    for task in target_tasks("bigbench:t0-eval", targets):
        rows = build_mixture([task], MixConfig(per_task_cap=100, format="def", seed=0), split="validation").rows
        n = [len(tok(" " + r["target"].strip(), add_special_tokens=False).input_ids) or 1 for r in rows]
        out[task.id] = float(np.mean(n))
    return out


def main() -> None:
    doc = json.loads((HERE / "results" / "downstream-cpu.json").read_text())
    per: dict[str, dict[str, dict[str, float]]] = {}
    for r in doc["results"]:
        per.setdefault(r["target"], {})[r["method"]] = r["metrics"]
    targets = sorted(per)
    tokens = gold_tokens(targets)
    loss = {t: {m: -v["gold_loglik"] / tokens[t] for m, v in per[t].items()} for t in targets}
    acc = {t: {m: v["accuracy"] for m, v in per[t].items()} for t in targets}
    for table in (loss, acc):
        for t in targets:
            table[t]["random"] = (table[t]["random-1"] + table[t]["random-2"]) / 2
    out: dict = {"tokens": tokens, "query_loss": loss, "accuracy": acc, "pairs": {}, "designs": []}
    selectors = ["insta", "bm25", "random", "all"]
    for name, table in (("query_loss", loss), ("accuracy", acc)):
        sds = {}
        for a, b in list(combinations(selectors, 2)) + [("random-1", "random-2")]:
            d = np.array([table[t][a] - table[t][b] for t in targets])
            sds[f"{a} − {b}"] = {"mean": float(d.mean()), "sd": float(d.std(ddof=1))}
        out["pairs"][name] = sds
        seed_var = sds["random-1 − random-2"]["sd"] ** 2 / 2  # one seed's variance around its method
        # X − random(2 seeds) = interaction + seed noise of X + seed noise / 2 of random
        pair_sd = float(np.sqrt(np.mean([v["sd"] ** 2 for k, v in sds.items() if "random-1" not in k])))
        int_var = max(pair_sd ** 2 - seed_var * 1.5, 0.0)
        for n in (8, 14):
            for seeds in (2, 3, 5):
                sd_vs_random = math.sqrt(int_var + seed_var * (1 + 1 / seeds))
                out["designs"].append({"metric": name, "targets": n, "random_seeds": seeds,
                                       "sd_pair": pair_sd, "sd_vs_random": sd_vs_random,
                                       "mde_pair": mde(pair_sd, n), "mde_vs_random": mde(sd_vs_random, n)})
        out.setdefault("components", {})[name] = {"seed_var": seed_var, "interaction_var": int_var, "pair_sd": pair_sd}
    # the accuracy evaluation-sample bound: if all of the pair SD were sampling noise of 100 examples
    q = out["components"]["accuracy"]["pair_sd"] ** 2 * 100
    out["accuracy_disagreement_if_all_noise"] = q
    (HERE / "results" / "downstream-power.json").write_text(json.dumps(out, indent=1))
    print("mean gold tokens:", {t: round(v, 1) for t, v in tokens.items()})
    for name in ("query_loss", "accuracy"):
        print(f"\n{name}: per-target mean difference and SD over the 8 targets")
        for k, v in out["pairs"][name].items():
            print(f"  {k:22s} mean {v['mean']:+.4f}  sd {v['sd']:.4f}")
        c = out["components"][name]
        print(f"  pooled pair SD {c['pair_sd']:.4f}; seed variance {c['seed_var']:.5f}; rest {c['interaction_var']:.5f}")
    print("\n| metric | targets | random seeds | SD of a paired difference | MDE, two selectors | MDE, X − random |")
    print("|---|---|---|---|---|---|")
    for d in out["designs"]:
        print(f"| {d['metric']} | {d['targets']} | {d['random_seeds']} | {d['sd_pair']:.4f} | {d['mde_pair']:.4f} | "
              f"{d['mde_vs_random']:.4f} |")
    print(f"\naccuracy: if all of the pair SD were evaluation-sample noise at 100 examples, models would disagree on "
          f"{q:.2f} of examples")


if __name__ == "__main__":
    main()
