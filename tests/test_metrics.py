"""Metrics against hand-computed values, and the runner's rankings on a hand-built suite."""

import math

import numpy as np
import pytest

from insta import Instruction, Task, TaskPool, Target
from insta.bench import average_precision, bootstrap_ci, ndcg_at, precision_at, run_bench
from insta.bench.suites import Suite
from test_select import FixedEncoder


def test_precision_average_precision_ndcg_by_hand():
    rel = np.array([1, 0, 1, 0, 0, 1], dtype=bool)
    assert precision_at(rel, 5) == pytest.approx(2 / 5)
    assert precision_at(rel, 10) == pytest.approx(3 / 10)  # fewer candidates than k still divides by k
    assert average_precision(rel) == pytest.approx((1 / 1 + 2 / 3 + 3 / 6) / 3)
    dcg = 1 / math.log2(2) + 1 / math.log2(4) + 1 / math.log2(7)
    idcg = 1 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at(rel, 10) == pytest.approx(dcg / idcg)
    assert ndcg_at(np.array([0, 1, 1], dtype=bool), 1) == 0.0
    assert math.isnan(average_precision(np.zeros(4, dtype=bool)))
    perfect = np.array([1, 1, 0, 0], dtype=bool)
    assert average_precision(perfect) == 1.0 and ndcg_at(perfect, 10) == 1.0


def test_bootstrap_ci():
    assert bootstrap_ci(np.full(20, 0.5)) == (0.5, 0.5)
    values = np.r_[np.zeros(50), np.ones(50)]
    lo, hi = bootstrap_ci(values, n_boot=2000, seed=1)
    assert lo < 0.5 < hi and 0.35 < lo and hi < 0.65
    assert bootstrap_ci(values, seed=3) == bootstrap_ci(values, seed=3)


def test_runner_scores_rankings_as_computed_by_hand():
    # target vector e1; cos = x-coordinate. Labels: T and A, B share 'x'; C, D are 'y'.
    def v(c):
        return [c, math.sqrt(1 - c * c)]
    enc = FixedEncoder({"t": v(1.0), "a": v(0.9), "b": v(0.2), "c": v(0.8), "d": v(0.1)})
    pool = TaskPool([Task(i.upper(), [Instruction(i)], label=lab) for i, lab in
                     (("t", "x"), ("a", "x"), ("b", "x"), ("c", "y"), ("d", "y"))])
    suite = Suite("toy", "toy", pool, [Target.from_task(pool.get("T"))], exclude_siblings=False)
    result = run_bench(suite, ["insta"], encoder=enc, n_boot=50)
    (m,) = result.methods
    # ranking for T (itself excluded): A(x) .9, C(y) .8, B(x) .2, D(y) .1 -> relevance 1,0,1,0
    assert m.metrics["P@5"] == pytest.approx(2 / 5)
    assert m.metrics["MAP"] == pytest.approx((1 + 2 / 3) / 2)
    assert m.metrics["nDCG@10"] == pytest.approx((1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3)))
    assert m.n_targets == 1 and result.n_scored == 1
