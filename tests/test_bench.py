"""The benchmark end to end on real suites, and its CLI."""

import json

import pytest

from insta import InstaError
from insta.bench import build_suite, run_bench
from test_cli import fails, run


def test_p3_suite_baselines(p3):
    suite = build_suite("p3")
    assert len(suite.pool) == 38 and len(suite.targets) == 38
    result = run_bench(suite, ["random", "bm25"], n_boot=200)
    rnd, bm25 = result.methods
    assert result.n_scored == 38
    assert bm25.metrics["MAP"] > rnd.metrics["MAP"] + 0.2
    assert rnd.ci["MAP"][0] <= rnd.metrics["MAP"] <= rnd.ci["MAP"][1]
    assert set(bm25.per_label) == set(suite.pool.labels)
    assert set(result.paired) == {"bm25"}
    d, lo, hi = result.paired["bm25"]["random"]["MAP"]
    assert d < 0 and hi < 0  # random is worse than BM25, and the CI says so
    again = run_bench(suite, ["random", "bm25"], n_boot=200)
    assert again.methods[0].metrics == rnd.metrics  # deterministic given the seed


def test_p3_extra_and_grouped_suites(p3):
    extra = build_suite("p3-extra")
    ids = {t.id for t in extra.targets}
    assert {"squad_v2", "super_glue/record", "super_glue/boolq", "race/high"} <= ids
    assert "hellaswag" not in ids and "super_glue/wic" not in ids  # their clusters are not in T0's training mixture
    assert len(build_suite("p3-grouped").pool) == 35
    with pytest.raises(InstaError, match="--folds applies to leave-one-out suites"):
        run_bench(extra, ["bm25"], folds=2)


def test_niv2_suite_bm25_far_above_random(shared_data):
    suite = build_suite("niv2", niv2=str(shared_data / "niv2"))
    assert len(suite.pool) == 875 and suite.exclude_siblings
    anli = suite.pool.get("task1385_anli_r1_entailment")
    assert anli.texts[0].startswith("In this task") and len(anli.texts[0]) > 100  # the official Definition
    assert {t.id for t in suite.pool if t.dataset == "anli"} >= {"task1386_anli_r2_entailment", "task1387_anli_r3_entailment"}
    summaries = build_suite("niv2-summaries", niv2=str(shared_data / "niv2"))
    assert len(summaries.pool) == 875 and summaries.pool.get(anli.id).texts != anli.texts
    result = run_bench(suite, ["random", "bm25"], n_boot=100)
    rnd, bm25 = result.methods
    assert result.n_scored > 820  # targets alone in their category (siblings aside) have nothing relevant to find
    assert rnd.metrics["P@10"] < 0.1 < 0.3 < bm25.metrics["P@10"]


def test_folds_protocol_ranks_only_the_held_out_fold(p3):
    result = run_bench(build_suite("p3"), ["bm25"], folds=3, n_boot=50)
    assert result.folds == 3 and result.methods[0].n_targets == result.n_scored <= 38


def test_samples_in_the_niv2_files_suite(shared_data, tiny_model):
    from insta import Encoder

    suite = build_suite("niv2-files", niv2=str(shared_data / "niv2"))
    result = run_bench(suite, ["random", "samples"], encoder=Encoder(str(tiny_model)), n_boot=50)
    assert [m.method for m in result.methods] == ["random", "samples"]
    assert result.methods[1].skipped is None and result.methods[1].n_targets == result.n_scored > 80


def test_samples_is_skipped_where_tasks_have_no_instances(p3, tiny_model):
    from insta import Encoder

    result = run_bench(build_suite("p3"), ["bm25", "samples"], encoder=Encoder(str(tiny_model)), n_boot=20)
    assert "needs examples of the pool's tasks" in result.methods[1].skipped


@pytest.mark.slow
def test_insta_on_p3_suite_with_minilm(p3):
    result = run_bench(build_suite("p3"), ["random", "insta"], n_boot=200)
    rnd, insta = result.methods
    assert insta.metrics["MAP"] > 0.5 > 0.3 > rnd.metrics["MAP"]


def test_bench_cli_json_plot_and_out(monkeypatch, capsys, p3, tmp_path):
    plot, out_file = tmp_path / "p3.png", tmp_path / "p3.json"
    code, out, err = run(monkeypatch, capsys, "bench", "--suite", "p3", "--methods", "random,bm25,bm25:mean",
                         "--bootstrap", "100", "--json", "-q", "--plot", plot, "--out", out_file)
    assert code == 0, err
    doc = json.loads(out)
    assert [m["method"] for m in doc["methods"]] == ["random", "bm25", "bm25:mean"]
    assert set(doc["methods"][1]["metrics"]) == {"P@5", "P@10", "MAP", "nDCG@10"}
    assert set(doc["paired"]) == {"bm25"} and set(doc["paired"]["bm25"]) == {"random", "bm25:mean"}
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "per_target" in json.loads(out_file.read_text())["methods"][0]
    code, out, _ = run(monkeypatch, capsys, "bench", "--suite", "p3", "--methods", "random,bm25", "--per-label", "-q")
    assert code == 0 and "ΔMAP vs bm25" in out and "MAP per label" in out and "sentiment" in out
    code, out, _ = run(monkeypatch, capsys, "bench", "--list")
    assert "niv2-files" in out and "samples" in out


def test_bench_cli_custom_pool(monkeypatch, capsys, shared_data):
    spec = f"{shared_data}/niv2/tasks.jsonl?where=split_default:test"
    code, out, err = run(monkeypatch, capsys, "bench", "--pool", spec, "--methods", "random,bm25", "--json", "-q")
    assert code == 0, err
    assert json.loads(out)["n_tasks"] == 119


def test_bench_label_field_on_a_custom_pool(monkeypatch, capsys, shared_data):
    spec = f"{shared_data}/niv2/tasks.jsonl?where=split_default:test"
    code, out, err = run(monkeypatch, capsys, "bench", "--pool", spec, "--label-field", "domains", "--methods", "bm25",
                         "--json", "-q", "--bootstrap", "50")
    assert code == 0, err
    assert "Wikipedia" in json.loads(out)["methods"][0]["per_label"]
    by_domain = build_suite(pool=spec, label_field="domains")
    assert by_domain.pool.get("task1385_anli_r1_entailment").label == "Miscellaneous"
    fails(monkeypatch, capsys, "bench", "--pool", spec, "--label-field", "colour", match="mapped label field 'colour' is not in the data")


def test_niv2_suite_on_a_checkout_uses_definitions(shared_data, tmp_path):
    """The same protocol on a natural-instructions checkout: Definitions, default split only."""
    import shutil

    (tmp_path / "tasks").mkdir()
    shutil.copytree(shared_data / "niv2" / "splits", tmp_path / "splits")
    for f in sorted((shared_data / "niv2" / "tasks").glob("task*.json"))[::2]:
        shutil.copy(f, tmp_path / "tasks" / f.name)
    suite = build_suite("niv2", niv2=str(tmp_path))
    assert "Definition" in suite.description and suite.exclude_siblings
    assert all(t.split in ("train", "test") for t in suite.pool) and len(suite.pool) <= 46
    first = suite.pool[0]
    assert first.instructions[0].name == "Definition"
    result = run_bench(suite, ["random", "bm25"], n_boot=20)
    assert result.n_tasks == len(suite.pool)


def test_bench_bad_inputs(monkeypatch, capsys, shared_data, p3, tmp_path):
    fails(monkeypatch, capsys, "bench", "--suite", "p4", match="unknown suite 'p4'; available: cross, niv2, niv2-files, niv2-summaries, p3, p3-extra, p3-grouped")
    fails(monkeypatch, capsys, "bench", match="give --suite NAME")
    fails(monkeypatch, capsys, "bench", "--suite", "p3", "--methods", "all", "-q", match="method 'all' has no ranking")
    fails(monkeypatch, capsys, "bench", "--suite", "p3", "--methods", "bm25", "--bootstrap", "0", match="--bootstrap must be at least 1, got 0")
    fails(monkeypatch, capsys, "bench", "--suite", "p3", "--methods", "bm25", "--folds", "1", "-q", match="folds must be at least 2")
    fails(monkeypatch, capsys, "bench", "--suite", "niv2", "--niv2", tmp_path / "none", match="does not exist")
    fails(monkeypatch, capsys, "bench", "--pool", f"{shared_data}/bbh/tasks.jsonl", match="needs labels")
    fails(monkeypatch, capsys, "bench", "--suite", "p3", "--methods", "bm25", "--plot", tmp_path, "-q", match="is a folder")


def test_prompt_count_ablation_truncates_only_the_targets(p3):
    suite = build_suite("p3")
    one = run_bench(suite, ["bm25"], n_boot=20, n_instructions=1)
    every = run_bench(suite, ["bm25"], n_boot=20)
    assert one.n_instructions == 1 and every.n_instructions is None
    assert one.methods[0].metrics["MAP"] != every.methods[0].metrics["MAP"]
    assert suite.pool.n_instructions == build_suite("p3").pool.n_instructions  # the pool keeps every template
