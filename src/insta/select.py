"""Task selection: score every source task of a pool against a target, keep the top-k.

Every selector has the same lifecycle (one object, as DSIR does it): construct →
``fit(pool)`` (e.g. encode every instruction of the pool, served from the embedding cache)
→ ``select(target, k)`` / ``select_many(targets, k)``, or ``score_many(targets)`` for the
raw per-task scores the benchmark ranks by. This module holds the shared machinery and
the INSTA selector; the baselines live in :mod:`insta.baselines`.

INSTA's score: the cosine between each target instruction and each source instruction,
aggregated per source task by

* ``max``  — the best-matching pair (default; the paper's effective rule),
* ``mean`` — the mean over all pairs,
* ``vote`` — rank vote: each target instruction ranks all source instructions, and each
  of its top-``vote_depth`` instructions (default: k) casts a vote for its task; score =
  share of votes. Ties broken by the best pair's cosine.

Every result carries its explanation: the target and source instruction that matched
best, and their cosine. Ties are broken deterministically (score, best cosine, task id).
"""

from __future__ import annotations

import abc
import fnmatch
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from .encoder import Embedder, Encoder, ProgressFn
from .errors import InstaError, did_you_mean, unknown
from .io import check_text
from .tasks import Task, TaskPool, clean_text, family

AGGREGATIONS = ("max", "mean", "vote")


@dataclass
class Target:
    """What we select for: an id and one or more instruction texts."""

    id: str
    instructions: list[str]
    label: str | None = None
    dataset: str | None = None
    instances: list[dict[str, Any]] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.instructions, str) or not all(isinstance(t, str) for t in self.instructions):
            raise InstaError(f"target {self.id!r}: instructions must be a list of texts")
        cleaned = [check_text(clean_text(t), f"target {self.id!r}: instruction {i + 1}")
                   for i, t in enumerate(self.instructions)]
        if not cleaned or any(not t for t in cleaned):
            raise InstaError(f"target {self.id!r}: instructions must be non-empty text")
        self.instructions = cleaned

    @classmethod
    def from_task(cls, task: Task) -> Target:
        return cls(id=task.id, instructions=task.texts, label=task.label, dataset=task.dataset, instances=task.instances)

    @classmethod
    def from_text(cls, texts: str | Sequence[str], id: str = "target") -> Target:
        texts = [texts] if isinstance(texts, str) else list(texts)
        for t in texts:
            if not t or not str(t).strip():
                raise InstaError("the target instruction is empty; pass non-blank text with --instruction")
        return cls(id=id, instructions=list(texts))


@dataclass
class Match:
    """Why a task was selected: the closest (target text, source text) pair and their
    similarity under the selector's measure (``cosine`` for embeddings, ``bm25``, ...)."""

    target_instruction: str
    source_instruction: str
    source_instruction_name: str | None
    similarity: float
    measure: str = "cosine"
    #: for a fused score (``hybrid``): the match of each side, with its rank among the pool's tasks
    parts: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Selected:
    rank: int
    task_id: str
    label: str | None
    dataset: str | None
    score: float
    match: Match | None


@dataclass
class Selection:
    target: Target
    method: str
    aggregate: str
    k: int
    n_candidates: int
    results: list[Selected]
    warnings: list[str] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return [r.task_id for r in self.results]

    def to_dict(self) -> dict[str, Any]:
        target = {k: v for k, v in vars(self.target).items() if k != "instances"}
        return {
            "target": target,
            "method": self.method,
            "aggregate": self.aggregate,
            "k": self.k,
            "n_candidates": self.n_candidates,
            "warnings": self.warnings,
            "results": [asdict(r) for r in self.results],
        }


@dataclass
class Exclusions:
    """Tasks that must never be selected: ids, glob patterns on ids, labels, and optionally
    the target's sibling tasks (same source dataset)."""

    ids: Sequence[str] = ()
    patterns: Sequence[str] = ()
    labels: Sequence[str] = ()
    siblings: bool = False

    def mask(self, tasks: Sequence[Task], target: Target) -> np.ndarray:
        ids = set(self.ids) | {target.id}
        labels = set(self.labels)
        keep = np.ones(len(tasks), dtype=bool)
        for i, t in enumerate(tasks):
            if (
                t.id in ids
                or any(fnmatch.fnmatchcase(t.id, p) for p in self.patterns)
                or (t.label is not None and t.label in labels)
                or (self.siblings and family(t) == family(target))
            ):
                keep[i] = False
        return keep

    def unmatched(self, pool: TaskPool) -> list[str]:
        """Warnings for exclusions that match no task of the pool (a typo excludes nothing)."""
        out = [f"--exclude {i!r} matches no task of {pool.name}{did_you_mean(i, pool.ids)}" for i in self.ids if i not in pool]
        out += [f"--exclude {p!r} matches no task of {pool.name}" for p in self.patterns
                if not any(fnmatch.fnmatchcase(t, p) for t in pool.ids)]
        labels = {t.label for t in pool}
        out += [f"--exclude-label {lab!r} is the label of no task of {pool.name}{did_you_mean(lab, [x for x in labels if x])}"
                for lab in self.labels if lab not in labels]
        return out


def check_k(k: int) -> None:
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k <= 0:
        raise InstaError(f"k must be a positive integer, got {k!r}")


@dataclass
class Scores:
    """A selector's verdict on every task of the fitted pool for one target.

    ``score`` orders the tasks (higher first); ``tiebreak`` breaks equal scores (then the
    task id does); ``explain(i)`` gives the match behind task i's score, if the selector has one.
    """

    score: np.ndarray
    tiebreak: np.ndarray
    explain: Callable[[int], Match | None]


def order_candidates(scores: Scores, ids: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Candidate positions (into ``candidates``) sorted best first: score, tiebreak, id."""
    return np.lexsort((ids[candidates], -scores.tiebreak[candidates], -scores.score[candidates]))


def aggregate_matrix(sims: np.ndarray, starts: np.ndarray, counts: np.ndarray, owner: np.ndarray,
                     how: str, depth: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Aggregate a (target instructions x source instructions) similarity matrix per task.

    Returns (score, best pair value, flat index of the best pair) per task; source
    instructions of one task are contiguous (``starts``/``counts``), ``owner`` maps each
    source instruction to its task.
    """
    n_t, n_s = sims.shape
    col_best = sims.max(axis=0)
    col_arg = sims.argmax(axis=0)
    task_best = np.maximum.reduceat(col_best, starts)
    # the column holding each task's best value: first column (by position) that reaches it
    order = np.lexsort((np.arange(n_s), -col_best, owner))
    first = order[starts]  # owner-sorted blocks keep the tasks' order
    best_flat = col_arg[first] * n_s + first
    if how == "max":
        score = task_best
    elif how == "mean":
        score = np.add.reduceat(sims.sum(axis=0), starts) / (counts * n_t)
    elif how == "vote":
        depth = max(1, min(depth, n_s))
        top = np.argsort(-sims, axis=1, kind="stable")[:, :depth]
        votes = np.bincount(owner[top.ravel()], minlength=len(starts)).astype(np.float64)
        score = votes / (n_t * depth)
    else:
        raise unknown("aggregation", how, AGGREGATIONS)
    return score.astype(np.float64), task_best.astype(np.float64), best_flat


class Selector(abc.ABC):
    """Base class: subclasses implement ``score_many`` (and ``fit`` when they index the pool);
    ranking, exclusions, explanations and warnings are shared."""

    method = "base"
    aggregate: str | None = None

    def __init__(self) -> None:
        self.pool: TaskPool | None = None

    def fit(self, pool: TaskPool, progress: ProgressFn | None = None) -> Selector:
        self.pool = pool
        return self

    @abc.abstractmethod
    def score_many(self, targets: Sequence[Target], k: int = 5, progress: ProgressFn | None = None) -> list[Scores]:
        """One :class:`Scores` per target, over every task of the fitted pool."""

    def _require_fit(self) -> TaskPool:
        if self.pool is None:
            raise RuntimeError("call fit(pool) before selecting")
        return self.pool

    def _select_one(self, target: Target, scores: Scores, k: int, exclusions: Exclusions | None) -> Selection:
        pool = self._require_fit()
        keep = (exclusions or Exclusions()).mask(list(pool), target)
        candidates = np.flatnonzero(keep)
        if len(candidates) == 0:
            raise InstaError(f"target {target.id!r}: every task of {pool.name} is excluded; nothing to select")
        warnings = []
        if k > len(candidates):
            warnings.append(f"k={k} is larger than the {len(candidates)} candidate tasks; returning all of them")
        ids = np.array(pool.ids)
        order = order_candidates(scores, ids, candidates)[:k]
        results = []
        for rank, j in enumerate(order, start=1):
            i = int(candidates[j])
            task = pool[i]
            results.append(Selected(rank, task.id, task.label, task.dataset, round(float(scores.score[i]), 6), scores.explain(i)))
        return Selection(target, self.method, self.aggregate or "", k, len(candidates), results, warnings)

    def select(self, target: Target, k: int = 5, exclusions: Exclusions | None = None,
               n_instructions: int | None = None) -> Selection:
        """The top-k source tasks for ``target`` with explanations."""
        return self.select_many([target], k, exclusions, n_instructions)[0]

    def select_many(self, targets: Iterable[Target], k: int = 5, exclusions: Exclusions | None = None,
                    n_instructions: int | None = None, progress: ProgressFn | None = None) -> list[Selection]:
        """Select for many targets (their instructions are processed in one batch)."""
        check_k(k)
        self._require_fit()
        targets = [truncate(t, n_instructions) for t in targets]
        all_scores = self.score_many(targets, k, progress=progress)
        selections = [self._select_one(t, s, k, exclusions) for t, s in zip(targets, all_scores)]
        unmatched = exclusions.unmatched(self._require_fit()) if exclusions else []
        for s in selections:
            s.warnings[:0] = unmatched
        return selections


def truncate(target: Target, n_instructions: int | None) -> Target:
    """The target with only its first ``n_instructions`` instructions (all if None)."""
    if n_instructions is None:
        return target
    if n_instructions <= 0:
        raise InstaError(f"the number of target instructions must be positive, got {n_instructions}")
    return replace(target, instructions=target.instructions[:n_instructions])


class InstructionSelector(Selector):
    """INSTA: rank the tasks of a pool by instruction similarity to a target."""

    method = "insta"

    def __init__(self, encoder: Embedder | None = None, *, aggregate: str = "max", vote_depth: int | None = None):
        super().__init__()
        if aggregate not in AGGREGATIONS:
            raise unknown("aggregation", aggregate, AGGREGATIONS)
        self.encoder: Embedder = encoder or Encoder()
        self.aggregate = aggregate
        self.vote_depth = vote_depth

    def fit(self, pool: TaskPool, progress: ProgressFn | None = None) -> InstructionSelector:
        """Embed every instruction of the pool (cached on disk by model and text)."""
        self._texts = [ins.text for t in pool for ins in t.instructions]
        self._names = [ins.name for t in pool for ins in t.instructions]
        self._embeddings = self.encoder.encode(self._texts, progress=progress)
        self._counts = np.array([len(t.instructions) for t in pool])
        self._starts = np.concatenate([[0], np.cumsum(self._counts)[:-1]]).astype(np.int64)
        self._owner = np.repeat(np.arange(len(pool)), self._counts)
        self.pool = pool
        return self

    def score_many(self, targets: Sequence[Target], k: int = 5, progress: ProgressFn | None = None) -> list[Scores]:
        self._require_fit()
        texts = [t for tg in targets for t in tg.instructions]
        emb = self.encoder.encode(texts, progress=progress) if texts else np.zeros((0, 1), dtype=np.float32)
        out, pos = [], 0
        for tg in targets:
            n = len(tg.instructions)
            out.append(self._scores(tg, emb[pos:pos + n], k))
            pos += n
        return out

    def _scores(self, target: Target, t_emb: np.ndarray, k: int) -> Scores:
        sims = t_emb @ self._embeddings.T
        score, best, flat = aggregate_matrix(sims, self._starts, self._counts, self._owner, self.aggregate,
                                             self.vote_depth or k)
        n_src = sims.shape[1]

        def explain(i: int) -> Match:
            t_idx, s_idx = divmod(int(flat[i]), n_src)
            return Match(target.instructions[t_idx], self._texts[s_idx], self._names[s_idx], round(float(best[i]), 6))

        return Scores(score, best, explain)
