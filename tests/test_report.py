"""insta report: each view rendered from real command output and checked as parsed HTML (every
selected task and figure of the input present, no external URL), bad inputs as one error line,
and a real headless Chromium opening each page (no console errors, a screenshot with content)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from test_cli import fails, run

from insta.pools import load_pool
from insta.report import first_urls, load_report, render


class _Page(HTMLParser):
    """Text, tags and attributes of a page; fails on markup a parser cannot close."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []
        self.stack: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs.extend(attrs)
        if tag not in ("meta", "input", "br", "img", "link", "path", "use", "rect", "line", "circle", "polyline"):
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs.extend(attrs)

    def handle_endtag(self, tag):
        if tag in self.stack:
            while self.stack and self.stack.pop() != tag:
                pass

    def handle_data(self, data):
        self.text.append(data)


def parse(page: str) -> _Page:
    p = _Page()
    p.feed(page)
    p.close()
    return p


def self_contained(page: str) -> None:
    assert first_urls(page) == []
    parsed = parse(page)
    for name, value in parsed.attrs:
        if name in ("src", "href") and value:
            assert value.startswith("#"), (name, value)  # nothing loaded from anywhere
    assert "script" in parsed.tags and "style" in parsed.tags


@pytest.fixture()
def labelled(tmp_path):
    rows = [("rev1", "Is this movie review positive or negative?", "sentiment"),
            ("rev2", "Does the customer like the product in the review?", "sentiment"),
            ("sum1", "Summarize the news article in one sentence.", "summary"),
            ("sum2", "Write a short summary of the dialogue.", "summary"),
            ("qa1", "Answer the trivia question about history.", "qa"),
            ("qa2", "Answer the question using the passage.", "qa")]
    path = tmp_path / "pool.jsonl"
    path.write_text("".join(json.dumps({"id": i, "instruction": t, "label": lab}) + "\n" for i, t, lab in rows))
    return str(path)


def test_selection_view_shows_every_selected_task_and_number(monkeypatch, capsys, labelled, tmp_path):
    sel = tmp_path / "sel.json"
    code, _, err = run(monkeypatch, capsys, "select", "-p", labelled, "-i", "Is the review positive?",
                       "-i", "Summarize the review.", "--method", "bm25", "-k", "3", "-o", sel, "-q")
    assert code == 0, err
    out = tmp_path / "sel.html"
    code, _, err = run(monkeypatch, capsys, "report", sel, "-o", out)
    assert code == 0, err
    assert f"wrote {out} (selection report" in err
    page = out.read_text()
    self_contained(page)
    text = " ".join(parse(page).text)
    doc = json.loads(sel.read_text())
    (s,) = doc["selections"]
    for r in s["results"]:
        assert r["task_id"] in text and f"{r['score']:.4f}" in text
    assert f"first task not selected scores {s['next_score']:.4f}" in text
    assert f"gap {s['results'][-1]['score'] - s['next_score']:.4f}" in text
    assert "<mark>review</mark>" in page  # the words a pair shares are marked


def test_selection_view_of_a_streamed_batch_and_of_fused_and_union_selections(monkeypatch, capsys, labelled, tmp_path):
    other = tmp_path / "other.csv"
    other.write_text("id,instruction,label\nrev1,Classify the sentiment of the tweet.,sentiment\n")
    targets = tmp_path / "targets.txt"
    targets.write_text("Is the review positive?\nWrite a summary.\nAnswer the question.\n")
    sel = tmp_path / "sel.jsonl"
    code, _, err = run(monkeypatch, capsys, "select", "-p", labelled, "-p", other, "--targets-file", targets,
                       "--method", "bm25", "-k", "2", "-o", sel, "-q")
    assert code == 0, err
    page = render(load_report(sel))
    self_contained(page)
    lines = [json.loads(x) for x in sel.read_text().splitlines()]
    text = " ".join(parse(page).text)
    assert len(lines) == 3 and text.count("target: ") >= 3
    for line in lines:
        for r in line["results"]:
            assert r["task_id"] in text and r["origin"] in text


def test_bench_view_has_the_metric_table_cis_deltas_and_plot(monkeypatch, capsys, labelled, tmp_path):
    result = tmp_path / "bench.json"
    code, _, err = run(monkeypatch, capsys, "bench", "-p", labelled, "--methods", "random,bm25", "-o", result, "-q")
    assert code == 0, err
    doc = json.loads(result.read_text())
    page = render(load_report(result))
    self_contained(page)
    text = " ".join(parse(page).text)
    for m in doc["methods"]:
        for metric, value in m["metrics"].items():
            assert f"{value:.3f}" in text, (m["method"], metric)
        for t in m["per_target"]:
            assert t in text
    delta = doc["paired"]["bm25"]["random"]["MAP"]
    assert f"{delta[0]:+.3f}" in text and "<svg" in page


def _fake_run(root: Path) -> None:
    """A run folder as insta run leaves it: results.json and each target × method's selection."""
    results = []
    for target in ("t1", "t2"):
        for method, chosen in (("bm25", ["a", "b"]), ("insta", ["b", "c"])):
            folder = root / target / method
            folder.mkdir(parents=True)
            sel = {"target": {"id": target, "instructions": ["Do it."]}, "method": method, "aggregate": "max", "k": 2,
                   "n_candidates": 5, "warnings": [], "results": [
                       {"rank": i + 1, "task_id": tid, "label": None, "dataset": None, "score": 0.5 - i / 10,
                        "match": {"target_instruction": "Do it.", "source_instruction": f"Do {tid}.",
                                  "source_instruction_name": None, "similarity": 0.5 - i / 10, "measure": "cosine",
                                  "parts": []}} for i, tid in enumerate(chosen)]}
            (folder / "selection.json").write_text(json.dumps({"pool": "p", "method": method, "k": 2, "selections": [sel]}))
            results.append({"target": target, "method": method, "selected": chosen, "mixture": "m", "model": "x",
                            "n_train_examples": 8, "metrics": {"accuracy": 0.25 if method == "bm25" else 0.75,
                                                               "query_loss": 1.5}})
    (root / "results.json").write_text(json.dumps({"config": {}, "results": results, "wall_seconds": 12.0}))


def test_run_view_has_results_means_and_overlap(tmp_path):
    _fake_run(tmp_path / "run")
    page = render(load_report(tmp_path / "run"))
    self_contained(page)
    text = " ".join(parse(page).text)
    assert "0.2500" in text and "0.7500" in text  # the per-target figures
    assert "0.2500 [0.2500, 0.2500]" in text and "1.5000 [1.5000, 1.5000]" in text  # method means with CIs
    assert "-0.5000 [-0.5000, -0.5000] [-0.5000, -0.5000] 0 / 2 of 2 (sign test p 0.5)" in text  # bm25 − insta accuracy, paired over the 2 targets: bootstrap, t, record
    assert "t1: tasks two methods both selected" in text
    assert page.count("<mark>Do</mark> b.") == 4  # b under both methods for both targets, the shared word marked


@pytest.mark.parametrize("content, match", [
    ('{"id": "a", "instruction": "x"}\n', "neither a selection file"),
    ('{"selections": [{"target": {}, "results": "no"}]}', "selections[0] must be an object with 'target' and 'results'"),
    ('{"selections": []}', "no selections in it"),
    ('{"selections": [{"target": {}, "results": [{"task_id": "a", "score": "high"}]}]}', "numeric 'score'"),
    ('{"suite": "s", "methods": [1]}', "methods[0]: must be an object with 'method' and 'metrics'"),
    ('{"selections": [', "report.json:1"),
    ('{"selections": [{"target": {}, "results": [{"task_id": "a", "score": NaN}]}]}', "finite numeric 'score'"),
    ('{"selections": [{"target": {}, "results": [{"task_id": "a", "score": 1}], "next_score": Infinity}]}',
     "next_score must be a finite number"),
    ('{"selections": [{"target": {}, "results": [], "warnings": "abc"}]}', "warnings must be a list"),
    ('{"suite": "s", "methods": [{"method": "m", "metrics": {"MAP": NaN}}]}', "metrics.MAP must be a finite number"),
    ('{"suite": "s", "methods": [{"method": "m", "metrics": {}, "ci": {"MAP": "wide"}}]}', "ci.MAP must be [low, high]"),
    ('{"suite": "s", "methods": [{"method": "m", "metrics": {}, "per_label": "x"}]}', "per_label must map names"),
    ('{"suite": "s", "methods": [{"method": "m", "metrics": {}, "per_target": [1, 2]}]}', "per_target must map names"),
    ('{"suite": "s", "methods": [], "paired": [1]}', "'paired' must map reference"),
])
def test_bad_inputs_are_one_error_line(monkeypatch, capsys, tmp_path, content, match):
    bad = tmp_path / "report.json"
    bad.write_text(content)
    out = tmp_path / "out.html"
    fails(monkeypatch, capsys, "report", bad, "-o", out, match=match)
    assert not out.exists()


def test_bad_run_folders_and_outputs(monkeypatch, capsys, tmp_path):
    (tmp_path / "half").mkdir()
    fails(monkeypatch, capsys, "report", tmp_path / "half", "-o", tmp_path / "r.html", match="no results.json")
    _fake_run(tmp_path / "run")
    (tmp_path / "run" / "results.json").write_text('{"results": [{"target": 1}]}')
    fails(monkeypatch, capsys, "report", tmp_path / "run", "-o", tmp_path / "r.html", match="field 'results' must be a list")
    sel = tmp_path / "sel.json"
    sel.write_text(json.dumps({"selections": [{"target": {"id": "t"}, "results": []}]}))
    fails(monkeypatch, capsys, "report", sel, "-o", sel, match="--out")
    keep = tmp_path / "keep.html"
    keep.write_text("old")
    fails(monkeypatch, capsys, "report", tmp_path / "nope.json", "-o", keep, match="does not exist")
    assert keep.read_text() == "old"


def _chromium() -> str | None:
    return next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"), shutil.which("google-chrome"))
                 if p), None)


def test_every_view_opens_in_headless_chromium(monkeypatch, capsys, labelled, tmp_path):
    browser = _chromium()
    if browser is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but chromium is not installed (.ci/run installs it with apt-get)")
        pytest.skip("chromium not installed (apt-get install chromium); CI installs it")
    from PIL import Image

    sel, bench = tmp_path / "sel.json", tmp_path / "bench.json"
    assert run(monkeypatch, capsys, "select", "-p", labelled, "-i", "Is the review positive?", "--method", "bm25",
               "-k", "3", "-o", sel, "-q")[0] == 0
    assert run(monkeypatch, capsys, "bench", "-p", labelled, "--methods", "random,bm25", "-o", bench, "-q")[0] == 0
    _fake_run(tmp_path / "run")
    for name, source in (("selection", sel), ("bench", bench), ("run", tmp_path / "run")):
        page = tmp_path / f"{name}.html"
        assert run(monkeypatch, capsys, "report", source, "-o", page, "-q")[0] == 0
        shot = tmp_path / f"{name}.png"
        proc = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                               "--enable-logging=stderr", "--v=0", f"--screenshot={shot}", "--window-size=1200,900",
                               "--virtual-time-budget=2000", page.resolve().as_uri()],
                              capture_output=True, text=True, timeout=120)
        assert shot.is_file(), proc.stderr[-2000:]
        console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
        assert not console, console
        image = Image.open(shot).convert("L")
        dark = sum(image.histogram()[:128])  # pixels darker than mid-grey: text, bars, plots
        assert dark > 2000, f"{name}: the screenshot is (nearly) blank ({dark} dark pixels)"


def test_select_and_bench_write_a_report_beside_their_output(monkeypatch, capsys, labelled, tmp_path):
    page = tmp_path / "sel.html"
    code, out, err = run(monkeypatch, capsys, "select", "-p", labelled, "-i", "Is the review positive?",
                         "--method", "bm25", "-k", "2", "--report", page, "--json", "-q")
    assert code == 0, err
    text = " ".join(parse(page.read_text()).text)
    assert all(r["task_id"] in text for r in json.loads(out)["selections"][0]["results"])
    streamed, page2 = tmp_path / "sel.jsonl", tmp_path / "sel2.html"
    code, _, err = run(monkeypatch, capsys, "select", "-p", labelled, "-i", "Write a summary.", "--method", "bm25",
                       "-o", streamed, "--report", page2, "-q")
    assert code == 0, err
    assert json.loads(streamed.read_text())["results"][0]["task_id"] in page2.read_text()
    bench_page = tmp_path / "bench.html"
    code, out, err = run(monkeypatch, capsys, "bench", "-p", labelled, "--methods", "bm25", "--report", bench_page,
                         "--json", "-q")
    assert code == 0, err
    assert f"{json.loads(out)['methods'][0]['metrics']['MAP']:.3f}" in bench_page.read_text()
    fails(monkeypatch, capsys, "select", "-p", labelled, "-i", "x", "--method", "bm25", "--report", labelled,
          match="--report")


def test_a_tie_at_the_boundary_is_a_warning(monkeypatch, capsys, tmp_path):
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"id": i, "instruction": "Classify the review sentiment."}) + "\n"
                            for i in ("a", "b", "c")))
    code, out, err = run(monkeypatch, capsys, "select", "-p", pool, "-i", "review sentiment", "--method", "bm25",
                         "-k", "2", "--json", "-q")
    assert code == 0, err
    sel = json.loads(out)["selections"][0]
    assert sel["next_score"] == sel["results"][-1]["score"]
    (warning,) = [w for w in sel["warnings"] if "not separated" in w]
    assert "the task ranked 2 (b) and the first task not selected tie" in warning
    assert f"warning: target target: {warning}" in " ".join(err.split()) or "not separated" in err


@pytest.mark.slow
def test_the_pool_map_names_every_task_and_marks_target_and_selection(monkeypatch, capsys, labelled, tmp_path):
    page, sel = tmp_path / "map.html", tmp_path / "sel.json"
    code, out, err = run(monkeypatch, capsys, "select", "-p", labelled, "-i", "Is the movie review positive?",
                         "--method", "insta", "-k", "2", "-o", sel, "--report", page, "--json", "-q")
    assert code == 0, err
    html_text = page.read_text()
    self_contained(html_text)
    for task_id in ("rev1", "rev2", "sum1", "sum2", "qa1", "qa2"):
        assert f"<title>{task_id} [" in html_text  # hovering names each task
    assert "<title>target target: Is the movie review positive?</title>" in html_text
    assert "★ target; ○ selected" in html_text and "PCA of their instruction vectors" in html_text
    again = tmp_path / "again.html"
    code, _, err = run(monkeypatch, capsys, "report", sel, "-o", again, "--map", "-q")
    assert code == 0, err
    assert "<title>rev1 [sentiment]:" in again.read_text()
    bench = tmp_path / "b.json"
    bench.write_text(json.dumps({"suite": "s", "methods": []}))
    fails(monkeypatch, capsys, "report", bench, "-o", tmp_path / "b.html", "--map",
          match="--map needs a selection file that records its pool and embedder")


def test_several_selection_files_side_by_side_with_their_overlap(monkeypatch, capsys, labelled, tmp_path):
    files = []
    for method in ("bm25", "random"):
        f = tmp_path / f"{method}.json"
        assert run(monkeypatch, capsys, "select", "-p", labelled, "-i", "Is the review positive?", "--method", method,
                   "-k", "3", "-o", f, "-q")[0] == 0
        files.append(f)
    page = tmp_path / "both.html"
    code, _, err = run(monkeypatch, capsys, "report", *files, "-o", page, "-q")
    assert code == 0, err
    text = " ".join(parse(page.read_text()).text)
    ids = [{r["task_id"] for r in json.loads(f.read_text())["selections"][0]["results"]} for f in files]
    assert "target: tasks two selections both hold" in text and "bm25.json · bm25" in text
    assert f"<td class=\"num\">{len(ids[0] & ids[1])}</td>" in page.read_text()
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"suite": "s", "methods": []}))
    fails(monkeypatch, capsys, "report", files[0], bench, "-o", tmp_path / "x.html",
          match="several inputs are compared as selections; this one is a bench")


def test_run_metrics_that_are_not_numbers_are_refused(monkeypatch, capsys, tmp_path):
    _fake_run(tmp_path / "run")
    doc = json.loads((tmp_path / "run" / "results.json").read_text())
    doc["results"][0]["metrics"]["accuracy"] = "high"
    (tmp_path / "run" / "results.json").write_text(json.dumps(doc))
    fails(monkeypatch, capsys, "report", tmp_path / "run", "-o", tmp_path / "r.html", match="results[0].metrics must hold finite numbers")


def test_text_from_data_never_drives_the_page(monkeypatch, capsys, tmp_path):
    sel = {"target": {"id": "t\u202eevil\x1b[31m", "instructions": ["x"]}, "method": "bm25", "k": 1,
           "n_candidates": 2, "warnings": [], "results": [
               {"rank": 1, "task_id": "a\ud800b", "score": 0.5, "match": {
                   "target_instruction": "x", "source_instruction": "y" * 5000, "similarity": 0.5, "measure": "bm25"}}]}
    path = tmp_path / "sel.json"
    path.write_text(json.dumps({"selections": [sel]}))
    out = tmp_path / "out.html"
    code, _, err = run(monkeypatch, capsys, "report", path, "-o", out, "--title", "\udcff", "-q")
    assert code == 0, err
    page = out.read_text()
    assert "\u202e" not in page and "\x1b" not in page and "t\\u202eevil\\x1b[31m" in page
    assert "a\\ud800b" in page and "y" * 600 + "…" in page and "y" * 601 not in page
    fails(monkeypatch, capsys, "report", path, path, "-o", tmp_path / "twice.html", match="is given twice")


def test_a_big_benchmark_page_pages_its_targets(monkeypatch, capsys, tmp_path):
    doc = {"suite": "s", "methods": [{"method": "m", "metrics": {"MAP": 0.5}, "per_target": {
        f"t{i:04d}": {"MAP": i / 1000} for i in range(120)}}]}
    path = tmp_path / "b.json"
    path.write_text(json.dumps(doc))
    page = render(load_report(path))
    assert '<button id="more"' in page and page.count('class="target-row"') == 120


@pytest.mark.slow
def test_weak_match_for_hybrid_compares_the_embedding_side(monkeypatch, capsys, labelled, tmp_path):
    from insta.select import Target, match_floor, strength
    from insta.selectors import make_selector

    pool = load_pool(f"jsonl:{labelled}")
    hybrid = make_selector("hybrid").fit(pool)
    sel = hybrid.select(Target.from_text("zzqx blorf wibble"), k=2)
    value, measure = strength(sel.results[0].match)
    assert measure == "cosine" and value < 1 and value != sel.results[0].score  # not the reciprocal-rank score
    assert match_floor(hybrid) is None  # six tasks: too few to learn a floor from


def test_run_view_shows_distance_quantile_curves(tmp_path):
    """A run with the downstream benchmark's quantile methods: the loss per bin and ρ with both CIs."""
    root = tmp_path / "run"
    root.mkdir()
    results = []
    for i, target in enumerate(("t1", "t2", "t3")):
        losses = {"base": 3.0, "insta": 2.0, "random-1": 2.5, "instruction-q1": 1.0, "instruction-q3": 1.5,
                  "instruction-q5": 2.0 if target != "t3" else 0.5}
        for method, loss in losses.items():
            results.append({"target": target, "method": method, "selected": [], "mixture": None, "model": "x",
                            "n_train_examples": 8, "metrics": {"accuracy": 0.5, "query_loss": loss + i / 100}})
    (root / "results.json").write_text(json.dumps({"config": {}, "results": results, "wall_seconds": 1.0}))
    page = render(load_report(root))
    text = " ".join(parse(page).text)
    assert "Distance-quantile curves" in text
    # ρ(bin, loss) is +1 on t1 and t2 and −0.5 on t3: mean 0.5, sd 0.866 over 3 targets (t interval ±2.151)
    assert "instruction 1.0100 1.5100 1.5100 +0.500 [-0.500, +1.000] [-1.651, +2.651] 3" in text
    # one target, and a loss constant over the bins: undefined intervals and ρ are a dash, never "nan"
    one = [dict(r, metrics={"accuracy": 0.5, "query_loss": 2.0 if "-q" in r["method"] else r["metrics"]["query_loss"]})
           for r in results if r["target"] == "t1"]
    (root / "results.json").write_text(json.dumps({"config": {}, "results": one}))
    text = " ".join(parse(render(load_report(root))).text)
    assert "nan" not in text.lower() and "instruction 2.0000 2.0000 2.0000 — (constant) — 0" in text
