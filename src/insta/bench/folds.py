"""K-fold splits by task for learned selectors: siblings (tasks on one source dataset,
e.g. the three adversarial_qa subsets) always land in the same fold, so nothing a selector
trains on leaks into the targets or pools it is scored on."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InstaError
from ..tasks import TaskPool, family


@dataclass(frozen=True)
class Fold:
    index: int
    train: tuple[str, ...]
    test: tuple[str, ...]


def make_folds(pool: TaskPool, n_folds: int, seed: int = 0) -> list[Fold]:
    """Split the pool's tasks into ``n_folds`` folds of near-equal size, keeping siblings together.

    Groups are shuffled with ``seed`` and then placed, largest first, into the fold with
    the fewest tasks so far (ties: lowest fold index). Deterministic given the seed.
    """
    groups: dict[str, list[str]] = {}
    for t in pool:
        groups.setdefault(family(t), []).append(t.id)
    if n_folds < 2:
        raise InstaError(f"folds must be at least 2, got {n_folds}")
    if n_folds > len(groups):
        raise InstaError(f"{n_folds} folds asked for, but {pool.name} has only {len(groups)} independent task groups")
    keys = list(groups)
    rng = np.random.default_rng(seed)
    rng.shuffle(keys)
    keys.sort(key=lambda k: -len(groups[k]))  # stable: shuffled order among equal sizes
    members: list[list[str]] = [[] for _ in range(n_folds)]
    for key in keys:
        smallest = min(range(n_folds), key=lambda f: (len(members[f]), f))
        members[smallest].extend(groups[key])
    order = {tid: i for i, tid in enumerate(pool.ids)}
    folds = []
    for i, test in enumerate(members):
        test_set = set(test)
        folds.append(Fold(i, tuple(t for t in pool.ids if t not in test_set), tuple(sorted(test, key=order.get))))
    return folds
