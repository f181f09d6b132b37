"""Selection from *examples*: a target's examples against the pool's examples under one
representation (:mod:`insta.lm_features`: ``grad`` for ``less``, ``hidden`` for ``rds``; sentence
embeddings for ``samples``).

* task level (``-k``): a source task's score aggregates its examples' similarities to the
  target's examples (``mean``, the default: LESS's own score of an example is its mean
  similarity to the query examples; ``max``: the best pair; ``vote``), then top-k as for
  instructions; the explanation names the closest (target example, source example) pair.
* example level (``--budget N``): N examples by round-robin over the target's examples (each
  query example in turn takes its most similar example not yet taken: RDS+'s selector, the
  study's best at small budgets), from the examples sampled per task; the selection lists
  them per task, and ``insta mix`` builds a mixture of exactly those examples.

Every selection records the target examples the selector saw (``target_examples``), so that
evaluation leaves them out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import FeatureConfig
from .errors import InstaError, NoExamples, unknown
from .examples import Example, query_examples, task_sample
from .lm_features import Gradients, HiddenStates, Representation, SentenceExamples
from .search import positions
from .select import AGGREGATIONS, Match, Request, Scores, Selected, Selection, Selector, Target, aggregate_matrix

#: the methods that work from an instruction alone, for the message when a target has no examples
INSTRUCTION_METHODS = "hybrid, insta, bm25"


@dataclass
class ExampleScores(Scores):
    queries: list[Example] = None  # type: ignore[assignment]
    sims: np.ndarray = None  # type: ignore[assignment]  # (query examples x pool examples)


class ExampleSelector(Selector):
    """Selection from examples under a :class:`insta.lm_features.Representation`."""

    method = "examples"

    def __init__(self, representation: Representation, *, aggregate: str = "mean", vote_depth: int | None = None,
                 per_task: int = 16, per_target: int = 8, seed: int = 0, budget: int | None = None,
                 mask_own: bool = False):
        super().__init__()
        from .checks import check_int

        if aggregate not in AGGREGATIONS:
            raise unknown("aggregation", aggregate, AGGREGATIONS)
        check_int(per_task, "examples per task (--examples-per-task)", min=1)
        check_int(per_target, "query examples (--query-examples)", min=1)
        if budget is not None:
            check_int(budget, "--budget", min=1)
        self.representation = representation
        self.measure = f"cosine ({representation.name})"
        self.aggregate: str | None = aggregate  # as reported in selections
        self.how = aggregate  # as applied
        self.vote_depth = vote_depth
        self.per_task, self.per_target, self.seed, self.budget = per_task, per_target, seed, budget
        self.mask_own = mask_own

    def describe(self) -> dict[str, Any]:
        return {**self.representation.describe(), "examples_per_task": self.per_task, "query_examples": self.per_target}

    def fit(self, pool, progress=None) -> ExampleSelector:
        examples: list[Example] = []
        counts = np.zeros(len(pool), dtype=np.int64)
        for i, task in enumerate(pool):
            got = task_sample(task, self.per_task, self.seed)
            examples.extend(got)
            counts[i] = len(got)
        if not examples:
            raise NoExamples(f"method {self.method!r} needs examples of the pool's tasks, and no task of {pool.name} has "
                             "any (BIG-bench and NIV2 task files do: bigbench:..., niv2:DIR; P3 entries have none); "
                             f"from instructions alone use {INSTRUCTION_METHODS}")
        self._examples = examples
        self._counts = counts
        present = np.flatnonzero(counts > 0)
        self._present = present
        self._starts = np.concatenate([[0], np.cumsum(counts[present])[:-1]]).astype(np.int64)
        self._owner_present = np.repeat(np.arange(len(present)), counts[present])
        self._owner = present[self._owner_present]  # each example's task position in the pool
        self._no_examples = np.flatnonzero(counts == 0)
        self.representation.prepare(examples, progress)
        self._vectors = self.representation.pool_vectors(examples, progress)
        self._set_pool(pool)
        return self

    # -- scoring -----------------------------------------------------------------------------
    def queries(self, target: Target) -> list[Example]:
        found = query_examples(target, self.per_target, self.seed)
        if not found:
            raise NoExamples(f"method {self.method!r} needs examples of the target {target.id!r}, and it has none; give "
                             "them with --target-examples FILE.jsonl (one {\"input\": ..., \"output\": ...} per line), "
                             f"or use a method that works from the instruction alone: {INSTRUCTION_METHODS}")
        return found

    def score_many(self, targets: Sequence[Target], k: int = 5, progress=None) -> list[Scores]:
        pool = self._require_fit()
        out = []
        for done, target in enumerate(targets, start=1):
            queries = self.queries(target)
            sims = self.representation.query_vectors(queries) @ np.asarray(self._vectors).T
            sims = sims.astype(np.float64)
            if self.mask_own and target.id in pool:  # the target's own examples vote for no task
                sims[:, self._owner == pool.ids.index(target.id)] = -np.inf
            excluded = self._excluded_mask(target, self.how)
            agg = aggregate_matrix(sims, self._starts, self._counts[self._present], self._owner_present,
                                   self.how, self.vote_depth or k, self.arrays.tie_order[self._present],
                                   None if excluded is None else excluded[self._present])
            score = np.full(len(pool), -np.inf)
            best = np.full(len(pool), -np.inf)
            score[self._present], best[self._present] = agg.score, agg.best
            out.append(ExampleScores(score, best, self._explainer(queries, agg), queries, sims))
            if progress:
                progress(done, len(targets))
        return out

    def _explainer(self, queries: list[Example], agg):
        where = {int(p): j for j, p in enumerate(self._present)}

        def explain(i: int) -> Match | None:
            j = where.get(i)
            if j is None or not np.isfinite(agg.best[j]):
                return None
            q, s = agg.pair(j)
            src = self._examples[s]
            return Match(queries[q].short(), src.short(), f"example {src.index}", round(float(agg.best[j]), 6),
                         self.measure)

        return explain

    # -- selection ---------------------------------------------------------------------------
    def _excluded(self, target: Target, req: Request) -> tuple[np.ndarray, int]:
        pool = self._require_fit()
        excluded = positions(req.static, self.arrays.excluded_for(target, req.exclusions.siblings), self._no_examples)
        n_candidates = len(pool) - len(excluded)
        if n_candidates == 0 and not req.batch:
            raise InstaError(f"target {target.id!r}: no task of {pool.name} with examples is left after the exclusions; "
                             "nothing to select")
        return excluded, n_candidates

    def _select_one(self, target: Target, scores: ExampleScores, req: Request) -> Selection:
        if self.budget is None:
            sel = super()._select_one(target, scores, req)
        else:
            sel = self._select_examples(target, scores, req)
        sel.target_examples = [q.to_dict() for q in scores.queries]
        if len(self._no_examples):
            sel.warnings.append(f"{len(self._no_examples)} task(s) of the pool have no examples and were never candidates")
        return sel

    def _select_examples(self, target: Target, scores: ExampleScores, req: Request) -> Selection:
        """Round-robin over the target's examples: each in turn takes its most similar pool
        example not yet taken (equal similarities: task id, then the example's position)."""
        pool = self._require_fit()
        excluded, n_candidates = self._excluded(target, req)
        allowed = np.ones(len(pool), dtype=bool)
        allowed[excluded] = False
        usable = allowed[self._owner] & np.isfinite(scores.sims).all(axis=0)
        budget = int(self.budget or 0)
        index = np.array([ex.index for ex in self._examples])
        tie = self.arrays.tie_order[self._owner]
        orders = [np.lexsort((index, tie, -row)) for row in scores.sims]
        orders = [o[usable[o]] for o in orders]
        taken: dict[int, tuple[int, float]] = {}  # pool example -> (query, similarity), in pick order
        pointers = [0] * len(orders)
        while len(taken) < budget and any(p < len(o) for p, o in zip(pointers, orders)):
            for q, order in enumerate(orders):
                while pointers[q] < len(order) and int(order[pointers[q]]) in taken:
                    pointers[q] += 1
                if pointers[q] < len(order) and len(taken) < budget:
                    e = int(order[pointers[q]])
                    taken[e] = (q, float(scores.sims[q, e]))
        by_task: dict[int, list[int]] = {}
        for e in taken:
            by_task.setdefault(int(self._owner[e]), []).append(e)
        results = []
        for rank, (t, picked) in enumerate(by_task.items(), start=1):
            task = pool[t]
            best = max(picked, key=lambda e: taken[e][1])
            q, sim = taken[best]
            match = Match(scores.queries[q].short(), self._examples[best].short(), f"example {self._examples[best].index}",
                          round(sim, 6), self.measure)
            examples = [{"index": self._examples[e].index, "key": self._examples[e].key,
                         "similarity": round(taken[e][1], 6), "query": taken[e][0]} for e in picked]
            results.append(Selected.of(rank, task, sim, match, examples))
        sel = self._selection(target, req, n_candidates, results)
        sel.warnings = [w for w in sel.warnings if not w.startswith("k=")]
        sel.k, sel.budget = len(results), budget
        if len(taken) < budget:
            sel.warnings.append(f"budget={budget} is larger than the {len(taken)} candidate examples sampled "
                                f"({self.per_task} per task, --examples-per-task); returning all of them")
        return sel


class SamplesSelector(ExampleSelector):
    """Retrieval-of-Experts: sentence embeddings of up to 32 target instances against up to 100
    instances per source task; each target instance's nearest source instance votes for its
    task (``vote`` with depth 1), score = share of the votes."""

    method = "samples"

    def __init__(self, encoder=None, *, per_task: int = 100, per_target: int = 32, seed: int = 0,
                 budget: int | None = None):
        super().__init__(SentenceExamples(encoder), aggregate="vote", vote_depth=1, per_task=per_task,
                         per_target=per_target, seed=seed, budget=budget, mask_own=True)
        self.encoder = self.representation.encoder
        self.measure = "cosine (instances)"
        self.aggregate = None  # not an aggregation choice of the user's: the votes of nearest neighbours


class ModelAwareSelector(ExampleSelector):
    """Selection from examples under a representation of the user's LM (``representation``)."""

    representation_class: type[Representation] = Representation

    def __init__(self, *, aggregate: str = "mean", vote_depth: int | None = None, seed: int = 0,
                 features: FeatureConfig | None = None, budget: int | None = None, cache=None):
        cfg = features or FeatureConfig(seed=seed)
        super().__init__(self.representation_class(cfg, cache=cache), aggregate=aggregate, vote_depth=vote_depth,
                         per_task=cfg.per_task, per_target=cfg.query_examples, seed=cfg.seed, budget=budget)


class LessSelector(ModelAwareSelector):
    """LESS: projected LoRA gradients (Adam-preconditioned for the pool) of the user's LM."""

    method = "less"
    representation_class = Gradients


class RdsSelector(ModelAwareSelector):
    """RDS+: position-weighted mean hidden states of the user's LM."""

    method = "rds"
    representation_class = HiddenStates
