"""Ranking metrics over binary relevance, and bootstrap confidence intervals over targets.

``rel`` is the relevance (bool) of a target's candidates in ranked order, best first.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def precision_at(rel: np.ndarray, k: int) -> float:
    """Relevant share of the top k (divided by k even when fewer candidates exist)."""
    return float(np.asarray(rel[:k], dtype=bool).sum()) / k


def average_precision(rel: np.ndarray) -> float:
    """Mean of the precision at each relevant position, over all relevant candidates."""
    rel = np.asarray(rel, dtype=bool)
    n_rel = rel.sum()
    if n_rel == 0:
        return float("nan")
    hits = np.cumsum(rel)
    positions = np.flatnonzero(rel) + 1
    return float((hits[rel] / positions).sum() / n_rel)


def ndcg_at(rel: np.ndarray, k: int) -> float:
    """Binary-gain nDCG@k with log2 discounts; the ideal ranking puts all relevant first."""
    rel = np.asarray(rel, dtype=bool)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = float((rel[:k] * discounts[: len(rel[:k])]).sum())
    ideal = float(discounts[: min(k, int(rel.sum()))].sum())
    return dcg / ideal if ideal > 0 else float("nan")


METRICS: dict[str, Callable[[np.ndarray], float]] = {
    "P@5": lambda r: precision_at(r, 5),
    "P@10": lambda r: precision_at(r, 10),
    "MAP": average_precision,
    "nDCG@10": lambda r: ndcg_at(r, 10),
}


def bootstrap_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) resampling indices; shared across methods so their CIs are paired."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def bootstrap_ci(values: np.ndarray, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05,
                 indices: np.ndarray | None = None) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``values`` (resampling targets)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return float("nan"), float("nan")
    idx = indices if indices is not None else bootstrap_indices(len(values), n_boot, seed)
    means = values[idx].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)
