"""Embedding cache: reuse across runs, model identity, atomic and concurrent writes."""

import multiprocessing as mp
import sqlite3

import numpy as np
import pytest

from insta import EmbeddingCache, Encoder, InstaError, InstructionSelector, load_pool
from insta.cache import text_key


def test_second_selection_is_served_from_the_cache(shared_data, tiny_model, isolated_cache):
    pool = load_pool(f"{shared_data}/bbh/tasks.jsonl")
    unique = len({t.texts[0] for t in pool})  # the 3 sizes of a BBH task share one description
    assert unique == 23
    first = Encoder(str(tiny_model))
    InstructionSelector(first).fit(pool)
    assert first.encoded == unique and first.cache.misses == unique
    second = Encoder(str(tiny_model))
    a = InstructionSelector(second).fit(pool)
    # the pool's vectors come back as one memory-mapped array (model and texts unchanged)
    # (one text-cache read: the array's first row is checked against it)
    assert second.encoded == 0 and second.cache.hits == 1 and isinstance(a._embeddings, np.memmap)
    assert second._model is None  # everything came from disk: the model was never loaded
    (stored,) = (isolated_cache / "vectors").glob("*.npy")
    stored.unlink()  # without the array, the text cache serves every vector
    third = Encoder(str(tiny_model))
    InstructionSelector(third).fit(pool)
    assert third.encoded == 0 and third.cache.hits == unique and third._model is None
    no_cache = Encoder(str(tiny_model), cache=False)
    b = InstructionSelector(no_cache).fit(pool)
    assert no_cache.encoded == unique
    np.testing.assert_allclose(a._embeddings, b._embeddings, atol=1e-5)
    assert (isolated_cache / "embeddings.sqlite").is_file()


@pytest.mark.slow
def test_pool_vector_file_damaged_or_unwritable_is_a_warning(shared_data, tiny_model, isolated_cache, caplog):
    pool = load_pool(f"{shared_data}/bbh/tasks.jsonl")
    want = InstructionSelector(Encoder(str(tiny_model), cache=False)).fit(pool)._embeddings
    InstructionSelector(Encoder(str(tiny_model))).fit(pool)
    (stored,) = (isolated_cache / "vectors").glob("*.npy")
    stored.write_bytes(stored.read_bytes()[:200])  # truncated, as by a crash of another program
    enc = Encoder(str(tiny_model))
    got = InstructionSelector(enc).fit(pool)._embeddings
    assert "unusable" in caplog.text and enc.encoded == 0  # rebuilt from the text cache
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.load(stored).shape == want.shape  # and stored again, whole


def test_a_full_disk_leaves_no_pool_vector_file(shared_data, tiny_model, isolated_cache, caplog, monkeypatch):
    import errno

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    pool = load_pool(f"{shared_data}/bbh/tasks.jsonl")
    monkeypatch.setattr("insta.cache.os.fsync", full)
    got = InstructionSelector(Encoder(str(tiny_model))).fit(pool)._embeddings
    assert got.shape[0] == pool.n_instructions and "pool vectors are not stored" in caplog.text
    assert list((isolated_cache / "vectors").iterdir()) == []  # no half-written array, no temporary


@pytest.mark.slow
def test_cache_with_the_packaged_minilm(p3):
    pool = load_pool("p3:t0-train")
    first = Encoder()
    InstructionSelector(first).fit(pool)
    assert first.encoded > 200
    second = Encoder()
    InstructionSelector(second).fit(pool)
    assert second.encoded == 0 and second._model is None


def test_cache_keys_are_model_identity_and_exact_text(tiny_model, tmp_path):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(tiny_model, other)
    (other / "config_sentence_transformers.json").write_text('{"note": "changed"}')
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    e1, e2 = Encoder(str(tiny_model), cache=cache), Encoder(str(other), cache=cache)
    assert e1.identity != e2.identity
    e1.encode(["the movie review"])
    e2.encode(["the movie review"])
    assert e2.encoded == 1  # another model never reuses the first model's vectors
    e1.encode(["the movie review "])  # a different exact text is a different key
    assert e1.encoded == 2
    assert cache.count() == 3


def test_interrupted_write_leaves_nothing(tmp_path):
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    cache.put_many("m", ["a"], np.ones((1, 4)))

    class Boom(np.ndarray):
        pass

    vectors = np.ones((3, 4), dtype=np.float32)
    rows_before = cache.count()
    original = cache._connect

    def failing_connect():
        con = original()

        class Wrapper:
            def __getattr__(self, name):
                return getattr(con, name)

            def executemany(self, sql, rows):
                rows = list(rows)
                con.executemany(sql, rows[:2])  # half of the batch is written, then the process "dies"
                raise sqlite3.OperationalError("disk I/O error")

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return con.__exit__(*exc)

        return Wrapper()

    cache._connect = failing_connect
    cache.put_many("m", ["b", "c", "d"], vectors)  # a cache failure never fails the command: it is switched off
    assert cache.disabled and "disk I/O error" in cache.disabled
    fresh = EmbeddingCache(tmp_path / "c.sqlite")
    assert fresh.count() == rows_before  # the half-written batch was rolled back
    assert fresh.get_many("m", ["b", "c"]) == {}


def test_a_damaged_cache_is_a_warning_and_clear_deletes_it(tmp_path, caplog):
    path = tmp_path / "c.sqlite"
    cache = EmbeddingCache(path)
    cache.put_many("m", [f"t{i}" for i in range(300)], np.ones((300, 64)))
    del cache
    with sqlite3.connect(path) as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything into the main file
    data = bytearray(path.read_bytes())
    data[4096:] = b"\xab" * (len(data) - 4096)  # header intact, every data page garbage
    path.write_bytes(bytes(data))
    damaged = EmbeddingCache(path)
    assert damaged.get_many("m", ["t1"]) == {}  # no exception: embeddings are computed without it
    damaged.put_many("m", ["new"], np.ones((1, 64)))
    assert damaged.disabled
    assert any("damaged" in r.getMessage() and "insta cache --clear" in r.getMessage() for r in caplog.records)
    with pytest.raises(InstaError, match="cannot be read .*insta cache --clear"):
        damaged.count()
    from insta.cache import delete_cache

    assert delete_cache(path) is None and not path.exists()
    assert EmbeddingCache(path).count() == 0  # a fresh cache in its place


def _writer(path, worker, n):
    cache = EmbeddingCache(path)
    rng = np.random.default_rng(worker)
    for i in range(n):
        texts = [f"shared {j}" for j in range(i, i + 5)] + [f"w{worker} {i}"]
        cache.put_many("m", texts, rng.random((len(texts), 8)))


def test_concurrent_writers(tmp_path):
    path = tmp_path / "c.sqlite"
    EmbeddingCache(path)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(path), w, 40)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    cache = EmbeddingCache(path)
    assert cache.count("m") == 44 + 4 * 40  # shared texts once each, every worker's own texts
    got = cache.get_many("m", ["shared 0", "w3 39"])
    assert set(got) == {"shared 0", "w3 39"} and got["shared 0"].shape == (8,)
    assert text_key("x") != text_key("x ")
