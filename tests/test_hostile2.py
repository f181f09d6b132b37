"""Hostile input, third round (issue 20): output that stops short, a traceback left, terminal
injection, interrupts, messages that mislead. Same rules as test_hostile.py: one ``error:``
line naming the file/field/option and the fix, exit code 2, no traceback, nothing lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_cli import fails, run
from test_hostile import jsonl, table  # noqa: F401 - the fixture, shared

INSTA = str(Path(sys.executable).with_name("insta"))



def without_reading_notes(stderr: str) -> str:
    """stderr without the two notes on how to read a selection (a weak match for the pool, a
    top-k tie), which these synthetic pools earn and which are tested in test_select_warnings."""
    return "".join(line for line in stderr.splitlines(keepends=True)
                   if "weak match for this pool" not in line and "is not separated from the rest" not in line)


def insta(*args, env=None, **kw) -> subprocess.CompletedProcess:
    """The installed command in a child process (its real standard streams)."""
    return subprocess.run([INSTA, *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, **kw)


# ---------------------------------------------------------------- 2. a traceback left


def test_run_out_that_is_a_file_or_inside_the_cache(monkeypatch, capsys, tmp_path, table, isolated_cache):
    from insta.pipeline import RunConfig, run as run_pipeline
    from insta.train import TrainConfig

    config = tmp_path / "run.yaml"
    taken = tmp_path / "results.txt"
    taken.write_text("precious")
    base = {"pool": table, "targets": ["a"], "methods": ["bm25"], "train": {"model": "m"}}
    config.write_text(yaml.safe_dump({**base, "out": str(taken)}))
    fails(monkeypatch, capsys, "run", config, match=f"{config}: field 'out' {taken} is a file, not a folder")
    assert taken.read_text() == "precious"
    config.write_text(yaml.safe_dump({**base, "out": str(taken / "sub")}))
    fails(monkeypatch, capsys, "run", config, match=f"{taken} is a file, not a folder; give a path in a folder")
    inside = isolated_cache / "my-run"
    config.write_text(yaml.safe_dump({**base, "out": str(inside)}))
    fails(monkeypatch, capsys, "run", config, match=f"field 'out' {inside} is inside insta's cache folder")
    assert not inside.exists()
    # the same refusal through the API (a RunConfig built by hand): an InstaError, not FileExistsError
    from insta.errors import InstaError

    with pytest.raises(InstaError, match="is a file, not a folder"):
        run_pipeline(RunConfig(out=str(taken), pool=table, targets=["a"], train=TrainConfig(), base_model="m"))


def test_no_output_of_any_command_lands_in_the_cache(monkeypatch, capsys, tmp_path, table, isolated_cache):
    """select --out refused the cache folder, the other outputs did not: eval --out could replace the
    embedding database itself."""
    db = isolated_cache / "embeddings.sqlite"
    for args in (["eval", "--model", "m", "-t", table, "--out", db], ["bench", "--pool", table, "--methods", "bm25",
                 "--out", isolated_cache / "b.json"], ["bench", "--pool", table, "--methods", "bm25", "--plot",
                 isolated_cache / "b.png"], ["mix", "-s", "s.json", "-o", isolated_cache / "mix"],
                 ["train", "-m", "mix", "--model", "m", "-o", isolated_cache / "m"],
                 ["align", "-p", table, "-o", isolated_cache / "aligned"]):
        fails(monkeypatch, capsys, *args, match="is inside insta's cache folder")
    assert not isolated_cache.exists() or not any(isolated_cache.iterdir())


# ---------------------------------------------------------------- 1. output that stops short and says nothing


@pytest.fixture()
def big_table(tmp_path) -> str:
    """A pool whose listing and selections are far longer than a disk block or a pipe write."""
    return jsonl(tmp_path / "big.jsonl", *({"id": f"t{i}", "label": "x", "instruction":
                                            f"classify the sentiment of review number {i} as positive or negative"}
                                           for i in range(300)))


def _file_size_limit(limit: int):
    """In the child: files may not grow past ``limit`` bytes (a full disk, as a writer meets it:
    a partial write, then an error), without the signal that would kill it."""
    def limit_it():
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return limit_it


@pytest.mark.parametrize("unbuffered", ["1", ""])
@pytest.mark.parametrize("args", [["tasks", "-p", "{big}", "--json"], ["tasks", "-p", "{big}"],
                                  ["select", "-p", "{big}", "-i", "classify reviews", "--method", "bm25", "-k", "300",
                                   "--no-cache", "--json"]])
def test_stdout_cut_short_by_a_full_disk_is_an_error(tmp_path, big_table, args, unbuffered):
    out = tmp_path / "out.txt"
    with open(out, "w") as fh:
        proc = subprocess.run([INSTA, *(a.format(big=big_table) for a in args)], stdout=fh, stderr=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONUNBUFFERED": unbuffered},
                              preexec_fn=_file_size_limit(4096))
    assert out.stat().st_size <= 4096
    lines = without_reading_notes(proc.stderr).strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: cannot write the standard output (File too large): the output is incomplete")


def test_json_on_a_full_device_with_out_keeps_the_file_and_says_stdout_failed(tmp_path, big_table):
    sel = tmp_path / "sel.json"
    with open("/dev/full", "w") as full:
        proc = subprocess.run([INSTA, "select", "-p", big_table, "-i", "classify reviews", "--method", "bm25", "-k",
                               "300", "--json", "--out", sel], stdout=full, stderr=subprocess.PIPE, text=True)
    assert proc.returncode == 2 and without_reading_notes(proc.stderr).startswith("error: cannot write the standard output"), proc.stderr
    assert len(json.loads(sel.read_text())["selections"][0]["results"]) == 300


@pytest.mark.parametrize("extra", [[], ["--json"], ["--out", "{tmp}/sel.jsonl"]])
def test_a_reader_that_goes_away_is_an_early_close(tmp_path, big_table, extra):
    """`insta select --out X.json | head`: X.json is written whole, and the command exits 0, quietly."""
    out = tmp_path / "sel.json"
    extra = [e.format(tmp=tmp_path) for e in extra]
    if not any(str(e).endswith(".jsonl") for e in extra):
        extra += ["--out", str(out)]
        out_file = out
    else:
        out_file = tmp_path / "sel.jsonl"
    proc = subprocess.Popen([INSTA, "select", "-p", big_table, "-i", "classify reviews", "--method", "bm25", "-k", "300",
                             *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # `| head` that has read what it wanted
    err = without_reading_notes(proc.stderr.read())
    assert proc.wait() == 0 and err == "", err
    doc = json.loads(out_file.read_text().splitlines()[0] if out_file.suffix == ".jsonl" else out_file.read_text())
    assert len((doc["selections"][0] if "selections" in doc else doc)["results"]) == 300
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    for cmd in (["tasks", "-p", big_table], ["tasks", "-p", big_table, "--json"]):
        proc = subprocess.Popen([INSTA, *cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        proc.stdout.close()
        err = without_reading_notes(proc.stderr.read())
        assert proc.wait() == 0 and err == "", (cmd, err)


# ---------------------------------------------------------------- 4. interrupts


def test_ctrl_c_says_interrupted(monkeypatch, capsys, tmp_path, table):
    """click turns KeyboardInterrupt into exit code 130 by itself: the message must still come."""
    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr("insta.pools.load_pool", interrupted)
    code, out, err = run(monkeypatch, capsys, "select", "-p", table, "-i", "classify", "--method", "bm25")
    assert code == 130 and err.strip() == "interrupted", err
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"out": str(tmp_path / "run"), "pool": table, "targets": ["a"],
                                      "methods": ["bm25"], "train": {"model": "m"}}))
    monkeypatch.setattr("insta.pipeline.run", interrupted)
    code, out, err = run(monkeypatch, capsys, "run", config)
    assert code == 130 and err.strip() == "interrupted", err


def _killed_while_writing(kind: str, dest: Path) -> None:
    """A child that starts writing ``dest`` the way insta does, and is SIGKILLed halfway."""
    code = ("import os, signal, sys\nfrom pathlib import Path\nfrom insta.io import atomic_dir, atomic_path\n"
            f"with {kind}(sys.argv[1]) as tmp:\n"
            "    (Path(tmp) / 'part').write_text('half') if Path(tmp).is_dir() else Path(tmp).write_text('{\"half')\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(dest)], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert [p for p in dest.parent.iterdir() if p.name.startswith(f".{dest.name}.")]  # what a kill leaves


def test_temporaries_of_killed_writes_are_removed_by_the_next(monkeypatch, capsys, tmp_path, table):
    # a streamed --out FILE.jsonl killed halfway, then the same command again
    out = tmp_path / "sel.jsonl"
    _killed_while_writing("atomic_path", out)
    code, _, err = run(monkeypatch, capsys, "select", "-p", table, "-i", "classify reviews", "--method", "bm25", "-q",
                       "--out", out)
    assert code == 0, err
    assert out.is_file() and not [p.name for p in tmp_path.iterdir() if p.name.startswith(".sel.jsonl.")]
    # a mix killed while saving its folder
    ni = tmp_path / "ni" / "tasks"
    ni.mkdir(parents=True)
    for name, text in (("task1_a", "answer the question"), ("task2_b", "classify the review")):
        (ni / f"{name}.json").write_text(json.dumps({"Definition": text, "Instances": [
            {"input": f"q{i}", "output": ["a"]} for i in range(3)]}))
    sel = tmp_path / "sel.json"
    sel.write_text(json.dumps({"pool": f"niv2:{tmp_path / 'ni'}", "selections": [
        {"target": {"id": "t"}, "results": [{"task_id": "task1_a"}, {"task_id": "task2_b"}]}]}))
    mix = tmp_path / "mix"
    _killed_while_writing("atomic_dir", mix)
    code, _, err = run(monkeypatch, capsys, "mix", "-s", sel, "-o", mix, "-q")
    assert code == 0, err
    assert (mix / "manifest.json").is_file() and not [p.name for p in tmp_path.iterdir() if p.name.startswith(".mix.")]


def test_a_write_of_a_live_process_is_left_alone(tmp_path):
    from insta.io import atomic_path, remove_stale_temporaries

    dest = tmp_path / "x.json"
    with atomic_path(dest) as tmp:
        tmp.write_text("in progress")
        remove_stale_temporaries(dest)  # a second writer of the same file, meanwhile
        assert tmp.read_text() == "in progress"
    assert dest.read_text() == "in progress"


def test_cache_cleared_while_a_select_runs(monkeypatch, capsys, table, tiny_model, isolated_cache):
    """'insta cache --clear' from another shell mid-run: the cache starts again empty, with no
    advice to point INSTA_CACHE_DIR elsewhere (nothing is wrong with it)."""
    from insta.cache import EmbeddingCache, delete_cache

    code, _, err = run(monkeypatch, capsys, "select", "-p", table, "-i", "review sentiment", "--model", tiny_model, "-q",
                       "-k", "2")
    assert code == 0, err
    original = EmbeddingCache.get_many

    def cleared_meanwhile(self, model, texts):
        delete_cache(self.path)
        return original(self, model, texts)

    monkeypatch.setattr(EmbeddingCache, "get_many", cleared_meanwhile)
    code, _, err = run(monkeypatch, capsys, "select", "-p", table, "-i", "a new target text", "--model", tiny_model, "-q",
                       "-k", "2")
    assert code == 0 and "warning" not in without_reading_notes(err), err
    monkeypatch.setattr(EmbeddingCache, "get_many", original)
    assert EmbeddingCache(isolated_cache / "embeddings.sqlite").count() > 0  # what was encoded meanwhile is kept


# ---------------------------------------------------------------- 3. terminal injection


def test_control_sequences_from_data_and_arguments_are_shown_escaped(tmp_path):
    pool = jsonl(tmp_path / "esc.jsonl",
                 {"id": "a\x1b[31mRED", "label": "x", "instruction": "classify \x1b]0;pwned\x07 the \u202eevil review"},
                 {"id": "b", "label": "y", "instruction": "translate the sentence into French"})
    for args in (["tasks", "-p", pool],
                 ["select", "-p", pool, "-i", "classify the \x1b[2J review", "--method", "bm25", "-k", "2", "--no-cache",
                  "-x", "\x1b[5mzz"]):
        proc = insta(*args, env={"FORCE_COLOR": "1", "COLUMNS": "200"})  # rich writes as to a terminal
        assert proc.returncode == 0, proc.stderr
        shown = proc.stdout + proc.stderr
        for raw in ("\x1b[31mRED", "\x1b]0;pwned", "\x07", "\u202e", "\x1b[2J", "\x1b[5m"):
            assert raw not in shown, (raw, shown)
        assert "a\\x1b[31mRED" in proc.stdout and "\\x1b]0;pwned\\x07" in proc.stdout and "\\u202eevil" in proc.stdout
    assert "classify the \\x1b[2J review" in proc.stdout


def test_a_bracket_in_a_warning_is_not_markup(monkeypatch, capsys, table):
    code, out, err = run(monkeypatch, capsys, "select", "-p", table, "-i", "review", "--method", "bm25", "-q",
                         "--no-cache", "-x", "[bold]x")
    assert code == 0 and "--exclude '[bold]x' matches no task" in err, err


@pytest.mark.parametrize("invisible", ["\u200b\u200b", "\u200b \u2060\ufeff", "\u200d"])
def test_zero_width_only_instructions_are_empty(monkeypatch, capsys, tmp_path, table, invisible):
    fails(monkeypatch, capsys, "select", "-p", table, "-i", invisible, "--method", "bm25",
          match="the target instruction is empty (or only invisible characters, such as zero-width spaces)")
    pool = jsonl(tmp_path / "zw.jsonl", {"id": "a", "instruction": "classify the review"},
                 {"id": "b", "instruction": invisible})
    fails(monkeypatch, capsys, "tasks", "-p", pool, match="zw.jsonl:2: task 'b' has an empty instruction (field instruction)")
    from insta.pools import load_pool

    assert load_pool(f"{pool}?skip_empty=true").ids == ["a"]
    (tmp_path / "ni" / "tasks").mkdir(parents=True)
    (tmp_path / "ni" / "tasks" / "task1_x.json").write_text(json.dumps({"Definition": invisible}))
    fails(monkeypatch, capsys, "tasks", "-p", f"niv2:{tmp_path / 'ni'}", match="field 'Definition' is empty")


# ---------------------------------------------------------------- 5. messages that mislead


@pytest.mark.parametrize("query, match", [
    ("?id=", "option 'id' has no value; give id=VALUE or leave the option out"),
    ("?instruction=", "option 'instruction' has no value"),
    ("?where=", "option 'where' has no value"),
    ("?id=id&id=label", "option 'id' is given twice (id='id', id='label'); give it once"),
    ("?instruction=label&instruction=nope", "option 'instruction' is given twice"),
    ("?where=label:x&where=id:a", "option 'where' is given twice"),
])
def test_empty_and_repeated_options(monkeypatch, capsys, table, query, match):
    fails(monkeypatch, capsys, "tasks", "-p", table + query, match=match)


def test_empty_options_of_other_readers(monkeypatch, capsys, tmp_path):
    fails(monkeypatch, capsys, "tasks", "-p", "bigbench:t0-eval?exclude=", match="option 'exclude' has no value")
    fails(monkeypatch, capsys, "tasks", "-p", f"niv2:{tmp_path}?exclude_categories=",
          match="option 'exclude_categories' has no value")


def test_where_names_what_the_data_holds(monkeypatch, capsys, tmp_path, table):
    fails(monkeypatch, capsys, "tasks", "-p", f"{table}?where=lable:x",
          match="tasks.jsonl: where=lable:x names a field no row has (did you mean: label?); fields: id, instruction, label")
    fails(monkeypatch, capsys, "tasks", "-p", f"{table}?where=label:z",
          match="where=label:z keeps none of the 3 rows (label holds e.g. 'x', 'y'); check the values")
    tagged = jsonl(tmp_path / "tagged.jsonl", {"id": "a", "instruction": "classify the review", "domains": ["News", "Wiki"]},
                   {"id": "b", "instruction": "translate the text", "domains": ["Books"]})
    from insta.pools import load_pool

    assert load_pool(f"{tagged}?where=domains:Wiki").ids == ["a"]  # a list field holds the value
    fails(monkeypatch, capsys, "tasks", "-p", f"{tagged}?where=domains:Film",
          match="keeps none of the 2 rows (domains holds e.g. 'News', 'Wiki', 'Books')")


@pytest.mark.parametrize("name, hint", [("notes.txt", "a .txt of target instructions (one per line) is --targets-file"),
                                        ("README.md", "not .md"), ("tasks.yaml", "not .yaml")])
def test_a_pool_file_of_another_format(monkeypatch, capsys, tmp_path, name, hint):
    path = tmp_path / name
    path.write_text("classify the review\n")
    line = fails(monkeypatch, capsys, "tasks", "-p", path,
                 match=f"pool file '{path}': a pool file is a table of tasks, .jsonl, .json or .csv")
    assert hint in line and "unknown pool kind" not in line
    fails(monkeypatch, capsys, "tasks", "-p", tmp_path, match=f"pool '{tmp_path}' is a folder; name its kind: niv2:")


def test_a_csv_without_a_header(monkeypatch, capsys, tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text("a,classify the sentiment of a review\nb,translate the sentence into French\n")
    fails(monkeypatch, capsys, "tasks", "-p", csv, match=f"{csv}:1: the first line (a,classify the sentiment of a review) "
          "is data, not a header: a CSV pool needs a header line naming its columns")
    csv.write_text("1,2\n3,4\n")
    fails(monkeypatch, capsys, "tasks", "-p", csv, match="is data, not a header")
    csv.write_text("task name,the text\na,classify the sentiment of a review\n")  # a header of other names still reads
    from insta.pools import load_pool

    assert load_pool(f"{csv}?id=task name&instruction=the text").ids == ["a"]
    fails(monkeypatch, capsys, "tasks", "-p", csv, match="no id field found; name it with ?id=FIELD (fields: task name, the text)")


def test_bm25_with_no_shared_word_says_so(monkeypatch, capsys, table):
    code, out, err = run(monkeypatch, capsys, "select", "-p", table, "-i", "zebra quantum", "--method", "bm25", "-q",
                         "--no-cache", "-k", "2", "--json")
    assert code == 0
    assert "bm25: no word of the target's instructions (stopwords aside) occurs in any candidate task" in err
    assert "no word" in " ".join(json.loads(out)["selections"][0]["warnings"])
    code, out, err = run(monkeypatch, capsys, "select", "-p", table, "-i", "classify reviews", "--method", "bm25", "-q",
                         "--no-cache", "-k", "2")
    assert code == 0 and "no word" not in err


def test_mix_and_eval_of_a_table_pool_speak_of_a_table(monkeypatch, capsys, tmp_path, table):
    sel = tmp_path / "sel.json"
    sel.write_text(json.dumps({"pool": table, "selections": [{"target": {"id": "t"}, "results": [{"task_id": "a"}]}]}))
    for args in (["mix", "-s", sel, "-o", tmp_path / "mix"], ["eval", "--model", "m", "-t", table]):
        line = fails(monkeypatch, capsys, *args, match="task 'a' comes from a table pool (jsonl/csv/hf")
        assert "task file" not in line and "niv2:DIR, bigbench:NAME or p3:NAME" in line
    assert not (tmp_path / "mix").exists()


def test_a_damaged_parsed_template_file_is_rebuilt_with_a_warning(monkeypatch, capsys, tmp_path, isolated_cache):
    (tmp_path / "templates" / "d").mkdir(parents=True)
    (tmp_path / "templates" / "d" / "templates.yaml").write_text(
        "dataset: d\ntemplates:\n  t1: !Template\n    id: t1\n    name: ask\n"
        "    jinja: 'Is this review positive? {{text}} ||| {{label}}'\n    answer_choices: yes ||| no\n")
    spec = f"p3:d?templates={tmp_path / 'templates'}"
    code, _, err = run(monkeypatch, capsys, "tasks", "-p", spec, "--json")
    assert code == 0 and "warning" not in without_reading_notes(err), err
    (stored,) = (isolated_cache / "promptsource-parsed").glob("*.json")
    good = json.loads(stored.read_text())
    for damage in ('{"version": 2, "entr', "\xff\xfe", json.dumps({**good, "entries": {"d": {**good["entries"]["d"],
                                                                                           "dataset": 5}}})):
        stored.write_text(damage, encoding="latin-1" if damage == "\xff\xfe" else "utf-8")
        code, out, err = run(monkeypatch, capsys, "tasks", "-p", spec, "--json")
        warnings = [line for line in err.splitlines() if line.strip()]
        assert code == 0 and json.loads(out)["tasks"][0]["id"] == "d"
        assert len(warnings) == 1 and warnings[0].startswith(f"warning: parsed promptsource templates {stored} are "
                                                             "damaged ("), err
        assert warnings[0].endswith("the templates are parsed again and the file rebuilt")
        assert json.loads(stored.read_text()) == good  # rebuilt
        code, _, err = run(monkeypatch, capsys, "tasks", "-p", spec, "--json")
        assert code == 0 and "warning" not in err  # and read again without one


@pytest.mark.parametrize("args, match", [
    (["select", "-p", "{table}", "-i", "x", "--model", ""], "--model is empty; give it a value, or leave the option out"),
    (["select", "-p", "{table}", "-i", "x", "--model="], "--model is empty"),
    (["select", "-p", "{table}", "-i", "x", "--targets-file", ""], "--targets-file is empty"),
    (["select", "-p", "{table}", "-i", "x", "--aggregate="], "--aggregate is empty"),
    (["select", "-p", "{table}", "-i", "x", "-x", ""], "-x is empty"),
    (["select", "-p", "{table}", "-i", ""], "the target instruction is empty"),
    (["tasks", "-p", ""], "-p is empty"),
    (["run", ""], "the config path is empty"),
])
def test_empty_values_on_the_command_line(monkeypatch, capsys, table, args, match):
    """An empty value is not the option left out (the default model, no targets file, ...)."""
    fails(monkeypatch, capsys, *(a.format(table=table) for a in args), match=match)
