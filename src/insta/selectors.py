"""The registry of selection methods: ``insta``, ``bm25``, ``random``, ``all``, ``samples``.

A method spec is ``NAME`` or ``NAME:AGGREGATION`` (``insta:mean``, ``bm25:vote``).
"""

from __future__ import annotations

from .baselines import AllSelector, BM25Selector, RandomSelector, SamplesSelector
from .encoder import Encoder
from .errors import InstaError, unknown
from .select import AGGREGATIONS, InstructionSelector, Selector

METHODS: dict[str, str] = {
    "insta": "instruction embeddings (sentence-transformers), aggregation max|mean|vote",
    "bm25": "BM25 over instruction texts (bm25s), aggregation max|mean|vote",
    "random": "seeded random order",
    "all": "every task (for training comparisons)",
    "samples": "Retrieval-of-Experts: nearest source instances of up to 32 target instances (needs instances)",
    "insta-aligned-paper": "insta with an embedder aligned on the training folds, paper recipe (bench --folds only)",
    "insta-aligned-contrastive": "insta with an embedder aligned on the training folds, contrastive recipe (bench --folds only)",
}
LEARNED = {"insta-aligned-paper": "paper", "insta-aligned-contrastive": "contrastive"}
AGGREGATING = {"insta", "bm25", "insta-aligned-paper", "insta-aligned-contrastive"}


def parse_method(spec: str, aggregate: str | None = None) -> tuple[str, str | None]:
    """'insta:mean' -> ('insta', 'mean'); a bare aggregating name takes ``aggregate`` (default max)."""
    name, _, agg = spec.strip().partition(":")
    if name not in METHODS:
        raise unknown("method", name, METHODS)
    if agg and name not in AGGREGATING:
        raise InstaError(f"method {name!r} takes no aggregation (only {', '.join(sorted(AGGREGATING))} do)")
    agg = agg or (aggregate if name in AGGREGATING else None) or ("max" if name in AGGREGATING else None)
    if agg is not None and agg not in AGGREGATIONS:
        raise unknown("aggregation", agg, AGGREGATIONS)
    return name, agg


def method_label(name: str, aggregate: str | None) -> str:
    return name if aggregate in (None, "max") else f"{name}:{aggregate}"


def make_selector(spec: str, *, aggregate: str | None = None, encoder: Encoder | None = None, seed: int = 0,
                  vote_depth: int | None = None) -> Selector:
    """Build the selector a method spec names."""
    name, agg = parse_method(spec, aggregate)
    if name in LEARNED:
        raise InstaError(
            f"method {name!r} learns from a pool: align first ('insta align --pool SPEC --out DIR --recipe "
            f"{LEARNED[name]}'), then select with --model DIR; the benchmark trains it per fold (--folds K)"
        )
    if name == "insta":
        return InstructionSelector(encoder, aggregate=agg or "max", vote_depth=vote_depth)
    if name == "bm25":
        return BM25Selector(aggregate=agg or "max", vote_depth=vote_depth)
    if name == "random":
        return RandomSelector(seed)
    if name == "all":
        return AllSelector()
    return SamplesSelector(encoder, seed=seed)
