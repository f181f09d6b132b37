"""How long `insta select` takes for an instruction the user just typed (ONNX Runtime path)
against the sentence-transformers path and a bare `python -c "import numpy, typer, rich"`.

    python benchmarks/startup.py [--repeats 7]

All cases run the real CLI in a subprocess (imports and model loading count), alternating,
in one run; median and range of --repeats runs, seconds:

* bare: `python -c "import numpy, typer, rich"`;
* cached: `insta select --pool p3:t0-train -i TEXT -k 5 --json -q`, TEXT already embedded;
* new: the same with a never-seen instruction each time (pool vectors cached), backend auto
  (ONNX Runtime) and INSTA_EMBED_BACKEND=torch (sentence-transformers, the old path);
* batch: 100 never-seen instructions in one --targets-file, both backends;
* cold: an empty cache (templates parsed, nothing embedded, no ONNX export yet): the first
  select a user runs, both backends (auto includes the one-time export).

Writes benchmarks/results/startup.json and prints the Markdown table of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
INSTA = str(Path(sys.executable).parent / "insta")
WORDS = ("review sentence premise answer question story summary topic translate classify decide whether true false "
         "movie article option correct paraphrase meaning context passage entail title generate").split()


def fresh(i: int) -> str:
    """An instruction no cache has seen (a unique word order plus a unique tag)."""
    rng = uuid.uuid4().int
    words = [WORDS[(rng >> (5 * j)) % len(WORDS)] for j in range(8)]
    return f"Read the {' '.join(words)} and say which one fits best ({uuid.uuid4().hex[:8]}, {i})."


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="insta-startup-") as tmp:
        cache = Path(tmp) / "cache"
        env = dict(os.environ, INSTA_CACHE_DIR=str(cache), INSTA_EMBED_BACKEND="auto")
        templates = Path(os.environ.get("INSTA_CACHE_DIR") or Path.home() / ".cache/insta-select") / "promptsource-0.2.3"
        if (templates / "templates").is_dir():  # the sdist already extracted: not downloaded again per cold case
            env["INSTA_PROMPTSOURCE"] = str(templates / "templates")
        torch_env = dict(env, INSTA_EMBED_BACKEND="torch")
        select = [INSTA, "select", "--pool", "p3:t0-train", "-k", "5", "--json", "-q"]
        cold: dict[str, list[float]] = {"cold auto (ONNX, export included)": [], "cold torch": []}
        for _ in range(2):  # the cold cases first (each on an empty cache of its own)
            for name, e in (("cold auto (ONNX, export included)", env), ("cold torch", torch_env)):
                shutil.rmtree(cache, ignore_errors=True)
                cold[name].append(timed(select + ["-i", fresh(0)], e))
        timed(select + ["-i", "Is this review positive or negative?"], env)  # warm: pool vectors, export
        targets = Path(tmp) / "targets.txt"
        times: dict[str, list[float]] = {"bare import": [], "cached instruction": [], "new instruction, auto (ONNX)": [],
                                         "new instruction, torch": [], "100 new instructions, auto (ONNX)": [],
                                         "100 new instructions, torch": []}
        for r in range(args.repeats):
            times["bare import"].append(timed([sys.executable, "-c", "import numpy, typer, rich"], env))
            times["cached instruction"].append(timed(select + ["-i", "Is this review positive or negative?"], env))
            times["new instruction, auto (ONNX)"].append(timed(select + ["-i", fresh(r)], env))
            times["new instruction, torch"].append(timed(select + ["-i", fresh(r)], torch_env))
            for name, e in (("100 new instructions, auto (ONNX)", env), ("100 new instructions, torch", torch_env)):
                targets.write_text("".join(fresh(i) + "\n" for i in range(100)))
                times[name].append(timed(select + ["--targets-file", str(targets)], e))
        times.update(cold)
    bare = statistics.median(times["bare import"])
    rows = {name: {"median": statistics.median(v), "min": min(v), "max": max(v), "n": len(v),
                   "ratio_to_bare": statistics.median(v) / bare} for name, v in times.items()}
    doc = {"repeats": args.repeats, "rows": rows, "raw": times,
           "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
           "date": time.strftime("%Y-%m-%d")}
    (HERE / "results" / "startup.json").write_text(json.dumps(doc, indent=1))
    print("| case | median s | range | runs | ratio to the bare import |\n|---|---|---|---|---|")
    for name, row in rows.items():
        print(f"| {name} | {row['median']:.2f} | {row['min']:.2f}–{row['max']:.2f} | {row['n']} | "
              f"{row['ratio_to_bare']:.1f} |")


if __name__ == "__main__":
    main()
