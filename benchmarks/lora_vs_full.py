"""Full fine-tuning or LoRA for SmolLM2 on a CPU: which buys more per CPU minute?

    python benchmarks/lora_vs_full.py [--steps 8] [--tasks a,b,c]

Trains the packaged SmolLM2-135M-Instruct on a mixture of BIG-bench *source* tasks (none of
the 14 T0 evaluation tasks: this choice is made without looking at any target), once with all
weights and once with LoRA adapters, with the same steps, batch and examples, and measures the
seconds each takes and the gold log-likelihood of held-out examples of the same source tasks
(examples not in the mixture) before and after. Writes benchmarks/results/lora-vs-full.json.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from insta.io import write_json_atomic
from insta.evaluate import Scorer, evaluate_examples
from insta.mix import Mixture, MixConfig, build_mixture, write_mixture
from insta.pools import load_pool
from insta.train import TrainConfig, train

HERE = Path(__file__).resolve().parent
#: five source tasks of different kinds, fixed before any run
TASKS = "analytic_entailment,causal_judgment,emoji_movie,logical_fallacy_detection,sentence_ambiguity"


def heldout_loglik(model: str, rows: list[dict]) -> float:
    result = evaluate_examples(Scorer(model), [r | {"task": "heldout"} for r in rows], "loglik")
    return result[0].metrics["gold_loglik"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default=TASKS)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--heldout", type=int, default=60)
    ap.add_argument("--full-lr", type=float, default=1e-4)
    ap.add_argument("--lora-lr", type=float, default=1e-3, help="LoRA's usual 10x of full fine-tuning's rate")
    args = ap.parse_args()

    pool = load_pool("bigbench:all?exclude=t0-eval")
    tasks = [pool.get(t) for t in args.tasks.split(",")]
    budget = args.steps * args.batch_size
    everything = build_mixture(tasks, MixConfig(total_examples=budget + args.heldout, seed=0)).rows
    random.Random(0).shuffle(everything)
    heldout, train_rows = everything[: args.heldout], everything[args.heldout:]
    out: dict = {"tasks": args.tasks.split(","), "steps": args.steps, "batch_size": args.batch_size,
                 "n_train": len(train_rows), "n_heldout": len(heldout)}
    with tempfile.TemporaryDirectory() as tmp:
        mix = Path(tmp) / "mix"
        write_mixture(Mixture(rows=train_rows, counts={}, config=MixConfig()), mix)
        out["base_heldout_loglik"] = heldout_loglik("smollm2", heldout)
        for mode, lora, lr in (("full", False, args.full_lr), ("lora", True, args.lora_lr)):
            start = time.perf_counter()
            result = train(mix, "smollm2", Path(tmp) / mode, TrainConfig(max_steps=args.steps, batch_size=args.batch_size,
                                                                         lr=lr, lora=lora, max_input_length=256), quiet=True)
            seconds = time.perf_counter() - start
            ll = heldout_loglik(result.model_dir, heldout)
            out[mode] = {"lr": lr, "seconds": round(seconds, 1), "train_loss": result.train_loss, "heldout_loglik": ll,
                         "gain_per_cpu_minute": (ll - out["base_heldout_loglik"]) / (seconds / 60)}
            print(mode, out[mode], flush=True)
    write_json_atomic(HERE / "results" / "lora-vs-full.json", out)
    print(out)


if __name__ == "__main__":
    main()
