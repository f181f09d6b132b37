"""Training mixtures from real NIV2 task files and real promptsource templates."""

from __future__ import annotations

import json

import pytest
from test_cli import fails, run

from insta.errors import InstaError
from insta.mix import MixConfig, build_mixture, label_choices, load_mixture, local_rows
from insta.pools import load_pool
from insta.tasks import Instruction, Task

COPA = "task1393_superglue_copa_text_completion"
BOOL = "task1732_bbh_boolean_expressions"


@pytest.fixture()
def niv2_pool(shared_data):
    return load_pool(f"niv2:{shared_data / 'niv2'}?instances=all")


def test_instances_are_read_only_for_the_tasks_used(shared_data, niv2_pool):
    bare = load_pool(f"niv2:{shared_data / 'niv2'}")  # as selection loads it: no instances
    assert bare.get(COPA).instances is None
    full = bare.get(COPA).with_instances()
    assert full.instances == niv2_pool.get(COPA).instances and len(full.instances) > 0
    assert full.instructions == bare.get(COPA).instructions and full.split == bare.get(COPA).split
    assert full.with_instances() is full  # already complete: not read again
    plain = Task(id="own", instructions=[Instruction(text="Classify it.")])
    assert plain.with_instances() is plain  # not a NIV2 file: nothing to read


def test_niv2_encodings_follow_tk_instruct(niv2_pool):
    copa = niv2_pool.get(COPA)
    plain = build_mixture([copa], MixConfig(per_task_cap=5, seed=1)).rows
    first = copa.instances[0]
    assert len(plain) == 5
    for row in plain:
        assert row["input"].startswith("Definition: " + copa.instructions[0].raw.strip()[:40])
        assert row["input"].endswith("Output:") and "Positive Example" not in row["input"]
        assert row["choices"] == ["A", "B"] and row["target"] in ("A", "B")
    pos = build_mixture([copa], MixConfig(per_task_cap=5, format="def+pos", seed=1)).rows
    example = copa.demonstrations[0]
    assert "Positive Example 1 -\nInput: " + example["input"].strip() in pos[0]["input"]
    assert "Positive Example 2 -" in pos[0]["input"] and "Positive Example 3 -" not in pos[0]["input"]
    # every row is a real instance: its input is in the prompt and its target is the first output
    by_input = {i["input"].strip(): i["output"][0] for i in copa.instances}
    for row in plain:
        text = row["input"].split("Now complete the following example -\nInput: ", 1)[1].rsplit("\nOutput:", 1)[0]
        assert by_input[text] == row["target"]
    assert first["output"][0] in ("A", "B")


def test_label_choices_only_for_classification(niv2_pool):
    assert label_choices(niv2_pool.get(BOOL)) == ["False", "True"]
    assert label_choices(niv2_pool.get("task957_e2e_nlg_text_generation_generate")) == []


def test_cap_seed_and_exact_duplicates(niv2_pool):
    tasks = [niv2_pool.get(COPA), niv2_pool.get(BOOL)]
    a = build_mixture(tasks, MixConfig(per_task_cap=7, seed=0))
    b = build_mixture(tasks, MixConfig(per_task_cap=7, seed=0))
    c = build_mixture(tasks, MixConfig(per_task_cap=7, seed=1))
    assert a.rows == b.rows and a.rows != c.rows
    assert a.counts == {COPA: 7, BOOL: 7}
    dup = Task(id="dup", instructions=[Instruction("Copy the word.")],
               instances=[{"input": "x", "output": ["x"]}] * 3 + [{"input": "y", "output": ["y", "why"]}])
    m = build_mixture([dup], MixConfig())
    assert m.counts == {"dup": 2} and m.dropped_duplicates == 2
    assert {r["target"] for r in m.rows} == {"x", "y"}
    assert [r["references"] for r in m.rows if r["target"] == "y"] == [["y", "why"]]
    with pytest.raises(InstaError, match="task 'empty' has no instances"):
        build_mixture([Task(id="empty", instructions=[Instruction("x")], instances=[])], MixConfig())
    with pytest.raises(InstaError, match="mix.per_task_cap \\(--per-task-cap\\) must be at least 1"):
        MixConfig(per_task_cap=0)
    with pytest.raises(InstaError, match="mix.format \\(--format\\) must be one of def, def\\+pos; got 'tk'"):
        MixConfig(format="tk")


def test_p3_templates_render_over_local_rows(p3, tmp_path):
    (tmp_path / "super_glue").mkdir()
    (tmp_path / "imdb.jsonl").write_text(
        json.dumps({"text": "A wonderful film ||| truly.", "label": 1}) + "\n" + json.dumps({"text": "Dull.", "label": 0}) + "\n")
    (tmp_path / "super_glue" / "rte.jsonl").write_text(
        json.dumps({"premise": "The cat sat on the mat.", "hypothesis": "A cat sits.", "label": 0, "idx": 0}) + "\n")
    pool = load_pool("p3:imdb,super_glue/rte")
    m = build_mixture(list(pool), MixConfig(seed=3), rows=local_rows(tmp_path))
    assert m.counts == {"imdb": 2, "super_glue/rte": 1}
    for row in m.rows:
        assert row["source"] == "p3" and row["choices"] and row["target"] in row["choices"]
    imdb = [r for r in m.rows if r["task"] == "imdb"]
    for r in imdb:  # imdb's templates answer with answer_choices[label]
        assert r["target"] == r["choices"][1 if "wonderful" in r["input"] else 0]
    assert any("A wonderful film ||| truly." in r["input"] for r in imdb)  # a '|||' inside the data survives
    rte = next(r for r in m.rows if r["task"] == "super_glue/rte")
    assert "The cat sat on the mat." in rte["input"] and rte["target"] in ("Yes", "yes", "True", "true")
    with pytest.raises(InstaError, match="no rows for P3 entry ag_news"):
        build_mixture(list(load_pool("p3:ag_news")), MixConfig(), rows=local_rows(tmp_path))
    with pytest.raises(InstaError, match="merges 2 tasks \\(group=dataset\\)"):
        build_mixture(list(load_pool("p3:adversarial_qa/dbidaf,adversarial_qa/dbert?group=dataset")), MixConfig(), rows=local_rows(tmp_path))


def test_mix_cli_from_a_real_selection(shared_data, monkeypatch, capsys, tmp_path):
    pool = f"niv2:{shared_data / 'niv2'}"
    sel = tmp_path / "sel.json"
    code, _, err = run(monkeypatch, capsys, "select", "-p", pool, "-t", BOOL, "-k", "3", "--method", "bm25", "--out", sel, "-q")
    assert code == 0, err
    chosen = [r["task_id"] for r in json.loads(sel.read_text())["selections"][0]["results"]]
    code, out, err = run(monkeypatch, capsys, "mix", "--selection", sel, "--out", tmp_path / "mix", "--per-task-cap", "4", "--json")
    assert code == 0, err
    manifest = json.loads(out)
    assert list(manifest["tasks"]) == chosen and manifest["n_examples"] == sum(manifest["tasks"].values())
    assert manifest["source"]["target"] == BOOL and manifest["source"]["pool"] == pool
    dataset, saved = load_mixture(tmp_path / "mix")
    assert len(dataset) == manifest["n_examples"] == len((tmp_path / "mix" / "mixture.jsonl").read_text().splitlines())
    assert saved == manifest and set(dataset["task"]) == set(chosen)
    # bad input: the out folder is in the way (and stays as it was), tasks not in the given pool, several targets
    fails(monkeypatch, capsys, "mix", "-s", sel, "-o", tmp_path / "mix", match="already exists and is not empty")
    assert len(load_mixture(tmp_path / "mix")[0]) == manifest["n_examples"]
    table = tmp_path / "other.jsonl"
    table.write_text(json.dumps({"id": "a", "instruction": "x"}) + "\n")
    fails(monkeypatch, capsys, "mix", "-s", sel, "-o", tmp_path / "m2", "-p", table, match=f"selected task {chosen[0]!r} is not in pool")
    both = tmp_path / "both.json"
    run(monkeypatch, capsys, "select", "-p", pool, "-t", BOOL, "-t", COPA, "-k", "2", "--out", both, "-q", "--method", "bm25")
    fails(monkeypatch, capsys, "mix", "-s", both, "-o", tmp_path / "m3", match="holds 2 selections; pick one with --target")
    fails(monkeypatch, capsys, "mix", "-s", both, "-o", tmp_path / "m3", "-t", "nope", match="unknown target 'nope'")
    fails(monkeypatch, capsys, "mix", "-s", tmp_path / "none.json", "-o", tmp_path / "m3", match="does not exist")
    assert not (tmp_path / "m2").exists() and not (tmp_path / "m3").exists()


def test_p3_text_fields_are_cut_like_promptsource_apply():
    """promptsource's apply(truncate=True), which rendered P3, cuts every text field to 2,048 characters."""
    import random

    from insta.mix import TEXT_VAR_LENGTH, _environment, render_template

    env = _environment(random.Random(0))
    prompt, target, _ = render_template(env, "Review: {{text}} ||| {{label}}", None, {"text": "a" * 5000, "label": "good"})
    assert TEXT_VAR_LENGTH == 2048 and prompt == "Review: " + "a" * 2048 and target == "good"
