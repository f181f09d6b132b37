"""The ONNX Runtime path of the embedder: the same vectors as sentence-transformers (within
1e-6), the same selections on the real P3, NIV2 and BIG-bench pools, an export made once per
model and checked on load (a damaged one rebuilt with a warning), a model it cannot run
falling back with one warning, and a select of a new instruction that imports neither torch
nor sentence-transformers."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest

from insta.encoder import Encoder
from insta.onnx_encoder import MANIFEST, export_dir
from insta.pools import load_pool
from insta.select import Exclusions, InstructionSelector, Target
from insta.tasks import TaskPool

TEXTS = ["Suppose the premise is true. Can we infer that the hypothesis is true?", "x", "",
         "Übersetze den Satz ins Französische — 日本語のテキスト " * 40, "classify the sentiment of a movie review"]


@pytest.fixture()
def onnx_env(monkeypatch):
    monkeypatch.setenv("INSTA_EMBED_BACKEND", "auto")


def _pair(model=None):
    return Encoder(model, cache=False, backend="onnx"), Encoder(model, cache=False, backend="torch")


def test_vectors_equal_sentence_transformers(onnx_env, tiny_model, isolated_cache):
    for model in (None, str(tiny_model)):  # the packaged MiniLM, and any sentence-transformers folder
        fast, ref = _pair(model)
        got, want = fast.encode(TEXTS), ref.encode(TEXTS)
        assert got.dtype == np.float32 and got.shape == want.shape
        assert np.abs(got - want).max() < 1e-6
        assert fast.dim == ref.dim
    assert len(list((isolated_cache / "onnx").iterdir())) == 2  # one export per model identity
    # auto: ONNX Runtime for a few texts on the CPU, sentence-transformers for a bulk encoding
    enc = Encoder(str(tiny_model), cache=False)
    enc.encode(TEXTS)
    assert enc._onnx and enc._model is None


@pytest.mark.parametrize("suite", ["p3", "niv2", "bigbench"])
def test_the_same_selections_on_the_real_pools(suite, request, shared_data, onnx_env):
    if suite == "p3":
        request.getfixturevalue("p3")
        pool = load_pool("p3:t0-train")
    elif suite == "niv2":  # every third task of the 876 (their long Definitions: the whole pool twice costs a minute)
        whole = load_pool(f"{shared_data}/niv2/definitions.jsonl")
        pool = TaskPool(list(whole)[::3], name=whole.name)
    else:
        pool = load_pool(f"jsonl:{shared_data}/bigbench/tasks.jsonl?id=task&instruction=description&where=level:task&skip_empty=true")
    fast, ref = _pair()
    targets = [Target.from_task(t) for t in list(pool)[:: max(1, len(pool) // 25)]]
    sel_fast, sel_ref = InstructionSelector(fast).fit(pool), InstructionSelector(ref).fit(pool)
    # every pool vector, and so every cosine score, within 1e-6
    assert np.abs(np.asarray(sel_fast._embeddings) - np.asarray(sel_ref._embeddings)).max() < 1e-6
    queries = [q for t in targets for q in t.instructions]
    assert np.abs(fast.encode(queries) @ np.asarray(sel_fast._embeddings).T
                  - ref.encode(queries) @ np.asarray(sel_ref._embeddings).T).max() < 1e-6
    got = sel_fast.select_many(targets, 10, Exclusions())
    want = sel_ref.select_many(targets, 10, Exclusions())
    for a, b in zip(got, want):
        assert _tie_groups(a) == _tie_groups(b)
        # reported scores are rounded to 6 decimals: at most one unit apart
        assert np.allclose([r.score for r in a.results], [r.score for r in b.results], rtol=0, atol=1.001e-6)


def _tie_groups(selection) -> list[set[str]]:
    """The ranked task ids, tasks whose scores are equal within float error (e.g. two tasks
    sharing a template text: cosine 1.0 for both, apart in the 7th decimal by the batch each was
    embedded in, on either path) taken as one group: their order is noise, not a ranking."""
    groups: list[set[str]] = []
    last = None
    for r in selection.results:
        if last is not None and abs(r.score - last) <= 1.001e-6:
            groups[-1].add(r.task_id)
        else:
            groups.append({r.task_id})
        last = r.score
    return groups


def test_a_damaged_export_is_rebuilt_with_a_warning(onnx_env, tiny_model, isolated_cache, caplog):
    want = Encoder(str(tiny_model), cache=False, backend="onnx").encode(TEXTS)
    enc = Encoder(str(tiny_model), cache=False, backend="onnx")
    folder = export_dir(isolated_cache, enc.identity)
    model = folder / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the weights, the file's old modification time put back
    before = model.stat()
    model.write_bytes(bytes(data))
    os.utime(model, ns=(before.st_atime_ns, before.st_mtime_ns))
    with caplog.at_level(logging.WARNING, logger="insta"):
        got = enc.encode(TEXTS)
    assert [r.getMessage() for r in caplog.records if "is damaged" in r.getMessage()]
    assert np.array_equal(got, want)
    for edit in ("{not json", "[]", {"pooling": "cls"}, {"max_seq_length": -1}, {"dim": True}, {"inputs": ["input_ids"]},
                 {"pad_id": None}, {"identity": "another@model"}):
        if isinstance(edit, dict):  # a manifest that still parses, one value changed
            doc = json.loads((folder / MANIFEST).read_text())
            (folder / MANIFEST).write_text(json.dumps({**doc, **edit}))
        else:
            (folder / MANIFEST).write_text(edit)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="insta"):
            got = Encoder(str(tiny_model), cache=False, backend="onnx").encode(TEXTS)
        damaged = [r.getMessage() for r in caplog.records if "is damaged" in r.getMessage()]
        assert len(damaged) == 1 and "insta-onnx.json" in damaged[0] and "object has no" not in damaged[0], edit
        assert np.array_equal(got, want), edit
    assert json.loads((folder / MANIFEST).read_text())["pooling"] == "mean"


def test_a_copied_cache_is_verified_once_and_used(onnx_env, tiny_model, tmp_path, monkeypatch, caplog):
    import shutil

    want = Encoder(str(tiny_model), cache=False, backend="onnx").encode(TEXTS)
    shutil.copytree(os.environ["INSTA_CACHE_DIR"], tmp_path / "copy")  # new inodes and change times, same bytes
    monkeypatch.setenv("INSTA_CACHE_DIR", str(tmp_path / "copy"))
    with caplog.at_level(logging.WARNING, logger="insta"):
        got = Encoder(str(tiny_model), cache=False, backend="onnx").encode(TEXTS)
    assert np.array_equal(got, want) and not caplog.records  # checked by checksum, kept
    folder = next((tmp_path / "copy" / "onnx").iterdir())
    stamps = json.loads((folder / MANIFEST).read_text())["files"]
    assert stamps["model.onnx"]["inode"] == (folder / "model.onnx").stat().st_ino  # remembered: cheap next time


def test_an_export_of_another_model_is_not_taken(onnx_env, tiny_model, tmp_path, isolated_cache, caplog):
    from conftest import build_tiny_model

    other = build_tiny_model(tmp_path / "other", seed=1)
    a, b = Encoder(str(tiny_model), cache=False, backend="onnx"), Encoder(str(other), cache=False, backend="onnx")
    want = b.encode(TEXTS)
    a.encode(TEXTS)
    import shutil

    there = export_dir(isolated_cache, b.identity)
    shutil.rmtree(there)
    shutil.copytree(export_dir(isolated_cache, a.identity), there)  # the other model's files, whole
    with caplog.at_level(logging.WARNING, logger="insta"):
        got = Encoder(str(other), cache=False, backend="onnx").encode(TEXTS)
    assert any("export of another model" in r.getMessage() for r in caplog.records)
    assert np.array_equal(got, want)


def test_a_model_this_path_cannot_run_falls_back_with_one_warning(onnx_env, tiny_model, tmp_path, caplog):
    from sentence_transformers import SentenceTransformer

    try:
        from sentence_transformers.sentence_transformer import modules as models
    except ImportError:
        from sentence_transformers import models
    st = SentenceTransformer(str(tiny_model), device="cpu")
    dense = models.Dense(in_features=32, out_features=8)
    SentenceTransformer(modules=[st[0], st[1], dense], device="cpu").save(str(tmp_path / "dense"))
    enc = Encoder(str(tmp_path / "dense"), cache=False)
    with caplog.at_level(logging.WARNING, logger="insta"):
        got = enc.encode(TEXTS)
        enc.encode(["again"])
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "cannot run on ONNX Runtime (modules Transformer → Pooling → Dense" in warnings[0]
    want = Encoder(str(tmp_path / "dense"), cache=False, backend="torch").encode(TEXTS)
    assert np.abs(got - want).max() < 1e-6 and got.shape[1] == 8
    caplog.clear()  # the next run is told at once, without trying the export again
    again = Encoder(str(tmp_path / "dense"), cache=False)
    with caplog.at_level(logging.WARNING, logger="insta"):
        again.encode(["one more"])
    assert len(caplog.records) == 1 and "found when it was first tried" in caplog.records[0].getMessage()


def test_a_model_that_cannot_embed_is_one_line(onnx_env, tiny_model, tmp_path):
    import shutil

    from insta.errors import InstaError

    broken = tmp_path / "long"
    shutil.copytree(tiny_model, broken)
    (broken / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 100000}))  # positions: 128
    for backend in ("torch", "onnx"):
        with pytest.raises(InstaError, match="could not embed the texts .* check its sentence-transformers config"):
            Encoder(str(broken), cache=False, backend=backend).encode(["word " * 300])


def test_an_unknown_backend_is_one_line(tiny_model):
    from insta.errors import InstaError

    with pytest.raises(InstaError, match="unknown embedding backend 'fast' .INSTA_EMBED_BACKEND.; available: auto, onnx"):
        Encoder(str(tiny_model), backend="fast")


def test_select_of_a_new_instruction_imports_no_torch(tiny_model, tmp_path):
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"id": f"t{i}", "instruction": f"classify review number {i}"}) + "\n"
                            for i in range(20)))
    probe = ("import json, sys\nfrom insta.cli import main\nsys.argv = ['insta'] + sys.argv[1:]\n"
             "try:\n    main()\nexcept SystemExit as exc:\n    code = exc.code\n"
             "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'sentence_transformers', 'transformers'})\n"
             "print(json.dumps({'heavy': heavy, 'code': code}), file=sys.stderr)\n")
    env = {**os.environ, "INSTA_EMBED_BACKEND": "auto", "INSTA_CACHE_DIR": str(tmp_path / "cache")}
    seen = []
    for i, text in enumerate(["which review is positive", "is this review negative", "which review is positive"]):
        proc = subprocess.run([sys.executable, "-c", probe, "select", "-p", str(pool), "-i", text, "-k", "3",
                               "--method", "insta", "--model", str(tiny_model), "--json", "-q"],
                              capture_output=True, text=True, env=env, timeout=300)
        report = json.loads(proc.stderr.strip().splitlines()[-1])
        assert report["code"] in (0, None), proc.stderr
        seen.append((report["heavy"], json.loads(proc.stdout)["selections"][0]["results"]))
    assert "torch" in seen[0][0]  # the first use exports the model (torch is needed then)
    assert seen[1][0] == [] and seen[2][0] == []  # a new instruction, then a cached one: no torch at all
    assert seen[2][1] == seen[0][1]


def test_two_processes_exporting_at_once(tiny_model, tmp_path):
    code = ("import sys, numpy as np\nfrom insta.encoder import Encoder\n"
            "v = Encoder(sys.argv[1], cache=False, backend='onnx').encode(['which review is positive'])\n"
            "np.save(sys.argv[2], v)\n")
    env = {**os.environ, "INSTA_CACHE_DIR": str(tmp_path / "cache")}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tiny_model), str(tmp_path / f"v{i}.npy")], env=env,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    assert not any("warning" in e for e in errs)
    # the same vectors; not bit for bit: once (CI, a loaded machine) they differed by 3e-8
    assert np.allclose(np.load(tmp_path / "v0.npy"), np.load(tmp_path / "v1.npy"), rtol=0, atol=1e-6)
    exports = list((tmp_path / "cache" / "onnx").iterdir())
    assert len(exports) == 1 and (exports[0] / MANIFEST).is_file()  # one export, no temporary left
