"""One pool from several: union loading with provenance, id collisions, a pool or an option
given twice, calibration across pools (identity on a single pool), per-source quotas, and the
provenance carried through select → mix → run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from test_cli import fails, run

from insta.baselines import BM25Selector
from insta.calibrate import CALIBRATIONS, CalibratedSelector, calibrate_scores, for_union
from insta.errors import InstaError
from insta.pipeline import load_run_config
from insta.pools import load_pool
from insta.select import Target

BOOL = "task1732_bbh_boolean_expressions"


def _table(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture()
def two_tables(tmp_path):
    a = _table(tmp_path / "a.jsonl", [
        {"id": "sent", "instruction": "Is this movie review positive or negative?", "label": "sentiment"},
        {"id": "sum", "instruction": "Summarize the news article in one sentence.", "label": "summary"},
        {"id": "qa", "instruction": "Answer the trivia question.", "label": "qa"},
    ])
    b = str(tmp_path / "b.csv")  # a pool of another kind
    (tmp_path / "b.csv").write_text("id,instruction,label\nsent,Classify the sentiment of the product review.,sentiment\n"
                                   "poem,Write a poem about the sea.,generation\n")
    return a, b


def test_union_keeps_every_pool_records_provenance_and_renames_collisions(two_tables):
    a, b = two_tables
    union = load_pool([a, b])
    assert union.ids == ["jsonl:sent", "sum", "qa", "csv:sent", "poem"]
    assert [t.origin for t in union] == [a, a, a, b, b]
    assert union.get("jsonl:sent").texts == load_pool(a).get("sent").texts  # the same task, its id qualified
    assert "1 id(s) in several pools made distinct as KIND:ID" in union.description
    assert union.get("poem").to_dict()["origin"] == b
    single = load_pool(a)
    assert single.ids == ["sent", "sum", "qa"] and all(t.origin is None for t in single)
    assert "origin" not in single.get("sum").to_dict()


def test_union_of_pools_of_one_kind_tags_them_by_position(tmp_path, two_tables):
    a, _ = two_tables
    c = _table(tmp_path / "c.jsonl", [{"id": "sum", "instruction": "Write a headline for the article."}])
    union = load_pool([a, c])
    assert union.ids == ["sent", "jsonl#1:sum", "qa", "jsonl#2:sum"]
    with pytest.raises(InstaError, match=r"pool '.*a.jsonl' is given twice \(pools 1 and 3\); give each pool once"):
        load_pool([a, c, a])


def test_tasks_lists_the_union_with_its_pools(monkeypatch, capsys, two_tables):
    a, b = two_tables
    code, out, err = run(monkeypatch, capsys, "tasks", "-p", a, "-p", b, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["pool"] == [a, b] and len(doc["tasks"]) == 5  # neither pool silently dropped
    assert {t["origin"] for t in doc["tasks"]} == {a, b}
    fails(monkeypatch, capsys, "tasks", "-p", a, "-p", a, match="is given twice (pools 1 and 2)")


def test_an_option_that_takes_one_value_given_twice_is_refused(monkeypatch, capsys, two_tables):
    a, b = two_tables
    fails(monkeypatch, capsys, "select", "-p", a, "-i", "review", "-k", "2", "--top-k", "3", "--method", "bm25",
          match="--top-k is given twice ('2', '3'); it takes one value: give it once")
    fails(monkeypatch, capsys, "select", "-p", a, "-i", "review", "--method", "bm25", "--method=insta",
          match="--method is given twice ('bm25', 'insta')")
    code, _, err = run(monkeypatch, capsys, "select", "-p", a, "-i", "review", "-i", "sentiment", "--method", "bm25", "-q")
    assert code == 0, err  # -i repeats on purpose (several instructions of one target)


def test_select_from_a_union_names_each_results_pool(monkeypatch, capsys, two_tables, tmp_path):
    a, b = two_tables
    out = tmp_path / "sel.json"
    code, stdout, err = run(monkeypatch, capsys, "select", "-p", a, "-p", b, "-i", "sentiment of a review",
                            "--method", "bm25", "-k", "3", "-o", out)
    assert code == 0, err
    doc = json.loads(out.read_text())
    assert doc["pool"] == [a, b] and doc["calibrate"] == "zscore" and doc["pool_size"] == 5
    results = doc["selections"][0]["results"]
    assert {r["task_id"]: r["origin"] for r in results}["csv:sent"] == b
    assert all(r["origin"] in (a, b) for r in results)
    assert " pool " in stdout.splitlines()[2]  # the table has a pool column
    code, stdout, err = run(monkeypatch, capsys, "select", "-p", a, "-p", b, "-i", "sentiment of a review",
                            "--method", "bm25", "--per-source-k", "1", "--json", "-q")
    assert code == 0, err
    results = json.loads(stdout)["selections"][0]["results"]
    assert sorted(r["origin"] for r in results) == sorted([a, b])  # one from each pool
    fails(monkeypatch, capsys, "select", "-p", a, "-i", "x", "--method", "bm25", "--per-source-k", "1",
          match="--per-source-k takes that many tasks from each pool of a union; give several --pool")
    fails(monkeypatch, capsys, "select", "-p", a, "-p", b, "-i", "x", "--method", "bm25", "--calibrate", "zcore",
          match="unknown calibration 'zcore'")


def test_calibrations_keep_each_pools_own_order_and_compare_across():
    rng = np.random.default_rng(0)
    score = np.concatenate([rng.normal(0.8, 0.02, 50), rng.normal(0.3, 0.2, 30)])  # two styles, two scales
    group = np.repeat([0, 1], [50, 30])
    everyone = np.ones(80, dtype=bool)
    for how in CALIBRATIONS:
        cal = calibrate_scores(score, group, everyone, how)
        for g in (0, 1):  # within a pool, the order is the selector's own
            m = group == g
            assert (np.argsort(-cal[m], kind="stable") == np.argsort(-score[m], kind="stable")).all()
    z = calibrate_scores(score, group, everyone, "zscore")
    assert abs(z[:50].mean()) < 1e-9 and abs(z[50:].std() - 1) < 1e-9
    top10_raw = np.argsort(-score)[:10]
    top10_z = np.argsort(-z)[:10]
    assert (group[top10_raw] == 0).all() and (group[top10_z] == 1).any()
    r = calibrate_scores(score, group, everyone, "rank")
    assert sorted(group[np.argsort(-r, kind="stable")[:10]].tolist()) == [0] * 5 + [1] * 5  # interleaved
    # statistics come from candidates only: an excluded outlier does not move the others
    candidate = everyone.copy()
    candidate[0] = False
    outlier = score.copy()
    outlier[0] = 100.0
    assert np.allclose(calibrate_scores(outlier, group, candidate, "zscore")[1:50],
                       calibrate_scores(score, group, candidate, "zscore")[1:50])


@pytest.mark.parametrize("how", sorted(CALIBRATIONS))
def test_calibration_is_the_identity_on_a_single_pool(shared_data, how):
    pool = load_pool(f"jsonl:{shared_data / 'niv2' / 'tasks.jsonl'}?id=name&instruction=summary&label=category")
    targets = [Target.from_task(t) for t in list(pool)[:60:3]]
    plain = BM25Selector().fit(pool).select_many(targets, k=20)
    assert for_union(BM25Selector(), ["one spec"], how).__class__ is BM25Selector  # one pool: not wrapped at all
    calibrated = CalibratedSelector(BM25Selector(), how).fit(pool)
    # even forced through the calibration, one pool's ranking is unchanged (ties keep their order)
    calibrated.origins = ["a", "b"]  # pretend a union so that the calibrated path runs, on one group
    got = calibrated.select_many(targets, k=20)
    assert [s.ids for s in got] == [s.ids for s in plain]


def test_per_source_k_and_calibration_on_the_real_pools(shared_data):
    niv2 = f"jsonl:{shared_data / 'niv2' / 'tasks.jsonl'}?id=name&instruction=summary&label=category"
    bbh = f"jsonl:{shared_data / 'bbh' / 'tasks.jsonl'}?id=name&instruction=description"
    union = load_pool([niv2, bbh])
    target = Target("t", ["Evaluate the truth value of a Boolean expression."])
    sel = CalibratedSelector(BM25Selector(), "zscore", per_source_k=3).fit(union).select(target, k=5)
    assert sorted(r.origin for r in sel.results) == sorted([niv2] * 3 + [bbh] * 3) and sel.k == 6
    assert [r.score for r in sel.results] == sorted((r.score for r in sel.results), reverse=True)
    assert sel.results[0].match is not None and sel.results[0].match.measure == "bm25"  # the raw match explains


def test_provenance_through_select_mix_and_run(monkeypatch, capsys, shared_data, tiny_lms, tmp_path):
    root = shared_data / "niv2"
    train, test = f"niv2:{root}?split=train", f"niv2:{root}?split=test"
    sel = tmp_path / "sel.json"
    code, _, err = run(monkeypatch, capsys, "select", "-p", train, "-p", test, "--targets", f"niv2:{root}",
                       "-t", BOOL, "--method", "bm25", "--per-source-k", "1", "-o", sel, "-q")
    assert code == 0, err
    results = json.loads(sel.read_text())["selections"][0]["results"]
    assert sorted(r["origin"] for r in results) == sorted([train, test])
    code, out, err = run(monkeypatch, capsys, "mix", "-s", sel, "-o", tmp_path / "mix", "--per-task-cap", "3", "--json", "-q")
    assert code == 0, err
    manifest = json.loads(out)
    assert set(manifest["tasks"]) == {r["task_id"] for r in results}
    assert manifest["source"]["pool"] == [train, test]
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "out": str(tmp_path / "run"), "pool": [train, test], "target_pool": f"niv2:{root}", "targets": [BOOL],
        "k": 2, "calibrate": "rank", "methods": ["bm25"], "mix": {"per_task_cap": 3},
        "train": {"model": str(tiny_lms["gpt2"]), "max_steps": 1, "batch_size": 2, "max_input_length": 64},
        "eval": {"max_examples": 2}}))
    code, out, err = run(monkeypatch, capsys, "run", config, "--json", "-q")
    assert code == 0, err
    (result,) = json.loads(out)["results"]
    stored = json.loads((tmp_path / "run" / BOOL / "bm25" / "selection.json").read_text())
    assert stored["pool"] == [train, test] and stored["settings"]["calibrate"] == "rank"
    assert all(r["origin"] in (train, test) for r in stored["selections"][0]["results"])
    assert len(result["selected"]) == 2


def test_run_config_pool_lists_are_checked(tmp_path):
    cfg = tmp_path / "run.yaml"
    for pool, match in [("[a.jsonl, a.jsonl]", "pool 'a.jsonl' is given twice"),
                        ("[a.jsonl, 3]", "field 'pool' must be a pool spec or a list of pool specs"),
                        ("[]", "field 'pool' is empty")]:
        cfg.write_text(f"out: {tmp_path / 'r'}\npool: {pool}\ntargets: [x]\ntrain: {{model: m}}\n")
        with pytest.raises(InstaError, match=match):
            load_run_config(cfg)
    cfg.write_text(f"out: {tmp_path / 'r'}\npool: [a.jsonl, b.jsonl]\ntargets: [x]\ntrain: {{model: m}}\ncalibrate: zed\n")
    with pytest.raises(InstaError, match="field 'calibrate': unknown calibration 'zed'"):
        load_run_config(cfg)
    cfg.write_text(f"out: {tmp_path / 'r'}\npool: [a.jsonl, b.jsonl]\ntargets: [x]\ntrain: {{model: m}}\n")
    assert load_run_config(cfg).pool == ["a.jsonl", "b.jsonl"]


def test_bench_on_a_union_records_its_calibration(monkeypatch, capsys, two_tables, tmp_path):
    a, b = two_tables
    for how in ("none", "rank"):
        code, out, err = run(monkeypatch, capsys, "bench", "-p", a, "-p", b, "--label-field", "label",
                             "--methods", "bm25", "--calibrate", how, "--json", "-q")
        assert code == 0, err
        doc = json.loads(out)
        assert doc["calibrate"] == how and doc["n_tasks"] == 5
    one = _table(tmp_path / "one.jsonl", [{"id": f"t{i}", "instruction": f"Task {i}: {w}", "label": w}
                                          for i, w in enumerate(["review", "review", "poem", "poem"])])
    code, out, err = run(monkeypatch, capsys, "bench", "-p", one, "--methods", "bm25", "--json", "-q")
    assert code == 0, err
    assert json.loads(out)["calibrate"] is None  # one pool: nothing to calibrate
    fails(monkeypatch, capsys, "bench", "-p", a, "-p", a, "--label-field", "label", "--methods", "bm25",
          match="is given twice (pools 1 and 2)")


# ---------------------------------------------------------------- what the union's hostile review found


@pytest.fixture()
def same_id_pools(tmp_path):
    a = _table(tmp_path / "a.jsonl", [{"id": "cb", "instruction": "Does the premise entail the hypothesis?"},
                                      {"id": "qa", "instruction": "Answer the question about the passage."}])
    b = _table(tmp_path / "b.jsonl", [{"id": "cb", "instruction": "Given a premise, decide whether the hypothesis follows."},
                                      {"id": "trans", "instruction": "Translate the sentence to French."}])
    return a, b


def test_a_target_excludes_every_copy_of_itself_in_the_union(monkeypatch, capsys, same_id_pools):
    a, b = same_id_pools
    for targets in (["--targets", b], ["--targets", b, "-t", "cb"]):
        code, out, err = run(monkeypatch, capsys, "select", "-p", a, "-p", b, *targets, "-k", "3", "--method", "bm25",
                             "--json", "-q")
        assert code == 0, err
        cb = next(s for s in json.loads(out)["selections"] if s["target"]["id"] == "cb")
        assert cb["n_candidates"] == 2 and not any(r["task_id"].endswith(":cb") for r in cb["results"])
    code, out, err = run(monkeypatch, capsys, "select", "-p", a, "-p", b, "-t", "jsonl#2:cb", "-k", "3", "--method",
                         "bm25", "--json", "-q")
    assert code == 0, err
    sel = json.loads(out)["selections"][0]
    assert sel["n_candidates"] == 2 and {r["task_id"] for r in sel["results"]} == {"qa", "trans"}


def test_method_all_on_a_union_takes_every_task(monkeypatch, capsys, same_id_pools, shared_data):
    a, _ = same_id_pools
    bbh = str(shared_data / "bbh" / "tasks.jsonl")
    code, out, err = run(monkeypatch, capsys, "select", "-p", bbh, "-p", a, "-i", "x", "--method", "all", "--json", "-q")
    assert code == 0, err
    results = json.loads(out)["selections"][0]["results"]
    assert len(results) == len(load_pool(bbh)) + 2 and {r["origin"] for r in results} == {bbh, a}


def test_the_same_pool_spelt_twice_is_refused_and_overlap_is_a_warning(monkeypatch, capsys, same_id_pools, tmp_path):
    a, b = same_id_pools
    for other in (f"jsonl:{a}", f"{Path(a).parent}/./{Path(a).name}", f"{a}?id=id"):
        fails(monkeypatch, capsys, "tasks", "-p", a, "-p", other, match="hold the same 2 tasks (the same pool given twice?)")
    part = _table(tmp_path / "part.jsonl", [{"id": "cb", "instruction": "Does the premise entail the hypothesis?"},
                                            {"id": "x", "instruction": "Something else entirely."}])
    code, out, err = run(monkeypatch, capsys, "tasks", "-p", a, "-p", part, "--json")
    assert code == 0, err
    assert "share 1 task(s) (same id and instructions): each is a candidate twice" in err


def test_mix_checks_each_result_came_from_the_pool_it_names(monkeypatch, capsys, tmp_path, shared_data):
    real = f"niv2:{shared_data / 'niv2'}?split=train"
    fake_root = tmp_path / "fake"
    (fake_root / "tasks").mkdir(parents=True)
    name = "task665_mmmlu_answer_generation_anatomy"
    task = json.loads((shared_data / "niv2" / "tasks" / f"{name}.json").read_text())
    task["Instances"] = [{"id": "f1", "input": "FAKE", "output": ["FAKE"]}]
    (fake_root / "tasks" / f"{name}.json").write_text(json.dumps(task))
    fake = f"niv2:{fake_root}"
    sel = tmp_path / "sel.json"
    code, _, err = run(monkeypatch, capsys, "select", "-p", real, "-p", fake, "-i", "multiple choice questions about "
                       "anatomy", "--method", "bm25", "-k", "1", "-o", sel, "-q")
    assert code == 0, err
    (r,) = json.loads(sel.read_text())["selections"][0]["results"]
    assert r["task_id"].endswith(name) and r["origin"] in (real, fake)
    swapped = [fake, real] if r["origin"] == real else [real, fake]
    code, _, err = run(monkeypatch, capsys, "mix", "-s", sel, "-o", tmp_path / "m", "-p", swapped[0], "-p", swapped[1])
    assert code == 2 and "Traceback" not in err  # the two pools share that task: a warning says so first
    assert err.strip().splitlines()[-1].endswith("give the pools in the order the selection recorded (its 'pool' list)")
    assert not (tmp_path / "m").exists()


def test_renamed_p3_entries_mix_from_their_own_rows(p3, tmp_path):
    from insta.mix import MixConfig, build_mixture

    union = load_pool(["p3:t0-train", "p3:adversarial_qa/*"])
    task = union.get("p3#1:adversarial_qa/dbert")
    assert task.own_id == "adversarial_qa/dbert"
    rows = tmp_path / "rows" / "adversarial_qa"
    rows.mkdir(parents=True)
    (rows / "dbert.jsonl").write_text(json.dumps({"id": "1", "title": "T", "context": "The sky is blue.",
                                                  "question": "What colour is the sky?",
                                                  "answers": {"text": ["blue"], "answer_start": [11]},
                                                  "metadata": {"split": "train", "model_in_the_loop": "BERT"}}) + "\n")
    from insta.mix import local_rows

    mixture = build_mixture([task], MixConfig(per_task_cap=3), rows=local_rows(tmp_path / "rows"))
    assert mixture.rows and all(r["task"] == "p3#1:adversarial_qa/dbert" for r in mixture.rows)


def test_per_source_k_says_when_a_pool_falls_short_and_uninformative_pools_come_last(same_id_pools, tmp_path):
    a, b = same_id_pools
    union = load_pool([a, b])
    target = Target("t", ["Translate English into French."])
    sel = CalibratedSelector(BM25Selector(), "zscore", per_source_k=1).fit(union).select(
        target, exclusions=__import__("insta").Exclusions(ids=["qa", "jsonl#1:cb"]))
    assert any("fewer candidates left in" in w and a in w for w in sel.warnings)
    one = _table(tmp_path / "one.jsonl", [{"id": "poem", "instruction": "Write a poem about the sea."}])
    sel = CalibratedSelector(BM25Selector(), "zscore").fit(load_pool([a, b, one])).select(
        Target("t", ["Does the premise entail the hypothesis?"]), k=5)
    assert sel.results[-1].task_id == "poem"  # a one-task pool says nothing: it comes last
