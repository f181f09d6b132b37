import pytest

from insta import InstaError, Instruction, Task, TaskPool


def task(tid, *texts, label=None, dataset=None):
    return Task(id=tid, instructions=[Instruction(t) for t in texts], label=label, dataset=dataset)


def test_pool_rejects_duplicate_ids():
    with pytest.raises(InstaError, match="duplicate task id 'a'"):
        TaskPool([task("a", "x"), task("a", "y")], "mine")


def test_pool_rejects_task_without_instruction_text():
    with pytest.raises(InstaError, match="task 'b' has no usable instruction text"):
        TaskPool([task("a", "x"), task("b", "   ")], "mine")
    with pytest.raises(InstaError, match="no usable instruction"):
        TaskPool([Task(id="c", instructions=[])])


def test_get_suggests_close_ids():
    pool = TaskPool([task("super_glue/rte", "x"), task("super_glue/cb", "y")], "p")
    with pytest.raises(InstaError, match=r"unknown task id 'super_glue/rt'.*did you mean: super_glue/rte"):
        pool.get("super_glue/rt")


def test_group_by_dataset_merges_subsets_and_keeps_singletons():
    pool = TaskPool([
        task("adversarial_qa/dbert", "a1", label="qa", dataset="adversarial_qa"),
        task("adversarial_qa/dbidaf", "a2", "a3", label="qa", dataset="adversarial_qa"),
        task("imdb", "s", label="sentiment", dataset="imdb"),
        task("mixed/x", "m1", label="l1", dataset="mixed"),
        task("mixed/y", "m2", label="l2", dataset="mixed"),
    ])
    grouped = pool.group_by_dataset()
    assert grouped.ids == ["adversarial_qa", "imdb", "mixed"]
    adv = grouped.get("adversarial_qa")
    assert adv.texts == ["a1", "a2", "a3"] and adv.label == "qa"
    assert adv.members == ("adversarial_qa/dbert", "adversarial_qa/dbidaf")
    assert grouped.get("mixed").label == "l1+l2"
    assert grouped.get("imdb") is pool.get("imdb")
