"""The downstream benchmark's config and its summary: per-target figures, random as the
mean of its seeds, paired bootstrap deltas over targets."""

from __future__ import annotations

import pytest

from insta.bench.downstream import CPU_TARGETS, downstream_config, markdown, plot, summarize
from insta.errors import InstaError
from insta.readers.bigbench import T0_EVAL


def _results():
    acc = {"base": 0.5, "insta": 0.7, "bm25": 0.6, "random-1": 0.4, "random-2": 0.6, "all": 0.55}
    out = []
    for i, target in enumerate(["t1", "t2", "t3"]):
        for method, a in acc.items():
            ll = -2.0 + (1.0 if method == "insta" else 0.0) - 0.1 * i + (0.5 if method == "random-2" else 0.0)
            out.append({"target": target, "method": method, "metrics": {"accuracy": a + 0.01 * i, "gold_loglik": ll}})
    return out


def test_summary_pairs_methods_over_targets(tmp_path):
    s = summarize(_results(), n_boot=500)
    assert s["targets"] == ["t1", "t2", "t3"] and s["methods"] == ["base", "all", "bm25", "insta", "random"]
    assert s["per_target"]["t1"]["random"]["accuracy"] == pytest.approx(0.5)  # the mean of seeds 1 and 2
    assert s["per_target"]["t2"]["random"]["gold_loglik"] == pytest.approx((-2.1 - 1.6) / 2)
    deltas = {(d["a"], d["b"], d["metric"]): d for d in s["deltas"]}
    d = deltas[("insta", "random", "accuracy")]
    assert d["mean"] == pytest.approx(0.2) and d["wins"] == 3 and d["losses"] == 0
    assert d["ci"][0] == pytest.approx(0.2) and d["ci"][1] == pytest.approx(0.2)  # the same gap on every target
    assert deltas[("insta", "base", "gold_loglik")]["mean"] == pytest.approx(1.0)
    assert deltas[("insta", "random", "gold_loglik")]["mean"] == pytest.approx(0.75)
    assert s["means"]["insta"]["accuracy"]["mean"] == pytest.approx(0.71)
    md = markdown(s)
    assert "| t1 | 0.50 / -2.00 | 0.55 / -2.00 | 0.60 / -2.00 | 0.70 / -1.00 | 0.50 / -1.75 |" in md
    assert "| insta − random | accuracy | +0.200 (+) | [+0.200, +0.200] | 3 / 0 of 3 |" in md
    png = plot(s, tmp_path / "d.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_target_missing_a_method_is_left_out():
    results = [r for r in _results() if not (r["target"] == "t3" and r["method"] == "all")]
    assert summarize(results, n_boot=100)["targets"] == ["t1", "t2"]


def test_config_is_the_declared_experiment():
    cfg = downstream_config("out", device="cpu")
    assert cfg.targets == list(CPU_TARGETS) and set(CPU_TARGETS) <= set(T0_EVAL) and len(CPU_TARGETS) == 8
    assert cfg.pool == "bigbench:all?exclude=t0-eval" and cfg.target_pool == "bigbench:t0-eval"
    assert [m.name for m in cfg.methods] == ["base", "insta", "bm25", "random-1", "random-2", "all"]
    assert cfg.mix.total_examples == 64 and cfg.train.max_steps == 8 and cfg.eval["metric"] == "rank"
    with pytest.raises(InstaError, match="must be bigbench:t0-eval tasks; not: snarks"):
        downstream_config("out", targets=["winowhy", "snarks"])
