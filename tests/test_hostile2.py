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

INSTA = str(Path(sys.executable).with_name("insta"))


def jsonl(path: Path, *rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


@pytest.fixture()
def table(tmp_path) -> str:
    return jsonl(tmp_path / "tasks.jsonl", {"id": "a", "instruction": "classify the sentiment of a review", "label": "x"},
                 {"id": "b", "instruction": "translate the sentence into French", "label": "y"},
                 {"id": "c", "instruction": "decide whether the review is positive", "label": "x"})


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
