"""The downstream benchmark's config and its summary: per-target figures, random as the
mean of its seeds, paired bootstrap deltas over targets."""

from __future__ import annotations

import numpy as np
import pytest

from insta.bench.downstream import (CPU_TARGETS, PARTS, QUANTILE_BINS, delta, downstream_config, k_curve, markdown,
                                    k_trend, paired, parts_markdown, plot, quantile_curves, sign_test, spearman,
                                    summarize, t_interval, table_method)
from insta.bench.metrics import bootstrap_indices
from insta.errors import InstaError
from insta.readers.bigbench import T0_EVAL


def _results():
    acc = {"base": 0.5, "insta": 0.7, "bm25": 0.6, "random-1": 0.4, "random-2": 0.6, "all": 0.55}
    out = []
    for i, target in enumerate(["t1", "t2", "t3"]):
        for method, a in acc.items():
            ll = -2.0 + (1.0 if method == "insta" else 0.0) - 0.1 * i + (0.5 if method == "random-2" else 0.0)
            out.append({"target": target, "method": method,
                        "metrics": {"accuracy": a + 0.01 * i, "gold_loglik": ll, "query_loss": -ll / 2}})
    return out


def test_summary_pairs_methods_over_targets(tmp_path):
    s = summarize(_results(), n_boot=500)
    assert s["targets"] == ["t1", "t2", "t3"] and s["methods"] == ["base", "all", "bm25", "insta", "random"]
    assert s["per_target"]["t1"]["random"]["accuracy"] == pytest.approx(0.5)  # the mean of seeds 1 and 2
    assert s["per_target"]["t2"]["random"]["gold_loglik"] == pytest.approx((-2.1 - 1.6) / 2)
    assert s["random_seed_sd"]["accuracy"] == pytest.approx(0.2 / 2 ** 0.5)  # seeds 0.4 and 0.6 on every target
    deltas = {(d["a"], d["b"], d["metric"]): d for d in s["deltas"]}
    d = deltas[("insta", "random", "accuracy")]
    assert d["mean"] == pytest.approx(0.2) and d["wins"] == 3 and d["losses"] == 0
    assert d["ci"][0] == pytest.approx(0.2) and d["ci"][1] == pytest.approx(0.2)  # the same gap on every target
    q = deltas[("insta", "random", "query_loss")]  # lower loss is better: a negative delta is a win
    assert q["mean"] == pytest.approx(-0.375) and q["wins"] == 3 and q["losses"] == 0
    assert deltas[("bm25", "insta", "query_loss")]["losses"] == 3
    assert ("random", "insta", "accuracy") not in deltas and ("base", "random", "accuracy") in deltas
    assert s["means"]["insta"]["accuracy"]["mean"] == pytest.approx(0.71)
    md = markdown(s)
    assert "| t1 | 1.000 / 0.50 | 1.000 / 0.55 | 1.000 / 0.60 | 0.500 / 0.70 | 0.875 / 0.50 |" in md
    assert "| insta − random | accuracy | +0.200 (+) ‡ | [+0.200, +0.200] | [+0.200, +0.200] | 3 / 0 of 3 | 0.25 |" in md
    assert "| insta − random | query_loss | -0.375 (−) ‡ | [-0.375, -0.375] | [-0.375, -0.375] | 3 / 0 of 3 | 0.25 |" in md
    png = plot(s, tmp_path / "d.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_t_interval_and_sign_test_beside_the_bootstrap():
    """Over three targets the bootstrap excludes 0 where the t interval does not: both are
    reported, and only the bootstrap's verdict carries the declared (+)/(−) mark."""
    a, b = np.array([1.0, 2.0, 3.0]), np.zeros(3)
    d = paired(a, b, "accuracy", bootstrap_indices(3, 2000, 0))
    assert d["ci"][0] >= 1.0 and d["ci"][1] <= 3.0
    half = 4.302652729911275 / 3 ** 0.5  # t(.975, 2) · sd 1 / √3
    assert d["t_ci"] == pytest.approx((2 - half, 2 + half))
    assert d["sign_p"] == pytest.approx(0.25) and sign_test(5, 5) == pytest.approx(1.0) and sign_test(0, 0) == 1.0
    assert sign_test(8, 0) == pytest.approx(2 / 2 ** 8)
    assert all(np.isnan(t_interval(np.array([1.0]))))
    md = markdown({"targets": ["t1", "t2", "t3"], "methods": ["x"], "per_target": {t: {"x": {}} for t in "t1 t2 t3".split()},
                   "means": {}, "deltas": [{"metric": "accuracy", "a": "x", "b": "random", **d}]})
    assert "| x − random | accuracy | +2.000 (+) | [" in md  # no ‡: the t interval includes 0


def test_quantile_curves_k_curve_and_alignment_delta(tmp_path):
    results = []
    for i, t in enumerate(["t1", "t2", "t3", "t4"]):
        row = {"base": 3.0, "insta": 2.0, "random-1": 2.5, "insta-k1": 2.2, "random-k1": 2.9, "insta-aligned": 1.9}
        for b in QUANTILE_BINS:  # instruction: loss rises with the bin on every target; bm25: falls on t1 only
            row[f"instruction-q{b}"] = 1.0 + 0.1 * b
            row[f"bm25-q{b}"] = 2.0 - 0.1 * b if t == "t1" else 2.0 + 0.1 * b
        for method, loss in row.items():
            results.append({"target": t, "method": method, "metrics": {"query_loss": loss + 0.01 * i, "accuracy": 0.5}})
    s = summarize(results, n_boot=200)
    q = quantile_curves(s)
    assert set(q) == {"instruction", "bm25"}
    assert q["instruction"]["rho_mean"] == pytest.approx(1.0) and q["instruction"]["n"] == 4
    assert q["bm25"]["rho_mean"] == pytest.approx(0.5) and q["bm25"]["rho_per_target"]["t1"] == pytest.approx(-1.0)
    assert q["bm25"]["rho_t_ci"] == pytest.approx((0.5 - 3.182446 / 2, 0.5 + 3.182446 / 2), abs=1e-5)  # sd 1 over 4
    assert q["instruction"]["mean_per_bin"] == pytest.approx([1.115, 1.315, 1.515])
    curve = {row["k"]: row for row in k_curve(s)}
    assert set(curve) == {1, 5}
    assert curve[1]["query_loss"]["insta_minus_random"]["mean"] == pytest.approx(-0.7)
    assert curve[5]["query_loss"]["insta"] == pytest.approx(2.015)
    assert delta(s, "insta-aligned", "insta", "query_loss")["mean"] == pytest.approx(-0.1)
    assert delta(s, "insta-aligned", "nothing", "query_loss") is None
    assert spearman([1, 2, 3], [5, 5, 5]) != spearman([1, 2, 3], [5, 5, 5])  # constant: NaN
    png = plot(s, tmp_path / "q.png", quantiles=q)
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_a_part_run_on_some_targets_is_compared_on_those(tmp_path):
    """An interrupted invocation leaves the k curve and the aligned embedder on the first
    targets only: the methods table keeps every target, the k curve and the aligned delta
    are computed over the targets that have both sides, and say how many."""
    results = []
    for i, t in enumerate(["t1", "t2", "t3", "t4", "t5"]):
        row = {"base": 3.0, "insta": 2.0, "random-1": 2.5, "all": 2.4}
        if i < 4:  # the k curve reached 4 targets, the aligned embedder 3
            row |= {"insta-k1": 2.6, "random-k1": 2.7, "insta-k20": 2.3, "random-k20": 2.2}
        if i < 3:
            row["insta-aligned"] = 1.875
        for method, loss in row.items():
            results.append({"target": t, "method": method, "metrics": {"query_loss": loss, "accuracy": 0.5 + 0.25 * (method == "insta")}})
    s = summarize(results, n_boot=200)
    assert s["targets"] == ["t1", "t2", "t3", "t4", "t5"] and s["methods"] == ["base", "all", "insta", "random"]
    curve = {row["k"]: row for row in k_curve(s)}
    # every k over the 4 targets that have them all (k = 5 alone reached t5 too)
    assert [curve[k]["n"] for k in (1, 5, 20)] == [4, 4, 4] and curve[5]["targets"] == ["t1", "t2", "t3", "t4"]
    assert curve[20]["query_loss"]["insta_minus_random"]["mean"] == pytest.approx(0.1)
    assert curve[20]["query_loss"]["insta_minus_random"]["losses"] == 4 and curve[20]["query_loss"]["all"] == 2.4
    trend = k_trend(k_curve(s))  # insta: 2.6, 2.0, 2.3 at k = 1, 5, 20; random: 2.7, 2.5, 2.2
    assert trend["k"] == [1, 5, 20] and trend["n"] == 4
    assert trend["insta"]["rho_mean"] == pytest.approx(-0.5) and trend["insta"]["best_k"] == {1: 0, 5: 4, 20: 0}
    assert trend["random"]["rho_mean"] == pytest.approx(-1.0) and trend["random"]["best_k"][20] == 4
    assert k_trend(k_curve(s)[:2]) == {}  # two values of k: no trend
    d = delta(s, "insta-aligned", "insta", "query_loss")
    assert d["n"] == 3 and d["targets"] == ["t1", "t2", "t3"] and d["mean"] == pytest.approx(-0.125)
    md = parts_markdown(s)
    assert "| 1 | 4 | 2.600 / 2.700 / 2.400 | -0.100 [-0.100, -0.100] [-0.100, -0.100] | 0.50 / 0.50 / 0.50 |" in md
    assert "| 5 | 4 | 2.000 / 2.500 / 2.400 | -0.500 [-0.500, -0.500] [-0.500, -0.500] | 0.75 / 0.50 / 0.50 |" in md
    assert "| 20 | 4 | 2.300 / 2.200 / 2.400 | +0.100 [+0.100, +0.100] [+0.100, +0.100] |" in md
    assert "| query_loss | 3 | -0.125 | [-0.125, -0.125] | [-0.125, -0.125] | 3 / 0 | 0.25 |" in md
    assert "- insta: ρ(k, query loss) per target, mean -0.50 [-0.500, -0.500] over 4 targets" in md
    assert "lowest loss at k=5: 4" in md
    assert "| accuracy | 3 | -0.250 | [-0.250, -0.250] | [-0.250, -0.250] | 0 / 3 | 0.25 |" in md
    assert "insta-aligned" not in markdown(s)  # not in the methods table: it lacks two targets
    full = summarize([r for r in results if r["target"] in ("t1", "t2", "t3")], n_boot=200)
    assert "insta-k1" in full["methods"] and "insta-aligned" in full["methods"]
    assert not any(m in markdown(full) for m in ("insta-k1", "random-k20", "insta-aligned"))  # tables of their own
    assert table_method("insta") and table_method("less@64") and not table_method("grad-q3")
    assert parts_markdown(summarize([r for r in results if r["method"] in ("base", "insta", "random-1")])) == ""
    png = plot(s, tmp_path / "k.png")  # the k curve panel: 3 values of k, each over ≥ 3 targets
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_a_target_missing_a_method_is_left_out():
    results = [r for r in _results() if not (r["target"] == "t3" and r["method"] == "all")]
    s = summarize(results, n_boot=100)
    assert s["targets"] == ["t1", "t2", "t3"] and "all" not in s["methods"]  # a method missing somewhere drops out
    results = [r for r in _results() if not (r["target"] == "t3" and r["method"] == "insta")]
    assert summarize(results, n_boot=100)["targets"] == ["t1", "t2"]  # a core method missing: the target drops out


def test_config_is_the_declared_experiment():
    cfg = downstream_config("out", device="cpu")
    assert cfg.targets == list(CPU_TARGETS) and set(CPU_TARGETS) <= set(T0_EVAL) and len(CPU_TARGETS) == 8
    assert cfg.pool == "bigbench:all?exclude=t0-eval" and cfg.target_pool == "bigbench:t0-eval"
    assert [m.name for m in cfg.methods] == ["base", "insta", "bm25", "random-1", "random-2", "random-3", "hybrid",
                                             "less", "rds", "less@64", "rds@64", "all"]
    assert cfg.mix.total_examples == 64 and cfg.train.max_steps == 8 and cfg.eval["metric"] == "rank"
    assert not cfg.keep_models and cfg.features.lm == "smollm2"
    full = downstream_config("out", parts=PARTS, aligned_model="aligned")
    names = [m.name for m in full.methods]
    assert len(names) == len(set(names)) == 33
    assert {m.name: m.k for m in full.methods}["random-k20"] == 20
    assert {m.name: m.quantile for m in full.methods}["grad-q5"] == [5, 5]
    assert {m.name: m.model for m in full.methods}["insta-aligned"] == "aligned"
    with pytest.raises(InstaError, match="must be bigbench:t0-eval tasks; not: snarks"):
        downstream_config("out", targets=["winowhy", "snarks"])
    with pytest.raises(InstaError, match="the align part needs the aligned embedder"):
        downstream_config("out", parts=["align"])
    with pytest.raises(InstaError, match="unknown part 'kurve'"):
        downstream_config("out", parts=["kurve"])


def test_missing_and_non_finite_values_are_left_out_and_said(tmp_path):
    """A diverged evaluation stores NaN as null; a run may lack a metric; a part may reach
    targets that the methods table lacks (no base yet): nothing crashes, nothing non-finite
    is averaged, every comparison uses the targets that have both sides, and the table says
    what was left out."""
    results = []
    for i, t in enumerate(["t1", "t2", "t3", "t4", "t5", "t6"]):
        row = {"insta": 2.0, "insta-aligned": 2.0 - 0.1 * (i + 1), "insta-k1": 2.5, "random-k1": 2.0}
        if i < 4:  # t5 and t6 have no base or random yet: not in the methods table
            row |= {"base": 3.0, "random-1": 2.5}
        for b in QUANTILE_BINS:
            row[f"instruction-q{b}"] = 1.0 + 0.1 * b
        for method, loss in row.items():
            results.append({"target": t, "method": method, "metrics": {"query_loss": loss, "accuracy": 0.5}})
    results[0]["metrics"]["query_loss"] = None  # t1/insta diverged
    next(r for r in results if r["target"] == "t2" and r["method"] == "instruction-q3")["metrics"]["query_loss"] = float("nan")
    next(r for r in results if r["target"] == "t3" and r["method"] == "insta-k1")["metrics"].pop("accuracy")
    results.append({"target": "t4", "method": "all", "metrics": {"query_loss": float("inf"), "accuracy": 0.5}})
    results.append({"target": "t4", "method": "rds"})  # no metrics at all
    s = summarize(results, n_boot=200)
    assert s["targets"] == ["t1", "t2", "t3", "t4"]
    assert {"t1/insta/query_loss", "t2/instruction-q3/query_loss", "t3/insta-k1/accuracy", "t4/all/query_loss",
            "t4/rds/query_loss", "t4/rds/accuracy"} == set(s["left_out"])
    d = delta(s, "insta-aligned", "insta", "query_loss")  # t1 lacks insta's loss; t5, t6 count
    assert d["targets"] == ["t2", "t3", "t4", "t5", "t6"] and d["mean"] == pytest.approx(-0.4)
    assert delta(s, "insta-aligned", "insta", "accuracy")["n"] == 6
    curve = {row["k"]: row for row in k_curve(s)}
    # the k curve over the targets that have every k: query loss t2-t4 (t1's insta diverged, t5 and t6 lack
    # random at k = 5); accuracy t1, t2, t4 (t3 lacks insta-k1's)
    assert curve[1]["query_loss"]["targets"] == curve[5]["query_loss"]["targets"] == ["t2", "t3", "t4"]
    assert curve[1]["accuracy"]["targets"] == ["t1", "t2", "t4"] and curve[1]["n"] == 3
    assert "(over other targets: t1, t2, t4)" in parts_markdown(s)
    q = quantile_curves(s)["instruction"]  # t2's middle bin is NaN: t2 drops out, not ranked last
    assert q["n"] == 5 and "t2" not in q["rho_per_target"] and q["rho_mean"] == pytest.approx(1.0)
    md = markdown(s) + parts_markdown(s)
    assert "nan" not in md.lower() and "inf" not in md
    assert "Left out, missing or not finite (6; target/method/metric): t1/insta/query_loss" in md

    assert plot(s, tmp_path / "p.png", quantiles=quantile_curves(s)).read_bytes()[:4] == b"\x89PNG"
    assert markdown(summarize([])) == "No target has results of base, random and insta yet: nothing to summarise.\n"


def test_the_benchmark_script_refuses_an_empty_run(tmp_path):
    """A wrong --run must not replace a real run's results with an empty summary."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "downstream.py"
    p = subprocess.run([sys.executable, str(script), "--report-only", "--run", str(tmp_path / "none"), "--label",
                        "nothing-here"], capture_output=True, text=True)
    assert p.returncode == 2 and "holds no results" in p.stderr and "Traceback" not in p.stderr
    assert not (script.parent / "results" / "downstream-nothing-here.json").exists()
