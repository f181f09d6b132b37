"""Task selection: score every source task of a pool against a target, keep the top-k.

Every selector has the same lifecycle (one object, as DSIR does it): construct →
``fit(pool)`` (e.g. encode every instruction of the pool, served from the embedding cache)
→ ``select(target, k)`` / ``select_many(targets, k)`` / ``iter_select(targets, k)`` (one
selection at a time, for any number of targets), or ``score_many(targets)`` /
``iter_scores(targets)`` for the raw per-task scores the benchmark ranks by. This module
holds the shared machinery and the INSTA selector; the baselines live in
:mod:`insta.baselines`, the search for large pools in :mod:`insta.search`.

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
from contextlib import contextmanager
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from .encoder import Embedder, Encoder, ProgressFn
from .errors import InstaError, did_you_mean, unknown
from .io import check_text
from .search import positions
from .tasks import Task, TaskPool, clean_text, family, is_blank

AGGREGATIONS = ("max", "mean", "vote")


@dataclass
class Target:
    """What we select for: an id and one or more instruction texts."""

    id: str
    instructions: list[str]
    label: str | None = None
    dataset: str | None = None
    instances: list[dict[str, Any]] | None = field(default=None, repr=False)
    #: the task the target was read from (its instances, rendered, are its examples), if any
    task: Task | None = field(default=None, repr=False, compare=False)
    #: examples the user gave (--target-examples); they take the place of the task's
    examples: list[Any] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.instructions, str) or not all(isinstance(t, str) for t in self.instructions):
            raise InstaError(f"target {self.id!r}: instructions must be a list of texts")
        cleaned = [check_text(clean_text(t), f"target {self.id!r}: instruction {i + 1}")
                   for i, t in enumerate(self.instructions)]
        if not cleaned or any(is_blank(t) for t in cleaned):
            raise InstaError(f"target {self.id!r}: instructions must be non-empty text (not only invisible characters "
                             "such as zero-width spaces)")
        self.instructions = cleaned

    @classmethod
    def from_task(cls, task: Task) -> Target:
        return cls(id=task.id, instructions=task.texts, label=task.label, dataset=task.dataset, instances=task.instances,
                   task=task)

    @classmethod
    def from_text(cls, texts: str | Sequence[str], id: str = "target") -> Target:
        texts = [texts] if isinstance(texts, str) else list(texts)
        for t in texts:
            if not t or is_blank(str(t)):
                raise InstaError("the target instruction is empty (or only invisible characters, such as zero-width "
                                 "spaces); pass non-blank text with --instruction")
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
    #: example-level selections (--budget): the chosen examples of this task, in the order
    #: picked, each {index, key, similarity, query}; None for task-level selections
    examples: list[dict[str, Any]] | None = None
    #: in a union of pools: the spec of the pool the task came from
    origin: str | None = None

    @classmethod
    def of(cls, rank: int, task: Task, score: float, match: Match | None,
           examples: list[dict[str, Any]] | None = None) -> Selected:
        return cls(rank, task.id, task.label, task.dataset, round(float(score), 6), match, examples, task.origin)


@dataclass
class Selection:
    target: Target
    method: str
    aggregate: str
    k: int
    n_candidates: int
    results: list[Selected]
    warnings: list[str] = field(default_factory=list)
    #: the target's examples the selector saw (model-aware and example methods): never to be
    #: evaluated on
    target_examples: list[dict[str, Any]] | None = None
    #: example-level selection: the number of examples asked for
    budget: int | None = None
    #: the score of the best candidate not selected (the k+1-th), None when every candidate was
    #: selected: how far the selection stands ahead of the rest
    next_score: float | None = None

    @property
    def ids(self) -> list[str]:
        return [r.task_id for r in self.results]

    def to_dict(self) -> dict[str, Any]:
        target = {k: v for k, v in vars(self.target).items() if k not in ("instances", "task", "examples")}
        results = []
        for r in self.results:
            row = asdict(r)
            for optional in ("examples", "origin"):
                if row[optional] is None:
                    del row[optional]
            results.append(row)
        doc = {
            "target": target,
            "method": self.method,
            "aggregate": self.aggregate,
            "k": self.k,
            "n_candidates": self.n_candidates,
            "warnings": self.warnings,
            "results": results,
        }
        if self.budget is not None:
            doc["budget"] = self.budget
        if self.next_score is not None:
            doc["next_score"] = self.next_score
        if self.target_examples is not None:
            doc["target_examples"] = self.target_examples
        return doc


@dataclass
class Exclusions:
    """Tasks that must never be selected: ids, glob patterns on ids, labels, and optionally
    the target's sibling tasks (same source dataset)."""

    ids: Sequence[str] = ()
    patterns: Sequence[str] = ()
    labels: Sequence[str] = ()
    siblings: bool = False

    def __post_init__(self) -> None:
        for name in ("ids", "patterns", "labels"):  # one text is one entry, not its characters
            value = getattr(self, name)
            setattr(self, name, [value] if isinstance(value, str) else list(value))

    def mask(self, tasks: Sequence[Task], target: Target) -> np.ndarray:
        """Which tasks remain candidates for ``target`` (True = may be selected)."""
        arrays = PoolArrays(tasks)
        keep = np.ones(len(arrays.ids), dtype=bool)
        keep[positions(arrays.excluded(self), arrays.excluded_for(target, self.siblings))] = False
        return keep

    def unmatched(self, pool: TaskPool) -> list[str]:
        """Warnings for exclusions that match no task of the pool (a typo excludes nothing)."""
        out = [f"--exclude {i!r} matches no task of {pool.name}{did_you_mean(i, pool.ids)}" for i in self.ids if i not in pool]
        out += [f"--exclude {p!r} matches no task of {pool.name}" for p in self.patterns
                if not fnmatch.filter(pool.ids, p)]
        labels = {t.label for t in pool}
        out += [f"--exclude-label {lab!r} is the label of no task of {pool.name}{did_you_mean(lab, [x for x in labels if x])}"
                for lab in self.labels if lab not in labels]
        return out


class PoolArrays:
    """What ranking and exclusions need of a pool, as arrays and maps built once at fit time:
    a task's position by id, the tie-break order of the ids, positions by label and by family."""

    def __init__(self, tasks: Sequence[Task]):
        self.ids = [t.id for t in tasks]
        self.position = {tid: i for i, tid in enumerate(self.ids)}
        self.tie_order = np.empty(len(self.ids), dtype=np.int64)
        self.tie_order[sorted(range(len(self.ids)), key=self.ids.__getitem__)] = np.arange(len(self.ids))
        self.labels = [t.label for t in tasks]
        self._by_label: dict[str, list[int]] = {}
        self._by_family: dict[str, list[int]] = {}
        self._copies: dict[str, list[int]] = {}  # a union: the renamed copies of one id (KIND#1:x, KIND#2:x)
        for i, t in enumerate(tasks):
            if t.label is not None:
                self._by_label.setdefault(t.label, []).append(i)
            self._by_family.setdefault(family(t), []).append(i)
            if t.source_id is not None:
                self._copies.setdefault(t.source_id, []).append(i)

    def excluded(self, exclusions: Exclusions) -> np.ndarray:
        """Positions every target must skip: the excluded ids, patterns and labels."""
        out = [self.position[i] for i in exclusions.ids if i in self.position]
        for p in exclusions.patterns:
            out.extend(self.position[i] for i in fnmatch.filter(self.ids, p))
        for lab in exclusions.labels:
            out.extend(self._by_label.get(lab, ()))
        return positions(out)

    def excluded_for(self, target: Target, siblings: bool) -> np.ndarray:
        """Positions this target must skip besides: itself, and its siblings when asked."""
        out = list(self._by_family.get(family(target), ())) if siblings else []
        if target.id in self.position:
            out.append(self.position[target.id])
        # in a union, the target is also every copy of it that another pool holds under its own id
        own = target.task.own_id if target.task is not None else target.id
        out.extend(self._copies.get(own, ()))
        out.extend(self._copies.get(target.id, ()))
        return positions(out)


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


def order_candidates(scores: Scores, tie_order: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Candidate positions (into ``candidates``) sorted best first: score, tiebreak, id
    (``tie_order``: each task's position among the sorted ids)."""
    return np.lexsort((tie_order[candidates], -scores.tiebreak[candidates], -scores.score[candidates]))


def top_candidates(scores: Scores, tie_order: np.ndarray, candidates: np.ndarray, k: int) -> np.ndarray:
    """The best k candidates (task positions) in order, as :func:`order_candidates` ranks them,
    sorting only those that tie with or beat the k-th score."""
    s = scores.score[candidates]
    if len(candidates) > k:
        kth = np.partition(s, len(s) - k)[len(s) - k]
        candidates = candidates[s >= kth]
    return candidates[order_candidates(scores, tie_order, candidates)[:k]]


@dataclass
class Aggregated:
    """Per-task aggregation of one target's (target instructions x source instructions)
    similarities: the score, the best pair's value, and that pair, found on demand."""

    score: np.ndarray
    best: np.ndarray
    col_best: np.ndarray
    col_arg: np.ndarray
    starts: np.ndarray
    counts: np.ndarray

    def pair(self, i: int) -> tuple[int, int]:
        """(target row, source row) of task i's best pair: the first source instruction (by
        position) that reaches the task's best, and the first target instruction that does."""
        lo = int(self.starts[i])
        c = lo + int(np.argmax(self.col_best[lo:lo + int(self.counts[i])]))
        return int(self.col_arg[c]), c


def aggregate_matrix(sims: np.ndarray, starts: np.ndarray, counts: np.ndarray, owner: np.ndarray,
                     how: str, depth: int, tie_order: np.ndarray | None = None,
                     excluded: np.ndarray | None = None) -> Aggregated:
    """Aggregate a (target instructions x source instructions) similarity matrix per task
    (source instructions of one task contiguous: ``starts``/``counts``; ``owner`` maps each
    source instruction to its task). ``max`` needs the column maxima, ``mean`` every pair's
    sum, ``vote`` each target instruction's top-``depth`` source instructions (equal
    similarities taken in task-id order, ``tie_order``, so the pool's row order never matters).
    ``excluded``: a boolean mask of the tasks excluded for this target; their instructions cast
    no vote (a vote's top-``depth`` is taken among the candidates only)."""
    n_t, n_s = sims.shape
    col_best = sims.max(axis=0)
    col_arg = sims.argmax(axis=0)
    task_best = np.maximum.reduceat(col_best, starts)
    if how == "max":
        score = task_best
    elif how == "mean":
        score = np.add.reduceat(sims.sum(axis=0), starts) / (counts * n_t)
    elif how == "vote":
        voting = sims
        rows = n_s
        if excluded is not None and excluded.any():
            out = excluded[owner]
            voting = np.where(out[None, :], -np.inf, sims)
            rows = int((~out).sum())
        depth = max(1, min(depth, rows))
        tie = np.broadcast_to((tie_order if tie_order is not None else np.arange(len(starts)))[owner], sims.shape)
        top = np.lexsort((tie, -voting), axis=-1)[:, :depth]
        chosen = owner[top.ravel()]
        if rows < n_s:  # every candidate row already voted: the rest of the top are excluded rows
            chosen = chosen[~excluded[chosen]]
        votes = np.bincount(chosen, minlength=len(starts)).astype(np.float64)
        score = votes / (n_t * depth)
    else:
        raise unknown("aggregation", how, AGGREGATIONS)
    return Aggregated(score.astype(np.float64), task_best.astype(np.float64), col_best, col_arg, starts, counts)


#: targets scored per call of ``score_many`` when streaming: bounds the full score vectors held
SCORE_CHUNK = 64


@dataclass
class Request:
    """What the targets of one ``iter_select`` call share."""

    k: int
    exclusions: Exclusions
    static: np.ndarray  # positions excluded for every target (ids, patterns, labels)
    unmatched: list[str]  # warnings: exclusions that match no task
    batch: bool  # several targets: one with nothing to select is a warning, not an error


class Selector(abc.ABC):
    """Base class: subclasses implement ``score_many`` (and ``fit`` when they index the pool);
    ranking, exclusions, explanations, warnings and streaming are shared."""

    method = "base"
    aggregate: str | None = None

    def __init__(self) -> None:
        self.pool: TaskPool | None = None
        self._arrays: PoolArrays | None = None
        self._excluding: Callable[[Target], np.ndarray] | None = None

    @contextmanager
    def excluding(self, positions_for: Callable[[Target], np.ndarray]) -> Iterator[Selector]:
        """Within the block, scoring knows each target's excluded task positions: ``vote`` then
        counts only the votes cast for candidates (selection sets this itself; a benchmark that
        ranks raw scores gives its own leave-one-out exclusions)."""
        old = getattr(self, "_excluding", None)
        self._excluding = positions_for
        try:
            yield self
        finally:
            self._excluding = old

    def _excluded_mask(self, target: Target, how: str | None) -> np.ndarray | None:
        """The boolean mask of the tasks excluded for ``target`` while :meth:`excluding` is on;
        only ``vote`` needs it (max and mean score each task on its own)."""
        fn = getattr(self, "_excluding", None)
        if fn is None or how != "vote":
            return None
        mask = np.zeros(len(self._require_fit()), dtype=bool)
        mask[np.asarray(fn(target), dtype=np.int64)] = True
        return mask

    def fit(self, pool: TaskPool, progress: ProgressFn | None = None) -> Selector:
        self._set_pool(pool)
        return self

    def _set_pool(self, pool: TaskPool, arrays: PoolArrays | None = None) -> None:
        """Fit to ``pool``; its arrays are built on first use (or shared, when given)."""
        self.pool = pool
        self._arrays = arrays

    @abc.abstractmethod
    def score_many(self, targets: Sequence[Target], k: int = 5, progress: ProgressFn | None = None) -> list[Scores]:
        """One :class:`Scores` per target, over every task of the fitted pool."""

    def iter_scores(self, targets: Sequence[Target], k: int = 5, progress: ProgressFn | None = None) -> Iterator[Scores]:
        """``score_many`` in chunks of targets: at most SCORE_CHUNK full score vectors are alive."""
        for start in range(0, len(targets), SCORE_CHUNK):
            yield from self.score_many(targets[start:start + SCORE_CHUNK], k)
            if progress:
                progress(min(start + SCORE_CHUNK, len(targets)), len(targets))

    def _require_fit(self) -> TaskPool:
        if self.pool is None:
            raise RuntimeError("call fit(pool) before selecting")
        return self.pool

    @property
    def arrays(self) -> PoolArrays:
        pool = self._require_fit()
        if self._arrays is None:
            self._arrays = PoolArrays(pool)
        return self._arrays

    def _excluded(self, target: Target, req: Request) -> tuple[np.ndarray, int]:
        """Positions excluded for this target, and how many candidates remain (error if none)."""
        pool = self._require_fit()
        excluded = positions(req.static, self.arrays.excluded_for(target, req.exclusions.siblings))
        n_candidates = len(pool) - len(excluded)
        if n_candidates == 0 and not req.batch:
            raise InstaError(f"target {target.id!r}: every task of {pool.name} is excluded; nothing to select")
        return excluded, n_candidates

    def _selection(self, target: Target, req: Request, n_candidates: int, results: list[Selected]) -> Selection:
        k = req.k
        warnings = list(req.unmatched)
        if n_candidates == 0:  # in a batch: this target gets nothing, the others their selections
            warnings.append(f"every task of {self.pool.name if self.pool else 'the pool'} is excluded for this target; nothing selected")
        elif k > n_candidates:
            warnings.append(f"k={k} is larger than the {n_candidates} candidate tasks; returning all of them")
        return Selection(target, self.method, self.aggregate or "", k, n_candidates, results, warnings)

    def _select_one(self, target: Target, scores: Scores, req: Request) -> Selection:
        pool = self._require_fit()
        excluded, n_candidates = self._excluded(target, req)
        keep = np.ones(len(pool), dtype=bool)
        keep[excluded] = False
        top = top_candidates(scores, self.arrays.tie_order, np.flatnonzero(keep), req.k + 1)
        results = [Selected.of(rank, pool[int(i)], scores.score[i], scores.explain(int(i)))
                   for rank, i in enumerate(top[:req.k], start=1)]
        sel = self._selection(target, req, n_candidates, results)
        if len(top) > req.k:  # a task left out
            boundary(sel, pool, int(top[req.k - 1]), int(top[req.k]), scores.score[top[req.k]])
        return sel

    def select(self, target: Target, k: int = 5, exclusions: Exclusions | None = None,
               n_instructions: int | None = None) -> Selection:
        """The top-k source tasks for ``target`` with explanations."""
        return self.select_many([target], k, exclusions, n_instructions)[0]

    def select_many(self, targets: Iterable[Target], k: int = 5, exclusions: Exclusions | None = None,
                    n_instructions: int | None = None, progress: ProgressFn | None = None) -> list[Selection]:
        """Select for many targets (see :meth:`iter_select`, which streams them)."""
        return list(self.iter_select(targets, k, exclusions, n_instructions, progress))

    def iter_select(self, targets: Iterable[Target], k: int = 5, exclusions: Exclusions | None = None,
                    n_instructions: int | None = None, progress: ProgressFn | None = None) -> Iterator[Selection]:
        """One :class:`Selection` per target, in order, as each is done: only the current chunk
        of targets' scores is held, so a long list of targets runs in bounded memory."""
        check_k(k)
        pool = self._require_fit()
        targets = [truncate(t, n_instructions) for t in targets]
        exclusions = exclusions or Exclusions()
        req = Request(k, exclusions, self.arrays.excluded(exclusions), exclusions.unmatched(pool), len(targets) > 1)
        yield from self._iter_select(targets, req, progress)

    def _iter_select(self, targets: list[Target], req: Request, progress: ProgressFn | None) -> Iterator[Selection]:
        with self.excluding(lambda t: self._excluded(t, req)[0]):
            for target, scores in zip(targets, self.iter_scores(targets, req.k, progress)):
                yield self._select_one(target, scores, req)


#: how many of a pool's own tasks are matched against the rest of the pool to learn how strong
#: a best match the pool usually offers, and the share of them below which a match counts as weak
FLOOR_SAMPLE, FLOOR_QUANTILE = 300, 0.05


def match_floor(selector: Selector, sample: int = FLOOR_SAMPLE, q: float = FLOOR_QUANTILE) -> float | None:
    """The ``q`` quantile of the best-match similarity that a (seeded) sample of the fitted
    pool's own tasks, by their first instruction, reach among the pool's other tasks, siblings
    left out: what a target in this pool's domain and style usually gets. None when the selector's results carry no
    similarity (random, all) or the pool has fewer than 20 tasks."""
    pool = selector._require_fit()
    if len(pool) < 20:
        return None
    picked = np.sort(np.random.default_rng(0).choice(len(pool), min(sample, len(pool)), replace=False))
    sims = [strength(s.results[0].match)[0]
            for s in selector.iter_select([Target.from_task(pool[int(i)]) for i in picked], 1, Exclusions(siblings=True),
                                          n_instructions=1)  # one instruction each, as a user's target usually has
            if s.results and s.results[0].match is not None]
    return round(float(np.quantile(sims, q)), 6) if len(sims) >= 20 else None


def strength(match: Match | None) -> tuple[float, str] | None:
    """How strong a match is, as a similarity that compares across targets: its own, or for a
    fused score (hybrid) its first part's (the embedding cosine), not the reciprocal rank."""
    if match is None:
        return None
    if match.parts:
        return float(match.parts[0]["similarity"]), str(match.parts[0]["measure"])
    return float(match.similarity), match.measure


def weak_match(sel: Selection, floor: float | None) -> Selection:
    """Warn when the target's best match is weaker than the pool's own tasks almost always get
    (below :func:`match_floor`): the instruction may be ambiguous or outside the meta-dataset.
    The best match is the strongest of the selected tasks' (calibration may order them otherwise)."""
    found = [x for x in (strength(r.match) for r in sel.results) if x is not None]
    best = max(found) if found else None
    if floor is not None and best is not None and 0 < best[0] < floor:  # 0: nothing matched, said apart
        sel.warnings.append(f"weak match for this pool: the best match ({best[1]} {best[0]:g}) is below "
                            f"what {100 - round(100 * FLOOR_QUANTILE)}% of the pool's own tasks reach to their nearest "
                            f"other task ({floor:g}); the instruction may be ambiguous or outside this meta-dataset "
                            "(reword it, add instructions with -i, or choose another pool)")
    return sel


def boundary(sel: Selection, pool: TaskPool, last: int, following: int, next_score: float) -> None:
    """Record the score of the first task not selected (position ``following``; ``last`` is the
    k-th), and warn when the two tie: which of them is in the selection is then decided by the
    tie-break (task id), not by the target. Not when the two are siblings (subsets of one
    dataset, e.g. adversarial_qa/dbert and dbidaf, share their templates: either is the same
    choice), nor when nothing matched (score 0)."""
    sel.next_score = round(float(next_score), 6)
    if family(pool[last]) == family(pool[following]):
        return
    if sel.results and sel.results[-1].score == sel.next_score != 0:
        sel.warnings.append(f"the top-{len(sel.results)} is not separated from the rest: the task ranked "
                            f"{len(sel.results)} ({sel.results[-1].task_id}) and the first task not selected tie at score "
                            f"{sel.next_score:g}; which one is selected is decided by task id (change -k, or "
                            "reword the instruction)")


def truncate(target: Target, n_instructions: int | None) -> Target:
    """The target with only its first ``n_instructions`` instructions (all if None)."""
    if n_instructions is None:
        return target
    if n_instructions <= 0:
        raise InstaError(f"the number of target instructions must be positive, got {n_instructions}")
    return replace(target, instructions=target.instructions[:n_instructions])


class InstructionSelector(Selector):
    """INSTA: rank the tasks of a pool by instruction similarity to a target.

    With ``max`` (the default), selection runs on :class:`insta.search.FlatIndex`: targets in
    chunks, top-k from the top hits, float64 scores for what is returned. ``score_many`` (the
    full score of every task, as the benchmark ranks by) and ``mean``/``vote`` compute each
    target's whole similarity matrix."""

    method = "insta"
    #: targets whose instructions are embedded at once on the streaming path
    ENCODE_CHUNK = 1024

    def __init__(self, encoder: Embedder | None = None, *, aggregate: str = "max", vote_depth: int | None = None,
                 memory: int | None = None, index: str | None = "flat"):
        super().__init__()
        if aggregate not in AGGREGATIONS:
            raise unknown("aggregation", aggregate, AGGREGATIONS)
        index = index or "flat"
        kind, colon, factory = index.partition(":")
        if kind not in ("flat", "faiss") or (kind == "flat" and colon) or (colon and not factory.strip()):
            raise InstaError(f"unknown index {index!r}; available: flat (exact, default), faiss (exact IndexFlatIP), "
                             "faiss:FACTORY (a FAISS index-factory string, e.g. faiss:HNSW32)")
        if kind == "faiss" and aggregate != "max":
            raise InstaError(f"--index {index} serves the max aggregation only; {aggregate} needs every pair (use --index flat)")
        if vote_depth is not None:
            from .checks import check_int

            check_int(vote_depth, "vote_depth", min=1)
        self.encoder: Embedder = encoder or Encoder()
        self.aggregate = aggregate
        self.vote_depth = vote_depth
        self.memory = memory
        self.index_spec = index

    def fit(self, pool: TaskPool, progress: ProgressFn | None = None) -> InstructionSelector:
        """Embed every instruction of the pool (cached on disk by model and text)."""
        from .encoder import embed_pool
        from .search import DEFAULT_MEMORY, FaissIndex, FlatIndex

        self._texts = [ins.text for t in pool for ins in t.instructions]
        self._names = [ins.name for t in pool for ins in t.instructions]
        self._embeddings = embed_pool(self.encoder, self._texts, progress=progress)
        self._counts = np.array([len(t.instructions) for t in pool])
        self._starts = np.concatenate([[0], np.cumsum(self._counts)[:-1]]).astype(np.int64)
        self._owner = np.repeat(np.arange(len(pool)), self._counts)
        self._set_pool(pool)
        kind, _, factory = self.index_spec.partition(":")
        memory = self.memory or DEFAULT_MEMORY
        self.index = (FlatIndex(self._embeddings, self._counts, self.arrays.tie_order, memory=memory) if kind == "flat"
                      else FaissIndex(self._embeddings, self._counts, self.arrays.tie_order, factory=factory or "Flat",
                                      memory=memory))
        return self

    def _encode_targets(self, targets: Sequence[Target], progress: ProgressFn | None = None) -> np.ndarray:
        texts = [t for tg in targets for t in tg.instructions]
        return self.encoder.encode(texts, progress=progress) if texts else np.zeros((0, 1), dtype=np.float32)

    def score_many(self, targets: Sequence[Target], k: int = 5, progress: ProgressFn | None = None) -> list[Scores]:
        self._require_fit()
        emb = self._encode_targets(targets, progress)
        out, pos = [], 0
        for tg in targets:
            n = len(tg.instructions)
            out.append(self._scores(tg, emb[pos:pos + n], k))
            pos += n
        return out

    def _scores(self, target: Target, t_emb: np.ndarray, k: int) -> Scores:
        agg = aggregate_matrix(t_emb @ np.asarray(self._embeddings).T, self._starts, self._counts, self._owner,
                               self.aggregate, self.vote_depth or k, self.arrays.tie_order,
                               self._excluded_mask(target, self.aggregate))

        def explain(i: int) -> Match:
            t_idx, s_idx = agg.pair(i)
            return Match(target.instructions[t_idx], self._texts[s_idx], self._names[s_idx], round(float(agg.best[i]), 6))

        return Scores(agg.score, agg.best, explain)

    def _iter_select(self, targets, req, progress):
        if self.aggregate != "max":
            yield from super()._iter_select(targets, req, progress)
            return
        pool = self._require_fit()
        done = 0
        for start in range(0, len(targets), self.ENCODE_CHUNK):
            chunk = targets[start:start + self.ENCODE_CHUNK]
            queries = self._encode_targets(chunk)
            skip = [self._excluded(t, req) for t in chunk]  # (positions, number of candidates) per target
            hits = self.index.search(queries, [len(t.instructions) for t in chunk], req.k + 1,
                                     excluded_for=lambda j: skip[j][0])
            for target, (_, n_candidates), found in zip(chunk, skip, hits):
                results = [Selected.of(rank, pool[h.task], h.score,
                                       Match(target.instructions[h.target_row], self._texts[h.source_row],
                                             self._names[h.source_row], round(h.score, 6)))
                           for rank, h in enumerate(found[:req.k], start=1)]
                sel = self._selection(target, req, n_candidates, results)
                if len(found) > req.k:
                    boundary(sel, pool, found[req.k - 1].task, found[req.k].task, found[req.k].score)
                yield sel
                done += 1
                if progress:
                    progress(done, len(targets))
