"""The insta command: outputs, batch mode, and every bad input as a one-line error with exit code 2."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from insta.cli import main


def run(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["insta", *map(str, args)])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def fails(monkeypatch, capsys, *args, match):
    code, out, err = run(monkeypatch, capsys, *args)
    assert code == 2, (code, out, err)
    assert "Traceback" not in err and "Traceback" not in out
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert match in lines[0], lines[0]
    return lines[0]


@pytest.fixture()
def bbh(shared_data):
    return f"{shared_data}/bbh/tasks.jsonl"


def test_select_json_document(monkeypatch, capsys, bbh, tiny_model):
    code, out, err = run(monkeypatch, capsys, "select", "--pool", bbh, "-i", "evaluate the boolean expression",
                         "-k", "3", "--model", tiny_model, "--json", "-q")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["k"] == 3 and doc["pool_size"] == 27 and doc["aggregate"] == "max"
    (sel,) = doc["selections"]
    assert sel["target"]["instructions"] == ["evaluate the boolean expression"]
    assert [r["rank"] for r in sel["results"]] == [1, 2, 3]
    first = sel["results"][0]
    assert set(first) >= {"rank", "task_id", "label", "score", "match"}
    assert set(first["match"]) == {"target_instruction", "source_instruction", "source_instruction_name", "similarity", "measure", "parts"}
    assert first["match"]["measure"] == "rrf(cosine, bm25)" and doc["method"] == "hybrid"  # the default
    assert [p["measure"] for p in first["match"]["parts"]] == ["cosine", "bm25"]
    scores = [r["score"] for r in sel["results"]]
    assert scores == sorted(scores, reverse=True)


def test_batch_targets_from_another_pool_and_out_file(monkeypatch, capsys, shared_data, bbh, tiny_model, tmp_path):
    out_file = tmp_path / "sel" / "selection.json"
    code, out, err = run(monkeypatch, capsys, "select", "-p", f"niv2:{shared_data}/niv2", "--targets", bbh,
                         "-k", "4", "--model", tiny_model, "--json", "-q", "--out", out_file, "-a", "mean")
    assert code == 0, err
    doc = json.loads(out)
    assert len(doc["selections"]) == 27
    assert json.loads(out_file.read_text()) == doc
    assert not list(out_file.parent.glob(".*"))  # no temporary file left behind


def test_target_from_the_pool_is_excluded_and_table_output(monkeypatch, capsys, bbh, tiny_model):
    code, out, err = run(monkeypatch, capsys, "select", "-p", bbh, "-t", "navigate", "-t", "snarks", "-k", "26",
                         "--model", tiny_model, "--exclude", "logical_deduction_*")
    assert code == 0, err
    assert "top-" in out and "navigate" in out and "snarks" in out
    code, out, _ = run(monkeypatch, capsys, "select", "-p", bbh, "-t", "navigate", "-k", "30", "--model", tiny_model,
                       "--json", "-q", "--exclude", "logical_deduction_*", "--exclude-label", "nothing")
    ids = [r["task_id"] for r in json.loads(out)["selections"][0]["results"]]
    assert "navigate" not in ids and not any(i.startswith("logical_deduction") for i in ids) and len(ids) == 23


def test_targets_file_txt(monkeypatch, capsys, bbh, tiny_model, tmp_path):
    f = tmp_path / "targets.txt"
    f.write_text("# my targets\nsort the words\n\ncount the objects\n")
    code, out, err = run(monkeypatch, capsys, "select", "-p", bbh, "--targets-file", f, "--model", tiny_model, "--json", "-q")
    assert code == 0, err
    assert [s["target"]["id"] for s in json.loads(out)["selections"]] == ["targets.txt:2", "targets.txt:4"]


def test_k_larger_than_pool_warns_and_returns_all(monkeypatch, capsys, bbh, tiny_model):
    code, out, err = run(monkeypatch, capsys, "select", "-p", bbh, "-i", "sort words", "-k", "100",
                         "--model", tiny_model, "--json", "-q")
    assert code == 0
    assert len(json.loads(out)["selections"][0]["results"]) == 27
    assert "k=100 is larger than the 27 candidate tasks; returning all of them" in err


@pytest.mark.slow
def test_demo_selection_p3_nli(monkeypatch, capsys, p3):
    code, out, err = run(monkeypatch, capsys, "select", "-p", "p3:t0-train", "-i",
                         "Suppose the premise is true. Can we infer that the hypothesis is true? Yes, no, or maybe?")
    assert code == 0, err
    rows = [line for line in out.splitlines() if line.split("│")[1:2] and line.split("│")[1].strip().isdigit()]
    assert len(rows) == 5  # the ranked rows (a long instruction wraps onto more lines)
    assert "paws/labeled_final" in out and "paraphrase_identification" in out


def test_pools_and_tasks_listing(monkeypatch, capsys, bbh):
    code, out, _ = run(monkeypatch, capsys, "pools")
    assert code == 0
    for word in ("p3:t0-train", "p3:t0-eval", "niv2", "bigbench:t0-eval", "jsonl", "csv", "hf", "group", "exclude_categories"):
        assert word in out
    code, out, _ = run(monkeypatch, capsys, "pools", "--json")
    assert set(json.loads(out)) == {"p3", "niv2", "bigbench", "jsonl", "csv", "hf"}
    code, out, _ = run(monkeypatch, capsys, "tasks", "-p", bbh, "--json")
    assert len(json.loads(out)["tasks"]) == 27
    code, out, _ = run(monkeypatch, capsys, "--version")
    assert code == 0 and out.startswith("insta-select ")


def test_cache_command(monkeypatch, capsys, bbh, tiny_model):
    run(monkeypatch, capsys, "select", "-p", bbh, "-i", "x words", "--model", tiny_model, "-q")
    code, out, _ = run(monkeypatch, capsys, "cache")
    assert code == 0 and ": 24 embeddings" in out
    code, out, _ = run(monkeypatch, capsys, "cache", "--clear")
    assert "(24 embeddings)" in out


# ------------------------------------------------------------------ bad input

def test_bad_inputs(monkeypatch, capsys, bbh, tiny_model, tmp_path):
    m = ["--model", str(tiny_model)]
    fails(monkeypatch, capsys, "select", "-p", "foo:bar", "-i", "x", match="unknown pool kind 'foo'; available: bigbench, csv, hf, jsonl, niv2, p3")
    fails(monkeypatch, capsys, "select", "-p", f"jsonl:{tmp_path}/none.jsonl", "-i", "x", match="does not exist")
    fails(monkeypatch, capsys, "select", "-p", f"niv2:{tmp_path}/none", "-i", "x", match="does not exist")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "instruction": "x"}\n{oops}\n')
    fails(monkeypatch, capsys, "select", "-p", bad, "-i", "x", match="bad.jsonl:2: malformed JSON line")
    fails(monkeypatch, capsys, "select", "-p", f"{bbh}?instruction=definition", "-i", "x", match="mapped instruction field 'definition' is not in the data")
    blank = tmp_path / "blank.jsonl"
    blank.write_text('{"id": "a", "instruction": " \\t "}\n')
    fails(monkeypatch, capsys, "select", "-p", blank, "-i", "x", match="blank.jsonl:1: task 'a' has an empty instruction")
    fails(monkeypatch, capsys, "select", "-p", bbh, "-i", "   ", *m, match="target instruction is empty")
    fails(monkeypatch, capsys, "select", "-p", bbh, "-t", "navigat", *m, match="unknown task id 'navigat'")
    line = fails(monkeypatch, capsys, "select", "-p", bbh, "-t", "boolean_expresions", *m, match="did you mean: boolean_expressions")
    assert "insta tasks" in line
    fails(monkeypatch, capsys, "select", "-p", bbh, "-i", "x", "-k", "0", *m, match="k must be a positive integer, got 0")
    fails(monkeypatch, capsys, "select", "-p", bbh, "-i", "x", "-k", "-2", *m, match="k must be a positive integer")
    fails(monkeypatch, capsys, "select", "-p", bbh, *m, match="no target: give --instruction")
    fails(monkeypatch, capsys, "select", "-p", bbh, "-i", "x", "-t", "navigate", *m, match="give only one of")
    fails(monkeypatch, capsys, "select", "-p", bbh, "-i", "x", "-a", "median", *m, match="unknown aggregation 'median' (did you mean: mean?); available: max, mean, vote")
    fails(monkeypatch, capsys, "select", "-p", bbh, "-i", "x", "--method", "bm52", *m, match="unknown method 'bm52' (did you mean: bm25?); available: all, bm25, hybrid, hybrid-aligned-contrastive, hybrid-less, hybrid-rds, insta, insta-aligned-contrastive, insta-aligned-paper, less, random, rds, samples")
    fails(monkeypatch, capsys, "select", "-p", bbh, "-i", "x", "--method", "samples", *m, match="method 'samples' needs examples of the pool's tasks")
    fails(monkeypatch, capsys, "select", "-p", bbh, "-i", "x", "--targets-file", tmp_path / "no.txt", match="give only one of")
    fails(monkeypatch, capsys, "select", "-p", bbh, "--targets-file", tmp_path / "no.txt", match="targets file")
    fails(monkeypatch, capsys, "select", "-p", bbh, "-i", "x", "--model", tmp_path / "no-model", match="no such folder")
    fails(monkeypatch, capsys, "select", "-p", bbh, "-i", "x", "--model", "sentence-transformers/bert-large-nli-stsb-mean-tokens",
          match="is not available offline")
    fails(monkeypatch, capsys, "select", "-p", bbh, "-i", "x", *m, "--out", tmp_path, match="is a folder")


def test_failed_run_does_not_touch_an_existing_out_file(monkeypatch, capsys, bbh, tiny_model, tmp_path):
    target = tmp_path / "selection.json"
    target.write_text('{"keep": true}')
    fails(monkeypatch, capsys, "select", "-p", bbh, "-t", "nope", "--model", tiny_model, "--out", target, match="unknown task id")
    assert json.loads(target.read_text()) == {"keep": True}


def test_console_script_exit_code_and_no_traceback(bbh):
    exe = shutil.which("insta") or str((__import__("pathlib").Path(sys.executable).parent / "insta"))
    proc = subprocess.run([exe, "select", "-p", "nope:x", "-i", "x"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: unknown pool kind 'nope'; available: bigbench, csv, hf, jsonl, niv2, p3"
    proc = subprocess.run([sys.executable, "-m", "insta", "select", "-p", bbh, "-i", "x", "-k", "0"], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    proc = subprocess.run([exe, "select", "--bogus"], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_table_output_keeps_bracketed_text(monkeypatch, capsys, tmp_path, tiny_model):
    """Instruction names and texts like '[summary]' are data, not rich markup."""
    f = tmp_path / "t.jsonl"
    f.write_text('{"id": "[x]", "summary": "[bold]count[/bold] the words", "label": "[red]"}\n')
    code, out, err = run(monkeypatch, capsys, "select", "-p", f, "-i", "count", "--model", tiny_model, "-q")
    assert code == 0, err
    assert "[x]" in out and "[summary] [bold]count[/bold] the words" in out and "[red]" in out


def test_out_never_replaces_what_is_not_a_regular_file(monkeypatch, capsys, tmp_path, bbh, tiny_model):
    import os

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    real = tmp_path / "real.json"
    real.write_text("keep me")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    args = ("select", "-p", bbh, "-i", "Count the objects.", "--model", tiny_model, "--no-cache", "-q")
    for target, kind in ((fifo, "a FIFO"), (link, "a symbolic link"), (Path("/dev/null"), "a device or special file")):
        fails(monkeypatch, capsys, *args, "--out", target, match=f"is {kind}, not a regular file")
    assert fifo.exists() and not fifo.is_file() and link.is_symlink() and real.read_text() == "keep me"
    assert Path("/dev/null").exists() and not Path("/dev/null").is_file()
