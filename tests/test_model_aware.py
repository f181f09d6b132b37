"""Model-aware selection (less: LoRA gradients, rds: hidden states) on the tiny GPT-2 of
insta.testing: the projection, exact per-example gradients, Adam preconditioning from the
warm-up, determinism, cache identities, task- and example-level selection, mixtures of
exactly the chosen examples, held-out target examples in insta run, and hostile input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import yaml
from test_bigbench import CANARY, write_tasks
from test_cli import fails, run

from insta.config import FeatureConfig
from insta.errors import InstaError
from insta.examples import Example, task_sample
from insta.lm_features import ADAM_BETAS, ADAM_EPS, Gradients, HiddenStates, SparseSignProjection, _lora_modules
from insta.pools import load_pool
from insta.select import Target

TOPICS = {
    "sentiment_a": ("Classify the review as positive or negative", [("great movie, loved it", "positive"),
                                                                     ("awful film", "negative")]),
    "sentiment_b": ("Is this review positive or negative?", [("a fine story", "positive"), ("boring", "negative")]),
    "arithmetic_a": ("Evaluate the expression", [("1 + 2", "3"), ("2 + 2", "4")]),
    "arithmetic_b": ("Compute the sum", [("3 + 4", "7"), ("5 + 1", "6")]),
    "translate": ("Translate English to French", [("the cat", "le chat"), ("the dog", "le chien")]),
}


def bb_tasks(n: int = 6) -> dict[str, dict]:
    """BIG-bench-format tasks (written by the test) with n examples each."""
    out = {}
    for name, (description, pairs) in TOPICS.items():
        examples = [{"input": f"{pairs[i % 2][0]} ({i})", "target": pairs[i % 2][1]} for i in range(n)]
        out[name] = {"name": name, "description": description, "keywords": [name.split("_")[0]], "examples": examples}
    return out


@pytest.fixture()
def bb(tmp_path):
    return write_tasks(tmp_path / "bb", bb_tasks())


def features(lm, **kw) -> FeatureConfig:
    base = dict(lm=str(lm), per_task=4, query_examples=3, max_length=64, batch_size=4, proj_dim=512,
                warmup_examples=8, warmup_steps=2, warmup_lr=1e-2)
    return FeatureConfig(**(base | kw))


def pool_examples(bb) -> list[Example]:
    pool = load_pool(f"bigbench:all?source={bb}")
    return [ex for t in pool for ex in task_sample(t, 4, 0)]


# ---------------------------------------------------------------- the projection


def test_sparse_sign_projection_preserves_inner_products():
    import torch

    shapes = {"a": 40_000, "b": 25_000}
    proj = SparseSignProjection(shapes, dim=4096, nnz=4, seed=3)
    gen = torch.Generator().manual_seed(0)
    x = {k: torch.randn(64, n, generator=gen) for k, n in shapes.items()}
    flat = torch.cat([x["a"], x["b"]], dim=1)
    flat = flat / flat.norm(dim=1, keepdim=True)
    px = proj.project({"a": flat[:, :40_000], "b": flat[:, 40_000:]})
    true = flat @ flat.T
    approx = px @ px.T
    err = (approx - true).abs()
    # stated tolerance: the error's SD is sqrt((<x,y>^2 + |x|^2 |y|^2) / dim) <= sqrt(2 / dim) = 0.022
    assert float(err.max()) < 5 * math.sqrt(2 / 4096)
    assert abs(float((approx - true).mean())) < 0.005  # unbiased
    # a parameter's column depends on its name and the seed only; another seed is another projection
    again = SparseSignProjection({"b": 25_000, "a": 40_000}, dim=4096, nnz=4, seed=3)
    assert torch.equal(again.index["a"], proj.index["a"]) and torch.equal(again.sign["b"], proj.sign["b"])
    other = SparseSignProjection(shapes, dim=4096, nnz=4, seed=4)
    assert not torch.equal(other.index["a"], proj.index["a"])
    with pytest.raises(InstaError, match="multiple"):
        SparseSignProjection(shapes, dim=100, nnz=3)


# ---------------------------------------------------------------- gradients


def test_per_example_gradients_are_exact_and_deterministic(tiny_lms, bb):
    import torch

    examples = pool_examples(bb)[:5]
    rep = Gradients(features(tiny_lms["gpt2"]), cache=False)
    rep.prepare(pool_examples(bb))
    batched = rep.compute(examples, "target")
    model = rep._peft_model()
    modules = _lora_modules(model)
    for j, ex in enumerate(examples):  # one example at a time, through autograd's own weight gradients
        (_, ids, att, answer), = list(rep.lm.batches([ex]))
        model.zero_grad(set_to_none=True)
        rep._answer_loss(model, ids, att, answer).sum().backward()
        grads = {n: m.weight.grad.reshape(1, -1).float() for n, m in modules.items()}
        single = rep._projection.project(grads)[0].numpy()
        np.testing.assert_allclose(batched[j], single, rtol=2e-3, atol=1e-6)
    # deterministic for a seed: a fresh object, a fresh warm-up, the same vectors
    rep2 = Gradients(features(tiny_lms["gpt2"]), cache=False)
    rep2.prepare(pool_examples(bb))
    np.testing.assert_array_equal(rep2.compute(examples, "target"), batched)
    # another projection seed: other vectors
    rep3 = Gradients(features(tiny_lms["gpt2"], proj_seed=1), cache=False)
    rep3.prepare(pool_examples(bb))
    assert not np.allclose(rep3.compute(examples, "target"), batched)
    assert torch.is_grad_enabled()


def test_source_gradients_are_preconditioned_by_the_warmup_adam_state(tiny_lms, bb):
    examples = pool_examples(bb)[:3]
    rep = Gradients(features(tiny_lms["gpt2"]), cache=False)
    rep.prepare(pool_examples(bb))
    plain = rep.compute(examples, "target")
    adam = rep.compute(examples, "source")
    assert rep.warmup_info["steps"] == 2 and len(rep.warmup_info["losses"]) == 2
    state = rep._state
    assert all(float(s["exp_avg_sq"].abs().sum()) > 0 for s in state.values())  # the optimizer really ran
    # the source vector is the projection of the Adam direction built from the warm-up's moments
    model = rep._peft_model()
    modules = _lora_modules(model)
    (_, ids, att, answer), = list(rep.lm.batches(examples[:1]))
    model.zero_grad(set_to_none=True)
    rep._answer_loss(model, ids, att, answer).sum().backward()
    b1, b2 = ADAM_BETAS
    direction = {}
    for n, m in modules.items():
        g = m.weight.grad.reshape(1, -1).float()
        avg = b1 * state[n]["exp_avg"].reshape(1, -1) + (1 - b1) * g
        sq = b2 * state[n]["exp_avg_sq"].reshape(1, -1) + (1 - b2) * g * g
        direction[n] = avg / (sq.sqrt() + ADAM_EPS)
    np.testing.assert_allclose(adam[0], rep._projection.project(direction)[0].numpy(), rtol=2e-3, atol=1e-5)
    assert not np.allclose(adam, plain)
    # other moments (as another warm-up would leave): other source vectors, the same target vectors
    for s in state.values():
        s["exp_avg_sq"] = s["exp_avg_sq"] * 16
    assert not np.allclose(rep.compute(examples, "source"), adam)
    np.testing.assert_array_equal(rep.compute(examples, "target"), plain)


def test_cache_identity_changes_with_model_warmup_and_projection(tiny_lms, bb, tmp_path):
    from insta.testing import build_lms

    other_lm = build_lms(tmp_path / "other", ["a b c d e f g"] * 4, size="tiny", seed=1)["gpt2"]
    examples = pool_examples(bb)

    def ident(lm=tiny_lms["gpt2"], **kw):
        rep = Gradients(features(lm, **kw), cache=False)
        rep.prepare(examples)
        return rep.identity("source")

    base = ident()
    assert base == ident() and base.endswith(":adam")
    changed = [ident(lm=other_lm), ident(warmup_steps=3), ident(warmup_examples=6), ident(proj_dim=256),
               ident(proj_seed=1), ident(lora_r=4)]
    assert len({base, *changed}) == 1 + len(changed)
    rep = Gradients(features(tiny_lms["gpt2"]), cache=False)
    rep.prepare(examples)
    assert rep.identity("target").endswith(":sgd")
    assert HiddenStates(features(tiny_lms["gpt2"])).identity("source") != HiddenStates(
        features(other_lm)).identity("source")


def test_second_fit_is_served_from_the_cache_and_a_damaged_warmup_is_retrained(tiny_lms, bb, isolated_cache, caplog):
    from insta.example_select import LessSelector, RdsSelector

    pool = load_pool(f"bigbench:all?source={bb}")
    cfg = features(tiny_lms["gpt2"])
    first = LessSelector(features=cfg).fit(pool)
    assert first.representation.computed == len(first._examples) == 20
    again = LessSelector(features=cfg).fit(pool)
    assert again.representation.computed == 0  # vectors from the cache, the warm-up from its folder
    np.testing.assert_array_equal(np.asarray(again._vectors), np.asarray(first._vectors))
    warm = next((isolated_cache / "lm-warmup").iterdir())
    (warm / "adam.safetensors").write_bytes(b"not a safetensors file")
    third = LessSelector(features=cfg)
    third.representation.prepare(third_examples := first._examples)
    third.representation.compute(third_examples[:2], "source")
    assert any("warm-up" in r.getMessage() and "trained again" in r.getMessage() for r in caplog.records)
    rds = RdsSelector(features=cfg).fit(pool)
    assert rds.representation.computed == 20 and RdsSelector(features=cfg).fit(pool).representation.computed == 0


# ---------------------------------------------------------------- selection


def test_task_level_and_example_level_selection(tiny_lms, bb):
    from insta.example_select import LessSelector, RdsSelector

    pool = load_pool(f"bigbench:all?source={bb}")
    target = Target.from_task(pool.get("sentiment_a"))
    for cls in (LessSelector, RdsSelector):
        sel = cls(features=features(tiny_lms["gpt2"])).fit(pool).select(target, k=2)
        assert len(sel.results) == 2 and "sentiment_a" not in sel.ids  # never the target itself
        assert sel.aggregate == "mean" and sel.results[0].match.measure.startswith("cosine (")
        seen = {e["index"] for e in sel.target_examples}
        assert len(seen) == 3 and all(e["task"] == "sentiment_a" for e in sel.target_examples)
        budget = cls(features=features(tiny_lms["gpt2"]), budget=5).fit(pool).select(target)
        picked = [(r.task_id, e["index"]) for r in budget.results for e in r.examples]
        assert len(picked) == len(set(picked)) == 5 and budget.budget == 5
        assert all(t != "sentiment_a" for t, _ in picked)
        doc = budget.to_dict()
        assert doc["budget"] == 5 and all("examples" in r for r in doc["results"])
        assert "examples" not in sel.to_dict()["results"][0]
    # a budget above what was sampled returns everything, with a warning
    big = RdsSelector(features=features(tiny_lms["gpt2"]), budget=100).fit(pool).select(target)
    assert sum(len(r.examples) for r in big.results) == 16 and any("budget=100" in w for w in big.warnings)


def test_cli_selects_mixes_exactly_the_chosen_examples(tiny_lms, bb, tmp_path, monkeypatch, capsys):
    spec = f"bigbench:all?source={bb}"
    out = tmp_path / "sel.json"
    code, text, err = run(monkeypatch, capsys, "select", "-p", spec, "-t", "arithmetic_a", "--method", "rds", "--lm",
                          str(tiny_lms["gpt2"]), "--budget", "6", "--examples-per-task", "4", "--query-examples", "2",
                          "--out", str(out), "--json", "-q")
    assert code == 0, err
    doc = json.loads(text)
    sel = doc["selections"][0]
    assert doc["representation"]["representation"] == "hidden" and doc["budget"] == 6
    chosen = {(r["task_id"], e["index"]) for r in sel["results"] for e in r["examples"]}
    assert len(chosen) == 6 and len(sel["target_examples"]) == 2
    code, text, err = run(monkeypatch, capsys, "mix", "-s", str(out), "-o", str(tmp_path / "mix"), "--json", "-q")
    assert code == 0, err
    rows = [json.loads(x) for x in (tmp_path / "mix" / "mixture.jsonl").read_text().splitlines()]
    pool = load_pool(spec)
    expected = {(t, pool.get(t).with_instances().instances[i]["prompt"]) for t, i in chosen}
    assert {(r["task"], r["input"]) for r in rows} == expected and len(rows) == 6
    # task level with k, then mixed as usual
    code, text, err = run(monkeypatch, capsys, "select", "-p", spec, "-t", "arithmetic_a", "--method", "less", "--lm",
                          str(tiny_lms["gpt2"]), "-k", "2", "--examples-per-task", "3", "--query-examples", "2",
                          "--proj-dim", "256")
    assert code == 0, err
    assert "target example(s) seen by the selector" in text and "best matching example" in text
    # a selection whose example no longer matches the pool is refused
    edited = json.loads(out.read_text())
    edited["selections"][0]["results"][0]["examples"][0]["key"] = "0" * 20
    out.write_text(json.dumps(edited))
    fails(monkeypatch, capsys, *["mix", "-s", str(out), "-o", str(tmp_path / "mix2")],
          match="is not the one that was selected")


def test_hybrid_less_fuses_three_rankings(tiny_lms, bb, tiny_model):
    from insta import Encoder
    from insta.selectors import make_selector

    pool = load_pool(f"bigbench:all?source={bb}")
    sel = make_selector("hybrid-less", encoder=Encoder(str(tiny_model), cache=False),
                        features=features(tiny_lms["gpt2"])).fit(pool)
    out = sel.select(Target.from_task(pool.get("translate")), k=3)
    assert out.method == "hybrid-less" and len(out.results) == 3 and out.target_examples
    parts = out.results[0].match.parts
    assert [p["measure"] for p in parts] == ["cosine", "bm25", "cosine (grad)"]
    assert out.results[0].match.measure == "rrf(cosine, bm25, less)"


# ---------------------------------------------------------------- insta run: held-out examples


def test_run_never_evaluates_on_examples_a_selector_saw(tiny_lms, bb, tmp_path, monkeypatch, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "out": str(tmp_path / "run"), "pool": f"bigbench:all?source={bb}", "targets": ["sentiment_b"], "k": 2,
        "methods": ["base", "bm25", "rds", {"method": "less", "budget": 4}],
        "features": {"per_task": 3, "query_examples": 2, "max_length": 64, "proj_dim": 256, "warmup_examples": 4,
                     "warmup_steps": 1},
        "mix": {"per_task_cap": 4, "total_examples": 4},
        "train": {"model": str(tiny_lms["gpt2"]), "max_steps": 1, "batch_size": 2, "max_input_length": 64,
                  "max_target_length": 8},
        "eval": {"metric": "loglik", "max_examples": 10},
    }))
    code, out, err = run(monkeypatch, capsys, "run", str(config), "--json", "-q")
    assert code == 0, err
    results = {r["method"]: r for r in json.loads(out)["results"]}
    assert set(results) == {"base", "bm25", "rds", "less@4"}
    run_dir = tmp_path / "run"
    seen = json.loads((run_dir / "sentiment_b" / "rds" / "selection.json").read_text())["selections"][0]["target_examples"]
    less = json.loads((run_dir / "sentiment_b" / "less_4" / "selection.json").read_text())["selections"][0]
    assert [e["index"] for e in less["target_examples"]] == [e["index"] for e in seen] and len(seen) == 2
    assert sum(len(r["examples"]) for r in less["results"]) == 4 and results["less@4"]["n_train_examples"] == 4
    seen_inputs = {e["input"] for e in seen}
    inputs = []
    for r in results.values():  # every method, base included, is evaluated on the same examples, none of them seen
        assert r["held_out_query_examples"] == [e["index"] for e in seen]
        evals = list((run_dir / "evals" / r["model"]).glob("sentiment_b.held-*.json"))
        assert len(evals) == 1
        got = [x["input"] for x in json.loads(evals[0].read_text())["tasks"][0]["examples"]]
        assert len(got) == 4 and not seen_inputs & set(got)  # 6 examples, 2 seen: 4 left
        inputs.append(sorted(got))
    assert all(x == inputs[0] for x in inputs)
    # insta eval leaves them out too, given the selection file
    sel_file = run_dir / "sentiment_b" / "rds" / "selection.json"
    code, out, err = run(monkeypatch, capsys, "eval", "--model", str(tiny_lms["gpt2"]), "-t", f"bigbench:all?source={bb}",
                         "--task", "sentiment_b", "--metric", "loglik", "--exclude-seen", str(sel_file), "--json", "-q")
    assert code == 0, err
    assert not seen_inputs & {x["input"] for x in json.loads(out)["tasks"][0]["examples"]}


# ---------------------------------------------------------------- hostile input


def test_hostile_inputs_get_one_line(tiny_lms, bb, tmp_path, monkeypatch, capsys):
    spec = f"bigbench:all?source={bb}"
    lm = str(tiny_lms["gpt2"])
    # a target with no examples: which methods work from an instruction alone
    fails(monkeypatch, capsys, *["select", "-p", spec, "-i", "Classify the review", "--method", "less", "--lm", lm],
          match="has none; give them with --target-examples FILE.jsonl")
    fails(monkeypatch, capsys, *["select", "-p", spec, "-i", "x", "--method", "rds", "--lm", lm],
          match="hybrid, insta, bm25")
    # examples from a file: empty answers, wrong types, not JSON lines
    bad = tmp_path / "ex.jsonl"
    bad.write_text('{"input": "1 + 1", "output": ""}\n')
    fails(monkeypatch, capsys, *["select", "-p", spec, "-i", "add", "--method", "rds", "--lm", lm, "--target-examples",
                                str(bad)],
          match=f"{bad}:1: field 'output' must be non-empty text")
    bad.write_text('{"input": 3, "output": "x"}\n')
    fails(monkeypatch, capsys, *["select", "-p", spec, "-i", "add", "--method", "rds", "--lm", lm, "--target-examples",
                                str(bad)],
          match=f"{bad}:1: field 'input' must be non-empty text")
    fails(monkeypatch, capsys, *["select", "-p", spec, "-i", "add", "--method", "rds", "--target-examples",
                                str(tmp_path / "ex.txt")],
          match="give a .jsonl file")
    # one example is enough
    one = tmp_path / "one.jsonl"
    one.write_text('{"input": "7 + 1", "output": ["8", "eight"]}\n')
    code, out, err = run(monkeypatch, capsys, "select", "-p", spec, "-i", "add", "--method", "rds", "--lm", lm,
                         "--target-examples", str(one), "-k", "2", "--examples-per-task", "2", "--json", "-q")
    assert code == 0, err
    assert json.loads(out)["selections"][0]["target_examples"][0]["target"] == "8"
    # --budget for a method that ranks tasks; a pool with no examples (P3-like table)
    fails(monkeypatch, capsys, *["select", "-p", spec, "-i", "x", "--method", "insta", "--budget", "3"],
          match="--budget selects examples; it applies to samples, less, rds")
    table = tmp_path / "tasks.jsonl"
    table.write_text('{"id": "a", "instruction": "Sum numbers"}\n{"id": "b", "instruction": "Add"}\n')
    fails(monkeypatch, capsys, *["select", "-p", str(table), "-i", "add", "--method", "rds", "--lm", lm,
                                "--target-examples", str(one)],
          match="no task of")
    # a model whose weights are NaN: one line, not a vector of NaNs
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    broken = tmp_path / "broken"
    model = AutoModelForCausalLM.from_pretrained(lm)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    model.save_pretrained(broken)
    AutoTokenizer.from_pretrained(lm).save_pretrained(broken)
    fails(monkeypatch, capsys, *["select", "-p", spec, "-t", "translate", "--method", "rds", "--lm", str(broken)],
          match="are not finite (NaN or infinite)")
    fails(monkeypatch, capsys, *["select", "-p", spec, "-t", "translate", "--method", "less", "--lm", str(broken)],
          match="not finite")
    # settings out of range
    fails(monkeypatch, capsys, *["select", "-p", spec, "-t", "translate", "--method", "less", "--lm", lm, "--proj-dim", "102"],
          match="features.proj_dim (--proj-dim) must be a multiple of features.sketch_nnz")
    fails(monkeypatch, capsys, *["select", "-p", spec, "-t", "translate", "--method", "rds", "--lm", lm, "--examples-per-task", "0"],
          match="features.per_task (--examples-per-task) must be at least 1")
    fails(monkeypatch, capsys, *["select", "-p", spec, "-t", "translate", "--method", "rds", "--lm", lm, "--budget", "0"],
          match="--budget must be at least 1")


def test_bench_and_downstream_take_the_model_aware_methods(tiny_lms, bb, monkeypatch, capsys):
    from insta.bench.downstream import downstream_config

    code, out, err = run(monkeypatch, capsys, "bench", "--pool", f"bigbench:all?source={bb}", "--methods", "random,rds,less",
                         "--lm", str(tiny_lms["gpt2"]), "--bootstrap", "50", "--json", "-q")
    assert code == 0, err
    methods = {m["method"]: m for m in json.loads(out)["methods"]}
    assert set(methods) == {"random", "rds", "less"} and not methods["rds"]["skipped"]
    assert 0 <= methods["rds"]["metrics"]["MAP"] <= 1
    cfg = downstream_config("runs/x", extra_methods=["less", "rds@64"])
    specs = {m.name: (m.method, m.budget) for m in cfg.methods}
    assert specs["less"] == ("less", None) and specs["rds@64"] == ("rds", 64)
    assert cfg.features.lm == cfg.base_model == "smollm2"


def test_pool_features_on_a_local_ray_instance(tiny_lms, bb, isolated_cache):
    """Ray Data featurises the pool (two LM actors): gradients (the warm-up trained by the driver,
    read by the actors) and hidden states equal the local ones, in order, and are cached."""
    pytest.importorskip("ray.data")
    import ray

    from insta.example_select import LessSelector

    pool = load_pool(f"bigbench:all?source={bb}")
    try:
        for cls in (LessSelector,):  # rds runs through the same path, without the warm-up
            local = cls(features=features(tiny_lms["gpt2"]), cache=False).fit(pool)
            on_ray = cls(features=features(tiny_lms["gpt2"], engine="ray", actors=2)).fit(pool)
            np.testing.assert_allclose(np.asarray(on_ray._vectors), np.asarray(local._vectors), atol=1e-5)
            assert on_ray.representation.computed == 20
            again = cls(features=features(tiny_lms["gpt2"], engine="ray", actors=2)).fit(pool)
            assert again.representation.computed == 0  # served from the cache: no Ray job at all
    finally:
        ray.shutdown()


# ---------------------------------------------------------------- what a hostile review found


def test_seen_examples_are_left_out_by_content_too(bb):
    from insta.pipeline import without_examples

    pool = load_pool(f"bigbench:all?source={bb}")
    task = pool.get("sentiment_a").with_instances()
    rows = [Example(task.id, i, x["prompt"], x["output"][0], x["input"]) for i, x in enumerate(task.instances)]
    dup = {**task.instances[0]}  # the same example twice in the task's data
    task.instances.append(dup)
    left = without_examples(task, [{"index": 0, "key": rows[0].key, "input": rows[0].input}])
    assert all(x["prompt"] != rows[0].input for x in left.instances) and len(left.instances) == len(task.instances) - 2
    # an example the user gave in its raw form (not as the task renders it)
    left = without_examples(task, [{"index": -1, "key": "k", "input": task.instances[1]["input"]}])
    assert task.instances[1]["input"] not in [x["input"] for x in left.instances]


def test_hostile_review_fixes(tiny_lms, bb, tmp_path, monkeypatch, capsys, isolated_cache):
    import os
    import shutil

    spec = f"bigbench:all?source={bb}"
    lm = str(tiny_lms["gpt2"])
    # a damaged weights file and a folder without tokenizer: one line each
    trunc = tmp_path / "trunc"
    shutil.copytree(lm, trunc)
    weights = next(trunc.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:1000])
    fails(monkeypatch, capsys, *["select", "-p", spec, "-t", "translate", "--method", "rds", "--lm", str(trunc)],
          match="cannot load model")
    notok = tmp_path / "notok"
    shutil.copytree(lm, notok)
    for f in notok.glob("tok*"):
        f.unlink()
    for f in ("special_tokens_map.json", "vocab.json", "merges.txt"):
        (notok / f).unlink(missing_ok=True)
    code, out, err = run(monkeypatch, capsys, "select", "-p", spec, "-t", "translate", "--method", "rds", "--lm", str(notok))
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    # options that do not apply are refused, not ignored; FIFOs are not read
    fails(monkeypatch, capsys, *["select", "-p", spec, "-i", "x", "--method", "insta", "--target-examples", "e.jsonl"],
          match="--target-examples applies to the methods that select from examples")
    fifo = tmp_path / "ex.jsonl"
    os.mkfifo(fifo)
    fails(monkeypatch, capsys, *["select", "-p", spec, "-i", "x", "--method", "rds", "--lm", lm, "--target-examples",
                                 str(fifo)], match="is not a regular file")
    # samples honours the sizes given
    code, out, err = run(monkeypatch, capsys, "select", "-p", spec, "-t", "translate", "--method", "samples",
                         "--query-examples", "2", "--examples-per-task", "3", "--json", "-q")
    assert code == 0, err
    assert len(json.loads(out)["selections"][0]["target_examples"]) == 2
    # a selection that says it chose examples but lists none
    code, out, err = run(monkeypatch, capsys, "select", "-p", spec, "-t", "translate", "--method", "rds", "--lm", lm,
                         "--budget", "3", "--examples-per-task", "3", "--out", str(tmp_path / "s.json"), "-q")
    assert code == 0, err
    doc = json.loads((tmp_path / "s.json").read_text())
    for r in doc["selections"][0]["results"]:
        del r["examples"]
    (tmp_path / "s.json").write_text(json.dumps(doc))
    fails(monkeypatch, capsys, *["mix", "-s", str(tmp_path / "s.json"), "-o", str(tmp_path / "m")],
          match="has a 'budget' (it selected examples) but its results list no 'examples'")
    # a damaged warm-up is replaced once; insta cache --clear removes warm-ups and samples
    from insta.example_select import LessSelector

    pool = load_pool(spec)
    LessSelector(features=features(lm)).fit(pool)
    warm = next((isolated_cache / "lm-warmup").iterdir())
    (warm / "adam.safetensors").write_bytes(b"junk")
    cfg = features(lm, proj_dim=256)  # other vectors: the warm-up is needed again
    LessSelector(features=cfg).fit(pool)
    assert (warm / "warmup.json").is_file() and (warm / "adam.safetensors").stat().st_size > 4
    code, out, err = run(monkeypatch, capsys, "cache", "--clear")
    assert code == 0 and not (isolated_cache / "lm-warmup").exists() and not (isolated_cache / "example-samples").exists()


def test_run_refuses_a_budget_for_base_and_a_selection_made_with_other_settings(tiny_lms, bb, tmp_path, monkeypatch,
                                                                                capsys):
    base = {"out": str(tmp_path / "run"), "pool": f"bigbench:all?source={bb}", "targets": ["sentiment_b"], "k": 2,
            "methods": ["rds"], "features": {"per_task": 2, "query_examples": 2, "max_length": 64},
            "mix": {"per_task_cap": 2}, "eval": {"metric": "loglik", "max_examples": 2},
            "train": {"model": str(tiny_lms["gpt2"]), "max_steps": 1, "batch_size": 2, "max_input_length": 64,
                      "max_target_length": 8}}
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({**base, "methods": [{"method": "base", "budget": 3}]}))
    fails(monkeypatch, capsys, *["run", str(config)], match="methods[0]: budget, k and quantile choose what to train on")
    config.write_text(yaml.safe_dump(base))
    code, out, err = run(monkeypatch, capsys, "run", str(config), "-q")
    assert code == 0, err
    config.write_text(yaml.safe_dump({**base, "features": {**base["features"], "per_task": 3}}))
    fails(monkeypatch, capsys, *["run", str(config)], match="was selected with other settings (features.per_task changed")


def test_no_cache_reaches_the_model_aware_vectors(tiny_lms, bb, monkeypatch, capsys):
    args = ["select", "-p", f"bigbench:all?source={bb}", "-t", "translate", "--method", "rds", "--lm",
            str(tiny_lms["gpt2"]), "--examples-per-task", "2", "--json", "-q"]
    computed = []
    for extra in ([], ["--no-cache"], []):
        code, out, err = run(monkeypatch, capsys, *args, *extra)
        assert code == 0, err
        computed.append(json.loads(out)["representation"]["computed"])
    assert computed == [10, 10, 0]  # 5 tasks x 2 examples; --no-cache neither reads nor writes them


def test_exclude_seen_refuses_a_selection_that_lost_its_target_examples(bb, tmp_path):
    from insta.pipeline import seen_examples, without_examples

    doc = {"pool": "p", "method": "rds", "k": 2, "selections": [
        {"target": {"id": "sentiment_a"}, "method": "rds", "results": [{"task_id": "sentiment_b"}]}]}
    path = tmp_path / "sel.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(InstaError, match="records no 'target_examples'"):
        seen_examples([str(path)])
    # entries with only a key still leave their example out
    task = load_pool(f"bigbench:all?source={bb}").get("sentiment_a").with_instances()
    first = Example(task.id, 0, task.instances[0]["prompt"], task.instances[0]["output"][0])
    left = without_examples(task, [{"index": -1, "key": first.key}])
    assert task.instances[0]["prompt"] not in [x["prompt"] for x in left.instances]


def test_run_per_method_k_distance_quantiles_and_dropped_weights(tiny_lms, bb, tmp_path, monkeypatch, capsys):
    """The downstream design's knobs: a method's own k, a distance-quantile bin of a method's
    ranking, the per-token query loss, and keep_models: false (weights dropped once evaluated;
    a resumed run neither trains nor evaluates again)."""
    config = tmp_path / "run.yaml"
    doc = {"out": str(tmp_path / "run"), "pool": f"bigbench:all?source={bb}", "targets": ["sentiment_b"], "k": 2,
           "keep_models": False,
           "methods": ["base", {"method": "insta", "k": 1, "name": "insta-k1"},
                       {"method": "bm25", "k": 1, "quantile": [2, 2], "name": "bm25-far"}, "all"],
           "mix": {"per_task_cap": 4, "total_examples": 4},
           "train": {"model": str(tiny_lms["gpt2"]), "max_steps": 1, "batch_size": 2, "max_input_length": 64,
                     "max_target_length": 8},
           "eval": {"metric": "loglik", "max_examples": 4}}
    config.write_text(yaml.safe_dump(doc))
    code, out, err = run(monkeypatch, capsys, "run", str(config), "--json", "-q")
    assert code == 0, err
    results = {r["method"]: r for r in json.loads(out)["results"]}
    assert len(results["insta-k1"]["selected"]) == 1
    for r in results.values():  # the mean NLL per gold token, beside the summed log-likelihood
        assert r["metrics"]["query_loss"] > 0 and r["metrics"]["gold_loglik"] < 0
    run_dir = tmp_path / "run"
    ev = json.loads((run_dir / "evals" / "base" / "sentiment_b.json").read_text())["tasks"][0]
    assert ev["metrics"]["query_loss"] == pytest.approx(-sum(x["gold_loglik"] for x in ev["examples"])
                                                         / sum(x["gold_tokens"] for x in ev["examples"]))
    assert all(x["gold_tokens"] >= 1 for x in ev["examples"])
    far = json.loads((run_dir / "sentiment_b" / "bm25-far" / "selection.json").read_text())
    assert far["quantile"] == [2, 2] and far["settings"]["quantile"] == [2, 2]
    ranked = json.loads(run(monkeypatch, capsys, "select", "-p", f"bigbench:all?source={bb}", "-t", "sentiment_b",
                            "--method", "bm25", "-k", "4", "--json", "-q")[1])["selections"][0]["results"]
    assert far["selections"][0]["results"][0]["task_id"] in [r["task_id"] for r in ranked[2:]]  # the far half
    for name in ("insta-k1", "bm25-far"):
        assert [p.name for p in (run_dir / "models" / results[name]["model"]).iterdir()] == ["train.json"]
    assert (run_dir / "models" / results["all"]["model"] / "config.json").is_file()  # shared by every target: kept
    code, out2, err = run(monkeypatch, capsys, "run", str(config), "--json")  # resumed: nothing trained again
    assert code == 0 and "training" not in err and json.loads(out2)["results"] == json.loads(out)["results"]
    doc["methods"] = [{"method": "bm25", "quantile": [3, 2]}]
    config.write_text(yaml.safe_dump(doc))
    fails(monkeypatch, capsys, *["run", str(config)], match="methods[0].quantile must be [b, n] with 1 <= b <= n")
    doc["methods"] = [{"method": "base", "k": 3}]
    config.write_text(yaml.safe_dump(doc))
    fails(monkeypatch, capsys, *["run", str(config)], match="the base model trains on nothing")


def test_json_output_keeps_the_libraries_bars_and_logs_off_stderr(tiny_lms, bb, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "out": str(tmp_path / "run"), "pool": f"bigbench:all?source={bb}", "targets": ["sentiment_b"], "k": 1,
        "methods": ["base", "bm25"], "mix": {"per_task_cap": 4, "total_examples": 4},
        "train": {"model": str(tiny_lms["gpt2"]), "max_steps": 1, "batch_size": 2, "max_input_length": 64,
                  "max_target_length": 8},
        "eval": {"metric": "loglik", "max_examples": 2}}))
    code, out, err = run(monkeypatch, capsys, "run", str(config), "--json")
    assert code == 0, err
    json.loads(out)
    lines = err.strip().splitlines()
    assert lines and all(" / " in line for line in lines), err  # only insta's own one-line progress
    assert "it/s" not in err and "Loading weights" not in err and "'loss'" not in err


def test_run_config_refuses_what_cannot_mean_anything(bb, tmp_path, monkeypatch, capsys):
    base = {"out": str(tmp_path / "run"), "pool": f"bigbench:all?source={bb}", "targets": ["sentiment_b"],
            "train": {"model": "m"}}
    config = tmp_path / "run.yaml"
    for methods, message in (
            ([{"method": "insta", "quantile": [1, 99999999999999999999]}], "quantile must be [b, n] with 1 <= b <= n <="),
            ([{"method": "all", "quantile": [1, 2]}], "'all' ranks nothing (use it without quantile)"),
            ([{"method": "random", "seed": 3, "quantile": [1, 2]}], "'random' ranks nothing"),
            ([{"name": "a/b", "method": "insta"}, {"name": "a_b", "method": "bm25"}],
             "methods 'a/b' and 'a_b' would share the folder 'a_b' in the run")):
        config.write_text(yaml.safe_dump({**base, "methods": methods}))
        fails(monkeypatch, capsys, "run", str(config), match=message)
