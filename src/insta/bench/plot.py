"""Plot of a benchmark (PNG, SVG or PDF): per-method bars for each metric, with bootstrap 95% CIs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InstaError
from ..io import atomic_path
from .metrics import METRICS

if TYPE_CHECKING:  # for the annotation only: runner imports this module to save its plots
    from .runner import BenchResult


def plot_result(result: BenchResult, path: str | os.PathLike[str]) -> Path:
    """Write the plot to ``path`` atomically (temporary file, then rename)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    out = Path(path).expanduser()
    methods = [m for m in result.methods if m.skipped is None]
    metrics = list(METRICS)
    width = 0.8 / max(1, len(methods))
    x = np.arange(len(metrics))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(metrics) + 0.5 * len(methods)), 4.2))
    for j, m in enumerate(methods):
        means = np.array([m.metrics[k] for k in metrics])
        lo = np.array([m.ci[k][0] for k in metrics])
        hi = np.array([m.ci[k][1] for k in metrics])
        ax.bar(x + (j - (len(methods) - 1) / 2) * width, means, width, label=m.method,
               yerr=np.vstack([means - lo, hi - means]), capsize=2, error_kw={"linewidth": 0.8})
    ax.set_xticks(x)
    ax.set_xticklabels(metrics)
    ax.set_ylim(0, 1)
    ax.set_ylabel("score (95% bootstrap CI)")
    folds = f", {result.folds} folds" if result.folds else ""
    ax.set_title(f"insta bench: {result.suite} ({result.n_scored} targets{folds})", fontsize=10)
    ax.legend(fontsize=8, ncol=min(3, len(methods)), loc="upper right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, out)


#: what a plot can be written as, from the file name's suffix
PLOT_FORMATS = ("png", "svg", "pdf")


def plot_format(path: str | os.PathLike[str], what: str = "--plot") -> str:
    """The image format named by ``path``'s suffix; a one-line error for any other suffix
    (``x.txt`` would otherwise hold a PNG under a name that says text)."""
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in PLOT_FORMATS:
        raise InstaError(f"{what} {os.fspath(path)!r}: name the file .png, .svg or .pdf (the format follows the suffix)")
    return suffix


def save_figure(fig, path: str | os.PathLike[str]) -> Path:
    """Write a matplotlib figure to ``path`` atomically (PNG, SVG or PDF, by its suffix), and close it."""
    import matplotlib.pyplot as plt

    out = Path(path).expanduser()
    try:
        fmt = plot_format(out)
        with atomic_path(out, "--plot") as tmp:
            fig.savefig(tmp, dpi=120, format=fmt)
    finally:
        plt.close(fig)
    return out
