"""Readers on real data: promptsource 0.2.3 templates, NIV2 task files, the shared task tables."""

import json

import pytest

from insta import InstaError, load_pool, parse_spec
from insta.readers.promptsource import template_to_instruction, templates_root


# ------------------------------------------------------------------ spec parsing

def test_spec_parsing_and_bare_paths(tmp_path):
    spec = parse_spec("p3:t0-train?group=dataset&original_only=true")
    assert (spec.kind, spec.arg, spec.options) == ("p3", "t0-train", {"group": "dataset", "original_only": "true"})
    assert parse_spec("p3").arg == ""
    assert parse_spec("some/dir/tasks.jsonl?id=name").kind == "jsonl"
    assert parse_spec("x.CSV").kind == "csv"


@pytest.mark.parametrize("spec, message", [
    ("nope:thing", "unknown pool kind 'nope'; available: bigbench, csv, hf, jsonl, niv2, p3"),
    ("p3:t0-train?colour=red", "unknown option 'colour' for p3; available: group, original_only, templates"),
    ("p3:t0-train?group", "unknown option|options must look like"),
    ("", "empty pool spec"),
])
def test_bad_specs(spec, message):
    with pytest.raises(InstaError, match=message):
        load_pool(spec)


# ------------------------------------------------------------------ P3 / promptsource

def test_template_to_instruction_follows_the_paper():
    jinja = ('{{premise}} Using only the above description and what you know about the\n world, is '
             '"{{hypothesis}}" definitely correct? Yes or no? ||| {% if label != -1 %}{{ answer_choices[label] }}{% endif %}')
    assert template_to_instruction(jinja) == (
        'Using only the above description and what you know about the world, is " " definitely correct? Yes or no?')
    assert template_to_instruction("{% if a %}Summarize: {{ text }}{% endif %}\n|||{{summary}}") == "Summarize:"
    assert template_to_instruction("{{text}} ||| {{label}}") == ""


def test_p3_t0_train_pool_with_clusters(p3):
    pool = load_pool("p3:t0-train")
    assert len(pool) == 38
    assert sorted(set(pool.labels)) == [
        "closed_book_qa", "extractive_qa", "multiple_choice_qa", "paraphrase_identification",
        "sentiment", "structure_to_text", "summarization", "topic_classification"]
    imdb = pool.get("imdb")
    assert imdb.label == "sentiment" and imdb.dataset == "imdb"
    assert len(imdb.instructions) == 11
    assert all(i.raw and "|||" in i.raw and "{{" not in i.text for i in imdb.instructions)
    # 313 templates in the 38 entries; those with no words outside placeholders are dropped
    assert 300 <= pool.n_instructions <= 313


def test_p3_grouping_merges_subsets_not_collections(p3):
    pool = load_pool("p3:t0-train?group=dataset")
    assert len(pool) == 35
    assert "adversarial_qa" in pool and "adversarial_qa/dbert" not in pool
    assert "glue/mrpc" in pool and "glue/qqp" in pool  # a benchmark collection's subsets stay apart
    assert pool.get("duorc").members == ("duorc/SelfRC", "duorc/ParaphraseRC")


def test_p3_eval_selection_and_original_only(p3):
    pool = load_pool("p3:t0-eval")
    assert sorted(pool.ids) == sorted([
        "super_glue/wsc.fixed", "winogrande/winogrande_xl", "super_glue/cb", "super_glue/rte", "anli",
        "super_glue/copa", "story_cloze/2016", "hellaswag", "super_glue/wic"])
    assert pool.get("super_glue/copa").label == "sentence_completion"
    original = load_pool("p3:t0-eval?original_only=true")
    assert original.n_instructions < pool.n_instructions
    assert 80 <= original.n_instructions <= 86


def test_p3_entries_globs_and_unknown(p3):
    assert load_pool("p3:super_glue/*").ids[:2] == ["super_glue/axb", "super_glue/axg"]
    assert load_pool("p3:imdb,ag_news").ids == ["imdb", "ag_news"]
    assert len(load_pool("p3")) > 250
    with pytest.raises(InstaError, match="unknown promptsource entry or selection 'imbd'.*did you mean: imdb"):
        load_pool("p3:imbd")
    with pytest.raises(InstaError, match="group='subset'"):
        load_pool("p3:t0-train?group=subset")


def test_p3_reads_the_sdist_tarball_directly(promptsource_sdist):
    pool = load_pool(f"p3:t0-eval?templates={promptsource_sdist}")
    assert len(pool) == 9


def test_p3_downloads_templates_with_pip_into_the_cache(isolated_cache):
    """The real first-use path: nothing cached, the product runs pip download itself."""
    pool = load_pool("p3:t0-train")
    assert len(pool) == 38
    assert (isolated_cache / "promptsource-0.2.3" / "templates" / "imdb" / "templates.yaml").is_file()
    assert templates_root(download=False) == isolated_cache / "promptsource-0.2.3" / "templates"


def test_p3_missing_templates_location_is_a_clear_error(tmp_path):
    with pytest.raises(InstaError, match="does not exist"):
        load_pool(f"p3:t0-train?templates={tmp_path / 'missing'}")
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"not a tarball")
    with pytest.raises(InstaError, match="not a readable promptsource sdist"):
        load_pool(f"p3:t0-train?templates={bad}")


# ------------------------------------------------------------------ NIV2 checkout

def test_niv2_reader_on_real_task_files(shared_data):
    root = shared_data / "niv2"
    pool = load_pool(f"niv2:{root}")
    assert len(pool) == 92
    copa = pool.get("task1393_superglue_copa_text_completion")
    assert copa.label == "Cause Effect Classification" and copa.dataset == "copa" and copa.split == "test"
    assert copa.texts[0].startswith("In this task, you are given a premise sentence")
    assert copa.instances is None  # not loaded unless asked

    train = set((root / "splits" / "default" / "train_tasks.txt").read_text().split())
    train_pool = load_pool(f"niv2:{root}?split=train")
    assert set(train_pool.ids) == {t for t in pool.ids if t in train}
    assert all(t.split == "train" for t in train_pool)
    test_pool = load_pool(f"niv2:{root}?split=test")
    assert "task1393_superglue_copa_text_completion" in test_pool


def test_niv2_filters_and_instances(shared_data):
    root = shared_data / "niv2"
    no_qa = load_pool(f"niv2:{root}?exclude_categories=Question Answering")
    assert all("Question Answering" not in t.meta["categories"] for t in no_qa)
    only = load_pool(f"niv2:{root}?categories=Cause Effect Classification&instances=5")
    assert only.ids == ["task1393_superglue_copa_text_completion"]
    inst = only[0].instances
    assert len(inst) == 5 and inst[0]["output"] == ["A"] and "(A)" in inst[0]["input"]


def test_niv2_bad_inputs(tmp_path):
    with pytest.raises(InstaError, match="does not exist"):
        load_pool(f"niv2:{tmp_path / 'nowhere'}")
    with pytest.raises(InstaError, match="no tasks/task"):
        load_pool(f"niv2:{tmp_path}")
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "task1_x.json").write_text('{"Definition": ["ok"],\n "Categories": [}')
    with pytest.raises(InstaError, match=r"task1_x.json:2: invalid JSON"):
        load_pool(f"niv2:{tmp_path}")
    (tmp_path / "tasks" / "task1_x.json").write_text('{"Definition": ["ok"]}')
    with pytest.raises(InstaError, match="split=train asked for but"):
        load_pool(f"niv2:{tmp_path}?split=train")


# ------------------------------------------------------------------ generic tables on the shared files

def test_niv2_task_table(shared_data):
    pool = load_pool(f"jsonl:{shared_data}/niv2/tasks.jsonl?id=name&instruction=summary&label=category")
    assert len(pool) == 1613
    assert pool.get("task002_quoref_answer_generation").label == "Question Answering"
    english_train = load_pool(f"{shared_data}/niv2/tasks.jsonl?where=split_default:train")
    assert len(english_train) == 756


def test_bigbench_table_needs_a_composite_id(shared_data):
    path = shared_data / "bigbench" / "tasks.jsonl"
    with pytest.raises(InstaError, match="duplicate task id"):
        load_pool(f"jsonl:{path}?id=name&skip_empty=true")
    with pytest.raises(InstaError, match=r"tasks.jsonl:\d+: task 'question_answer_creation' has an empty instruction"):
        load_pool(f"jsonl:{path}?id=task,subtask&instruction=description")
    pool = load_pool(f"jsonl:{path}?id=task,subtask&instruction=description&skip_empty=true")
    assert len(pool) == 1082
    assert "abstract_narrative_understanding/4_distractors" in pool
    top = load_pool(f"jsonl:{path}?id=task&instruction=description&where=level:task&skip_empty=true")
    assert len(top) == 208


def test_bbh_table(shared_data):
    pool = load_pool(f"{shared_data}/bbh/tasks.jsonl")
    assert len(pool) == 27
    assert pool.get("boolean_expressions").texts == ["Evaluate the result of a random Boolean expression."]


# ------------------------------------------------------------------ user tables: CSV, JSONL, HF datasets

def test_csv_and_list_valued_instructions(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text("task,prompt,kind\nsent,Is the review positive?,cls\ntopic,Which topic is this?,cls\n")
    pool = load_pool(f"csv:{path}?id=task&instruction=prompt&label=kind")
    assert pool.ids == ["sent", "topic"] and pool.labels == ["cls", "cls"]
    jl = tmp_path / "multi.jsonl"
    jl.write_text(json.dumps({"id": "t1", "instructions": ["first one", "second one"]}) + "\n\n")
    assert load_pool(str(jl)).get("t1").texts == ["first one", "second one"]


def test_hf_dataset_saved_to_disk(tmp_path):
    import datasets

    ds = datasets.Dataset.from_list([
        {"name": "a", "definition": "Translate to French.", "category": "Translation"},
        {"name": "b", "definition": "Summarize the text.", "category": "Summarization"},
    ])
    ds.save_to_disk(str(tmp_path / "tasks"))
    pool = load_pool(f"hf:{tmp_path / 'tasks'}")
    assert pool.ids == ["a", "b"] and pool.get("a").label == "Translation"
    with pytest.raises(InstaError, match="hf: cannot load dataset"):
        load_pool("hf:no-such-org/no-such-dataset-xyz")


@pytest.mark.parametrize("content, spec_suffix, message", [
    ('{"id": "a", "instruction": "x"}\n{"id": "b", "instruction": \n', "", r"bad.jsonl:2: malformed JSON line"),
    ('{"id": "a", "instruction": "x"}\n', "?instruction=definition", r"bad.jsonl:1: mapped instruction field 'definition' is not in the data"),
    ('{"id": "a", "instruction": "x"}\n{"id": "b"}\n', "", r"bad.jsonl:2: field 'instruction' is missing"),
    ('{"id": "a", "instruction": "   "}\n', "", r"bad.jsonl:1: task 'a' has an empty instruction"),
    ('{"id": "a", "instruction": "x"}\n{"id": "a", "instruction": "y"}\n', "", "duplicate task id 'a'"),
    ('{"foo": "a"}\n', "", r"bad.jsonl:1: no id field found; name it with \?id=FIELD"),
    ('[1, 2]', "", r"bad.jsonl\[0\]: each row must be a JSON object"),
])
def test_bad_table_inputs_name_file_and_line(tmp_path, content, spec_suffix, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(InstaError, match=message):
        load_pool(f"jsonl:{path}{spec_suffix}")


def test_missing_table_file(tmp_path):
    with pytest.raises(InstaError, match="does not exist"):
        load_pool(f"jsonl:{tmp_path / 'nope.jsonl'}")
    with pytest.raises(InstaError, match="does not exist"):
        load_pool(str(tmp_path / "nope.csv"))
