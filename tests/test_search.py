"""The selection core at scale: FlatIndex against a brute-force reference, streaming, and the
fast `max` path against the full per-target path on the real suites."""

import json

import numpy as np
import pytest

from insta import Exclusions, Instruction, InstructionSelector, Target, Task, TaskPool, load_pool
from insta.search import FlatIndex, pair_scores
from insta.select import Request, Selector


def unit(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(queries, sizes, vectors, counts, ids, k, excluded_for):
    """The definition: float64 pair scores, best pair per task, sorted by (score desc, id)."""
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    out, pos = [], 0
    for j, n in enumerate(sizes):
        pairs = pair_scores(queries[pos:pos + n], vectors)
        pos += n
        rows = []
        for i, (s, c) in enumerate(zip(starts, counts)):
            if i in excluded_for(j):
                continue
            block = pairs[:, s:s + c]
            col = int(np.argmax(block.max(axis=0)))
            rows.append((-block.max(), ids[i], i, int(np.argmax(block[:, col])), s + col))
        out.append([(i, -neg, t, src) for neg, _, i, t, src in sorted(rows)[:k]])
    return out


@pytest.mark.parametrize("single", [True, False])
@pytest.mark.parametrize("query_rows", [1024, 3])
def test_flat_index_equals_brute_force(single, query_rows, monkeypatch):
    monkeypatch.setattr("insta.search.QUERY_ROWS", query_rows)
    rng = np.random.default_rng(0)
    n_tasks, d = 2600, 16  # more than two blocks of 1024 tasks, and a tail
    counts = np.ones(n_tasks, dtype=int) if single else rng.integers(1, 4, n_tasks)
    vectors = unit(rng, int(counts.sum()), d)
    vectors[7] = vectors[3]  # duplicates: equal scores, the smaller id wins
    vectors[-1] = vectors[3]
    ids = [f"task{(i * 7919) % n_tasks:05d}" for i in range(n_tasks)]  # ids not in pool order
    tie_order = np.argsort(np.argsort(ids))
    sizes = [1, 3, 1, 2] * 5
    queries = unit(rng, sum(sizes), d)
    queries[0] = vectors[3]  # a target whose best pair is an exact tie
    excluded = np.array([5, 11, 2000])
    mine = {j: np.array([j, j + 100]) for j in range(len(sizes))}

    def excluded_for(j):
        return np.union1d(excluded, mine[j])

    for k in (1, 10, 70):
        # a small memory budget forces many tiles of the pool
        index = FlatIndex(vectors, counts, tie_order, memory=4 * 1024 * 3)
        got = [[(h.task, h.score, h.target_row, h.source_row) for h in hits]
               for hits in index.search(queries, sizes, k, excluded=excluded, excluded_for=lambda j: mine[j])]
        want = brute_force(queries, sizes, vectors, counts, ids, k, lambda j: set(excluded_for(j).tolist()))
        assert got == want


def test_flat_index_returns_fewer_hits_when_few_tasks_remain():
    rng = np.random.default_rng(1)
    vectors = unit(rng, 3, 8)
    index = FlatIndex(vectors, np.ones(3, dtype=int), np.arange(3))
    (hits,) = index.search(unit(rng, 1, 8), [1], 5, excluded=np.array([1]))
    assert sorted(h.task for h in hits) == [0, 2]
    (hits,) = index.search(unit(rng, 1, 8), [1], 5, excluded=np.array([0, 1, 2]))
    assert hits == []


class CountingEncoder:
    def __init__(self, dim=8):
        self.calls, self.dim = [], dim

    def encode(self, texts, progress=None):
        self.calls.append(len(texts))
        out = np.stack([np.random.default_rng(abs(hash(t)) % 2**32).standard_normal(self.dim) for t in texts])
        return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)

    def describe(self):
        return {"model": "counting"}


def test_selection_streams_per_target_chunk(monkeypatch):
    pool = TaskPool([Task(id=f"t{i}", instructions=[Instruction(f"text {i}")]) for i in range(50)])
    targets = [Target(f"q{i}", [f"query {i}"]) for i in range(10)]
    enc = CountingEncoder()
    selector = InstructionSelector(enc).fit(pool)
    monkeypatch.setattr(InstructionSelector, "ENCODE_CHUNK", 3)
    stream = selector.iter_select(targets, k=2)
    first = next(stream)
    assert first.target.id == "q0" and enc.calls[1:] == [3]  # only the first chunk was embedded
    rest = list(stream)
    assert [s.target.id for s in rest] == [f"q{i}" for i in range(1, 10)] and enc.calls[1:] == [3, 3, 3, 1]


class Memo:
    def __init__(self, encoder):
        self.encoder, self.seen = encoder, {}

    def encode(self, texts, progress=None):
        new = [t for t in dict.fromkeys(texts) if t not in self.seen]
        if new:
            self.seen.update(zip(new, self.encoder.encode(new)))
        return np.stack([self.seen[t] for t in texts])

    def describe(self):
        return self.encoder.describe()


def _generic(selector, targets, k, exclusions):
    """The full per-target path (every task's float32 score, full sort), as before the index."""
    req = Request(k, exclusions, selector.arrays.excluded(exclusions), [], len(targets) > 1)
    return list(Selector._iter_select(selector, targets, req, None))


def _reference(selector, targets, k, exclusions):
    """The exact definition, in float64 over every pair, every task sorted."""
    pool, out = selector.pool, []
    for t in targets:
        q = selector.encoder.encode(t.instructions)
        keep = exclusions.mask(list(pool), t)
        rows = []
        for i, task in enumerate(pool):
            if not keep[i]:
                continue
            lo, n = int(selector._starts[i]), int(selector._counts[i])
            pairs = pair_scores(q, np.asarray(selector._embeddings[lo:lo + n]))
            col = int(np.argmax(pairs.max(axis=0)))
            rows.append((-pairs.max(), task.id, t.instructions[int(np.argmax(pairs[:, col]))], selector._texts[lo + col]))
        out.append([(tid, round(-neg, 6), ti, si) for neg, tid, ti, si in sorted(rows)[:k]])
    return out


def _as_rows(selections):
    return [[(r.task_id, r.score, r.match.target_instruction, r.match.source_instruction) for r in s.results]
            for s in selections]


@pytest.mark.slow
@pytest.mark.parametrize("suite", ["p3", "niv2"])
def test_fast_max_path_equals_the_exact_path_on_real_suites(suite, request, minilm_encoder, shared_data):
    if suite == "p3":
        request.getfixturevalue("p3")
        pool = load_pool("p3:t0-train")
        exclusions = Exclusions(siblings=True)
    else:
        pool = load_pool(f"{shared_data}/niv2/definitions.jsonl")
        exclusions = Exclusions(siblings=True, patterns=["task00*"])
    targets = [Target.from_task(t) for t in list(pool)[:40]]
    # the model's vectors shift in the last bits with the batch they are embedded in (padding);
    # a text's first vector is kept, as the embedding cache does
    selector = InstructionSelector(Memo(minilm_encoder)).fit(pool)
    k = 10
    fast = selector.select_many(targets, k, exclusions)
    assert _as_rows(fast) == _reference(selector, targets, k, exclusions)  # ids, scores, explanations
    # against the float32 path: the same tasks in the same order; where the pair behind a score
    # differs, the two pairs are a near-tie (equal within float32 error, e.g. two copies of a text)
    generic = _generic(selector, targets, k, exclusions)
    enc = selector.encoder
    for a, b in zip(_as_rows(fast), _as_rows(generic)):
        assert [x[0] for x in a] == [x[0] for x in b]
        assert np.allclose([x[1] for x in a], [x[1] for x in b], atol=2e-6)
        for x, y in zip(a, b):
            if x[2:] != y[2:]:
                assert abs(pair_scores(enc.encode([x[2]]), enc.encode([x[3]]))[0, 0]
                           - pair_scores(enc.encode([y[2]]), enc.encode([y[3]]))[0, 0]) < 2e-6
    assert [s.n_candidates for s in fast] == [s.n_candidates for s in generic]
    # a target's result does not depend on the other targets of its batch
    assert _as_rows([selector.select(targets[5], k, exclusions)]) == _as_rows(fast[5:6])


def test_out_jsonl_streams_one_selection_per_line(monkeypatch, capsys, tmp_path, tiny_model):
    from test_cli import run

    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(f'{{"id": "t{i}", "instruction": "classify review number {i}", "label": "L{i % 3}"}}\n'
                            for i in range(30)))
    out = tmp_path / "sel.jsonl"
    code, stdout, err = run(monkeypatch, capsys, "select", "-p", str(pool), "--targets", str(pool), "-k", "3",
                            "--method", "insta", "--model", str(tiny_model), "--out", str(out), "--json", "-q")
    assert code == 0, err
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["target"]["id"] for x in lines] == [f"t{i}" for i in range(30)]
    assert all(len(x["results"]) == 3 and x["pool"] == str(pool) for x in lines)
    assert all(r["task_id"] != x["target"]["id"] for x in lines for r in x["results"])
    assert json.loads(stdout)["targets"] == 30
    # the same selections as the one-document output
    whole = tmp_path / "sel.json"
    run(monkeypatch, capsys, "select", "-p", str(pool), "--targets", str(pool), "-k", "3", "--method", "insta",
        "--model", str(tiny_model), "--out", str(whole), "-q")
    assert [{k: v for k, v in x.items() if k != "pool"} for x in lines] == json.loads(whole.read_text())["selections"]


def test_leave_one_out_bench_holds_one_chunk_of_scores(monkeypatch, tiny_model):
    """The benchmark never asks a selector for more than SCORE_CHUNK targets' full scores at once."""
    from insta import Encoder
    from insta.bench import run_bench
    from insta.bench.suites import Suite
    from insta.select import SCORE_CHUNK

    tasks = [Task(id=f"t{i}", instructions=[Instruction(f"classify review {i % 7} text")], label=f"L{i % 7}")
             for i in range(3 * SCORE_CHUNK + 5)]
    pool = TaskPool(tasks, "synthetic")
    suite = Suite(name="synthetic", description="", pool=pool, targets=[Target.from_task(t) for t in pool])
    asked = []
    real = InstructionSelector.score_many

    def spy(self, targets, k=5, progress=None):
        asked.append(len(targets))
        return real(self, targets, k, progress)

    monkeypatch.setattr(InstructionSelector, "score_many", spy)
    result = run_bench(suite, ["insta"], encoder=Encoder(str(tiny_model)), n_boot=10)
    assert max(asked) <= SCORE_CHUNK and sum(asked) == len(tasks) and result.n_scored == len(tasks)


@pytest.mark.parametrize("single", [True, False])
def test_faiss_flat_index_gives_flat_index_results(single):
    pytest.importorskip("faiss")
    from insta.search import FaissIndex

    rng = np.random.default_rng(3)
    n_tasks, d = 1500, 16
    counts = np.ones(n_tasks, dtype=int) if single else rng.integers(1, 4, n_tasks)
    vectors = unit(rng, int(counts.sum()), d)
    vectors[9] = vectors[4]  # an exact tie
    tie_order = rng.permutation(n_tasks)
    sizes = [1, 2, 3] * 4
    queries = unit(rng, sum(sizes), d)
    queries[0] = vectors[4]
    excluded = np.arange(0, n_tasks, 50)  # many exclusions: FAISS must fetch past them
    mine = {j: np.array([j]) for j in range(len(sizes))}
    for k in (1, 5, 40):
        want = [[(h.task, h.score, h.target_row, h.source_row) for h in hits] for hits in
                FlatIndex(vectors, counts, tie_order).search(queries, sizes, k, excluded=excluded, excluded_for=mine.get)]
        got = [[(h.task, h.score, h.target_row, h.source_row) for h in hits] for hits in
               FaissIndex(vectors, counts, tie_order).search(queries, sizes, k, excluded=excluded, excluded_for=mine.get)]
        assert got == want


def test_index_option(monkeypatch, capsys, tmp_path, tiny_model):
    from test_cli import fails, run

    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(f'{{"id": "t{i}", "instruction": "classify review number {i}"}}\n' for i in range(20)))
    common = ["select", "-p", str(pool), "-i", "classify the review", "-k", "4", "--model", str(tiny_model), "-q", "--json"]
    outputs = []
    for index in ([], ["--index", "flat"], ["--index", "faiss"]):
        code, out, err = run(monkeypatch, capsys, *common, "--method", "insta", *index)
        assert code == 0, err
        outputs.append(json.loads(out)["selections"])
    assert outputs[0] == outputs[1] == outputs[2]
    fails(monkeypatch, capsys, *common, "--method", "insta", "--index", "annoy", match="unknown index 'annoy'; available: flat")
    fails(monkeypatch, capsys, *common, "--method", "bm25", "--index", "faiss", match="--index applies to --method insta")
    fails(monkeypatch, capsys, *common, "--method", "insta:mean", "--index", "faiss", match="serves the max aggregation only")


def test_pool_embedding_on_a_local_ray_instance(tiny_model, isolated_cache):
    """Ray Data embeds the pool (two encoder actors); vectors equal the local ones, in order,
    and land in the caches like any others."""
    pytest.importorskip("ray.data")
    from insta import Encoder

    import ray

    texts = [f"classify review number {i} of the movie" for i in range(300)]
    local = Encoder(str(tiny_model), cache=False).encode(texts)
    enc = Encoder(str(tiny_model), engine="ray", ray_actors=2)
    try:
        got = enc.encode_pool(texts)
    finally:
        ray.shutdown()
    np.testing.assert_allclose(got, local, atol=1e-5)
    assert enc.encoded == len(texts) and enc.cache.count() == len(texts)
    assert Encoder(str(tiny_model)).encode_pool(texts).shape == local.shape  # served from the store
    with pytest.raises(Exception, match="unknown embedding engine 'spark'"):
        Encoder(str(tiny_model), engine="spark")


# ---------------------------------------------------------------- damage and misuse (hostile review)


@pytest.mark.parametrize("damage", ["empty", "narrow", "nan", "scaled", "zeros"])
def test_a_damaged_pool_vector_file_is_rebuilt(damage, shared_data, tiny_model, isolated_cache, caplog):
    from insta import Encoder

    pool = load_pool(f"{shared_data}/bbh/tasks.jsonl")
    want = InstructionSelector(Encoder(str(tiny_model), cache=False)).fit(pool)._embeddings
    InstructionSelector(Encoder(str(tiny_model))).fit(pool)
    (stored,) = (isolated_cache / "vectors").glob("*.npy")
    good = np.load(stored)
    bad = {"narrow": lambda: good[:, :5].copy(), "nan": lambda: np.full_like(good, np.nan),
           "scaled": lambda: good * 7, "zeros": lambda: np.zeros_like(good)}
    if damage == "empty":
        stored.write_bytes(b"")
    else:
        np.save(stored, bad[damage]())
    got = InstructionSelector(Encoder(str(tiny_model))).fit(pool)._embeddings
    assert "unusable" in caplog.text
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_faiss_index_misuse_and_approximate_indexes(monkeypatch, capsys, tmp_path, tiny_model):
    pytest.importorskip("faiss")
    from test_cli import fails, run

    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(f'{{"id": "t{i:03d}", "instruction": "classify review number {i} {i % 7}"}}\n' for i in range(300)))
    common = ["select", "-p", str(pool), "-i", "classify the review", "--method", "insta", "--model", str(tiny_model),
              "-q", "--json"]
    code, out, err = run(monkeypatch, capsys, *common, "-k", "30", "--index", "faiss:IVF16,Flat")
    assert code == 0, err
    assert len(json.loads(out)["selections"][0]["results"]) == 30  # an IVF index never gives a short answer
    fails(monkeypatch, capsys, *common, "--index", "faiss:Bogus99", match="--index faiss:Bogus99: FAISS cannot build")
    fails(monkeypatch, capsys, *common, "--index", "faiss:IVF4096,Flat", match="FAISS cannot build this index on 300")
    fails(monkeypatch, capsys, *common, "--index", "faiss:", match="unknown index 'faiss:'")
    fails(monkeypatch, capsys, *common, "--index", "flat:", match="unknown index 'flat:'")


def test_vote_ties_follow_task_ids_not_pool_order():
    enc = CountingEncoder()
    rows = [("b_task", "same text"), ("a_task", "same text"), ("c_task", "same text"), ("d", "other words here")]
    picks = []
    for order in (rows, rows[::-1]):
        pool = TaskPool([Task(id=i, instructions=[Instruction(t)]) for i, t in order])
        sel = InstructionSelector(enc, aggregate="vote").fit(pool).select(Target("q", ["same text"]), k=1)
        picks.append(sel.ids)
    assert picks == [["a_task"], ["a_task"]]


def test_a_batch_target_with_nothing_to_select_is_a_warning(tmp_path, tiny_model):
    from insta import Encoder

    pool = TaskPool([Task(id=f"t{i}", instructions=[Instruction(f"text {i}")], label="L" if i else "only")
                     for i in range(5)])
    selector = InstructionSelector(Encoder(str(tiny_model), cache=False)).fit(pool)
    lone = Target("t0", ["text 0"], label="only")
    sels = selector.select_many([Target("x", ["text 1"]), lone], k=2, exclusions=Exclusions(labels=["L"]))
    assert sels[0].ids == ["t0"] and sels[1].ids == [] and "nothing selected" in sels[1].warnings[-1]
    with pytest.raises(Exception, match="every task of pool is excluded"):
        selector.select(lone, k=2, exclusions=Exclusions(labels=["L"]))
    assert Exclusions(ids="t1").ids == ["t1"]  # one id, not its characters


def test_out_is_never_an_input_and_never_empty(monkeypatch, capsys, tmp_path, tiny_model):
    from test_cli import fails, run

    pool = tmp_path / "pool.jsonl"
    text = "".join(f'{{"id": "t{i}", "instruction": "classify review number {i}"}}\n' for i in range(6))
    pool.write_text(text)
    common = ["select", "-p", f"jsonl:{pool}", "-i", "classify", "--model", str(tiny_model), "-q"]
    fails(monkeypatch, capsys, *common, "--out", str(pool), match="is an input of this command")
    fails(monkeypatch, capsys, *common, "--out", "", match="--out is empty")
    assert pool.read_text() == text
    out = tmp_path / "sel.jsonl"
    code, _, err = run(monkeypatch, capsys, "select", "-p", str(pool), "--targets", str(pool), "-k", "2",
                       "--model", str(tiny_model), "-q", "--out", str(out))
    assert code == 0, err
    from insta.mix import read_selection

    doc, chosen = read_selection(out, "t3")  # insta mix reads the streamed file too
    assert chosen["target"]["id"] == "t3" and len(chosen["results"]) == 2 and doc["pool"] == str(pool)


def test_parsed_templates_cache_is_checked(p3, isolated_cache, tmp_path, monkeypatch):
    import os
    import shutil

    src = tmp_path / "templates"
    shutil.copytree(os.environ["INSTA_PROMPTSOURCE"], src)
    monkeypatch.setenv("INSTA_PROMPTSOURCE", str(src))
    before = [t.instruction for t in load_pool("p3:imdb")[0].templates]
    (store,) = (isolated_cache / "promptsource-parsed").glob("*.json")
    doc = json.loads(store.read_text())
    doc["entries"]["imdb"]["dataset"] = ["not", "text"]
    store.write_text(json.dumps(doc))
    assert [t.instruction for t in load_pool("p3:imdb")[0].templates] == before  # re-parsed, not a crash
    # an edit that keeps the size and restores the modification time is still seen
    yaml_path = src / "imdb" / "templates.yaml"
    st = yaml_path.stat()
    data = yaml_path.read_text()
    word = "sentiment"
    assert word in data
    yaml_path.write_text(data.replace(word, "SENTIMENT", 1))
    os.utime(yaml_path, ns=(st.st_atime_ns, st.st_mtime_ns))
    from insta.readers import promptsource

    promptsource._read_entry.cache_clear()
    after = [t.jinja for t in load_pool("p3:imdb")[0].templates]
    assert any("SENTIMENT" in j for j in after)


def test_a_reader_that_leaves_does_not_lose_the_streamed_file(tmp_path, tiny_model, isolated_cache):
    import os
    import subprocess
    import sys

    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(f'{{"id": "t{i}", "instruction": "classify review number {i}"}}\n' for i in range(200)))
    out = tmp_path / "sel.jsonl"
    insta = os.path.join(os.path.dirname(sys.executable), "insta")
    proc = subprocess.Popen([insta, "select", "-p", str(pool), "--targets", str(pool), "-k", "3", "--method", "insta",
                             "--model", str(tiny_model), "--out", str(out), "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ, COLUMNS="80"))
    proc.stdout.close()  # as `| head` does: nobody reads the tables
    err = proc.stderr.read().decode()
    assert proc.wait() == 0, err
    assert len(out.read_text().splitlines()) == 200 and "Traceback" not in err
    cache_file = isolated_cache / "embeddings.sqlite"
    code = subprocess.run([insta, "select", "-p", str(pool), "-i", "x", "--model", str(tiny_model), "-q",
                           "--out", str(cache_file)], capture_output=True, text=True)
    assert code.returncode == 2 and "inside insta's cache folder" in code.stderr


def test_an_unwritable_out_folder_fails_before_the_work(monkeypatch, tmp_path):
    import errno

    from insta import InstaError
    from insta.io import check_out

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr("insta.io.tempfile.mkstemp", refuse)
    with pytest.raises(InstaError, match=r"cannot write in .* \(Permission denied\); give a writable path"):
        check_out(tmp_path / "sel.json")
    assert list(tmp_path.iterdir()) == []


def test_a_templates_file_that_is_a_fifo_is_one_error(p3, tmp_path, monkeypatch):
    import os
    import shutil

    from insta import InstaError

    src = tmp_path / "templates"
    shutil.copytree(os.environ["INSTA_PROMPTSOURCE"], src)
    (src / "imdb" / "templates.yaml").unlink()
    os.mkfifo(src / "imdb" / "templates.yaml")  # reading it would block forever
    monkeypatch.setenv("INSTA_PROMPTSOURCE", str(src))
    with pytest.raises(InstaError, match="templates.yaml is not a regular file"):
        load_pool("p3:imdb")
