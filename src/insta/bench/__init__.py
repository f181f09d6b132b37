"""Selection-quality benchmark: leave-one-task-out ranking suites with label ground truth."""

from .folds import Fold, make_folds
from .metrics import METRICS, average_precision, bootstrap_ci, ndcg_at, precision_at
from .runner import BenchResult, MethodResult, run_bench
from .suites import SUITES, Suite, build_suite

__all__ = [
    "METRICS", "SUITES", "BenchResult", "Fold", "MethodResult", "Suite", "average_precision", "bootstrap_ci",
    "build_suite", "make_folds", "ndcg_at", "precision_at", "run_bench",
]
