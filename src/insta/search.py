"""Exact top-k search of a pool's instruction vectors, aggregated per task by ``max``.

What selection costs should be the arithmetic: one matrix product per chunk of targets and a
pass over its result. :class:`FlatIndex` holds the pool as arrays built once (vectors, which
rows belong to which task, the tie-break order of the task ids) and answers, for each target
in turn, its top-k tasks with the pair behind each score:

* up to QUERY_ROWS target instructions are multiplied at once with tiles of the pool whose
  similarity block stays within ``memory`` bytes (the tiling of FAISS's flat search and of
  sentence-transformers' ``semantic_search``), and results are yielded per target: a
  million-task pool never holds more than one block;
* a task's score is its best pair (``max``), so the top-k is exact from the top hits: each
  target keeps a running lower bound of its k-th score (from maxima of blocks of tasks), and
  only blocks whose maximum clears it, less a margin, are looked into;
* the few candidates are *re-scored* in float64 from the vectors (exact products, one
  deterministic summation per pair), ordered by (score, task id) and explained. BLAS gives
  last-bit differences depending on how many rows a product has (about a quarter of the
  float32 products differ between a 1-row and a 100-row product), so without this a target's
  result would depend on which other targets share its chunk; with it, it never does. The
  margin (1e-4) is far above float32's error on unit vectors of any practical dimension
  (≤ d·2⁻²⁴ ≈ 2.3e-5 at d = 384), so the float32 pass never drops a true top-k task.

``mean`` and ``vote`` need every pair of a target (the mean of all, or each target
instruction's top hits), so they go through the full per-target path of
:func:`insta.select.aggregate_matrix` instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

#: bytes of float32 similarities one chunk of targets may hold (rows × pool instructions × 4)
DEFAULT_MEMORY = 256 * 2**20
#: float32 pass → exact float64 re-scoring: candidates within this much of the k-th score
MARGIN = 1e-4
#: query rows (target instructions) multiplied with the pool at once
QUERY_ROWS = 1024
_BLOCK = 1024


@dataclass(frozen=True)
class Hit:
    """One selected task: its position in the pool, its score, and the best pair behind it
    (the target instruction's row among the target's, the source instruction's row in the pool)."""

    task: int
    score: float
    target_row: int
    source_row: int


def positions(*parts: Sequence[int] | np.ndarray | None) -> np.ndarray:
    """The sorted distinct int64 positions of all parts (np.union1d without its import of
    numpy.ma, which alone costs a command ~10 ms of start-up)."""
    x = np.sort(np.concatenate([np.asarray(p, dtype=np.int64).ravel() for p in parts if p is not None]
                               or [np.zeros(0, dtype=np.int64)]))
    return x[np.concatenate([[True], x[1:] != x[:-1]])] if len(x) else x


def pair_scores(queries: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """float64 cosines of every (query, vector) pair: exact products, one fixed summation per
    pair, so equal inputs give equal outputs wherever they are computed."""
    q = np.asarray(queries, dtype=np.float64)
    v = np.asarray(vectors, dtype=np.float64)
    return (q[:, None, :] * v[None, :, :]).sum(axis=-1)


class FlatIndex:
    """Exact ``max`` search over a pool's instruction vectors.

    ``vectors``: (instructions, dim) float32, L2-normalised rows (a memory map is fine); the
    instructions of one task are contiguous, task ``i`` owning ``counts[i]`` rows from
    ``starts[i]``. ``tie_order``: each task's position in the sorted order of the task ids
    (equal scores go to the smaller id)."""

    def __init__(self, vectors: np.ndarray, counts: np.ndarray, tie_order: np.ndarray, *,
                 memory: int = DEFAULT_MEMORY):
        self.vectors = vectors
        self.counts = np.asarray(counts, dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)
        self.tie_order = np.asarray(tie_order, dtype=np.int64)
        if self.counts.sum() != len(vectors) or len(self.tie_order) != len(self.counts):
            raise ValueError("counts must sum to the number of vectors and tie_order have one entry per task")
        self.single = bool((self.counts == 1).all())
        self.memory = memory

    @property
    def n_tasks(self) -> int:
        return len(self.counts)

    def search(self, queries: np.ndarray, sizes: Sequence[int], k: int, *,
               excluded: np.ndarray | None = None,
               excluded_for: Callable[[int], np.ndarray] | None = None) -> Iterator[list[Hit]]:
        """Top-k tasks of each target, in target order. Target ``j`` owns ``sizes[j]``
        consecutive rows of ``queries``; ``excluded`` (task positions) are never returned,
        nor ``excluded_for(j)`` for target ``j``. Fewer than k hits when fewer tasks remain."""
        sizes = np.asarray(sizes, dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        j = 0
        while j < len(sizes):
            end = j + 1
            while end < len(sizes) and offsets[end + 1] - offsets[j] <= QUERY_ROWS:
                end += 1
            yield from self._chunk(queries, offsets, j, end, k, excluded, excluded_for)
            j = end

    def _tiles(self, rows: int) -> list[tuple[int, int]]:
        """Task ranges whose similarity block (rows x their instructions) fits the memory budget."""
        width = max(_BLOCK, self.memory // (4 * max(1, rows)))
        ends = self.starts + self.counts
        tiles, a = [], 0
        while a < self.n_tasks:
            b = max(a + 1, int(np.searchsorted(ends, self.starts[a] + width, side="right")))
            tiles.append((a, b))
            a = b
        return tiles

    def _chunk(self, queries, offsets, j0, j1, k, excluded, excluded_for) -> Iterator[list[Hit]]:
        """One chunk of targets against the pool, tile by tile: the similarity block of a tile is
        reduced to the tasks that may still reach a target's top-k (a running lower bound of its
        k-th score), so what is kept per target stays about k long whatever the pool's size."""
        q = np.ascontiguousarray(queries[offsets[j0]:offsets[j1]], dtype=np.float32)
        vectors = np.asarray(self.vectors)
        n_t = j1 - j0
        skip = [positions(excluded, excluded_for(j) if excluded_for else None) for j in range(j0, j1)]
        floor = np.finfo(np.float32).min  # below any score, above an excluded task's -inf
        bound = np.full(n_t, floor, dtype=np.float64)  # never above the target's k-th float32 score
        kept_task: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * n_t
        kept_score: list[np.ndarray] = [np.zeros(0, dtype=np.float32)] * n_t
        for a, b in self._tiles(len(q)):
            c0, c1 = int(self.starts[a]), int(self.starts[b - 1] + self.counts[b - 1])
            sims = q @ vectors[c0:c1].T
            if offsets[j1] - offsets[j0] != n_t:  # several instructions per target: best row
                sims = np.stack([sims[offsets[j] - offsets[j0]:offsets[j + 1] - offsets[j0]].max(axis=0)
                                 for j in range(j0, j1)])
            scores = sims if self.single else np.maximum.reduceat(sims, self.starts[a:b] - c0, axis=1)
            for r, mine in enumerate(skip):
                lo, hi = np.searchsorted(mine, [a, b])
                if hi > lo:
                    scores[r, mine[lo:hi] - a] = -np.inf
            rows, cols = self._above_bound(scores, bound, k)
            cuts = np.searchsorted(rows, np.arange(n_t + 1))
            for r in range(n_t):
                if cuts[r + 1] == cuts[r]:
                    continue
                c = cols[cuts[r]:cuts[r + 1]]
                tasks = np.concatenate([kept_task[r], c + a])
                vals = np.concatenate([kept_score[r], scores[r, c]])
                if len(vals) >= k:
                    bound[r] = max(bound[r], float(np.partition(vals, len(vals) - k)[len(vals) - k]))
                keep = vals >= bound[r] - MARGIN
                kept_task[r], kept_score[r] = tasks[keep], vals[keep]
        for r, j in enumerate(range(j0, j1)):
            yield self._exact(queries[offsets[j]:offsets[j + 1]], kept_task[r], k)

    @staticmethod
    def _above_bound(scores: np.ndarray, bound: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(row, column) of the scores that may be in their row's top-k, rows ascending.

        Each row's lower bound of its k-th score is first raised from this tile: the k-th
        largest maximum of k or more blocks of tasks (any k blocks hold k scores at least that
        high), or the k-th largest score itself when the tile is narrow. Only blocks whose
        maximum clears the bound are then looked into, so the scan is one pass of block maxima."""
        n_t, width = scores.shape
        n_blocks = width // _BLOCK
        whole = scores[:, :n_blocks * _BLOCK].reshape(n_t, n_blocks, _BLOCK)
        maxima = whole.max(axis=2) if n_blocks else None
        if n_blocks >= k:
            kth = np.partition(maxima, n_blocks - k, axis=1)[:, n_blocks - k]
            np.maximum(bound, kth.astype(np.float64), out=bound)
        elif width >= k:
            kth = np.partition(scores, width - k, axis=1)[:, width - k]
            np.maximum(bound, kth.astype(np.float64), out=bound)
        cut = (bound - MARGIN).astype(np.float32)
        rows, cols = [], []
        if n_blocks:
            rb, bb = np.nonzero(maxima >= cut[:, None])
            r, c = np.nonzero(whole[rb, bb] >= cut[rb][:, None])
            rows.append(rb[r])
            cols.append(bb[r] * _BLOCK + c)
        if width > n_blocks * _BLOCK:
            r, c = np.nonzero(scores[:, n_blocks * _BLOCK:] >= cut[:, None])
            rows.append(r)
            cols.append(c + n_blocks * _BLOCK)
        row, col = np.concatenate(rows), np.concatenate(cols)
        order = np.argsort(row, kind="stable")
        return row[order], col[order]

    def _exact(self, target_rows: np.ndarray, cand: np.ndarray, k: int) -> list[Hit]:
        """Re-score the candidates in float64, order by (score, id), keep k, explain each."""
        if len(cand) == 0:
            return []
        counts = self.counts[cand]
        cols = np.concatenate([np.arange(s, s + c) for s, c in zip(self.starts[cand], counts)])
        pairs = pair_scores(target_rows, np.asarray(self.vectors[cols]))  # (target rows, candidate columns)
        col_best = pairs.max(axis=0)
        col_arg = pairs.argmax(axis=0)  # first target row reaching each column's best
        bounds = np.concatenate([[0], np.cumsum(counts)])
        best = np.maximum.reduceat(col_best, bounds[:-1])
        order = np.lexsort((self.tie_order[cand], -best))[:k]
        hits = []
        for i in order:
            lo, hi = bounds[i], bounds[i + 1]
            c = lo + int(np.argmax(col_best[lo:hi]))  # first instruction (by position) reaching it
            hits.append(Hit(int(cand[i]), float(best[i]), int(col_arg[c]), int(cols[c])))
        return hits


class FaissIndex(FlatIndex):
    """The same search on a FAISS index (``faiss-cpu``, the ``faiss`` extra): ``factory`` is a
    FAISS index-factory string, ``Flat`` (exact inner product, the default) or an approximate
    one (``HNSW32``, ``IVF4096,Flat``, ...). FAISS returns each target instruction's top
    instructions; tasks are gathered from them, more are fetched until the k-th task's score
    clears what any unseen instruction could reach, and the candidates are re-scored exactly as
    in :class:`FlatIndex`. With ``Flat`` the results are FlatIndex's; an approximate index may
    miss tasks it never returns."""

    def __init__(self, vectors: np.ndarray, counts: np.ndarray, tie_order: np.ndarray, *, factory: str = "Flat",
                 memory: int = DEFAULT_MEMORY):
        super().__init__(vectors, counts, tie_order, memory=memory)
        try:
            import faiss
        except ImportError:
            from .errors import InstaError

            raise InstaError("--index faiss needs FAISS: pip install 'insta-select[faiss]' (faiss-cpu)") from None
        self.factory = factory
        self.exact = factory == "Flat"  # an approximate index's returned scores bound nothing
        self.owner = np.repeat(np.arange(len(self.counts)), self.counts)
        matrix = np.ascontiguousarray(vectors, dtype=np.float32)
        try:
            self.faiss = faiss.index_factory(vectors.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
            if not self.faiss.is_trained:
                self.faiss.train(matrix)
            self.faiss.add(matrix)
        except (RuntimeError, AssertionError, ValueError) as exc:
            from .errors import InstaError

            first = str(exc).strip().splitlines()
            why = next((line.strip() for line in first if "Error" in line or "failed" in line or "should" in line),
                       first[0].strip() if first else type(exc).__name__)
            raise InstaError(f"--index faiss:{factory}: FAISS cannot build this index on {len(matrix)} vectors of "
                             f"dimension {matrix.shape[1]} ({why[:160]}); use --index faiss (exact) or another "
                             "index-factory string, e.g. faiss:HNSW32") from None
        if hasattr(self.faiss, "nprobe"):  # IVF: search a fair share of the lists, not FAISS's default of 1
            self.faiss.nprobe = max(1, int(getattr(self.faiss, "nlist", 1)) // 4)

    def _chunk(self, queries, offsets, j0, j1, k, excluded, excluded_for) -> Iterator[list[Hit]]:
        skip = set(excluded.tolist()) if excluded is not None else set()
        for j in range(j0, j1):
            rows = np.ascontiguousarray(queries[offsets[j]:offsets[j + 1]], dtype=np.float32)
            banned = skip | (set(excluded_for(j).tolist()) if excluded_for is not None else set())
            fetch = min(len(self.vectors), max(4 * k, 32) + len(banned))
            while True:
                scores, found = self.faiss.search(rows, fetch)
                ok = found >= 0
                best: dict[int, float] = {}
                for s, i in zip(scores[ok], found[ok]):
                    task = int(self.owner[i])
                    if task not in banned and s > best.get(task, -np.inf):
                        best[task] = float(s)
                # an instruction not returned scores at most the smallest score fetched
                unseen = float(scores[:, -1].max()) if fetch < len(self.vectors) else -np.inf
                ranked = sorted(best.values(), reverse=True)
                enough = len(ranked) >= k and (not self.exact or ranked[k - 1] - MARGIN > unseen + MARGIN)
                if fetch >= len(self.vectors) or enough:
                    break
                fetch = min(len(self.vectors), fetch * 4)
            if len(ranked) < min(k, self.n_tasks - len(banned)):
                # an approximate index found too few tasks (IVF lists not probed, ...): this
                # target gets the exact search instead of a short answer
                yield from super()._chunk(queries, offsets, j, j + 1, k, excluded, excluded_for)
                continue
            kth = ranked[k - 1] if len(ranked) >= k else -np.inf
            cand = np.array(sorted(t for t, s in best.items() if s >= kth - MARGIN), dtype=np.int64)
            yield self._exact(rows, cand, k)
