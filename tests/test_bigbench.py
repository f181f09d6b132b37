"""The BIG-bench reader on its real file format: a benchmark_tasks tree (and an sdist tarball
of it) written here by the test, with invented examples (no BIG-bench example is copied)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from test_cli import fails, run

from insta import load_pool
from insta.errors import InstaError
from insta.mix import MixConfig, build_mixture
from insta.readers import bigbench as bb

CANARY = "fixture written by the insta-select tests (stands where BIG-bench puts its canary)"

TASKS: dict[str, dict] = {
    # a multiple-choice task with a worded task_prefix and BIG-bench's default prompt prefixes
    "winowhy": {
        "name": "winowhy", "description": "Evaluate the reasoning about which word a pronoun refers to",
        "keywords": ["multiple choice", "common sense", "zero-shot"],
        "task_prefix": "Please say whether the reasoning below is correct.\n",
        "examples": [
            {"input": "The cup fell because it was slippery. 'it' is the cup.", "target_scores": {"correct": 1, "incorrect": 0}},
            {"input": "The dog chased the cat because it was hungry. 'it' is the cat.",
             "target_scores": {"correct": 0, "incorrect": 1}},
            {"input": "No right answer here.", "target_scores": {"correct": 0, "incorrect": 0}},  # dropped, as BIG-bench does
        ],
    },
    # a parent with two subtasks (its own task.json has no examples), generative targets
    "logical_deduction": {
        "name": "logical_deduction", "description": "Deduce the order of a sequence of objects",
        "keywords": ["logical reasoning", "multiple choice"],
    },
    "logical_deduction/three_objects": {
        "name": "three_objects", "description": "Order three objects from clues",
        "keywords": ["logical reasoning"], "task_prefix": "Q:",  # no words of its own: not an instruction
        "example_input_prefix": "\nClues: ", "example_output_prefix": "\nOrder: ",
        "examples": [{"input": "A is left of B. B is left of C.", "target": ["A B C", "A, B, C"]},
                     {"input": "C is left of A. A is left of B.", "target": "C A B"}],
    },
    "logical_deduction/five_objects": {
        "name": "five_objects", "description": "Order five objects from clues", "keywords": ["logical reasoning"],
        "examples": [{"input": "E, D, C, B, A in reverse.", "target": "A B C D E"}],
    },
    # choices not appended to the input
    "emoji_guess": {
        "name": "emoji_guess", "description": "Guess the movie from emoji", "keywords": ["visual reasoning"],
        "append_choices_to_input": False, "example_output_prefix": "\nMovie: ",
        "examples": [{"input": "🦁👑", "target_scores": {"The Lion King": 1, "Jaws": 0, "Up": 0}}],
    },
}


def write_tasks(root: Path, tasks: dict[str, dict] = TASKS) -> Path:
    base = root / "bigbench" / "benchmark_tasks"
    for rel, doc in tasks.items():
        path = base / rel / "task.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"canary": CANARY} | doc, ensure_ascii=False), encoding="utf-8")
    return base


@pytest.fixture()
def bb_root(tmp_path) -> Path:
    return write_tasks(tmp_path / "bb")


def test_tasks_instructions_labels_and_levels(bb_root):
    pool = load_pool(f"bigbench:all?source={bb_root}")
    assert pool.ids == ["emoji_guess", "logical_deduction", "winowhy"]
    winowhy = pool.get("winowhy")
    assert winowhy.texts == ["Evaluate the reasoning about which word a pronoun refers to",
                             "Please say whether the reasoning below is correct."]
    assert [i.name for i in winowhy.instructions] == ["description", "task_prefix"]
    assert winowhy.label == "common sense"  # the first keyword that is not a format ('multiple choice')
    assert winowhy.source == "bigbench" and winowhy.instances is None  # examples are read on demand
    deduction = pool.get("logical_deduction")  # subtasks merged: their descriptions, not the bare "Q:" prefix
    assert deduction.texts == ["Deduce the order of a sequence of objects", "Order five objects from clues",
                               "Order three objects from clues"]
    assert len(deduction.with_instances().instances) == 3
    sub = load_pool(f"bigbench:all?source={bb_root}&level=subtask")
    assert sub.ids == ["emoji_guess", "logical_deduction/five_objects", "logical_deduction/three_objects", "winowhy"]
    assert {t.dataset for t in sub if t.id.startswith("logical")} == {"logical_deduction"}  # siblings
    assert load_pool(f"bigbench:all?source={bb_root}&label=none").get("winowhy").label is None
    assert load_pool(f"bigbench:all?source={bb_root}&keywords=visual reasoning").ids == ["emoji_guess"]
    assert load_pool(f"bigbench:all?source={bb_root}&instances=1").get("winowhy").instances[0]["output"] == ["correct"]


def test_named_selections_globs_and_exclusion(bb_root):
    assert load_pool(f"bigbench:t0-eval?source={bb_root}").ids == ["logical_deduction", "winowhy"]
    assert load_pool(f"bigbench:all?source={bb_root}&exclude=t0-eval").ids == ["emoji_guess"]
    assert load_pool(f"bigbench:bbh?source={bb_root}&level=subtask").ids == [
        "logical_deduction/three_objects", "logical_deduction/five_objects"]
    assert load_pool(f"bigbench:logical_*,emoji_guess?source={bb_root}").ids == ["logical_deduction", "emoji_guess"]
    with pytest.raises(InstaError, match=r"unknown task or selection 'winowhy2' \(did you mean: winowhy"):
        load_pool(f"bigbench:winowhy2?source={bb_root}")
    with pytest.raises(InstaError, match="at level=subtask ids are TASK/SUBTASK"):
        load_pool(f"bigbench:three_objects?source={bb_root}&level=subtask")
    with pytest.raises(InstaError, match="level='leaf'; use task or subtask"):
        load_pool(f"bigbench:all?source={bb_root}&level=leaf")


def test_examples_render_as_bigbench_prompts(bb_root):
    pool = load_pool(f"bigbench:all?source={bb_root}")
    ex = pool.get("winowhy").with_instances().instances
    assert len(ex) == 2  # the example without a correct choice is dropped
    first = ex[0]
    assert first["output"] == ["correct"] and sorted(first["choices"]) == ["correct", "incorrect"]
    shown = [s.split("\nA:")[0] for s in first["prompt"].split("\n  choice: ")[1:]]
    # BIG-bench's order: the sorted choices permuted by RandomState(42), the same for every example
    assert shown == [str(c) for c in np.random.RandomState(42).permutation(["correct", "incorrect"])]
    assert ex[1]["prompt"].split("\n  choice: ")[1:] == first["prompt"].split("\n  choice: ")[1:]
    assert first["prompt"].startswith("Please say whether the reasoning below is correct.\n\nQ: The cup fell")
    assert first["prompt"].endswith("\nA:")  # BIG-bench's output prefix, trailing space left to the answer
    emoji = pool.get("emoji_guess").with_instances().instances[0]
    assert emoji["prompt"] == "\nQ: 🦁👑\nMovie:" and emoji["output"] == ["The Lion King"]  # choices not in the prompt
    gen = pool.get("logical_deduction").with_instances().instances[1:]  # five_objects' example comes first
    assert gen[0]["prompt"] == "Q:\nClues: A is left of B. B is left of C.\nOrder:"
    assert gen[0]["output"] == ["A B C", "A, B, C"] and gen[0]["choices"] == []
    rows = build_mixture([pool.get("winowhy"), pool.get("logical_deduction")], MixConfig(seed=0)).rows
    assert {r["source"] for r in rows} == {"bigbench"} and len(rows) == 5
    row = next(r for r in rows if r["input"] == first["prompt"])
    assert row["target"] == "correct" and row["references"] == ["correct"] and row["choices"] == first["choices"]


def test_bigbench_quirks_are_read_as_bigbench_reads_them(tmp_path):
    """null prefixes mean BIG-bench's defaults, "" means none, and append_choices_to_input
    spelled as the string "false" (six tasks of 1.0.0) still appends, as BIG-bench's code does."""
    root = write_tasks(tmp_path / "bb", {"quirky": {
        "description": "A task with odd metadata", "keywords": [], "example_input_prefix": None,
        "example_output_prefix": "", "choice_prefix": None, "append_choices_to_input": "false",
        "examples": [{"input": "pick", "target_scores": {"b": 0, "a": 1}}]}})
    task = load_pool(f"bigbench:all?source={root}").get("quirky")
    assert task.label is None
    inst = task.with_instances().instances[0]
    order = [str(c) for c in np.random.RandomState(42).permutation(["a", "b"])]
    assert inst["prompt"] == "\nQ: pick" + "".join(f"\n  choice: {c}" for c in order)
    assert inst["output"] == ["a"]


def test_named_selection_absent_from_the_source(bb_root, tmp_path):
    other = write_tasks(tmp_path / "other", {"lonely": {"description": "d", "examples": [{"input": "q", "target": "a"}]}})
    with pytest.raises(InstaError, match="none of the 't0-eval' tasks is in this BIG-bench source"):
        load_pool(f"bigbench:t0-eval?source={other}")
    with pytest.raises(InstaError, match="bigbench exclude=: unknown task or selection 'nope'"):
        load_pool(f"bigbench:all?source={bb_root}&exclude=nope")
    with pytest.raises(InstaError, match="TASK/SUBTASK ids need level=subtask"):
        load_pool(f"bigbench:logical_deduction/three_objects?source={bb_root}")


def test_total_example_budget_is_shared_evenly(bb_root):
    pool = load_pool(f"bigbench:all?source={bb_root}")
    tasks = [pool.get("winowhy"), pool.get("logical_deduction"), pool.get("emoji_guess")]  # 2, 3, 1 examples
    mix = build_mixture(tasks, MixConfig(total_examples=5, seed=0))
    assert len(mix.rows) == 5 and mix.counts == {"winowhy": 2, "logical_deduction": 2, "emoji_guess": 1}
    mix = build_mixture(tasks, MixConfig(total_examples=100, seed=0))
    assert mix.counts == {"winowhy": 2, "logical_deduction": 3, "emoji_guess": 1}  # all there is
    # a budget smaller than the number of tasks goes to tasks drawn at random, not the first ones
    firsts = {tuple(sorted(build_mixture(tasks, MixConfig(total_examples=2, seed=s)).counts)) for s in range(12)}
    assert len(firsts) == 3  # every pair of the three tasks occurs
    with pytest.raises(InstaError, match="mix.total_examples \\(--total-examples\\) must be at least 1"):
        MixConfig(total_examples=0)


def _sdist(path: Path, tasks: dict[str, dict] = TASKS) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for rel, doc in tasks.items():
            data = json.dumps({"canary": CANARY} | doc).encode()
            info = tarfile.TarInfo(f"bigbench-1.0.0/bigbench/benchmark_tasks/{rel}/task.json")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        readme = tarfile.TarInfo("bigbench-1.0.0/README.md")
        readme.size = 2
        tf.addfile(readme, io.BytesIO(b"hi"))
    return path


def test_sdist_is_extracted_and_indexed_once(tmp_path, monkeypatch, isolated_cache):
    sdist = _sdist(tmp_path / "bigbench-1.0.0.tar.gz")
    monkeypatch.setenv("INSTA_BIGBENCH", str(sdist))
    pool = load_pool("bigbench:all")
    assert pool.ids == ["emoji_guess", "logical_deduction", "winowhy"]
    root = bb.tasks_root()
    assert root.is_relative_to(isolated_cache) and (root / bb.INDEX).is_file()
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("task.json")) == sorted(f"{r}/task.json" for r in TASKS)
    stamp = (root / bb.INDEX).stat().st_mtime_ns
    assert load_pool("bigbench:winowhy").get("winowhy").with_instances().instances[0]["output"] == ["correct"]
    assert (root / bb.INDEX).stat().st_mtime_ns == stamp  # not extracted or indexed again
    # the cache layout of a pip-downloaded sdist: found there without any variable
    monkeypatch.delenv("INSTA_BIGBENCH")
    with pytest.raises(InstaError, match="BIG-bench is not in the cache"):
        bb.tasks_root(download=False)
    bb._extract_sdist(sdist, isolated_cache / "bigbench-1.0.0" / "benchmark_tasks")
    assert bb.tasks_root(download=False) == isolated_cache / "bigbench-1.0.0" / "benchmark_tasks"


def test_index_of_a_folder_follows_its_files(tmp_path, isolated_cache):
    root = write_tasks(tmp_path / "bb")
    assert load_pool(f"bigbench:all?source={root}").get("winowhy").texts[0].startswith("Evaluate")
    doc = json.loads((root / "winowhy" / "task.json").read_text())
    (root / "winowhy" / "task.json").write_text(json.dumps(doc | {"description": "A new description"}))
    assert load_pool(f"bigbench:all?source={root}").get("winowhy").texts[0] == "A new description"


@pytest.mark.parametrize("doc, match", [
    ("{not json", r"winowhy/task.json:1: invalid JSON"),
    ('["a"]', "expected a JSON object, got array"),
    ('{"description": 3}', "field 'description' must be a string, got int"),
    ('{"description": "d", "keywords": "logic"}', "field 'keywords' must be a list of strings"),
    ('{"description": "d", "examples": {"a": 1}}', "field 'examples' must be a list, got dict"),
    ('{"description": "d", "append_choices_to_input": 0}', "'append_choices_to_input' must be true or false"),
    ('{"description": "  ", "examples": [{"input": "q", "target": "a"}]}',
     "no instruction text: field 'description' is missing or blank"),
])
def test_malformed_task_files_name_file_and_field(tmp_path, doc, match):
    root = write_tasks(tmp_path / "bb", {"winowhy": {"description": "x"}})
    (root / "winowhy" / "task.json").write_text(doc)
    with pytest.raises(InstaError, match=match):
        load_pool(f"bigbench:all?source={root}")


@pytest.mark.parametrize("example, match", [
    ({"input": 3, "target": "x"}, r"examples\[0\] must be an object with a text 'input'"),
    ({"input": "q", "target_scores": {"a": "high"}}, r"examples\[0\].target_scores\['a'\] must be a number"),
    ({"input": "q", "target_scores": []}, r"examples\[0\].target_scores must be a non-empty object"),
    ({"input": "q", "target": {"t": 1}}, r"examples\[0\].target must be text or a list of texts"),
])
def test_malformed_examples_are_reported_when_read(tmp_path, example, match):
    root = write_tasks(tmp_path / "bb", {"winowhy": {"description": "d", "examples": [example]}})
    task = load_pool(f"bigbench:all?source={root}").get("winowhy")
    with pytest.raises(InstaError, match=match):
        task.with_instances()


def test_non_utf8_and_missing_sources(tmp_path):
    root = write_tasks(tmp_path / "bb", {"winowhy": {"description": "d"}})
    (root / "winowhy" / "task.json").write_bytes(b'{"description": "caf\xe9"}')
    with pytest.raises(InstaError, match=r"winowhy/task.json: not UTF-8 text \(byte 20: 0xe9\); re-save the file as UTF-8"):
        load_pool(f"bigbench:all?source={root}")
    with pytest.raises(InstaError, match="does not exist; give the bigbench sdist tarball"):
        load_pool(f"bigbench:all?source={tmp_path / 'nowhere'}")
    with pytest.raises(InstaError, match="no \\*/task.json under"):
        load_pool(f"bigbench:all?source={tmp_path}")
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(b"not a tarball")
    with pytest.raises(InstaError, match="not a readable BIG-bench sdist"):
        load_pool(f"bigbench:all?source={broken}")


def test_cli_select_mix_on_bigbench(bb_root, tiny_model, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("INSTA_BIGBENCH", str(bb_root))
    sel = tmp_path / "sel.json"
    code, out, err = run(monkeypatch, capsys, "select", "-p", "bigbench:all?exclude=winowhy", "--targets", "bigbench:winowhy",
                         "-k", "2", "--model", tiny_model, "--no-cache", "-o", sel, "--json", "-q")
    assert code == 0, err
    assert sorted(r["task_id"] for r in json.loads(out)["selections"][0]["results"]) == ["emoji_guess", "logical_deduction"]
    code, out, err = run(monkeypatch, capsys, "mix", "-s", sel, "-o", tmp_path / "mix", "--json", "-q")
    assert code == 0, err
    assert json.loads(out)["tasks"] == {"logical_deduction": 3, "emoji_guess": 1} or json.loads(out)["n_examples"] == 4
    fails(monkeypatch, capsys, "select", "-p", "bigbench:nope", "-i", "x", match="unknown task or selection 'nope'")


def test_named_lists_match_the_real_bigbench_metadata(shared_data):
    """T0's 14 evaluation tasks and BBH's parents exist as JSON tasks of bigbench 1.0.0 (the
    metadata in ../shared/data, read from the real sdist), and the programmatic ones are known."""
    rows = [json.loads(line) for line in (shared_data / "bigbench" / "tasks.jsonl").read_text().splitlines()]
    json_tasks = {r["task"] for r in rows if r["level"] == "task" and r["type"] == "json"}
    programmatic = {r["task"] for r in rows if r["level"] == "task" and r["type"] == "programmatic"}
    assert set(bb.T0_EVAL) <= json_tasks and len(bb.T0_EVAL) == 14
    subtasks = {(r["task"], r["subtask"]) for r in rows if r["level"] == "subtask"}
    bbh = [json.loads(line) for line in (shared_data / "bbh" / "tasks.jsonl").read_text().splitlines()]
    assert {b["bigbench_task"] for b in bbh} == set(bb.BBH)
    for b in bbh:
        if b["bigbench_subtask"]:
            assert b["bigbench_subtask"] in bb.BBH[b["bigbench_task"]] and (b["bigbench_task"], b["bigbench_subtask"]) in subtasks
    assert set(bb.BBH) - json_tasks == {"boolean_expressions", "multistep_arithmetic", "web_of_lies"} <= programmatic
