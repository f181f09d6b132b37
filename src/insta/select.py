"""Instruction-based task selection: score every source task of a pool against a target.

Lifecycle (one object, as DSIR does it): ``InstructionSelector(...)`` → ``fit(pool)``
(encodes every instruction of the pool, served from the embedding cache when possible)
→ ``select(target, k)`` / ``select_many(targets, k)``.

Scores: the cosine between each target instruction and each source instruction,
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

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .encoder import Encoder, ProgressFn
from .errors import InstaError, unknown
from .tasks import Task, TaskPool, clean_text

AGGREGATIONS = ("max", "mean", "vote")


@dataclass
class Target:
    """What we select for: an id and one or more instruction texts."""

    id: str
    instructions: list[str]
    label: str | None = None
    dataset: str | None = None

    def __post_init__(self) -> None:
        cleaned = [clean_text(t) for t in self.instructions if t is not None]
        if not cleaned or any(not t for t in cleaned):
            raise InstaError(f"target {self.id!r}: instructions must be non-empty text")
        self.instructions = cleaned

    @classmethod
    def from_task(cls, task: Task) -> Target:
        return cls(id=task.id, instructions=task.texts, label=task.label, dataset=task.dataset)

    @classmethod
    def from_text(cls, texts: str | Sequence[str], id: str = "target") -> Target:
        texts = [texts] if isinstance(texts, str) else list(texts)
        for t in texts:
            if not t or not str(t).strip():
                raise InstaError("the target instruction is empty; pass non-blank text with --instruction")
        return cls(id=id, instructions=list(texts))


@dataclass
class Match:
    """Why a task was selected: the closest (target instruction, source instruction) pair."""

    target_instruction: str
    source_instruction: str
    source_instruction_name: str | None
    cosine: float


@dataclass
class Selected:
    rank: int
    task_id: str
    label: str | None
    dataset: str | None
    score: float
    match: Match


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
        return {
            "target": asdict(self.target),
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
                or (self.siblings and target.dataset is not None and t.dataset == target.dataset)
            ):
                keep[i] = False
        return keep


def check_k(k: int) -> None:
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k <= 0:
        raise InstaError(f"k must be a positive integer, got {k!r}")


class InstructionSelector:
    """Rank the tasks of a pool by instruction similarity to a target (INSTA)."""

    method = "insta"

    def __init__(
        self,
        encoder: Encoder | None = None,
        *,
        aggregate: str = "max",
        vote_depth: int | None = None,
    ):
        if aggregate not in AGGREGATIONS:
            raise unknown("aggregation", aggregate, AGGREGATIONS)
        self.encoder = encoder or Encoder()
        self.aggregate = aggregate
        self.vote_depth = vote_depth
        self.pool: TaskPool | None = None

    # -- fit -------------------------------------------------------------------------------
    def fit(self, pool: TaskPool, progress: ProgressFn | None = None) -> InstructionSelector:
        """Embed every instruction of the pool (cached on disk by model and text)."""
        texts = [ins.text for t in pool for ins in t.instructions]
        self._embeddings = self.encoder.encode(texts, progress=progress)
        counts = np.array([len(t.instructions) for t in pool])
        self._owner = np.repeat(np.arange(len(pool)), counts)
        self._starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        self._counts = counts
        self._texts = texts
        self._names = [ins.name for t in pool for ins in t.instructions]
        self.pool = pool
        return self

    def _require_fit(self) -> TaskPool:
        if self.pool is None:
            raise RuntimeError("call fit(pool) before select()")
        return self.pool

    # -- scoring ---------------------------------------------------------------------------
    def scores(self, target: Target, k: int = 5, target_embeddings: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-task (score, best cosine, flat index of the best pair) for a target."""
        pool = self._require_fit()
        t_emb = target_embeddings if target_embeddings is not None else self.encoder.encode(target.instructions)
        sims = t_emb @ self._embeddings.T  # (T, N_instructions)
        n_t = sims.shape[0]
        best_per_instr = sims.max(axis=0)  # best target instruction for each source instruction
        task_best = np.maximum.reduceat(best_per_instr, self._starts)
        # flat argmax of each task's block
        best_flat = np.empty(len(pool), dtype=np.int64)
        for i, (s, c) in enumerate(zip(self._starts, self._counts)):
            block = sims[:, s:s + c]
            best_flat[i] = int(np.argmax(block))
            r, col = divmod(best_flat[i], c)
            best_flat[i] = r * sims.shape[1] + s + col
        if self.aggregate == "max":
            score = task_best
        elif self.aggregate == "mean":
            score = np.add.reduceat(sims.sum(axis=0), self._starts) / (self._counts * n_t)
        else:  # vote
            depth = min(self.vote_depth or k, sims.shape[1])
            votes = np.zeros(len(pool))
            top = np.argsort(-sims, axis=1, kind="stable")[:, :depth]
            np.add.at(votes, self._owner[top.ravel()], 1.0)
            score = votes / (n_t * depth)
        return score.astype(np.float64), task_best.astype(np.float64), best_flat

    def select(
        self,
        target: Target,
        k: int = 5,
        exclusions: Exclusions | None = None,
        n_instructions: int | None = None,
        _embeddings: np.ndarray | None = None,
    ) -> Selection:
        """The top-k source tasks for ``target`` with explanations."""
        check_k(k)
        pool = self._require_fit()
        if n_instructions is not None:
            if n_instructions <= 0:
                raise InstaError(f"the number of target instructions must be positive, got {n_instructions}")
            target = Target(target.id, target.instructions[:n_instructions], target.label, target.dataset)
            if _embeddings is not None:
                _embeddings = _embeddings[:n_instructions]
        score, best, flat = self.scores(target, k, _embeddings)
        keep = (exclusions or Exclusions()).mask(list(pool), target)
        candidates = np.flatnonzero(keep)
        warnings = []
        if len(candidates) == 0:
            raise InstaError(f"target {target.id!r}: every task of {pool.name} is excluded; nothing to select")
        if k > len(candidates):
            warnings.append(f"k={k} is larger than the {len(candidates)} candidate tasks; returning all of them")
        ids = np.array([pool[int(i)].id for i in candidates])
        # deterministic order: score desc, best cosine desc, id asc
        order = np.lexsort((ids, -best[candidates], -score[candidates]))[:k]
        n_src = self._embeddings.shape[0]
        results = []
        for rank, j in enumerate(order, start=1):
            i = int(candidates[j])
            t_idx, s_idx = divmod(int(flat[i]), n_src)
            task = pool[i]
            results.append(
                Selected(
                    rank=rank,
                    task_id=task.id,
                    label=task.label,
                    dataset=task.dataset,
                    score=round(float(score[i]), 6),
                    match=Match(
                        target_instruction=target.instructions[t_idx],
                        source_instruction=self._texts[s_idx],
                        source_instruction_name=self._names[s_idx],
                        cosine=round(float(best[i]), 6),
                    ),
                )
            )
        return Selection(target, self.method, self.aggregate, k, len(candidates), results, warnings)

    def select_many(
        self,
        targets: Iterable[Target],
        k: int = 5,
        exclusions: Exclusions | None = None,
        n_instructions: int | None = None,
        progress: ProgressFn | None = None,
    ) -> list[Selection]:
        """Select for many targets; their instructions are encoded in one batch."""
        targets = list(targets)
        check_k(k)
        texts = [t for tg in targets for t in tg.instructions]
        emb = self.encoder.encode(texts, progress=progress)
        out, pos = [], 0
        for tg in targets:
            n = len(tg.instructions)
            out.append(self.select(tg, k, exclusions, n_instructions, _embeddings=emb[pos:pos + n]))
            pos += n
        return out
