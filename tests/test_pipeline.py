"""select → mix → train → eval on the real NIV2 task files, with a tiny T5 and a tiny GPT-2
built locally; resumption; bad input."""

from __future__ import annotations

import json

import pytest
import yaml
from test_cli import fails, run

from insta.errors import InstaError
from insta.evaluate import Scorer, evaluate_examples
from insta.mix import Mixture, MixConfig, write_mixture
from insta.pipeline import load_run_config
from insta.train import TrainConfig, train

BOOL = "task1732_bbh_boolean_expressions"
E2E = "task957_e2e_nlg_text_generation_generate"


def test_run_config_chains_select_mix_train_eval_and_resumes(shared_data, tiny_lms, tmp_path, monkeypatch, capsys):
    niv2 = f"niv2:{shared_data / 'niv2'}"
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "out": str(tmp_path / "run"), "pool": niv2, "targets": [BOOL, E2E], "k": 3,
        "methods": ["bm25", {"name": "random-3", "method": "random"}, "base",
                    {"name": "bm25-again", "method": "bm25"}],
        "mix": {"per_task_cap": 6}, "train": {"model": str(tiny_lms["t5"]), "max_steps": 2, "batch_size": 4,
                                              "max_input_length": 128, "max_target_length": 32},
        "eval": {"max_examples": 4, "max_new_tokens": 4},
    }))
    code, out, err = run(monkeypatch, capsys, "run", config, "--json", "-q")
    assert code == 0, err
    results = {(r["target"], r["method"]): r for r in json.loads(out)["results"]}
    assert set(results) == {(t, m) for t in (BOOL, E2E) for m in ("bm25", "random-3", "base", "bm25-again")}
    run_dir = tmp_path / "run"
    for (target, method), r in results.items():
        if method == "base":  # the untrained base model: nothing selected or trained
            assert r["selected"] == [] and r["model"] == "base" and r["n_train_examples"] == 0
            assert not (run_dir / target / "base" / "selection.json").exists()
        else:
            assert len(r["selected"]) == 3 and target not in r["selected"]
            sel = json.loads((run_dir / target / method / "selection.json").read_text())["selections"][0]
            assert [x["task_id"] for x in sel["results"]] == r["selected"]
            manifest = json.loads((run_dir / "mixtures" / r["mixture"] / "manifest.json").read_text())
            assert set(manifest["tasks"]) == set(r["selected"]) and r["n_train_examples"] == manifest["n_examples"] <= 18
            state = json.loads((run_dir / "models" / r["model"] / "train.json").read_text())
            assert state["status"] == "done" and state["result"]["steps"] == 2 and state["result"]["kind"] == "seq2seq"
            assert r["train_seconds"] == state["result"]["seconds"] > 0  # wall time per trained model, recorded
        assert r["eval_seconds"] > 0 and ("train_seconds" in r) == (method != "base")
        # the boolean target has answer choices (rank classification, with the gold log-likelihood);
        # the data-to-text one is generation
        assert set(r["metrics"]) == ({"accuracy", "gold_loglik", "query_loss"} if target == BOOL
                                     else {"rougeL", "exact_match"})
        assert all(0.0 <= v <= 1.0 for k, v in r["metrics"].items() if k not in ("gold_loglik", "query_loss"))
        ev = json.loads((run_dir / "evals" / r["model"] / f"{target}.json").read_text())
        assert ev["tasks"][0]["n"] == 4 and len(ev["tasks"][0]["examples"]) == 4
    # the same selection under two names is mixed, trained and evaluated once
    for target in (BOOL, E2E):
        assert results[(target, "bm25")]["model"] == results[(target, "bm25-again")]["model"]
        assert results[(target, "bm25")]["metrics"] == results[(target, "bm25-again")]["metrics"]
    assert len(list((run_dir / "models").iterdir())) == len({r["model"] for r in results.values()} - {"base"}) <= 4
    summary = json.loads((run_dir / "results.json").read_text())
    assert summary["wall_seconds"] > 0 and summary["peak_rss_mb"] > 0
    # a report on the folder, without running anything, finds the same results
    from insta.pipeline import collect_results

    assert collect_results(load_run_config(config)) == json.loads(out)["results"]
    md = (tmp_path / "run" / "results.md").read_text()
    assert md.startswith("| target | method | selected | train examples | accuracy | exact_match | gold_loglik | query_loss | "
                         "rougeL |")
    # a second run finds every step done: nothing is retrained, the results are the same
    state = run_dir / "models" / results[(BOOL, "bm25")]["model"] / "train.json"
    stamp = state.stat().st_mtime_ns
    code, out2, err = run(monkeypatch, capsys, "run", config, "--json", "-q")
    assert code == 0, err
    assert json.loads(out2)["results"] == json.loads(out)["results"]
    assert state.stat().st_mtime_ns == stamp


def test_cli_chain_with_a_causal_lm_and_lora(shared_data, tiny_lms, tmp_path, monkeypatch, capsys):
    niv2 = f"niv2:{shared_data / 'niv2'}"
    sel = tmp_path / "sel.json"
    assert run(monkeypatch, capsys, "select", "-p", niv2, "-t", BOOL, "-k", "2", "--method", "bm25", "-o", sel, "-q")[0] == 0
    assert run(monkeypatch, capsys, "mix", "-s", sel, "-o", tmp_path / "mix", "--per-task-cap", "5", "--format", "def+pos", "-q")[0] == 0
    code, out, err = run(monkeypatch, capsys, "train", "-m", tmp_path / "mix", "--model", tiny_lms["gpt2"], "-o", tmp_path / "model",
                         "--max-steps", "2", "--batch-size", "2", "--lora", "--lora-r", "4", "--max-input-length", "256", "--json", "-q")
    assert code == 0, err
    result = json.loads(out)
    assert result["kind"] == "causal" and result["lora"] and result["steps"] == 2 and result["config"]["lr"] == 5e-5
    assert (tmp_path / "model" / "adapter" / "adapter_config.json").is_file()
    code, out, err = run(monkeypatch, capsys, "eval", "--model", tmp_path / "model", "-t", niv2, "--task", BOOL, "--task", E2E,
                         "--max-examples", "3", "--max-new-tokens", "4", "--format", "def+pos", "-o", tmp_path / "eval.json", "-q")
    assert code == 0, err
    assert BOOL in out and E2E in out and "average" in out
    doc = json.loads((tmp_path / "eval.json").read_text())
    assert [t["task"] for t in doc["tasks"]] == [BOOL, E2E]
    assert set(doc["tasks"][0]["metrics"]) == {"accuracy", "gold_loglik", "query_loss"} and set(doc["tasks"][1]["metrics"]) == {"rougeL", "exact_match"}
    assert "prediction" in doc["tasks"][1]["examples"][0]


def _constant_mixture(tmp_path, answer: str):
    rows = [{"task": "t", "input": f"Statement {i}: is it so? Answer:", "target": answer, "references": [answer],
             "choices": ["True", "False"], "source": "niv2"} for i in range(16)]
    return write_mixture(Mixture(rows=rows, counts={"t": 16}, config=MixConfig()), tmp_path / f"mix-{answer}")


@pytest.mark.parametrize("kind", ["gpt2", "t5"])
def test_training_teaches_a_known_answer(tiny_lms, tmp_path, kind):
    """After training on a mixture whose answer is always 'False', rank classification picks it."""
    mix = _constant_mixture(tmp_path, "False")
    result = train(mix, str(tiny_lms[kind]), tmp_path / "m", TrainConfig(max_steps=30, batch_size=8, lr=3e-3), quiet=True)
    assert result.history[0]["loss"] > result.history[-2]["loss"]
    rows = [{"task": "new", "input": "Statement 99: is it so? Answer:", "target": "False", "choices": ["True", "False"]}]
    before = evaluate_examples(Scorer(str(tiny_lms[kind])), rows, "rank")[0]
    after = evaluate_examples(Scorer(result.model_dir), rows, "rank")[0]
    assert after.metrics["accuracy"] == 1.0 and after.examples[0]["choice"] == "False"
    assert after.metrics["gold_loglik"] > before.metrics["gold_loglik"]
    assert before.examples[0]["choice"] in ("True", "False")


def test_training_bad_input(tiny_lms, tmp_path, monkeypatch, capsys):
    import torch

    mix = _constant_mixture(tmp_path, "True")
    capsys.readouterr()
    if not torch.cuda.is_available():
        fails(monkeypatch, capsys, "train", "-m", mix, "--model", tiny_lms["gpt2"], "-o", tmp_path / "a", "--device", "cuda",
              match="--device cuda asked for, but torch sees no CUDA device")
        fails(monkeypatch, capsys, "train", "-m", mix, "--model", tiny_lms["gpt2"], "-o", tmp_path / "a", "--bf16",
              match="--bf16 needs a CUDA device")
    fails(monkeypatch, capsys, "train", "-m", mix, "--model", tmp_path / "nowhere", "-o", tmp_path / "a",
          match="nowhere does not exist")
    fails(monkeypatch, capsys, "train", "-m", mix, "--model", tmp_path, "-o", tmp_path / "a",
          match="is not a Hugging Face model folder (no config.json)")
    fails(monkeypatch, capsys, "train", "-m", mix, "--model", "no-such-org/no-such-model", "-o", tmp_path / "a",
          match="model 'no-such-org/no-such-model' is not available offline")
    fails(monkeypatch, capsys, "train", "-m", tmp_path, "--model", tiny_lms["gpt2"], "-o", tmp_path / "a",
          match="is not a mixture folder")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    fails(monkeypatch, capsys, "train", "-m", mix, "--model", tiny_lms["gpt2"], "-o", busy, match="already exists and holds something else")
    assert (busy / "notes.txt").read_text() == "mine"
    assert not (tmp_path / "a").exists()
    fails(monkeypatch, capsys, "eval", "--model", tiny_lms["gpt2"], "-t", f"niv2:{tmp_path / 'none'}", match="does not exist")


def test_resume_after_an_interruption(tiny_lms, tmp_path):
    from transformers import TrainerCallback

    class Stop(TrainerCallback):
        def on_save(self, args, state, control, **kw):
            raise KeyboardInterrupt

    mix = _constant_mixture(tmp_path, "True")
    out = tmp_path / "m"
    with pytest.raises(KeyboardInterrupt):
        train(mix, str(tiny_lms["gpt2"]), out, TrainConfig(epochs=2, batch_size=8), quiet=True, callbacks=[Stop()])
    assert any((out / "checkpoints").glob("checkpoint-*"))
    state = json.loads((out / "train.json").read_text())  # a dead run is not read as running; resumable
    assert state["status"] == "interrupted" and state["reason"] == "Ctrl-C" and state["mixture"] == str(mix)
    result = train(mix, str(tiny_lms["gpt2"]), out, TrainConfig(epochs=2, batch_size=8), quiet=True)
    assert result.resumed and result.steps == 4
    with pytest.raises(InstaError, match="already holds a trained model"):
        train(mix, str(tiny_lms["gpt2"]), out, TrainConfig(epochs=2, batch_size=8), quiet=True)


def test_run_config_names_seeded_methods(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("out: x\npool: p\ntargets: [a]\ntrain: {model: m}\n"
                    "methods: [base, {method: random, seed: 3}, {method: random, seed: 4}]\nmix: {total_examples: 64}\n")
    cfg = load_run_config(good)
    assert [(m.name, m.method, m.seed) for m in cfg.methods] == [("base", "base", None), ("random-3", "random", 3),
                                                                ("random-4", "random", 4)]
    assert cfg.mix.total_examples == 64


def test_run_config_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    for text, match in [
        ("out: x\npool: p\ntargets: [a]\ntrain: {model: m}\nepochs: 3\n", "unknown field 'epochs'; available: calibrate, embedder, eval, exclude_siblings, features, k, keep_models, methods"),
        ("out: x\npool: p\ntargets: [a]\ntrain: {model: m}\nmethods: [nope]\n",
         "methods[0]: unknown method 'nope'; available: all, bm25"),
        ("out: x\npool: p\ntargets: [a]\ntrain: {model: m}\nmethods: [{method: random, seed: x}]\n",
         "methods[0].seed must be an integer"),
        ("out: x\npool: p\ntargets: [a]\n", "field 'train' is missing"),
        ("out: x\npool: p\ntargets: [a]\ntrain: {epochs: 1}\n", "field 'train.model' is missing"),
        ("out: x\npool: p\ntargets: [a]\ntrain: {model: m, lr_warm: 1}\n", "unknown field 'train.lr_warm'"),
        ("out: x\npool: p\ntargets: [a]\ntrain: {model: m}\nmethods: [insta, insta]\n", "two methods share the name 'insta'"),
        ("out: x\npool: [p\n", "bad.yaml:3: invalid YAML"),
    ]:
        bad.write_text(text)
        with pytest.raises(InstaError, match=match.replace("[", "\\[")):
            load_run_config(bad)


def test_shipped_deepspeed_config_is_consistent():
    """The multi-GPU route the README documents: an accelerate config pointing at a ZeRO-2 file."""
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    acc = yaml.safe_load((repo / "configs" / "deepspeed_zero2.yaml").read_text())
    assert acc["distributed_type"] == "DEEPSPEED" and acc["use_cpu"] is False
    ds = json.loads((repo / acc["deepspeed_config"]["deepspeed_config_file"]).read_text())
    assert ds["zero_optimization"]["stage"] == 2
    # batch sizes and precision come from insta train's arguments, not from the file
    assert ds["train_micro_batch_size_per_gpu"] == ds["gradient_accumulation_steps"] == ds["bf16"]["enabled"] == "auto"
    assert "accelerate launch --config_file configs/deepspeed_zero2.yaml" in (repo / "README.md").read_text()


def test_lm_builder_sizes(tmp_path):
    from insta.testing import SIZES, build_lms

    with pytest.raises(ValueError, match="unknown size 'huge'; available: tiny, small"):
        build_lms(tmp_path, ["a b c"], size="huge")
    assert set(SIZES) == {"tiny", "small"}


def test_built_lms_encode_any_text(tiny_lms):
    from transformers import AutoConfig, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_lms["t5"])
    text = "Ünïcode — 数字 42 never seen in the BPE corpus"
    assert tok.decode(tok(text)["input_ids"], skip_special_tokens=True) == text  # byte-level: no <unk>
    assert AutoConfig.from_pretrained(tiny_lms["gpt2"]).n_embd == 32 and AutoConfig.from_pretrained(tiny_lms["t5"]).is_encoder_decoder


def test_run_state_records_why_a_run_stopped(tmp_path):
    """running while the block runs; interrupted with a readable reason when it is left by an exception."""
    from insta.errors import Terminated
    from insta.io import run_state

    state = tmp_path / "state.json"
    for exc, reason in ((KeyboardInterrupt(), "Ctrl-C"), (Terminated(), "SIGTERM"), (OSError("disk full"), "OSError: disk full")):
        with pytest.raises(type(exc)):
            with run_state(state, {"config": {"k": 1}}):
                assert json.loads(state.read_text())["status"] == "running"
                raise exc
        assert json.loads(state.read_text()) == {"status": "interrupted", "config": {"k": 1}, "reason": reason}
    with run_state(state, {"config": {"k": 1}}):
        pass
    assert json.loads(state.read_text())["status"] == "running"  # the block writes the final state itself
