"""Throughput of the select → mix → train → eval chain on real NIV2 task files.

    python benchmarks/train_chain.py [--target TASK] [--k 10] [--steps 20] [--size small] [--device auto]

Selects k source tasks for the target from ``../shared/data/niv2`` (the off-the-shelf
embedder), builds the mixture (Tk-Instruct ``def`` encoding, the paper's cap of 5,000 per
task), then trains a T5 and a GPT-2 with the shapes of t5-small / gpt2 (built from configs,
random weights, a BPE tokenizer trained on the mixture: nothing is downloaded) for a fixed
number of steps at the paper's lengths (768 input / 256 target), and evaluates on the
target with rank classification. Records steps/s, examples/s, peak memory (process RSS;
CUDA peak allocation on a GPU) and evaluation speed; writes
benchmarks/results/train-chain-<device>.json and prints the BENCHMARKS.md rows.
The trained models are random-initialised, so their accuracy is not a finding.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import tempfile
import time
from pathlib import Path

from safetensors import safe_open

from insta import Encoder
from insta.io import write_json_atomic
from insta.mix import MixConfig, load_mixture
from insta.pipeline import evaluate_model, mix_selection, target_tasks
from insta.pools import load_pool
from insta.select import Target
from insta.selectors import make_selector
from insta.testing import build_lms
from insta.train import TrainConfig, resolve_device, train

HERE = Path(__file__).resolve().parent


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--niv2", default=str(HERE.parents[1] / "shared" / "data" / "niv2"))
    ap.add_argument("--target", default="task1732_bbh_boolean_expressions")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--size", default="small", choices=["tiny", "small"])
    ap.add_argument("--models", default="t5,gpt2")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--eval-examples", type=int, default=50)
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args()

    import torch

    device = resolve_device(args.device)
    work = Path(tempfile.mkdtemp(prefix="insta-train-chain-"))
    spec = f"niv2:{args.niv2}"
    report: dict = {"machine": f"{os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads",
                    "device": torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu",
                    "torch": torch.__version__, "args": vars(args), "phases": {}, "models": {}}

    start = time.perf_counter()
    pool = load_pool(spec)
    selector = make_selector("insta", encoder=Encoder())
    selector.fit(pool)
    sel = selector.select(Target.from_task(pool.get(args.target)), args.k)
    sel_file = work / "selection.json"
    write_json_atomic(sel_file, {"pool": spec, "method": "insta", "k": args.k, "selections": [sel.to_dict()]})
    report["phases"]["select_s"] = round(time.perf_counter() - start, 1)
    report["selected"] = [r.task_id for r in sel.results]

    start = time.perf_counter()
    mixture = mix_selection(sel_file, work / "mixture", MixConfig(per_task_cap=5000))
    report["phases"]["mix_s"] = round(time.perf_counter() - start, 1)
    report["n_examples"] = len(mixture.rows)
    dataset, _ = load_mixture(work / "mixture")
    lms = build_lms(work / "lms", (r["input"] + " " + r["target"] for r in dataset), size=args.size, vocab_size=8000)

    for kind in args.models.split(","):
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        cfg = TrainConfig(max_steps=args.steps, batch_size=args.batch_size, device=device)
        result = train(work / "mixture", str(lms[kind]), work / f"model-{kind}", cfg, quiet=True)
        summary = next(e for e in reversed(result.history) if "train_runtime" in e)
        row = {"kind": result.kind, "steps": result.steps, "train_runtime_s": round(summary["train_runtime"], 1),
               "steps_per_s": round(result.steps / summary["train_runtime"], 3),
               "examples_per_s": round(result.steps * args.batch_size / summary["train_runtime"], 2),
               "loss_first_logged": result.history[0].get("loss"), "train_loss_mean": result.train_loss,
               "bf16": result.config["bf16"], "gradient_checkpointing": result.config["gradient_checkpointing"],
               "peak_rss_mib_so_far": round(peak_rss_mib())}
        with safe_open(str(lms[kind] / "model.safetensors"), "pt") as weights:
            row["parameters_m"] = round(sum(math.prod(weights.get_slice(k).get_shape()) for k in weights.keys()) / 1e6, 1)
        if device.startswith("cuda"):
            row["cuda_peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        start = time.perf_counter()
        ev = evaluate_model(result.model_dir, target_tasks(spec, [args.target]), metric="rank", max_examples=args.eval_examples,
                            device=device)
        seconds = time.perf_counter() - start
        row["eval_examples"] = ev.tasks[0].n
        row["eval_examples_per_s"] = round(ev.tasks[0].n / seconds, 2)
        report["models"][kind] = row
    report["peak_rss_mib"] = round(peak_rss_mib())

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "train-chain-" + ("cuda" if device.startswith("cuda") else "cpu") + ".json"
    (out / name).write_text(json.dumps(report, indent=1) + "\n")
    print(f"\nselect {report['phases']['select_s']} s, mix {report['phases']['mix_s']} s "
          f"({report['n_examples']} examples from {len(report['selected'])} tasks); device {report['device']}\n")
    print("| model (shape, random init) | parameters | steps | steps/s | examples/s | peak memory | eval examples/s (rank) |")
    print("|---|---|---|---|---|---|---|")
    for kind, r in report["models"].items():
        memory = f"{r['cuda_peak_gib']} GiB CUDA" if "cuda_peak_gib" in r else f"{r['peak_rss_mib_so_far']} MiB RSS"
        print(f"| {kind}-{args.size} ({r['kind']}) | {r['parameters_m']}M | {r['steps']} | {r['steps_per_s']} | {r['examples_per_s']} | "
              f"{memory} | {r['eval_examples_per_s']} |")


if __name__ == "__main__":
    main()
