"""Baseline selectors behind the same interface as INSTA (:class:`insta.select.Selector`).

* ``random``  — seeded random order (the floor any selector must clear);
* ``all``     — every task (for training comparisons; no order);
* ``bm25``    — BM25 (bm25s) between target and source instruction texts, aggregated per
  task like the embedding scores;
* ``hybrid``  — reciprocal-rank fusion of ``bm25`` and ``insta`` (see :class:`HybridSelector`);
* ``hybrid-less``, ``hybrid-rds`` — ``hybrid`` fused with a model-aware ranking of the target's
  examples (:mod:`insta.example_select`, where ``samples``, ``less`` and ``rds`` live).
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict

import numpy as np

from .encoder import Embedder, Encoder, ProgressFn, embed_pool
from .errors import InstaError, unknown
from .select import AGGREGATIONS, Aggregated, Match, Scores, Selector, Target, aggregate_matrix
from .tasks import TaskPool


def import_bm25s():
    """bm25s, imported without what insta never uses of it, which would cost ~170 ms of every
    command's start-up: its tqdm progress bars (we always pass show_progress=False;
    DISABLE_TQDM is bm25s's own switch), scipy (for its 'scipy' CSC backend; insta asks for
    the 'numpy' backend, bm25s's default, explicitly) and importlib.metadata (bm25s.version
    looks its version up there; the same value is read from its dist-info folder's name)."""
    if "bm25s" in sys.modules:
        return sys.modules["bm25s"]
    import importlib.util
    import re
    import types

    before = os.environ.get("DISABLE_TQDM")
    blocked = [] if "scipy.sparse" in sys.modules else ["scipy.sparse"]
    os.environ["DISABLE_TQDM"] = "1"
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment]  # importing it fails, as when it is absent
    spec = importlib.util.find_spec("bm25s")
    if spec is not None and spec.origin and "bm25s.version" not in sys.modules:
        site = os.path.dirname(os.path.dirname(spec.origin))
        found = [m.group(1) for f in os.listdir(site) if (m := re.fullmatch(r"bm25s-([^-]+)\.dist-info", f))]
        if len(found) == 1:
            version = types.ModuleType("bm25s.version")
            version.__version__ = found[0]  # type: ignore[attr-defined]
            sys.modules["bm25s.version"] = version
    try:
        import bm25s
    finally:
        if before is None:
            os.environ.pop("DISABLE_TQDM", None)
        else:
            os.environ["DISABLE_TQDM"] = before
        for name in blocked:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]
    return bm25s


def _target_seed(seed: int, target_id: str) -> int:
    """A per-target seed, stable across runs and machines."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{target_id}".encode()).digest()[:8], "little")


def _no_match(i: int) -> None:
    return None


class RandomSelector(Selector):
    """Seeded random ranking; the same seed and target give the same order everywhere."""

    method = "random"

    def __init__(self, seed: int = 0):
        super().__init__()
        self.seed = seed

    def score_many(self, targets: Sequence[Target], k: int = 5, progress: ProgressFn | None = None) -> list[Scores]:
        n = len(self._require_fit())
        out = []
        for t in targets:
            rng = np.random.default_rng(_target_seed(self.seed, t.id))
            out.append(Scores(rng.random(n), np.zeros(n), _no_match))
        return out


class AllSelector(Selector):
    """Every task of the pool, in pool order: the 'train on everything' comparison."""

    method = "all"

    def score_many(self, targets: Sequence[Target], k: int = 5, progress: ProgressFn | None = None) -> list[Scores]:
        n = len(self._require_fit())
        order = -np.arange(n, dtype=np.float64)  # keeps pool order under the shared sort
        return [Scores(np.ones(n), order, _no_match) for _ in targets]

    def iter_select(self, targets, k=5, exclusions=None, n_instructions=None, progress=None):
        # k does not apply: 'all' returns every candidate
        return super().iter_select(targets, len(self._require_fit()), exclusions, n_instructions, progress)


class BM25Selector(Selector):
    """BM25 over instruction texts (bm25s, English stopwords), aggregated per task."""

    method = "bm25"

    def __init__(self, *, aggregate: str = "max", vote_depth: int | None = None, k1: float = 1.5, b: float = 0.75):
        super().__init__()
        if aggregate not in AGGREGATIONS:
            raise unknown("aggregation", aggregate, AGGREGATIONS)
        self.aggregate = aggregate
        self.vote_depth = vote_depth
        self.k1, self.b = k1, b

    def fit(self, pool: TaskPool, progress: ProgressFn | None = None) -> BM25Selector:
        bm25s = import_bm25s()

        self._texts = [ins.text for t in pool for ins in t.instructions]
        self._names = [ins.name for t in pool for ins in t.instructions]
        tokens = bm25s.tokenize(self._texts, stopwords="en", show_progress=False)
        self._retriever = None  # no word in the whole pool (stopwords, single letters only): every score is 0
        if tokens.vocab:  # (bm25s cannot index an empty vocabulary: a RuntimeWarning, then a ValueError)
            self._retriever = bm25s.BM25(k1=self.k1, b=self.b, csc_backend="numpy")
            self._retriever.index(tokens, show_progress=False)
        self._counts = np.array([len(t.instructions) for t in pool])
        self._starts = np.concatenate([[0], np.cumsum(self._counts)[:-1]]).astype(np.int64)
        self._owner = np.repeat(np.arange(len(pool)), self._counts)
        self._set_pool(pool)
        return self

    def _query(self, texts: list[str]) -> np.ndarray:
        bm25s = import_bm25s()

        queries = bm25s.tokenize(texts, stopwords="en", show_progress=False, return_ids=False)
        n = len(self._texts)
        # a query of stopwords only has no terms, a pool without words has no index: nothing matches
        return np.stack([np.asarray(self._retriever.get_scores(q), dtype=np.float64)
                         if q and self._retriever is not None else np.zeros(n) for q in queries])

    def score_many(self, targets: Sequence[Target], k: int = 5, progress: ProgressFn | None = None) -> list[Scores]:
        self._require_fit()
        out = []
        for done, tg in enumerate(targets, start=1):
            sims = self._query(tg.instructions)
            agg = aggregate_matrix(sims, self._starts, self._counts, self._owner, self.aggregate, self.vote_depth or k,
                                   self.arrays.tie_order, self._excluded_mask(tg, self.aggregate))
            out.append(Scores(agg.score, agg.best, self._explainer(tg, agg)))
            if progress:
                progress(done, len(targets))
        return out

    def _explainer(self, target: Target, agg: Aggregated):
        def explain(i: int) -> Match:
            t_idx, s_idx = agg.pair(i)
            return Match(target.instructions[t_idx], self._texts[s_idx], self._names[s_idx], round(float(agg.best[i]), 6), "bm25")

        return explain

    def _select_one(self, target, scores, req):
        sel = super()._select_one(target, scores, req)
        if sel.results and all(r.match is not None and r.match.similarity <= 0 for r in sel.results):
            sel.warnings.append("bm25: no word of the target's instructions (stopwords aside) occurs in any candidate "
                                "task: every score is 0, so the tasks come in id order, not ranked; rephrase the "
                                "instruction, or use --method insta or hybrid")
        return sel


class FusedSelector(Selector):
    """Several rankings fused by reciprocal rank (Cormack, Clarke & Büttcher, 2009): a task's
    score is the sum over the parts of ``1/(60 + its rank under that part)``, ranks counted over
    the pool's tasks (tied scores share a rank). The constant 60 is the one of that paper, fixed
    a priori; nothing is tuned on benchmark targets. Explanations carry every part's match and
    rank; the first part's match leads."""

    method = "fused"
    RRF_K = 60

    def __init__(self, parts: Sequence[Selector], aggregate: str | None = None):
        super().__init__()
        self.parts = list(parts)
        self.aggregate = aggregate

    def fit(self, pool: TaskPool, progress: ProgressFn | None = None) -> FusedSelector:
        for i, part in enumerate(self.parts):
            part.fit(pool, progress if i == 0 else None)
        # one set of pool arrays for all (the sort of a million ids is not done once per part)
        self._set_pool(pool, self.parts[0].arrays)
        for part in self.parts[1:]:
            part._set_pool(pool, self.arrays)
        return self

    @staticmethod
    def _ranks(scores: Scores) -> np.ndarray:
        """1-based rank of every task of the pool under one side's scores; equal scores share
        a rank (1 + how many score higher), so a tie (e.g. no lexical match at all) favours no task."""
        descending = np.sort(-scores.score)
        return np.searchsorted(descending, -scores.score, side="left") + 1

    def score_many(self, targets: Sequence[Target], k: int = 5, progress: ProgressFn | None = None) -> list[Scores]:
        self._require_fit()
        excluding = getattr(self, "_excluding", None)
        sides = []
        for i, part in enumerate(self.parts):  # each side knows the exclusions (its vote counts candidates only)
            with part.excluding(excluding) if excluding else nullcontext():
                sides.append(part.score_many(targets, k, progress if i == 0 else None))
        out = []
        for j in range(len(targets)):
            scores = [side[j] for side in sides]
            ranks = [self._ranks(sc) for sc in scores]
            fused = sum(1.0 / (self.RRF_K + r) for r in ranks)
            out.append(self._fused_scores(scores, ranks, fused))
        return out

    def _fused_scores(self, scores: list[Scores], ranks: list[np.ndarray], fused: np.ndarray) -> Scores:
        measure = f"rrf({', '.join(p.method if p.method != 'insta' else 'cosine' for p in self.parts)})"

        def explain(i: int) -> Match | None:
            matches = [sc.explain(i) for sc in scores]
            lead = next((m for m in matches if m is not None), None)
            if lead is None:
                return None
            parts = [{**asdict(m), "rank": int(r[i])} for m, r in zip(matches, ranks) if m is not None]
            for p in parts:
                p.pop("parts", None)
            return Match(lead.target_instruction, lead.source_instruction, lead.source_instruction_name,
                         round(float(fused[i]), 6), measure, parts)

        return Scores(fused, scores[0].tiebreak, explain)


class HybridSelector(FusedSelector):
    """Lexical and dense rankings fused by reciprocal rank (see :class:`FusedSelector`): BM25
    and the embedder fail on different tasks (topic words vs paraphrase), and fusion keeps
    what either ranks high."""

    method = "hybrid"

    def __init__(self, encoder: Embedder | None = None, *, aggregate: str = "max", vote_depth: int | None = None):
        from .select import InstructionSelector

        self.dense = InstructionSelector(encoder, aggregate=aggregate, vote_depth=vote_depth)
        self.lexical = BM25Selector(aggregate=aggregate, vote_depth=vote_depth)
        super().__init__([self.dense, self.lexical], aggregate)
        self.encoder = self.dense.encoder


class ModelAwareHybrid(FusedSelector):
    """``hybrid`` (BM25 and INSTA over instructions) fused with a model-aware ranking of the
    target's examples (``less`` or ``rds``), all three by reciprocal rank: for users who have
    both an instruction and a few examples. The example side records what it saw."""

    def __init__(self, encoder: Embedder | None = None, *, aggregate: str = "max", vote_depth: int | None = None,
                 model_aware: Selector):
        from .select import InstructionSelector

        self.dense = InstructionSelector(encoder, aggregate=aggregate, vote_depth=vote_depth)
        self.lexical = BM25Selector(aggregate=aggregate, vote_depth=vote_depth)
        self.examples = model_aware
        super().__init__([self.dense, self.lexical, model_aware], aggregate)
        self.encoder = self.dense.encoder
        self.method = f"hybrid-{model_aware.method}"

    def _excluded(self, target, req):
        return self.examples._excluded(target, req)

    def describe(self) -> dict:
        return self.examples.describe()

    def _fused_scores(self, scores, ranks, fused):
        from .example_select import ExampleScores

        plain = super()._fused_scores(scores, ranks, fused)
        side = scores[-1]
        return ExampleScores(plain.score, plain.tiebreak, plain.explain, side.queries, side.sims)

    def _select_one(self, target, scores, req):
        sel = super()._select_one(target, scores, req)
        sel.target_examples = [q.to_dict() for q in scores.queries]
        return sel


def _model_aware_hybrid(name: str, encoder: Embedder | None, aggregate: str, vote_depth: int | None, seed: int,
                        features, budget: int | None) -> ModelAwareHybrid:
    from .example_select import LessSelector, RdsSelector

    if budget is not None:
        raise InstaError(f"--budget applies to less, rds and samples (example-level selection); hybrid-{name} ranks tasks")
    side = {"less": LessSelector, "rds": RdsSelector}[name](seed=seed, features=features)
    return ModelAwareHybrid(encoder, aggregate=aggregate, vote_depth=vote_depth, model_aware=side)


def hybrid_less(encoder: Embedder | None = None, *, aggregate: str = "max", vote_depth: int | None = None,
                seed: int = 0, features=None, budget: int | None = None) -> ModelAwareHybrid:
    return _model_aware_hybrid("less", encoder, aggregate, vote_depth, seed, features, budget)


def hybrid_rds(encoder: Embedder | None = None, *, aggregate: str = "max", vote_depth: int | None = None,
               seed: int = 0, features=None, budget: int | None = None) -> ModelAwareHybrid:
    return _model_aware_hybrid("rds", encoder, aggregate, vote_depth, seed, features, budget)
