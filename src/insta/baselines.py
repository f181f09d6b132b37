"""Baseline selectors behind the same interface as INSTA (:class:`insta.select.Selector`).

* ``random``  — seeded random order (the floor any selector must clear);
* ``all``     — every task (for training comparisons; no order);
* ``bm25``    — BM25 (bm25s) between target and source instruction texts, aggregated per
  task like the embedding scores;
* ``hybrid``  — reciprocal-rank fusion of ``bm25`` and ``insta`` (see :class:`HybridSelector`);
* ``samples`` — Retrieval-of-Experts style: needs target *instances*. Embed up to 32 target
  instances and up to 100 instances per source task; each target instance's nearest source
  instance votes for its task; score = share of the votes.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Sequence
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
        # a query of stopwords only has no terms: it matches nothing
        return np.stack([np.asarray(self._retriever.get_scores(q), dtype=np.float64) if q else np.zeros(n)
                         for q in queries])

    def score_many(self, targets: Sequence[Target], k: int = 5, progress: ProgressFn | None = None) -> list[Scores]:
        self._require_fit()
        out = []
        for done, tg in enumerate(targets, start=1):
            sims = self._query(tg.instructions)
            agg = aggregate_matrix(sims, self._starts, self._counts, self._owner, self.aggregate, self.vote_depth or k,
                                   self.arrays.tie_order)
            out.append(Scores(agg.score, agg.best, self._explainer(tg, agg)))
            if progress:
                progress(done, len(targets))
        return out

    def _explainer(self, target: Target, agg: Aggregated):
        def explain(i: int) -> Match:
            t_idx, s_idx = agg.pair(i)
            return Match(target.instructions[t_idx], self._texts[s_idx], self._names[s_idx], round(float(agg.best[i]), 6), "bm25")

        return explain


def instance_text(instance: dict) -> str:
    """The text of an instance that gets embedded: its input (targets come without labels)."""
    return " ".join(str(instance.get("input", "")).split())


class SamplesSelector(Selector):
    """Retrieval-of-Experts style selection from target *instances* (needs instances)."""

    method = "samples"

    def __init__(self, encoder: Embedder | None = None, *, per_task: int = 100, per_target: int = 32, seed: int = 0):
        super().__init__()
        self.encoder: Embedder = encoder or Encoder()
        self.per_task = per_task
        self.per_target = per_target
        self.seed = seed

    def _sample(self, instances: list[dict], n: int, key: str) -> list[str]:
        """The first n of a seeded permutation of the task's instance texts: a task's target
        sample (32) is then a subset of its source sample (100), embedded once."""
        texts = [t for t in (instance_text(x) for x in instances) if t]
        order = np.random.default_rng(_target_seed(self.seed, key)).permutation(len(texts))
        return [texts[i] for i in order[:n]]

    def fit(self, pool: TaskPool, progress: ProgressFn | None = None) -> SamplesSelector:
        with_instances = [t for t in pool if t.instances]
        if not with_instances:
            raise InstaError(
                f"method 'samples' needs task instances, and no task of {pool.name} has any "
                "(NIV2 task files do: niv2:DIR?instances=100)"
            )
        texts, owner = [], []
        for i, task in enumerate(pool):
            sample = self._sample(task.instances or [], self.per_task, task.id)
            texts.extend(sample)
            owner.extend([i] * len(sample))
        self._texts = texts
        self._owner = np.asarray(owner, dtype=np.int64)
        self._embeddings = embed_pool(self.encoder, texts, progress=progress)
        self._set_pool(pool)
        return self

    def score_many(self, targets: Sequence[Target], k: int = 5, progress: ProgressFn | None = None) -> list[Scores]:
        pool = self._require_fit()
        samples = []
        for t in targets:
            if not t.instances:
                raise InstaError(f"method 'samples' needs instances of the target {t.id!r}; it has none")
            samples.append(self._sample(t.instances, self.per_target, t.id))
        emb = self.encoder.encode([x for s in samples for x in s], progress=progress)
        own = {pool[int(i)].id for i in np.unique(self._owner)}
        out, pos = [], 0
        for t, sample in zip(targets, samples):
            t_emb = emb[pos:pos + len(sample)]
            pos += len(sample)
            sims = t_emb @ self._embeddings.T
            # the target's own instances never vote for the target's own task
            if t.id in own:
                sims[:, self._owner == pool.ids.index(t.id)] = -np.inf
            nn = sims.argmax(axis=1)
            nn_cos = sims[np.arange(len(sample)), nn]
            votes = np.bincount(self._owner[nn], minlength=len(pool)).astype(np.float64)
            best = np.full(len(pool), -1.0)
            np.maximum.at(best, self._owner[nn], nn_cos)
            out.append(Scores(votes / len(sample), best, self._explainer(sample, nn, nn_cos)))
        return out

    def _explainer(self, sample: list[str], nn: np.ndarray, nn_cos: np.ndarray):
        def explain(i: int) -> Match | None:
            hits = np.flatnonzero(self._owner[nn] == i)
            if len(hits) == 0:
                return None
            j = hits[np.argmax(nn_cos[hits])]
            return Match(sample[j], self._texts[nn[j]], "instance", round(float(nn_cos[j]), 6), "cosine (instances)")

        return explain


class HybridSelector(Selector):
    """Lexical and dense rankings fused by reciprocal rank (Cormack, Clarke & Büttcher, 2009):
    a task's score is ``1/(60 + rank under BM25) + 1/(60 + rank under INSTA)``, ranks counted
    over the pool's tasks. The constant 60 is the one of that paper, fixed a priori; nothing is
    tuned on benchmark targets. BM25 and the embedder fail on different tasks (topic words
    vs paraphrase), and fusion keeps what either ranks high. Explanations carry both matches."""

    method = "hybrid"
    RRF_K = 60

    def __init__(self, encoder: Embedder | None = None, *, aggregate: str = "max", vote_depth: int | None = None):
        super().__init__()
        from .select import InstructionSelector

        self.dense = InstructionSelector(encoder, aggregate=aggregate, vote_depth=vote_depth)
        self.lexical = BM25Selector(aggregate=aggregate, vote_depth=vote_depth)
        self.encoder = self.dense.encoder
        self.aggregate = aggregate

    def fit(self, pool: TaskPool, progress: ProgressFn | None = None) -> HybridSelector:
        self.dense.fit(pool, progress)
        self.lexical.fit(pool)
        # one set of pool arrays for the three (the sort of a million ids is not done thrice)
        self._set_pool(pool, self.dense.arrays)
        self.lexical._set_pool(pool, self.arrays)
        return self

    @staticmethod
    def _ranks(scores: Scores) -> np.ndarray:
        """1-based rank of every task of the pool under one side's scores; equal scores share
        a rank (1 + how many score higher), so a tie (e.g. no lexical match at all) favours no task."""
        descending = np.sort(-scores.score)
        return np.searchsorted(descending, -scores.score, side="left") + 1

    def score_many(self, targets: Sequence[Target], k: int = 5, progress: ProgressFn | None = None) -> list[Scores]:
        self._require_fit()
        out = []
        for target, dense, lexical in zip(targets, self.dense.score_many(targets, k, progress),
                                           self.lexical.score_many(targets, k)):
            r_dense, r_lex = self._ranks(dense), self._ranks(lexical)
            fused = 1.0 / (self.RRF_K + r_dense) + 1.0 / (self.RRF_K + r_lex)
            out.append(Scores(fused, dense.tiebreak, self._explainer(dense, lexical, r_dense, r_lex, fused)))
        return out

    @staticmethod
    def _explainer(dense: Scores, lexical: Scores, r_dense: np.ndarray, r_lex: np.ndarray, fused: np.ndarray):
        def explain(i: int) -> Match | None:
            d, lx = dense.explain(i), lexical.explain(i)
            if d is None:
                return lx
            parts = [{**asdict(m), "rank": int(r)} for m, r in ((d, r_dense[i]), (lx, r_lex[i])) if m is not None]
            for p in parts:
                p.pop("parts", None)
            return Match(d.target_instruction, d.source_instruction, d.source_instruction_name, round(float(fused[i]), 6),
                         "rrf(cosine, bm25)", parts)

        return explain
