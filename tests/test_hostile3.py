"""Hostile input, fourth round: a cache folder that cannot be made or written, a pool without a
word for BM25, damaged mixtures of a run, 'insta cache' on a full disk and its ONNX exports.
Same rules as test_hostile.py: one ``error:`` line (or one ``warning:``), no traceback, nothing lost."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from test_cli import run
from test_hostile import jsonl, table  # noqa: F401 - the fixture, shared
from test_hostile2 import without_reading_notes

INSTA = str(Path(sys.executable).with_name("insta"))


def _warnings(err: str) -> list[str]:
    return [line for line in without_reading_notes(err).splitlines() if line.startswith("warning:")]


# ---------------------------------------------------------------- 1. a cache folder that cannot be made


def test_a_cache_folder_that_cannot_be_made_is_one_warning(monkeypatch, capsys, table, tiny_model):
    if not Path("/proc/self").is_dir():
        pytest.skip("needs /proc (a folder nothing can be made in)")
    monkeypatch.setenv("INSTA_CACHE_DIR", "/proc/insta-no-such-folder")
    code, out, err = run(monkeypatch, capsys, "select", "-p", table, "-i", "review sentiment", "--method", "insta",
                         "--model", tiny_model, "-k", "2")
    assert code == 0 and "Traceback" not in err, err
    (warning,) = _warnings(err)
    assert "embedding cache /proc/insta-no-such-folder/embeddings.sqlite cannot be used" in warning
    assert "set INSTA_CACHE_DIR to a writable folder" in warning
    assert "encoded, 0 from cache (/proc/insta-no-such-folder/embeddings.sqlite: not used)" in err
    assert " a " in out or "│ a" in out


# ---------------------------------------------------------------- 2. a pool without a word for BM25


@pytest.mark.parametrize("instructions", [("the a of", "and or"), ("s", "t")])
@pytest.mark.parametrize("method", ["bm25", "hybrid"])
def test_bm25_over_a_pool_without_a_word(monkeypatch, capsys, recwarn, tmp_path, tiny_model, instructions, method):
    pool = jsonl(tmp_path / "stop.jsonl", *({"id": i, "instruction": text} for i, text in zip("ab", instructions)))
    code, out, err = run(monkeypatch, capsys, "select", "-p", pool, "-i", "review", "-k", "1", "--method", method,
                         "--model", tiny_model, "--json", "-q")
    assert code == 0 and "Traceback" not in err, err
    (sel,) = json.loads(out)["selections"]
    assert len(sel["results"]) == 1
    if method == "bm25":
        assert sel["results"][0]["task_id"] == "a" and sel["results"][0]["score"] == 0  # id order: all 0
        (warning,) = _warnings(err)
        assert "bm25: no word of the target's instructions (stopwords aside) occurs in any candidate task" in warning
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning) and "bm25s" in str(w.filename)]
    from insta.baselines import BM25Selector
    from insta.pools import load_pool

    scores = BM25Selector().fit(load_pool(pool))._query(["review", "the"])
    assert scores.shape == (2, 2) and not scores.any()


# ---------------------------------------------------------------- 3, 4. a run's damaged or incomplete mixture


@pytest.fixture()
def finished_run(shared_data, tiny_lms, tmp_path, monkeypatch, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "out": str(tmp_path / "run"), "pool": f"niv2:{shared_data / 'niv2'}",
        "targets": ["task1732_bbh_boolean_expressions"], "k": 2, "methods": ["bm25"], "mix": {"per_task_cap": 2},
        "train": {"model": str(tiny_lms["gpt2"]), "max_steps": 1, "batch_size": 2, "max_input_length": 64,
                  "max_target_length": 8},
        "eval": {"max_examples": 1, "max_new_tokens": 2}}))
    code, out, err = run(monkeypatch, capsys, "run", config, "--json", "-q")
    assert code == 0, err
    (row,) = json.loads(out)["results"]
    assert row["n_train_examples"] > 0
    return config, row


@pytest.mark.parametrize("damage", ["manifest", "not-json", "dataset", "data-file"])
def test_run_rebuilds_a_damaged_or_incomplete_mixture(monkeypatch, capsys, tmp_path, finished_run, damage):
    config, row = finished_run
    mix = tmp_path / "run" / "mixtures" / row["mixture"]
    good = json.loads((mix / "manifest.json").read_text())
    trained = tmp_path / "run" / "models" / row["model"] / "train.json"
    stamp = trained.stat().st_mtime_ns
    if damage == "manifest":
        (mix / "manifest.json").write_text('{"tasks": 5}')
    elif damage == "not-json":
        (mix / "manifest.json").write_text('{"n_examples": ')
    elif damage == "dataset":
        shutil.rmtree(mix / "dataset")
    else:
        for f in (mix / "dataset").glob("*.arrow"):
            f.unlink()
    code, out, err = run(monkeypatch, capsys, "run", config, "--json", "-q")
    assert code == 0 and "Traceback" not in err and "--mixture" not in err, err
    (warning,) = _warnings(err)
    assert warning.startswith(f"warning: mixture folder {mix} ") and warning.endswith(": it is built again")
    (again,) = json.loads(out)["results"]
    assert again == row and again["n_train_examples"] == good["n_examples"]
    assert json.loads((mix / "manifest.json").read_text()) == good and (mix / "dataset").is_dir()
    assert trained.stat().st_mtime_ns == stamp  # the model trained on it is kept
    code, out, err = run(monkeypatch, capsys, "run", config, "--json", "-q")
    assert code == 0 and not _warnings(err), err  # and used again as it is


def test_mixture_problem_names_what_is_wrong(tmp_path):
    from insta.mix import Mixture, MixConfig, mixture_problem, write_mixture

    rows = [{"task": "t", "input": f"q{i}", "target": "a", "references": ["a"], "choices": [], "source": "niv2"}
            for i in range(3)]
    mix = write_mixture(Mixture(rows=rows, counts={"t": 3}, config=MixConfig()), tmp_path / "mix")
    assert mixture_problem(mix) is None
    good = (mix / "manifest.json").read_text()
    for manifest, problem in (('{"tasks": 5}', "without its 'n_examples'"), ('{"n_examples": true, "tasks": {}}', "without"),
                              ("[1]", "cannot be read"), ("{", "cannot be read")):
        (mix / "manifest.json").write_text(manifest)
        assert problem in mixture_problem(mix)
    (mix / "manifest.json").write_text(good)
    (mix / "dataset" / "state.json").unlink()
    assert "cannot be read" in mixture_problem(mix)
    assert mixture_problem(tmp_path / "absent") == "has no manifest.json"


# ---------------------------------------------------------------- 5, 6, 7. insta cache


def _populated(cache: Path) -> None:
    from insta.cache import EmbeddingCache

    EmbeddingCache(cache / "embeddings.sqlite").put_many("m", ["a", "b"], np.ones((2, 4)))
    for folder in ("lm-warmup/x", "example-samples", "onnx/model-0123"):
        (cache / folder).mkdir(parents=True, exist_ok=True)
    (cache / "example-samples" / "s.json").write_text("{}")
    (cache / "onnx" / "model-0123" / "model.onnx").write_bytes(b"\0" * (3 * 2**20))
    import gc

    gc.collect()  # the cache's connections closed: no WAL files left beside it (as after a command)
    assert not list(cache.glob("embeddings.sqlite-*"))


@pytest.mark.parametrize("unbuffered", ["1", ""])
def test_insta_cache_on_a_full_disk_is_an_error(isolated_cache, unbuffered):
    """The count was printed inside the `except InstaError` meant for a damaged cache: the failed
    write (an InstaError too) was reported as damage, to a standard output that was gone, exit 0."""
    _populated(isolated_cache)
    with open("/dev/full", "w") as full:
        proc = subprocess.run([INSTA, "cache"], stdout=full, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONUNBUFFERED": unbuffered})
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: cannot write the standard output (No space left on device)")


def test_insta_cache_lists_and_clears_the_onnx_exports(monkeypatch, capsys, isolated_cache):
    _populated(isolated_cache)
    code, out, err = run(monkeypatch, capsys, "cache")
    assert code == 0, err
    assert f"{isolated_cache / 'onnx'}: the ONNX exports of the embedders (1 entries, 3.0 MiB)" in out
    assert f"{isolated_cache / 'embeddings.sqlite'}: 2 embeddings\n" in out
    code, out, err = run(monkeypatch, capsys, "cache", "--clear")
    assert code == 0 and f"removed the ONNX exports of the embedders ({isolated_cache / 'onnx'})" in out, err
    assert not (isolated_cache / "onnx").exists() and not (isolated_cache / "embeddings.sqlite").exists()


@pytest.mark.parametrize("what", ["folder", "file"])
def test_insta_cache_on_a_read_only_cache_says_read_only(isolated_cache, what):
    _populated(isolated_cache)
    db = isolated_cache / "embeddings.sqlite"
    prefix: list[str] = []
    if os.geteuid() == 0:  # root writes anywhere: take that away from the child
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv: cannot make a folder read-only")
        prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-dac_override,-dac_read_search"]
    (db if what == "file" else isolated_cache).chmod(0o444 if what == "file" else 0o555)
    try:
        proc = subprocess.run([*prefix, INSTA, "cache"], capture_output=True, text=True)
    finally:
        isolated_cache.chmod(0o755)
        db.chmod(0o644)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith(f"{db}:"))
    assert "damaged" not in line and "--clear" not in line, line
    assert line.startswith(f"{db}: 2 embeddings; read-only (") and "set INSTA_CACHE_DIR to a writable folder" in line
    assert db.is_file()  # nothing removed
