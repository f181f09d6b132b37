"""Hostile input, fifth round: what the fourth pass left weak. Line separators from data, a run
config with no or repeated targets, a benchmark asked for one method twice, a plot under a name
that is not an image, a sentence embedder given where a generator is needed, an option that does
not apply to the targets, and the Trainer's log lines on stdout. Same rules as test_hostile.py."""

from __future__ import annotations

import json

import pytest
from test_cli import fails, run
from test_hostile import table  # noqa: F401 - the fixture, shared

from insta.cli import printable
from insta.errors import InstaError
from insta.pipeline import load_run_config
from insta.mix import MixConfig, Mixture, write_mixture

NIV2_BOOL = "task1732_bbh_boolean_expressions"


def test_line_and_paragraph_separators_are_shown_escaped():
    assert printable("a\u2028b\u2029c") == "a\\u2028b\\u2029c"
    assert printable("tab\tand newline\n stay") == "tab\tand newline\n stay"


@pytest.mark.parametrize("targets, match", [
    ("[]", "field 'targets' is empty; give it a value"),
    ("''", "field 'targets' is empty; give it a value"),
    ("[a, b, a]", "field 'targets' names 'a' twice; list each target once"),
    ("['a/b', 'a b']", "targets 'a/b' and 'a b' would share the folder 'a_b' in the run"),
])
def test_run_config_targets_empty_or_repeated(tmp_path, targets, match):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"out: {tmp_path / 'r'}\npool: p\ntargets: {targets}\ntrain: {{model: m}}\n")
    with pytest.raises(InstaError, match=match.replace("[", "\\[")):
        load_run_config(cfg)
    assert not (tmp_path / "r").exists()


def test_run_config_missing_field_still_says_missing(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("out: x\npool: p\ntrain: {model: m}\n")
    with pytest.raises(InstaError, match="field 'targets' is missing"):
        load_run_config(cfg)


def test_bench_refuses_a_method_given_twice(monkeypatch, capsys, table, tmp_path):  # noqa: F811
    out = tmp_path / "b.json"
    fails(monkeypatch, capsys, "bench", "--pool", table, "--methods", "bm25,random,bm25", "-o", out, "-q",
          match="--methods names 'bm25' twice; list each method once")
    assert not out.exists()


def test_bench_plot_format_follows_the_suffix(monkeypatch, capsys, table, tmp_path):  # noqa: F811
    bad = tmp_path / "plot.txt"
    fails(monkeypatch, capsys, "bench", "--pool", table, "--methods", "bm25", "--plot", bad, "-q",
          match="--plot '" + str(bad) + "': name the file .png, .svg or .pdf")
    assert not bad.exists()
    svg = tmp_path / "plot.svg"
    code, _, err = run(monkeypatch, capsys, "bench", "--pool", table, "--methods", "bm25,random", "--plot", svg, "-q")
    assert code == 0, err
    assert svg.read_text().lstrip().startswith("<?xml") and "<svg" in svg.read_text()


def _tiny_mixture(tmp_path):
    rows = [{"task": "t", "input": f"Statement {i}: is it so? Answer:", "target": "True", "references": ["True"],
             "choices": ["True", "False"], "source": "niv2"} for i in range(8)]
    return write_mixture(Mixture(rows=rows, counts={"t": 8}, config=MixConfig()), tmp_path / "mix")


def test_a_sentence_embedder_is_not_a_generator(monkeypatch, capsys, tiny_model, shared_data, tmp_path):
    mix = _tiny_mixture(tmp_path)
    fails(monkeypatch, capsys, "train", "-m", mix, "--model", tiny_model, "-o", tmp_path / "m", "--max-steps", "1", "-q",
          match="is a BertModel (no language-model head")
    assert not (tmp_path / "m").exists()
    fails(monkeypatch, capsys, "eval", "--model", tiny_model, "-t", f"niv2:{shared_data / 'niv2'}", "--task", NIV2_BOOL,
          "--max-examples", "2", "-q", match="give a causal or seq2seq LM folder, a .gguf file, or smollm2")


def test_split_on_targets_that_are_not_p3_is_a_warning(monkeypatch, capsys, tiny_lms, shared_data):
    code, out, err = run(monkeypatch, capsys, "eval", "--model", tiny_lms["gpt2"], "-t", f"niv2:{shared_data / 'niv2'}",
                         "--task", NIV2_BOOL, "--max-examples", "2", "--split", "bogus", "--json", "-q")
    assert code == 0, err
    (warning,) = [line for line in err.splitlines() if line.startswith("warning:")]
    assert "--split only apply to P3 target tasks and none of the 1 target task(s) is one; ignored" in warning
    assert json.loads(out)["tasks"][0]["n"] == 2


def test_trainer_log_lines_stay_off_stdout(monkeypatch, capsys, tiny_lms, tmp_path):
    mix = _tiny_mixture(tmp_path)
    code, out, err = run(monkeypatch, capsys, "train", "-m", mix, "--model", tiny_lms["gpt2"], "-o", tmp_path / "m",
                         "--max-steps", "2", "--batch-size", "4")
    assert code == 0, err
    assert "'loss'" in err and "'train_runtime'" in err  # shown, on stderr
    assert "'loss'" not in out and "'train_runtime'" not in out


# ---------------------------------------------------------------- the fifth pass's failing cases


def test_out_never_replaces_an_input_nor_writes_into_an_input_folder(monkeypatch, capsys, tmp_path, shared_data):
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"id": i, "instruction": f"Task {i}: classify it", "label": lab}) + "\n"
                            for i, lab in (("a", "x"), ("b", "x"), ("c", "y"), ("d", "y"))))
    before = pool.read_text()
    fails(monkeypatch, capsys, "bench", "-p", pool, "--methods", "bm25", "-o", pool, "-q",
          match=f"--out {pool} is an input of this command")
    fails(monkeypatch, capsys, "bench", "-p", pool, "--methods", "bm25", "--plot", tmp_path / "p.png", "-o",
          tmp_path / "p.png", "-q", match="--out and --plot must name different files")
    assert pool.read_text() == before
    niv2 = shared_data / "niv2"
    fails(monkeypatch, capsys, "select", "-p", f"niv2:{niv2}?split=train", "-i", "translate", "-q",
          "-o", niv2 / "tasks" / "new.json", match="is inside an input of this command")
    assert not (niv2 / "tasks" / "new.json").exists()


def test_a_number_too_long_to_read_is_one_line(monkeypatch, capsys, tmp_path):
    big = "1" + "0" * 5000
    pool = tmp_path / "big.jsonl"
    pool.write_text(f'{{"id": "a", "instruction": "x y", "label": {big}}}\n')
    fails(monkeypatch, capsys, "tasks", "-p", pool, match=f"{pool}:1: a number with more digits than can be read")
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"k: {big}\n")
    fails(monkeypatch, capsys, "run", cfg, match="a number with more digits than can be read")
    sel = tmp_path / "sel.json"
    sel.write_text(f'{{"k": {big}, "selections": []}}')
    fails(monkeypatch, capsys, "mix", "-s", sel, "-o", tmp_path / "m", match="a number with more digits than can be read")


def test_p3_rows_without_the_fields_a_template_reads_are_refused(tmp_path, caplog):
    import random

    from insta.mix import local_rows, p3_examples
    from insta.readers.promptsource import Template
    from insta.tasks import Instruction, Task

    rows = tmp_path / "rows"
    rows.mkdir()
    (rows / "imdb.jsonl").write_text('{"text": "great", "label": 1}\n{"txt": "bad", "label": 0}\n')
    tpl = Template(id="1", name="t", jinja="{{text}} Is it positive? ||| {{answer_choices[label]}}",
                   answer_choices="no ||| yes", original_task=True, choices_in_prompt=False, metrics=())
    task = Task(id="imdb", instructions=[Instruction("Is it positive?")], source="p3", templates=(tpl,))
    with pytest.raises(InstaError, match=r"imdb.jsonl:2: its fields differ from the first row's \(missing: text; extra: txt\)"):
        list(p3_examples(task, local_rows(rows), random.Random(0)))
    (rows / "imdb.jsonl").write_text('{"txt": "great", "label": 1}\n')
    with pytest.raises(InstaError, match="its rows lack the field\\(s\\) text that template 't' reads"):
        list(p3_examples(task, local_rows(rows), random.Random(0)))
    (rows / "imdb.jsonl").write_text('{"text": "great", "label": 1}\n')
    (example,) = p3_examples(task, local_rows(rows), random.Random(0))
    assert example["input"] == "great Is it positive?" and example["target"] == "yes"
    # a label past the answer choices (or NaN) would print nothing: that row is skipped, and said
    (rows / "imdb.jsonl").write_text('{"text": "great", "label": 1}\n{"text": "odd", "label": 7}\n'
                                     '{"text": "nan", "label": NaN}\n')
    with caplog.at_level("WARNING", logger="insta"):
        examples = list(p3_examples(task, local_rows(rows), random.Random(0)))
    assert [e["input"] for e in examples] == ["great Is it positive?"]
    assert "P3 entry 'imdb': 2 row(s) skipped: a template printed a value the row lacks" in caplog.text


def test_training_reads_its_mixture_only(tiny_lms, tmp_path):
    from insta.train import TrainConfig, train

    mix = _tiny_mixture(tmp_path)
    before = sorted(p.relative_to(mix) for p in mix.rglob("*"))
    train(mix, str(tiny_lms["gpt2"]), tmp_path / "m", TrainConfig(max_steps=1, batch_size=4), quiet=True)
    assert sorted(p.relative_to(mix) for p in mix.rglob("*")) == before  # no tokenizer cache written into it


@pytest.mark.parametrize("args, match", [
    (["select", "-p", "POOL", "-t", "a", "-t", "a", "-q"], "--target 'a' is given twice; name each target once"),
    (["select", "-p", "POOL", "-i", "x", "-o", "newdir/", "-q"], "--out newdir/ names a folder (it ends in '/')"),
    (["select", "-p", "POOL", "-i", "x", "--ray-actors", "3", "-q"], "--ray-actors sets the encoder actors of --embed-engine ray"),
    (["bench", "-s", "p3", "--align-epochs", "0", "--methods", "insta-aligned-paper", "--folds", "2"],
     "--align-epochs must be"),
])
def test_small_things_the_fifth_pass_found(monkeypatch, capsys, tmp_path, args, match):
    pool = tmp_path / "pool.jsonl"
    pool.write_text('{"id": "a", "instruction": "Classify it."}\n{"id": "b", "instruction": "Summarize it."}\n')
    fails(monkeypatch, capsys, *[str(pool) if a == "POOL" else a for a in args], match=match)


def test_a_closed_standard_output_is_an_error():
    import subprocess
    import sys
    from pathlib import Path

    insta = str(Path(sys.executable).with_name("insta"))
    proc = subprocess.run(f"{insta} --version >&-", shell=True, capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("error: the standard output is closed"), proc.stderr


def test_mix_out_never_lands_inside_an_input_folder(monkeypatch, capsys, tmp_path):
    rows = tmp_path / "rows"
    rows.mkdir()
    sel = tmp_path / "sel.json"
    sel.write_text(json.dumps({"pool": "p3:imdb", "selections": [{"target": {"id": "t"}, "results": [{"task_id": "imdb"}]}]}))
    fails(monkeypatch, capsys, "mix", "-s", sel, "-o", rows / "mix", "--rows", rows, match="is inside an input of this command")
    assert list(rows.iterdir()) == []
