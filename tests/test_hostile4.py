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
