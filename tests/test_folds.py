"""Fold machinery: no task and no sibling subset ever on both sides."""

import pytest

from insta import InstaError, Instruction, Task, TaskPool, load_pool
from insta.bench import make_folds


def _check(pool, folds):
    by_id = {t.id: t for t in pool}
    seen = []
    for fold in folds:
        assert not set(fold.train) & set(fold.test)
        assert set(fold.train) | set(fold.test) == set(pool.ids)
        test_datasets = {by_id[i].dataset or i for i in fold.test}
        train_datasets = {by_id[i].dataset or i for i in fold.train}
        assert not test_datasets & train_datasets, "a sibling leaked across the split"
        seen.extend(fold.test)
    assert sorted(seen) == sorted(pool.ids)  # every task is held out exactly once


def test_p3_folds_keep_subsets_together(p3):
    pool = load_pool("p3:t0-train")
    for n in (2, 3, 5):
        folds = make_folds(pool, n, seed=7)
        _check(pool, folds)
        sizes = [len(f.test) for f in folds]
        assert max(sizes) - min(sizes) <= 3
    folds = make_folds(pool, 3, seed=7)
    home = {t: f.index for f in folds for t in f.test}
    assert home["adversarial_qa/dbert"] == home["adversarial_qa/dbidaf"] == home["adversarial_qa/droberta"]
    assert home["duorc/SelfRC"] == home["duorc/ParaphraseRC"]
    assert make_folds(pool, 3, seed=7) == folds
    assert make_folds(pool, 3, seed=8) != folds


def test_niv2_task_file_folds(shared_data):
    pool = load_pool(f"niv2:{shared_data}/niv2")
    _check(pool, make_folds(pool, 4, seed=0))


def test_fold_errors():
    pool = TaskPool([Task(f"t{i}", [Instruction("x")], dataset="same" if i < 3 else None) for i in range(5)])
    with pytest.raises(InstaError, match="at least 2"):
        make_folds(pool, 1)
    with pytest.raises(InstaError, match="only 3 independent task groups"):
        make_folds(pool, 4)
    _check(pool, make_folds(pool, 3))
