"""Selection at scale: the search core against FAISS, a 30k-task leave-one-out benchmark, and
warm start-up of `insta select`.

    python benchmarks/scale.py                    # everything (≈ 15 min on 2 cores, ~6 GB RAM)
    python benchmarks/scale.py --only core --sizes 10000,100000
    python benchmarks/scale.py --only loo         # 30k synthetic tasks, real MiniLM
    python benchmarks/scale.py --only startup

core: synthetic unit vectors (dim 384, one instruction per task, the model excluded), 1,000
targets, top-10, `max`. Each case runs in its own process so its peak RSS is its own:
insta's FlatIndex (the path `insta select` takes for `insta`), FAISS `IndexFlatIP` on the same
vectors, and at ≤ 100k the per-target full path that selection used before (every task's score,
full sort; kept for mean/vote and the benchmark). Time = search only (vectors already in memory;
FAISS's `add` not counted); the top-10 ids of FlatIndex and FAISS are compared.

loo: `insta bench --pool` on a 30,000-task synthetic labelled pool (300 labels; texts built
from label words and shared filler words), leave-one-out, method insta (--loo-methods), with
the packaged MiniLM; peak RSS of the whole command against the 21.6 GB that holding every target's
full score vector (30k × 30k × 24 bytes) would take.

startup: `insta select --pool p3:t0-train -i TEXT -k 5 --json` with every embedding and the
parsed templates cached, against a bare `python -c "import numpy, typer, rich"`, alternating,
median of --repeats runs.

Writes benchmarks/results/scale.json and prints the Markdown tables of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DIM, TARGETS, K = 384, 1000, 10


def unit_rows(n: int, seed: int, chunk: int = 65536) -> np.ndarray:
    """n random unit vectors, float32, built in chunks (no float64 copy of the matrix)."""
    out = np.empty((n, DIM), dtype=np.float32)
    rng = np.random.default_rng(seed)
    for s in range(0, n, chunk):
        block = rng.standard_normal((min(chunk, n - s), DIM), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[s:s + len(block)] = block
    return out


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def case(engine: str, n: int, out: str) -> None:
    """One core case in this process: prints JSON {seconds, peak_rss_mib, ...}."""
    vectors = unit_rows(n, seed=1)
    queries = unit_rows(TARGETS, seed=2)
    result: dict = {"engine": engine, "n": n, "matrix_mib": vectors.nbytes / 2**20}
    if engine == "flat":
        from insta.search import FlatIndex

        index = FlatIndex(vectors, np.ones(n, dtype=np.int64), np.arange(n))
        start = time.perf_counter()
        ids = np.array([[h.task for h in hits] for hits in index.search(queries, [1] * TARGETS, K)])
        result["seconds"] = time.perf_counter() - start
    elif engine == "faiss":
        import faiss

        index = faiss.IndexFlatIP(DIM)
        index.add(vectors)
        del vectors  # FAISS keeps its own copy
        start = time.perf_counter()
        _, ids = index.search(queries, K)
        result["seconds"] = time.perf_counter() - start
    elif engine == "full":  # the per-target path: every task's score, then a full sort
        from insta.select import aggregate_matrix

        starts = np.arange(n)
        counts = np.ones(n, dtype=np.int64)
        tie = np.arange(n)
        start = time.perf_counter()
        rows = []
        for j in range(TARGETS):
            agg = aggregate_matrix(queries[j:j + 1] @ vectors.T, starts, counts, starts, "max", K)
            rows.append(np.lexsort((tie, -agg.best, -agg.score))[:K])
        ids = np.array(rows)
        result["seconds"] = time.perf_counter() - start
    else:
        raise SystemExit(f"unknown engine {engine}")
    result["peak_rss_mib"] = peak_mib()
    np.save(out, ids)
    print(json.dumps(result))


def run_case(engine: str, n: int, tmp: Path) -> dict:
    out = tmp / f"{engine}-{n}.npy"
    proc = subprocess.run([sys.executable, __file__, "--case", engine, "--n", str(n), "--ids", str(out)],
                          check=True, capture_output=True, text=True)
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["ids"] = str(out)
    return res


def core(sizes: list[int]) -> dict:
    doc = {"rows": []}
    with tempfile.TemporaryDirectory(prefix="insta-scale-") as tmp:
        for n in sizes:
            engines = ["flat", "faiss"] + (["full"] if n <= 100_000 else [])
            res = {e: run_case(e, n, Path(tmp)) for e in engines}
            flat_ids = np.load(res["flat"]["ids"])
            same = float((np.load(res["faiss"]["ids"]) == flat_ids).all(axis=1).mean())
            row = {"n": n, "matrix_mib": res["flat"]["matrix_mib"], "same_top10_as_faiss": same,
                   **{f"{e}_seconds": r["seconds"] for e, r in res.items()},
                   **{f"{e}_peak_rss_mib": r["peak_rss_mib"] for e, r in res.items()}}
            if "full" in res:
                row["same_top10_as_full"] = float((np.load(res["full"]["ids"]) == flat_ids).all(axis=1).mean())
            doc["rows"].append(row)
            print(json.dumps(row), flush=True)
    return doc


def core_markdown(doc: dict) -> str:
    lines = ["| source instructions | matrix (MiB) | FlatIndex s | FAISS IndexFlatIP s | ratio | per-target full path s "
             "| FlatIndex peak RSS (MiB) | ÷ matrix | FAISS peak RSS (MiB) | top-10 = FAISS's |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        full = f"{r['full_seconds']:.2f}" if "full_seconds" in r else "—"
        lines.append(f"| {r['n']:,} | {r['matrix_mib']:.0f} | {r['flat_seconds']:.2f} | {r['faiss_seconds']:.2f} | "
                     f"{r['flat_seconds'] / r['faiss_seconds']:.2f} | {full} | {r['flat_peak_rss_mib']:.0f} | "
                     f"{r['flat_peak_rss_mib'] / r['matrix_mib']:.2f} | {r['faiss_peak_rss_mib']:.0f} | "
                     f"{r['same_top10_as_faiss']:.3f} |")
    return "\n".join(lines)


# ------------------------------------------------------------------ 30k leave-one-out


def synthetic_pool(path: Path, n: int = 30_000, n_labels: int = 300, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    vocab = [f"w{i}" for i in range(3000)]
    topic = {lab: rng.choice(vocab, 8, replace=False) for lab in range(n_labels)}
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            lab = int(rng.integers(n_labels))
            words = list(rng.choice(topic[lab], 4)) + list(rng.choice(vocab, 6))
            rng.shuffle(words)
            fh.write(json.dumps({"id": f"task{i:05d}", "instruction": "Task: " + " ".join(words), "label": f"L{lab}"}) + "\n")


def loo(n: int, methods: str) -> dict:
    insta = str(Path(sys.executable).parent / "insta")
    with tempfile.TemporaryDirectory(prefix="insta-loo-") as tmp:
        pool = Path(tmp) / "pool.jsonl"
        synthetic_pool(pool, n)
        env = dict(os.environ, INSTA_CACHE_DIR=str(Path(tmp) / "cache"))
        wrapper = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
                   "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
                   "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
        cmd = [insta, "bench", "--pool", str(pool), "--methods", methods, "-q", "--json"]
        out = subprocess.run([sys.executable, "-c", wrapper, *cmd], env=env, capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f"insta bench failed:\n{out.stderr[-3000:]}")
        wall, rss = out.stdout.split()
    doc = {"tasks": n, "methods": methods, "seconds": float(wall), "peak_rss_mib": float(rss) / 1024,
           "all_scores_held_gib": n * n * 24 / 2**30}
    print(json.dumps(doc), flush=True)
    return doc


# ------------------------------------------------------------------ warm start-up


def startup(repeats: int) -> dict:
    insta = str(Path(sys.executable).parent / "insta")
    cmd = [insta, "select", "--pool", "p3:t0-train", "-i", "Is this review positive or negative?", "-k", "5", "--json", "-q"]
    bare = [sys.executable, "-c", "import numpy, typer, rich"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)  # warm the caches
    times: dict[str, list[float]] = {"select": [], "bare": []}
    for _ in range(repeats):
        for name, c in (("bare", bare), ("select", cmd)):
            t = time.perf_counter()
            subprocess.run(c, check=True, stdout=subprocess.DEVNULL)
            times[name].append(time.perf_counter() - t)
    doc = {k: statistics.median(v) for k, v in times.items()} | {"runs": times}
    doc["ratio"] = doc["select"] / doc["bare"]
    print(json.dumps({k: v for k, v in doc.items() if k != "runs"}), flush=True)
    return doc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=["core", "loo", "startup"])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--loo-tasks", type=int, default=30_000)
    ap.add_argument("--loo-methods", default="insta")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--ids", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.case:
        return case(args.case, args.n, args.ids)
    results_path = HERE / "results" / "scale.json"
    doc = json.loads(results_path.read_text()) if results_path.is_file() else {}
    doc.update(machine=platform.platform(), cpus=os.cpu_count())
    if args.only in (None, "core"):
        doc["core"] = core([int(x) for x in args.sizes.split(",")])
        print("\n" + core_markdown(doc["core"]))
    if args.only in (None, "startup"):
        doc["startup"] = startup(args.repeats)
    if args.only in (None, "loo"):
        doc["loo"] = loo(args.loo_tasks, args.loo_methods)
    from insta.io import write_json_atomic

    write_json_atomic(results_path, doc)


if __name__ == "__main__":
    main()
