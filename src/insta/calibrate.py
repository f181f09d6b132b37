"""Scores that compare across instruction styles, for a union of pools (``--pool A --pool B``).

P3 templates, NIV2 Definitions and BIG-bench descriptions sit in different parts of an
embedding space (and of a BM25 vocabulary): raw scores favour the pool whose style is closest
to the target's wording. A :class:`CalibratedSelector` wraps any task-level selector and makes
each task's score comparable across the pools of the union, per target:

* ``none``   — the raw scores, compared as they are;
* ``zscore`` — within each pool, the score standardised over that pool's candidate tasks
  (mean 0, SD 1): a task counts by how far it stands out of its own pool (a pool whose
  candidates all score alike comes after the others);
* ``rank``   — within each pool, the task's rank among that pool's candidates, fused as
  ``1 / (60 + rank)``: the pools are interleaved rank by rank, the raw score breaking ties.

``per_source_k`` takes a fixed number of tasks from each pool instead of k overall. Within one
pool every calibration keeps the order of the selector's scores over the union (an increasing
function of the score; BM25's word statistics are the union's, so a BM25 order within a pool
can differ from that pool's alone), and a single pool is passed through untouched. The default is the one the cross-style
benchmark in BENCHMARKS.md chose (``benchmarks/union.py``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import replace
from typing import Any

import numpy as np

from .encoder import ProgressFn
from .errors import InstaError, unknown
from .select import Request, Scores, Selected, Selection, Selector, Target, order_candidates, top_candidates
from .tasks import TaskPool

#: calibration -> what it does (see the module docstring)
CALIBRATIONS = {
    "none": "raw scores compared across pools",
    "zscore": "each pool's scores standardised over its candidate tasks, per target",
    "rank": "pools interleaved by each task's rank within its own pool (1/(60+rank))",
}
DEFAULT_CALIBRATION = "zscore"
RRF_K = 60
#: zscore: the calibrated score of a pool whose candidates all score alike (offset by the raw score)
UNINFORMATIVE = -1e6


def check_calibration(how: str) -> str:
    if how not in CALIBRATIONS:
        raise unknown("calibration", how, CALIBRATIONS)
    return how


def pool_groups(pool: TaskPool) -> tuple[np.ndarray, list[str]]:
    """Each task's pool of origin as a small integer, and the origins in order of appearance."""
    origins: dict[str | None, int] = {}
    group = np.fromiter((origins.setdefault(t.origin, len(origins)) for t in pool), dtype=np.int64, count=len(pool))
    return group, [o or pool.name for o in origins]


def calibrate_scores(score: np.ndarray, group: np.ndarray, candidate: np.ndarray, how: str) -> np.ndarray:
    """``score`` made comparable across the groups (pools), using only candidate tasks' scores
    for each group's statistics; non-candidates are transformed alike and never selected."""
    if how == "none":
        return score
    out = np.empty_like(score, dtype=np.float64)
    for g in np.unique(group):
        members = group == g
        pool_scores = score[members & candidate]
        if how == "zscore":
            mean = float(pool_scores.mean()) if len(pool_scores) else 0.0
            sd = float(pool_scores.std()) if len(pool_scores) > 1 else 0.0
            # a pool whose candidates all score alike (one task; BM25 finding no word) says nothing
            # about which of its tasks is related: they come after every informative pool's tasks
            out[members] = (score[members] - mean) / sd if sd > 0 else UNINFORMATIVE + score[members]
        else:  # rank: 1 + how many of the pool's candidates score higher (ties share a rank)
            descending = np.sort(-pool_scores)
            rank = np.searchsorted(descending, -score[members], side="left") + 1
            out[members] = 1.0 / (RRF_K + rank)
    return out


class CalibratedSelector(Selector):
    """A task-level selector whose scores are calibrated across the pools of a union (see the
    module docstring). Explanations (the best-matching pair and its raw similarity) are the
    wrapped selector's; a result's ``score`` is the calibrated one."""

    def __init__(self, inner: Selector, how: str = DEFAULT_CALIBRATION, per_source_k: int | None = None):
        super().__init__()
        self.inner = inner
        self.how = check_calibration(how)
        if per_source_k is not None and (not isinstance(per_source_k, int) or isinstance(per_source_k, bool)
                                         or per_source_k < 1):
            raise InstaError(f"--per-source-k must be a positive integer, got {per_source_k!r}")
        self.per_source_k = per_source_k
        self.group = np.zeros(0, dtype=np.int64)
        self.origins: list[str] = []

    method = property(lambda self: self.inner.method)  # type: ignore[assignment]
    aggregate = property(lambda self: self.inner.aggregate)  # type: ignore[assignment]

    def __getattr__(self, name: str) -> Any:  # describe(), examples, ...: the wrapped selector's
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def fit(self, pool: TaskPool, progress: ProgressFn | None = None) -> CalibratedSelector:
        self.inner.fit(pool, progress)
        self._set_pool(pool, self.inner.arrays)
        self.group, self.origins = pool_groups(pool)
        return self

    def score_many(self, targets: Sequence[Target], k: int = 5, progress: ProgressFn | None = None) -> list[Scores]:
        pool = self._require_fit()
        excluding = self._excluding
        with self.inner.excluding(excluding) if excluding else nullcontext():
            raw = self.inner.score_many(targets, k, progress)
        out = []
        for target, scores in zip(targets, raw):
            candidate = np.ones(len(pool), dtype=bool)
            if excluding is not None:
                candidate[np.asarray(excluding(target), dtype=np.int64)] = False
            calibrated = calibrate_scores(np.asarray(scores.score, dtype=np.float64), self.group, candidate, self.how)
            # equal calibrated scores (rank: the pools' n-th tasks) are ordered by the raw score
            out.append(Scores(calibrated, np.asarray(scores.score, dtype=np.float64), scores.explain))
        return out

    def _select_one(self, target: Target, scores: Scores, req: Request) -> Selection:
        if self.per_source_k is None:
            return super()._select_one(target, scores, req)
        pool = self._require_fit()
        excluded, n_candidates = self._excluded(target, req)
        keep = np.ones(len(pool), dtype=bool)
        keep[excluded] = False
        chosen = np.concatenate([top_candidates(scores, self.arrays.tie_order, np.flatnonzero(keep & (self.group == g)),
                                                self.per_source_k) for g in range(len(self.origins))])
        ordered = chosen[order_candidates(scores, self.arrays.tie_order, chosen)]
        results = [Selected.of(rank, pool[int(i)], scores.score[i], scores.explain(int(i)))
                   for rank, i in enumerate(ordered, start=1)]
        sel = self._selection(target, replace(req, k=self.per_source_k * len(self.origins)), n_candidates, results)
        got = {o: sum(r.origin == o for r in results) for o in self.origins}
        short = [f"{o} ({n})" for o, n in got.items() if n < self.per_source_k]
        if short:
            sel.warnings.append(f"--per-source-k {self.per_source_k}: fewer candidates left in {', '.join(short)}; "
                                f"{len(results)} tasks selected")
        return sel

    def _iter_select(self, targets: list[Target], req: Request, progress: ProgressFn | None) -> Iterator[Selection]:
        if len(self.origins) <= 1 and self.per_source_k is None:  # one pool: the wrapped selector as it is
            yield from self.inner._iter_select(targets, req, progress)
            return
        yield from super()._iter_select(targets, req, progress)


def for_union(selector: Selector, specs: Sequence[str], how: str = DEFAULT_CALIBRATION,
              per_source_k: int | None = None) -> Selector:
    """``selector`` calibrated across the pools when ``specs`` names several, else as it is
    (``per_source_k`` on one pool is an error: there is one source)."""
    check_calibration(how)
    if len(specs) <= 1:
        if per_source_k is not None:
            raise InstaError("--per-source-k takes that many tasks from each pool of a union; give several --pool")
        return selector
    if getattr(selector, "budget", None) is not None:
        if per_source_k is not None:
            raise InstaError("--per-source-k shares k tasks among the pools; --budget selects examples (use one)")
        return selector  # example-level: examples compete by their own similarity
    if selector.method == "all":
        if per_source_k is not None:
            raise InstaError("--per-source-k takes the best tasks of each pool; method 'all' takes every task")
        return selector  # every task of every pool: nothing to compare
    if selector.method == "random" and per_source_k is None:
        return selector  # random scores have no style to calibrate
    return CalibratedSelector(selector, how, per_source_k)
