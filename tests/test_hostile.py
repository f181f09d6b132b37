"""Hostile input, tried as an attacker would: bytes that are not UTF-8, wrong JSON types,
edited selection files and damaged mixtures, interrupted checkpoints, unsafe outputs, absurd
numbers, a broken cache, misleading messages. Each must end in one ``error:`` line that names
the file/line/field or option and the fix, exit code 2, no traceback, nothing lost."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_cli import fails, run

from insta.io import dumps, strict_json, write_json_atomic
from insta.pools import load_pool

AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def jsonl(path: Path, *rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


@pytest.fixture()
def table(tmp_path) -> str:
    return jsonl(tmp_path / "tasks.jsonl", {"id": "a", "instruction": "classify the sentiment of a review", "label": "x"},
                 {"id": "b", "instruction": "translate the sentence into French", "label": "y"},
                 {"id": "c", "instruction": "decide whether the review is positive", "label": "x"})


# ---------------------------------------------------------------- 1. bytes that are not UTF-8


def test_non_utf8_files_name_the_file_and_byte(monkeypatch, capsys, tmp_path, table, tiny_model):
    latin = tmp_path / "latin.jsonl"
    data = b'{"id": "a", "instruction": "caf\xe9 reviews"}\n'
    latin.write_bytes(data)
    fails(monkeypatch, capsys, "tasks", "-p", latin,
          match=f"{latin}: not UTF-8 text (byte {data.index(0xE9)}: 0xe9); re-save the file as UTF-8")
    utf16 = tmp_path / "targets.txt"
    utf16.write_bytes("classify reviews\n".encode("utf-16"))
    fails(monkeypatch, capsys, "select", "-p", table, "--targets-file", utf16, "--model", tiny_model,
          match=f"{utf16}: the file is UTF-16 text; re-save it as UTF-8")
    config = tmp_path / "run.yaml"
    config.write_bytes(b"out: x\npool: p\ntargets: [caf\xe9]\ntrain: {model: m}\n")
    fails(monkeypatch, capsys, "run", config, match=f"{config}: not UTF-8 text (byte 28: 0xe9)")
    csv = tmp_path / "t.csv"
    csv.write_bytes(b"id,instruction\na,caf\xe9\n")
    fails(monkeypatch, capsys, "tasks", "-p", csv, match="not UTF-8 text")
    checkout = tmp_path / "ni"
    (checkout / "tasks").mkdir(parents=True)
    (checkout / "tasks" / "task1_x.json").write_bytes(b'{"Definition": "d\xff"}')
    fails(monkeypatch, capsys, "tasks", "-p", f"niv2:{checkout}", match="task1_x.json: not UTF-8 text (byte 17: 0xff)")
    (checkout / "tasks" / "task1_x.json").write_text('{"Definition": "d"}')
    (checkout / "splits" / "default").mkdir(parents=True)
    (checkout / "splits" / "default" / "train_tasks.txt").write_bytes(b"task1_x\xff\n")
    fails(monkeypatch, capsys, "tasks", "-p", f"niv2:{checkout}", match="train_tasks.txt: not UTF-8 text")


def test_a_byte_order_mark_is_not_part_of_the_first_field(monkeypatch, capsys, tmp_path):
    csv = tmp_path / "bom.csv"
    csv.write_bytes("id,instruction\na,summarise the text\n".encode("utf-8-sig"))
    assert load_pool(str(csv)).ids == ["a"]
    js = tmp_path / "bom.jsonl"
    js.write_bytes('{"id": "a", "instruction": "summarise the text"}\n'.encode("utf-8-sig"))
    assert load_pool(str(js)).ids == ["a"]


def test_lone_surrogates_in_data_and_on_the_command_line(monkeypatch, capsys, tmp_path, table, tiny_model, shared_data):
    bad = tmp_path / "sur.jsonl"
    bad.write_text('{"id": "a", "instruction": "caf\\ud800 reviews"}\n')
    fails(monkeypatch, capsys, "tasks", "-p", bad, match="task 'a': instruction 'instruction' holds an invalid character at position 3")
    # bytes that are not UTF-8 in argv arrive as surrogates: one line, no traceback
    proc = subprocess.run([sys.executable, "-m", "insta", "select", "-p", table, "--model", str(tiny_model), "-q",
                           "-i", os.fsdecode(b"caf\xe9 reviews")], capture_output=True, text=True,
                          env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().startswith("error: target 'target': instruction 1: the text holds an invalid character")


@pytest.mark.skipif(AS_ROOT, reason="root reads files whatever their permissions")
def test_unreadable_file(monkeypatch, capsys, tmp_path, table):
    os.chmod(table, 0)
    fails(monkeypatch, capsys, "tasks", "-p", table, match="cannot be read (permission denied)")


# ---------------------------------------------------------------- 2. wrong JSON types


@pytest.mark.parametrize("row, match", [
    ({"id": "a", "instruction": {"text": "x"}}, "field 'instruction' must be a text (an instruction), got object"),
    ({"id": "a", "instruction": ["fine", 3]}, "field 'instruction[1]' must be a text (an instruction), got number"),
    ({"id": {"n": 1}, "instruction": "x"}, "field 'id' (id) must be a text or number, got object"),
    ({"id": "a", "instruction": "x", "label": {"k": 1}}, "field 'label' (label) must be a text or number, got object"),
    ({"id": "a", "instruction": "x", "label": True}, "field 'label' (label) must be a text, got boolean"),
])
def test_wrong_types_in_table_rows_are_refused_not_stringified(monkeypatch, capsys, tmp_path, row, match):
    path = jsonl(tmp_path / "t.jsonl", row)
    fails(monkeypatch, capsys, "tasks", "-p", path, match=f"t.jsonl:1: {match}")


def test_a_list_valued_label_gives_its_first_value(tmp_path):
    path = jsonl(tmp_path / "t.jsonl", {"id": "a", "instruction": "x", "domains": ["News", "Wikipedia"]})
    assert load_pool(f"jsonl:{path}?label=domains")[0].label == "News"


def test_csv_with_an_unbalanced_quote_loses_no_row_silently(monkeypatch, capsys, tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text('id,instruction\na,"summarise the text\nb,translate it\nc,"classify it"\n')
    fails(monkeypatch, capsys, "tasks", "-p", csv, match="malformed CSV")
    csv.write_text('id,instruction\na,"a cell that never ends\nb,translate it\n')
    fails(monkeypatch, capsys, "tasks", "-p", csv, match="malformed CSV")
    csv.write_text('id,instruction\na,"a quoted, legal\nmulti-line cell"\nb,second\n')
    assert load_pool(str(csv)).ids == ["a", "b"]  # what CSV allows still reads


@pytest.mark.parametrize("data, match", [
    ({"Definition": "d", "Instances": "abc"}, "field 'Instances' must be a list of objects, got string"),
    ({"Definition": "d", "Instances": [{"input": 3, "output": ["x"]}]}, "Instances[0] must be an object with a text 'input'"),
    ({"Definition": "d", "Instances": [{"input": "i", "output": [{"a": 1}]}]}, "Instances[0].output must be a text or a list of texts"),
    ({"Definition": {"text": "d"}}, "field 'Definition' must be a text or a list of texts, got object"),
    ({"Definition": "d", "Categories": [1]}, "field 'Categories' must be a text or a list of texts, got number"),
    ({"Definition": "d", "Positive Examples": "e"}, "field 'Positive Examples' must be a list of objects"),
    ([1, 2], "expected a JSON object, got array"),
])
def test_niv2_task_files_of_the_wrong_shape(monkeypatch, capsys, tmp_path, data, match):
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "task9_x.json").write_text(json.dumps(data))
    fails(monkeypatch, capsys, "tasks", "-p", f"niv2:{tmp_path}?instances=all", match=f"task9_x.json: {match}")


@pytest.mark.parametrize("text, match", [
    ("dataset: d\ntemplates: [1, 2]\n", "expected a mapping with 'dataset' and 'templates'"),
    ("dataset: d\ntemplates:\n  t1: just text\n", "templates['t1'] must be a !Template mapping"),
    ("dataset: d\ntemplates:\n  t1: !Template\n    jinja: [1]\n", "templates['t1'].jinja must be text"),
    ("- a list\n", "expected a mapping"),
    ("dataset: d\ntemplates: {t1: !Template {jinja: 'x', metadata: [1]}}\n", "metadata must be a !TemplateMetadata mapping"),
])
def test_malformed_promptsource_templates(monkeypatch, capsys, tmp_path, text, match):
    (tmp_path / "templates" / "d").mkdir(parents=True)
    (tmp_path / "templates" / "d" / "templates.yaml").write_text(text)
    fails(monkeypatch, capsys, "tasks", "-p", f"p3:d?templates={tmp_path / 'templates'}", match=match)


# ---------------------------------------------------------------- 3. selection files and mixtures


@pytest.mark.parametrize("doc, match", [
    ({"selections": [{"target": {"id": "t"}, "results": "abc"}]}, "selections[0] must be an object with 'target' and 'results'"),
    ({"selections": [{"target": {"id": "t"}, "results": [{"rank": 1}]}]}, "selections[0].results[0] must be an object with a text 'task_id'"),
    ({"selections": [{"target": {"id": "t"}, "results": []}]}, "selections[0] (target 't') selects no task"),
    ({"selections": [{"target": {"id": "t"}, "results": [{"task_id": "a"}]}], "pool": 5}, "field 'pool' must be a pool spec"),
    ([1], "expected a JSON object, got array"),
    ({"selections": {}}, "field 'selections' is missing or empty"),
])
def test_mix_on_an_edited_selection_file(monkeypatch, capsys, tmp_path, table, doc, match):
    sel = tmp_path / "sel.json"
    sel.write_text(json.dumps(doc))
    fails(monkeypatch, capsys, "mix", "-s", sel, "-o", tmp_path / "mix", "-p", table, match=match)
    assert not (tmp_path / "mix").exists()


def test_train_on_a_damaged_mixture(monkeypatch, capsys, tmp_path, tiny_lms):
    from insta.mix import Mixture, MixConfig, write_mixture

    rows = [{"task": "t", "input": f"q{i}", "target": "a", "references": ["a"], "choices": [], "source": "niv2"}
            for i in range(4)]
    mix = tmp_path / "mix"
    write_mixture(Mixture(rows=rows, counts={"t": 4}, config=MixConfig()), mix)
    good = (mix / "manifest.json").read_text()
    (mix / "manifest.json").write_text('{"n_examples": 4,')
    capsys.readouterr()
    fails(monkeypatch, capsys, "train", "-m", mix, "--model", tiny_lms["gpt2"], "-o", tmp_path / "m",
          match="manifest.json:1: invalid JSON")
    (mix / "manifest.json").write_text(good)
    for arrow in (mix / "dataset").glob("*.arrow"):
        arrow.unlink()
    fails(monkeypatch, capsys, "train", "-m", mix, "--model", tiny_lms["gpt2"], "-o", tmp_path / "m",
          match="dataset/ cannot be read")
    assert not (tmp_path / "m").exists()


# ---------------------------------------------------------------- 4. interrupted checkpoints


def test_train_resumes_past_a_checkpoint_whose_save_was_killed(tiny_lms, tmp_path, monkeypatch, capsys):
    from transformers import TrainerCallback

    from insta.train import TrainConfig, train
    from test_pipeline import _constant_mixture

    class Stop(TrainerCallback):
        def on_save(self, args, state, control, **kw):
            raise KeyboardInterrupt

    mix = _constant_mixture(tmp_path, "True")
    out = tmp_path / "m"
    cfg = TrainConfig(epochs=2, batch_size=8)
    with pytest.raises(KeyboardInterrupt):
        train(mix, str(tiny_lms["gpt2"]), out, cfg, quiet=True, callbacks=[Stop()])
    (whole,) = (out / "checkpoints").glob("checkpoint-*")
    half = out / "checkpoints" / "checkpoint-99"  # a save killed before trainer_state.json was written
    half.mkdir()
    (half / "config.json").write_text("{}")
    said = []
    result = train(mix, str(tiny_lms["gpt2"]), out, cfg, quiet=True, say=said.append)
    assert result.resumed and result.steps == 4
    assert any("checkpoint-99" in s and "interrupted" in s for s in said)
    # another interrupted run whose state file was damaged: one line saying what to delete
    out2 = tmp_path / "m2"
    out2.mkdir()
    (out2 / "train.json").write_text('{"status": "run')
    capsys.readouterr()
    fails(monkeypatch, capsys, "train", "-m", mix, "--model", tiny_lms["gpt2"], "-o", out2,
          match=f"delete the folder {out2} to train from scratch")
    # the same folder with other settings is not silently resumed with them
    out3 = tmp_path / "m3"
    with pytest.raises(KeyboardInterrupt):
        train(mix, str(tiny_lms["gpt2"]), out3, cfg, quiet=True, callbacks=[Stop()])
    capsys.readouterr()
    fails(monkeypatch, capsys, "train", "-m", mix, "--model", tiny_lms["gpt2"], "-o", out3, "--lr", "0.5",
          match="holds an interrupted training with other settings")


def test_only_whole_checkpoints_count(tmp_path):
    from insta.checkpoints import is_whole, last_whole_checkpoint

    ck = tmp_path / "checkpoints"
    for step, files in ((1, {"trainer_state.json": "{}", "optimizer.pt": "x", "model.safetensors": "w"}),
                        (2, {"trainer_state.json": "{}", "optimizer.pt": "x", "model.safetensors": "w"}),
                        (3, {"trainer_state.json": '{"trunc', "optimizer.pt": "x", "model.safetensors": "w"}),
                        (4, {"model.safetensors": "w"})):
        (ck / f"checkpoint-{step}").mkdir(parents=True)
        for name, text in files.items():
            (ck / f"checkpoint-{step}" / name).write_text(text)
    assert is_whole(ck / "checkpoint-2") and not is_whole(ck / "checkpoint-3")
    assert last_whole_checkpoint(ck) == ck / "checkpoint-2"
    assert sorted(p.name for p in ck.iterdir()) == ["checkpoint-1", "checkpoint-2"]


# ---------------------------------------------------------------- 5. output safety


def test_a_failed_write_replaces_nothing(monkeypatch, capsys, tmp_path, table, tiny_model):
    out = tmp_path / "sel.json"
    out.write_text("precious")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("insta.io.os.fsync", full)
    fails(monkeypatch, capsys, "select", "-p", table, "-i", "review sentiment", "--model", tiny_model, "-q", "--no-cache",
          "--out", out, match=f"cannot write {out}: No space left on device (nothing was replaced)")
    assert out.read_text() == "precious" and sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


@pytest.mark.parametrize("make", ["fifo", "symlink", "device"])
def test_out_never_replaces_a_special_file(monkeypatch, capsys, tmp_path, table, tiny_model, make):
    if make == "fifo":
        target = tmp_path / "fifo"
        os.mkfifo(target)
    elif make == "symlink":
        (tmp_path / "real.json").write_text("keep")
        target = tmp_path / "link.json"
        target.symlink_to(tmp_path / "real.json")
    else:
        target = Path("/dev/null")
    for cmd in (["select", "-p", table, "-i", "review", "--model", tiny_model, "-q"],
                ["bench", "--pool", table, "--methods", "bm25", "-q"]):
        fails(monkeypatch, capsys, *cmd, "--out", target, match="not a regular file")
    if make == "symlink":
        assert target.is_symlink() and (tmp_path / "real.json").read_text() == "keep"
    else:
        assert target.exists() and not target.is_file()


def test_json_is_strict():
    doc = {"a": float("nan"), "b": [float("inf"), 1.5], "c": {"d": -float("inf")}}
    assert strict_json(doc) == {"a": None, "b": [None, 1.5], "c": {"d": None}}
    assert json.loads(dumps(doc)) == strict_json(doc)


def test_a_write_killed_midway_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "x.json"
    target.write_text("old")

    def killed(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr("insta.io.os.fsync", killed)
    with pytest.raises(KeyboardInterrupt):
        write_json_atomic(target, {"x": 1})
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["x.json"]


# ---------------------------------------------------------------- 6. numbers and config values


@pytest.mark.parametrize("args, match", [
    (["--lr", "nan"], "train.lr (--lr) must be a finite number, got nan"),
    (["--epochs", "inf"], "train.epochs (--epochs) must be a finite number, got inf"),
    (["--lora", "--lora-r", "0"], "train.lora_r (--lora-r) must be at least 1, got 0"),
    (["--seed", "-1"], "train.seed (--seed) must be at least 0, got -1"),
    (["--seed", "99999999999"], "train.seed (--seed) must be at most 4294967295"),
    (["--max-steps", "-5"], "train.max_steps (--max-steps) must be at least -1"),
])
def test_training_numbers(monkeypatch, capsys, tmp_path, args, match):
    fails(monkeypatch, capsys, "train", "-m", tmp_path, "--model", "x", "-o", tmp_path / "m", *args, match=match)


@pytest.mark.parametrize("args, match", [
    (["bench", "--suite", "p3", "--bootstrap", "10000000000"], "--bootstrap must be at most 100000"),
    (["bench", "--suite", "p3", "--seed", "-1"], "--seed must be at least 0, got -1"),
    (["select", "-p", "x.jsonl", "-i", "x", "--seed", "-1"], "--seed must be at least 0, got -1"),
    (["select", "-p", "x.jsonl", "-i", "x", "--n-instructions", "0"], "--n-instructions must be at least 1, got 0"),
    (["align", "-p", "x.jsonl", "-o", "m", "--lr", "nan"], "align.lr (--lr) must be a finite number"),
    (["align", "-p", "x.jsonl", "-o", "m", "--negative-threshold", "7"], "align.negative_threshold (--negative-threshold) must be at most 1"),
    (["mix", "-s", "s.json", "-o", "m", "--seed", "-3"], "mix.seed (--seed) must be at least 0, got -3"),
    (["eval", "--model", "m", "-t", "x.jsonl", "--max-new-tokens", "0"], ""),
])
def test_numbers_of_other_commands(monkeypatch, capsys, tmp_path, table, args, match):
    monkeypatch.chdir(tmp_path)
    Path("x.jsonl").write_text(Path(table).read_text())
    if args[0] == "eval":  # evaluation checks its numbers before loading anything
        fails(monkeypatch, capsys, *args, match="--max-new-tokens must be at least 1, got 0")
    else:
        fails(monkeypatch, capsys, *args, match=match)


@pytest.mark.parametrize("extra, match", [
    ("k: abc\n", "field 'k' must be an integer, got 'abc'"),
    ("k: 2.7\n", "field 'k' must be an integer, got 2.7"),
    ("k: 0\n", "field 'k' must be at least 1"),
    ("methods: insta\n", "field 'methods' must be a list"),
    ("eval: {max_examples: many}\n", "eval.max_examples must be an integer, got 'many'"),
    ("eval: {metric: bleu}\n", "eval.metric must be one of auto, rank, rouge, em, loglik"),
    ("seed: -1\n", "field 'seed' must be at least 0"),
    ("exclude_siblings: maybe\n", "field 'exclude_siblings' must be true or false"),
    ("targets: [{a: 1}]\n", "field 'targets' must be a task id or a list of task ids"),
    ("train: {model: m, lr: .nan}\n", "train.lr (--lr) must be a finite number"),
    ("train: {model: m, epochs: three}\n", "train.epochs (--epochs) must be a number, got 'three'"),
    ("train: {model: m, lora: 1}\n", "train.lora (--lora) must be true or false, got 1"),
    ("mix: {per_task_cap: 1.5}\n", "mix.per_task_cap (--per-task-cap) must be an integer, got 1.5"),
    ("methods: [{method: random, seed: 1.5}]\n", "methods[0].seed must be an integer"),
    ("pool: [a, 3]\n", "field 'pool' must be a pool spec or a list of pool specs"),
])
def test_run_config_values_are_checked_before_any_work(monkeypatch, capsys, tmp_path, extra, match):
    base = {"out": str(tmp_path / "run"), "pool": "p", "targets": ["a"], "train": {"model": "m"}}
    doc = {**base, **yaml.safe_load(extra)}
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(doc))
    fails(monkeypatch, capsys, "run", config, match=f"{config}: {match}")
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- 7. the cache


def test_cache_dir_that_is_a_file(monkeypatch, capsys, tmp_path, table):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    monkeypatch.setenv("INSTA_CACHE_DIR", str(not_a_dir))
    fails(monkeypatch, capsys, "select", "-p", "p3:t0-train", "-i", "x", "--no-cache",
          match=f"INSTA_CACHE_DIR={not_a_dir} is a file, not a folder")
    fails(monkeypatch, capsys, "cache", match="is a file, not a folder")


def test_a_damaged_cache_does_not_stop_select(monkeypatch, capsys, tmp_path, table, tiny_model, isolated_cache):
    code, out, err = run(monkeypatch, capsys, "select", "-p", table, "-i", "review sentiment", "--model", tiny_model, "-q")
    assert code == 0, err
    db = isolated_cache / "embeddings.sqlite"
    import sqlite3

    with sqlite3.connect(db) as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(db.read_bytes())
    data[4096:] = b"\xcd" * (len(data) - 4096)
    db.write_bytes(bytes(data))
    code, out, err = run(monkeypatch, capsys, "select", "-p", table, "-i", "review sentiment", "--model", tiny_model,
                         "-q", "--json", "-k", "2")
    assert code == 0, err
    assert json.loads(out)["selections"][0]["results"]
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "is damaged" in warnings[0] and "insta cache --clear" in warnings[0]
    code, out, err = run(monkeypatch, capsys, "cache", "--clear")
    assert code == 0 and "it was damaged" in out and not db.exists()


# ---------------------------------------------------------------- 8. messages that say what is wrong


def test_messages_that_used_to_mislead(monkeypatch, capsys, tmp_path, table, tiny_model):
    import torch

    if not torch.cuda.is_available():
        fails(monkeypatch, capsys, "select", "-p", table, "-i", "x", "--device", "cuda", "--model", tiny_model,
              match="--device cuda asked for, but torch sees no CUDA device here")
    fails(monkeypatch, capsys, "select", "-p", f"jsonl:{tmp_path}", "-i", "x",
          match=f"jsonl: {tmp_path} is a folder; give the path of a .jsonl file")
    code, out, err = run(monkeypatch, capsys, "select", "-p", table, "-i", "review sentiment", "--model", tiny_model,
                         "-q", "-x", "zz", "-x", "q*", "--exclude-label", "xx")
    assert code == 0
    assert "warning: target target: --exclude 'zz' matches no task" in err
    assert "--exclude 'q*' matches no task" in err and "--exclude-label 'xx' is the label of no task" in err
    unique = jsonl(tmp_path / "u.jsonl", *({"id": f"t{i}", "instruction": f"task number {i}", "label": f"l{i}"} for i in range(4)))
    fails(monkeypatch, capsys, "bench", "--pool", unique, "--methods", "bm25",
          match="no target has a relevant task (another task with its label) to rank first")


def test_unknown_names_suggest_the_closest(monkeypatch, capsys, table):
    fails(monkeypatch, capsys, "tasks", "-p", "jsnol:x", match="unknown pool kind 'jsnol' (did you mean: jsonl?)")
    fails(monkeypatch, capsys, "select", "-p", table, "-i", "x", "--method", "insat",
          match="unknown method 'insat' (did you mean: insta")
    fails(monkeypatch, capsys, "bench", "--suite", "niv", match="unknown suite 'niv' (did you mean: niv2")
    fails(monkeypatch, capsys, "align", "-p", table, "-o", "m", "--recipe", "papr", match="unknown recipe 'papr' (did you mean: paper?)")


def test_the_house_has_no_import_cycles_and_one_registry():
    """insta.readers is the package; every plug-in list is a lazy Registry; no module but a reader reads Task.meta."""
    import ast

    import insta
    from insta.config import RECIPES
    from insta.bench.suites import SUITES
    from insta.pools import READERS
    from insta.registry import Registry
    from insta.selectors import METHODS

    assert all(isinstance(r, Registry) for r in (READERS, METHODS, SUITES, RECIPES))
    assert callable(insta.available_readers) and insta.available_readers()["p3"].kind == "p3"
    src = Path(insta.__file__).parent
    for path in src.rglob("*.py"):
        if "readers" in path.parts:
            continue
        tree = ast.parse(path.read_text())
        reads = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "meta"
                 and not (isinstance(n.value, ast.Name) and n.value.id == "self")]
        assert not reads, f"{path.name}:{reads[0]} reads Task.meta outside its reader"
    # nothing under insta imports a module that imports it back at import time
    for name in ("insta.pools", "insta.readers.table", "insta.readers.niv2", "insta.selectors", "insta.bench"):
        proc = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr


# ---------------------------------------------------------------- found by a hostile user (second round)


@pytest.mark.parametrize("args, match", [
    (["selct"], "error: No such command 'selct'. Did you mean 'select'? (see 'insta --help')"),
    (["select", "-p", "x.jsonl", "-i", "x", "-k", "abc"], "error: Invalid value for '-k' / '--top-k'"),
    (["select", "-p", "x.jsonl", "-i", "x", "--bogus"], "error: No such option: --bogus"),
    (["cache", "--json"], "error: No such option: --json (see 'insta cache --help')"),
    (["select"], "error: Missing option '--pool' / '-p'."),
])
def test_usage_errors_are_one_line_too(tmp_path, args, match):
    proc = subprocess.run([sys.executable, "-m", "insta", *args], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [proc.stderr.strip()], proc.stderr
    assert proc.stderr.startswith(match), proc.stderr


def test_second_round_messages(monkeypatch, capsys, tmp_path, table):
    fails(monkeypatch, capsys, "tasks", "-p", "jsnl:tasks.jsonl", match="unknown pool kind 'jsnl' (did you mean: jsonl?)")
    fails(monkeypatch, capsys, "tasks", "-p", f"{table}?splt=x", match="unknown option 'splt' for jsonl (did you mean: split?)")
    arr = tmp_path / "arr.jsonl"
    arr.write_text('[1, 2]\n{"id": "a", "instruction": "x"}\n')
    fails(monkeypatch, capsys, "tasks", "-p", arr, match="arr.jsonl:1: each row must be a JSON object, got list")
    csv = tmp_path / "c.csv"
    csv.write_text('name,summary\na,"unbalanced quote,x\nb,classify sentiment\n')
    fails(monkeypatch, capsys, "tasks", "-p", f"csv:{csv}?id=name&instruction=summary",
          match="c.csv:2: malformed CSV in the row starting on this line")
    csv.write_text("name,name,summary\na,b,c\n")
    fails(monkeypatch, capsys, "tasks", "-p", csv, match="c.csv:1: the header names column 'name' twice")
    csv.write_text("")
    fails(monkeypatch, capsys, "tasks", "-p", csv, match="c.csv: the file holds no rows")
    fails(monkeypatch, capsys, "select", "-p", table, "-i", "x", "--out", f"{table}/sel.json",
          match=f"{table} is a file, not a folder; give a path in a folder")
    config = tmp_path / "run.yaml"
    config.write_text("out: x\nk: 2\nk: 3\npool: p\ntargets: [a]\ntrain: {model: m}\n")
    fails(monkeypatch, capsys, "run", config, match=f"{config}:3: the key 'k' is given twice; keep one")
    config.write_text("out: x\nmethodz: [insta]\npool: p\ntargets: [a]\ntrain: {model: m}\n")
    fails(monkeypatch, capsys, "run", config, match="unknown field 'methodz' (did you mean: methods?)")
    monkeypatch.setenv("INSTA_CACHE_DIR", f"{table}/sub")
    fails(monkeypatch, capsys, "cache", match=f"({table} is a file)")


def test_a_surrogate_in_an_instance_stops_mix_with_one_line(monkeypatch, capsys, tmp_path):
    (tmp_path / "ni" / "tasks").mkdir(parents=True)
    for name, text in (("task1_a", "answer the question"), ("task2_b", "classify the review")):
        (tmp_path / "ni" / "tasks" / f"{name}.json").write_text(json.dumps(
            {"Definition": text, "Instances": [{"input": "q\ud800" if name == "task2_b" else "q", "output": ["a"]}]}))
    sel = tmp_path / "sel.json"
    sel.write_text(json.dumps({"pool": f"niv2:{tmp_path / 'ni'}", "selections": [
        {"target": {"id": "t"}, "results": [{"task_id": "task1_a"}, {"task_id": "task2_b"}]}]}))
    fails(monkeypatch, capsys, "mix", "-s", sel, "-o", tmp_path / "mix",
          match="task 'task2_b': example 1 (input): the text holds an invalid character")
    assert not (tmp_path / "mix").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".mix")]


def test_a_manifest_edited_by_hand_is_refused(monkeypatch, capsys, tmp_path):
    from insta.mix import Mixture, MixConfig, write_mixture

    rows = [{"task": "t", "input": f"q{i}", "target": "a", "references": ["a"], "choices": [], "source": "niv2"}
            for i in range(4)]
    write_mixture(Mixture(rows=rows, counts={"t": 4}, config=MixConfig()), tmp_path / "mix")
    (tmp_path / "mix" / "manifest.json").write_text('{"n_examples": "x"}')
    capsys.readouterr()
    fails(monkeypatch, capsys, "train", "-m", tmp_path / "mix", "--model", "m", "-o", tmp_path / "m",
          match="manifest.json lacks its 'n_examples' (an integer) or 'tasks'")
    (tmp_path / "mix" / "manifest.json").write_text('{"n_examples": 9, "tasks": {"t": 9}}')
    fails(monkeypatch, capsys, "train", "-m", tmp_path / "mix", "--model", "m", "-o", tmp_path / "m",
          match="manifest.json says 9 examples but dataset/ holds 4")


def test_insta_cache_reports_a_damaged_file(monkeypatch, capsys, isolated_cache):
    isolated_cache.mkdir(parents=True, exist_ok=True)
    (isolated_cache / "embeddings.sqlite").write_bytes(b"SQLite format 3\x00" + b"\xee" * 8192)
    code, out, err = run(monkeypatch, capsys, "cache")
    assert code == 0 and "damaged" in out and "insta cache --clear" in out


def test_an_sdist_pip_refuses_is_fetched_from_the_index_with_its_checksum(tmp_path, monkeypatch):
    """pip >= 24 refuses to download bigbench 1.0.0 (its metadata names a direct URL): the file
    itself comes from the package index pip is configured with, checked against its sha256."""
    import functools
    import hashlib
    import http.server
    import threading

    from insta import fetch

    root = tmp_path / "index"
    (root / "simple" / "demo-pkg").mkdir(parents=True)
    (root / "files").mkdir()
    data = b"not really a tarball"
    (root / "files" / "demo-pkg-1.0.tar.gz").write_bytes(data)
    good = hashlib.sha256(data).hexdigest()
    page = root / "simple" / "demo-pkg" / "index.html"
    page.write_text(f'<a href="../../files/demo-pkg-1.0.tar.gz#sha256={good}">demo-pkg-1.0.tar.gz</a>')
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("PIP_INDEX_URL", f"http://127.0.0.1:{server.server_address[1]}/simple")

        def refusing_pip(cmd, **kw):
            return subprocess.CompletedProcess(cmd, 1, "", "ERROR: Distributions from PyPI cannot declare direct URL dependencies.")

        monkeypatch.setattr(fetch.subprocess, "run", refusing_pip)
        got = fetch.pip_download("demo-pkg==1.0", tmp_path / "dl", pattern="demo-pkg-1.0.tar.gz", sdist=True)
        assert got.read_bytes() == data
        page.write_text(f'<a href="../../files/demo-pkg-1.0.tar.gz#sha256={"0" * 64}">x</a>')
        with pytest.raises(fetch.InstaError, match="does not match the index's sha256"):
            fetch.pip_download("demo-pkg==1.0", tmp_path / "dl2", pattern="demo-pkg-1.0.tar.gz", sdist=True)
        assert not (tmp_path / "dl2" / "demo-pkg-1.0.tar.gz").exists()
    finally:
        server.shutdown()
