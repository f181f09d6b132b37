"""The registry of selection methods: ``insta``, ``bm25``, ``random``, ``all``, ``samples`` and
the learned ``insta-aligned-*``.

A method spec is ``NAME`` or ``NAME:AGGREGATION`` (``insta:mean``, ``bm25:vote``). Adding a
method is one :class:`Method` entry in :data:`METHODS`: its factory (``"module:class"``,
imported on first use), whether it aggregates instruction similarities, and, for learned
methods, the alignment recipe it needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import InstaError, unknown
from .registry import Registry, import_object
from .select import AGGREGATIONS, Selector


@dataclass(frozen=True)
class Method:
    summary: str
    factory: str | None  # "module:class" of the Selector; None for learned methods (built by the benchmark)
    aggregating: bool = False  # takes NAME:AGG (max | mean | vote)
    uses_encoder: bool = False
    uses_seed: bool = False
    recipe: str | None = None  # learned: aligned on the pool with this recipe first
    fused: bool = False  # learned: the aligned embedder's ranking fused with BM25's (as hybrid)
    uses_features: bool = False  # model-aware: takes a FeatureConfig (the LM, its settings)
    examples: bool = False  # selects from the target's examples (never evaluated on)
    budget: bool = False  # can select examples (--budget N) instead of tasks


METHODS: Registry[Method] = Registry("method", {
    "insta": Method("instruction embeddings (sentence-transformers), aggregation max|mean|vote",
                    "insta.select:InstructionSelector", aggregating=True, uses_encoder=True),
    "bm25": Method("BM25 over instruction texts (bm25s), aggregation max|mean|vote",
                   "insta.baselines:BM25Selector", aggregating=True),
    "hybrid": Method("reciprocal-rank fusion of bm25 and insta (k=60, fixed a priori), aggregation max|mean|vote",
                     "insta.baselines:HybridSelector", aggregating=True, uses_encoder=True),
    "random": Method("seeded random order", "insta.baselines:RandomSelector", uses_seed=True),
    "all": Method("every task (for training comparisons)", "insta.baselines:AllSelector"),
    "samples": Method("Retrieval-of-Experts: nearest source instances of up to 32 target instances (needs instances)",
                      "insta.example_select:SamplesSelector", uses_encoder=True, uses_seed=True, examples=True,
                      budget=True),
    "less": Method("LESS: projected LoRA gradients of the LM (Adam-preconditioned for the pool) between the target's "
                   "examples and the pool's; aggregation mean (default) | max | vote; --budget N selects examples",
                   "insta.example_select:LessSelector", aggregating=True, uses_seed=True, uses_features=True,
                   examples=True, budget=True),
    "rds": Method("RDS+: position-weighted mean hidden states of the LM between the target's examples and the pool's; "
                  "aggregation mean (default) | max | vote; --budget N selects examples",
                  "insta.example_select:RdsSelector", aggregating=True, uses_seed=True, uses_features=True,
                  examples=True, budget=True),
    "hybrid-less": Method("hybrid (bm25 + insta on instructions) and less (the target's examples) fused by reciprocal "
                          "rank", "insta.baselines:hybrid_less", aggregating=True, uses_encoder=True, uses_seed=True,
                          uses_features=True, examples=True),
    "hybrid-rds": Method("hybrid (bm25 + insta on instructions) and rds (the target's examples) fused by reciprocal rank",
                         "insta.baselines:hybrid_rds", aggregating=True, uses_encoder=True, uses_seed=True,
                         uses_features=True, examples=True),
    "insta-aligned-paper": Method("insta with an embedder aligned on the training folds, paper recipe (bench --folds only)",
                                  None, aggregating=True, uses_encoder=True, recipe="paper"),
    "insta-aligned-contrastive": Method("insta with an embedder aligned on the training folds, contrastive recipe "
                                        "(bench --folds only)", None, aggregating=True, uses_encoder=True,
                                        recipe="contrastive"),
    "hybrid-aligned-contrastive": Method("hybrid with the embedder aligned on the training folds, contrastive recipe "
                                         "(bench --folds only)", None, aggregating=True, uses_encoder=True,
                                         recipe="contrastive", fused=True),
})


#: what ``insta select`` uses without --method: the best method that needs no labels on the
#: held-out benchmarks (BENCHMARKS.md, "Hybrid selection"); chosen on those figures, never tuned
DEFAULT_METHOD = "hybrid"


#: the aggregation of a method when none is given: LESS's and RDS+'s own score of an example is
#: its mean similarity to the query examples (max over 16 x 8 pairs would follow outliers)
DEFAULT_AGGREGATION = {"less": "mean", "rds": "mean"}


def parse_method(spec: str, aggregate: str | None = None) -> tuple[str, str | None]:
    """'insta:mean' -> ('insta', 'mean'); a bare aggregating name takes ``aggregate`` (default
    max; mean for less and rds)."""
    name, _, agg = spec.strip().partition(":")
    method = METHODS.get(name)
    if agg and not method.aggregating:
        raise InstaError(f"method {name!r} takes no aggregation (only {', '.join(n for n, m in METHODS.items() if m.aggregating)} do)")
    agg = (agg or aggregate or DEFAULT_AGGREGATION.get(name, "max")) if method.aggregating else None
    if agg is not None and agg not in AGGREGATIONS:
        raise unknown("aggregation", agg, AGGREGATIONS)
    return name, agg


def method_label(name: str, aggregate: str | None) -> str:
    return name if aggregate in (None, DEFAULT_AGGREGATION.get(name, "max")) else f"{name}:{aggregate}"


def make_selector(spec: str, *, aggregate: str | None = None, encoder: Any = None, seed: int = 0,
                  vote_depth: int | None = None, index: str | None = None, features: Any = None,
                  budget: int | None = None, sizes: dict[str, int] | None = None) -> Selector:
    """Build the selector a method spec names. ``features`` (a :class:`insta.config.FeatureConfig`)
    configures the model-aware methods; ``budget`` asks an example method for N examples;
    ``sizes`` (``per_task``, ``query_examples``) given by the user override ``samples``' own."""
    from .checks import check_seed

    name, agg = parse_method(spec, aggregate)
    method = METHODS.get(name)
    if method.factory is None:
        then = "--method hybrid --model DIR" if method.fused else "--model DIR"
        raise InstaError(
            f"method {name!r} learns from a pool: align first ('insta align --pool SPEC --out DIR --recipe "
            f"{method.recipe}'), then select with {then}; the benchmark trains it per fold (--folds K)"
        )
    kwargs: dict[str, Any] = {}
    if method.uses_encoder:
        kwargs["encoder"] = encoder
    if method.uses_seed:
        kwargs["seed"] = check_seed(seed)
    if method.aggregating:
        kwargs.update(aggregate=agg or "max", vote_depth=vote_depth)
    if method.uses_features:
        from .config import FeatureConfig

        kwargs["features"] = features if features is not None else FeatureConfig(seed=kwargs.get("seed", 0))
    if name == "samples" and sizes:
        kwargs.update({"per_task" if k == "per_task" else "per_target": v for k, v in sizes.items()})
    if budget is not None:
        if not method.budget:
            raise InstaError(f"--budget selects examples; it applies to {', '.join(n for n, m in METHODS.items() if m.budget)} "
                             f"(method {name!r} selects tasks: use -k)")
        kwargs["budget"] = budget
    if index is not None:
        if name != "insta":
            raise InstaError(f"--index applies to --method insta (the search of its max aggregation); {name!r} ranks every task")
        kwargs["index"] = index
    return import_object(method.factory)(**kwargs)
