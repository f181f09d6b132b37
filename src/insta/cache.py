"""On-disk embedding cache keyed by model identity and exact text.

One SQLite file under the cache root. Each write is a single transaction
(``INSERT OR IGNORE``), so concurrent writers never corrupt it, and an interrupted
run leaves either all or none of a batch. Vectors are stored as float32 blobs.

A cache is never a reason for a command to fail: when its file is damaged (disk errors,
something else wrote to it) or its folder is read-only, a one-line warning says so and the
command goes on without it; ``insta cache --clear`` deletes a damaged file outright.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .errors import InstaError
from .log import log

_SCHEMA = """
CREATE TABLE IF NOT EXISTS embeddings (
    model TEXT NOT NULL,
    key TEXT NOT NULL,
    dim INTEGER NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (model, key)
) WITHOUT ROWID
"""


def text_key(text: str) -> str:
    """The cache key of a text: sha256 of its exact UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class EmbeddingCache:
    """Persistent map (model fingerprint, text) -> embedding vector."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.hits = 0
        self.misses = 0
        self.disabled: str | None = None  # why the cache is off for this process, if it is
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as con:
                con.execute(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            self._disable(exc)

    def _disable(self, exc: BaseException) -> None:
        """Go on without the cache, saying once why (damaged file, read-only folder, ...)."""
        if self.disabled is None:
            self.disabled = str(exc)
            damaged = isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError)
            fix = "'insta cache --clear' deletes it" if damaged else "set INSTA_CACHE_DIR to a writable folder"
            log.warning("embedding cache %s %s (%s): embeddings are computed without it; %s", self.path,
                        "is damaged" if damaged else "cannot be used", exc, fix)

    def _connect(self) -> sqlite3.Connection:
        # the file (or its folder) may have been deleted since the last call: 'insta cache
        # --clear' from another shell while this command runs. It is then a new, empty cache,
        # not a damaged or unwritable one.
        fresh = not self.path.exists()
        if fresh:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
        if fresh:
            con.execute(_SCHEMA)
        return con

    def get_many(self, model: str, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Vectors for the texts that are cached, keyed by text."""
        keys = {text_key(t): t for t in texts}
        found: dict[str, np.ndarray] = {}
        if self.disabled is not None:
            self.misses += len(keys)
            return found
        items = list(keys)
        try:
            with self._connect() as con:
                for start in range(0, len(items), 500):
                    chunk = items[start:start + 500]
                    marks = ",".join("?" * len(chunk))
                    rows = con.execute(
                        f"SELECT key, dim, vector FROM embeddings WHERE model = ? AND key IN ({marks})",
                        [model, *chunk],
                    ).fetchall()
                    for key, dim, blob in rows:
                        vec = np.frombuffer(blob, dtype=np.float32) if isinstance(blob, bytes) else np.zeros(0)
                        if vec.shape[0] == dim and np.isfinite(vec).all():
                            found[keys[key]] = vec
        except (OSError, sqlite3.Error) as exc:  # OSError: its folder cannot be made (any more)
            self._disable(exc)
            found = {}
        self.hits += len(found)
        self.misses += len(keys) - len(found)
        return found

    def put_many(self, model: str, texts: Sequence[str], vectors: np.ndarray) -> None:
        """Store vectors for texts in one transaction (all or nothing)."""
        if self.disabled is not None:
            return
        vectors = np.asarray(vectors, dtype=np.float32)
        rows = [(model, text_key(t), int(v.shape[0]), v.tobytes()) for t, v in zip(texts, vectors)]
        for attempt in range(5):
            try:
                with self._connect() as con:
                    con.execute("BEGIN IMMEDIATE")
                    try:
                        con.executemany("INSERT OR IGNORE INTO embeddings VALUES (?, ?, ?, ?)", rows)
                        con.execute("COMMIT")
                    except BaseException:
                        con.execute("ROLLBACK")
                        raise
                return
            except sqlite3.OperationalError as exc:  # locked beyond the timeout: retry
                if "locked" not in str(exc) or attempt == 4:
                    self._disable(exc)
                    return
                time.sleep(0.2 * (attempt + 1))
            except (OSError, sqlite3.Error) as exc:
                self._disable(exc)
                return

    def count(self, model: str | None = None) -> int:
        try:
            with self._connect() as con:
                if model is None:
                    return con.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]
                return con.execute("SELECT COUNT(*) FROM embeddings WHERE model = ?", (model,)).fetchone()[0]
        except OSError as exc:
            raise InstaError(f"embedding cache {self.path} cannot be opened ({exc.strerror or exc}); "
                             "set INSTA_CACHE_DIR to a writable folder") from None
        except sqlite3.Error as exc:
            raise InstaError(f"embedding cache {self.path} cannot be read ({exc}); 'insta cache --clear' deletes it") from None

    def clear(self, model: str | None = None) -> int | None:
        """Delete the cached vectors (of one model, or all); returns how many, or None when the
        file was damaged and has been deleted as a whole."""
        if model is not None:
            try:
                with self._connect() as con:
                    return con.execute("DELETE FROM embeddings WHERE model = ?", (model,)).rowcount
            except OSError as exc:
                raise InstaError(f"embedding cache {self.path} cannot be opened ({exc.strerror or exc}); "
                                 "set INSTA_CACHE_DIR to a writable folder") from None
            except sqlite3.Error as exc:
                raise InstaError(f"embedding cache {self.path}: {exc}; 'insta cache --clear' deletes the whole file") from None
        return delete_cache(self.path)


def inspect_cache(path: str | Path) -> tuple[int | None, str | None]:
    """What ``insta cache`` says of a cache file: (how many vectors it holds, None) when it is
    healthy, else (the count where it can still be read, what is wrong). Nothing is written
    (whether it can be is tried in a transaction rolled back), and a file that is only read-only
    (its folder, or itself) is not called damaged."""
    path = Path(path)
    count = None
    try:
        # read-only first: a cache in a read-only folder is still counted (immutable: its WAL
        # files cannot be created there, and nobody can write it meanwhile either)
        for uri in (f"{path.resolve().as_uri()}?mode=ro", f"{path.resolve().as_uri()}?immutable=1"):
            try:
                with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5.0)) as con:
                    count = con.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]
                break
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):
                    raise sqlite3.DatabaseError(f"{exc}: not an insta embedding cache") from None
                if uri.endswith("immutable=1"):
                    raise
    except sqlite3.OperationalError as exc:  # cannot be opened at all (permissions, ...)
        return None, (f"cannot be opened ({exc}); make it readable and writable, or set INSTA_CACHE_DIR to "
                      "another folder")
    except sqlite3.Error as exc:
        return None, f"damaged ({exc}); 'insta cache --clear' deletes it"
    except OSError as exc:
        return None, f"cannot be opened ({exc.strerror or exc}); set INSTA_CACHE_DIR to another folder"
    try:  # can it be written? (a write lock taken and given back, nothing written)
        with contextlib.closing(sqlite3.connect(path, timeout=5.0, isolation_level=None)) as con:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("BEGIN IMMEDIATE")
            try:  # a write statement: BEGIN alone passes on a read-only file (in WAL mode)
                con.execute("DELETE FROM embeddings WHERE 0")
            finally:
                con.execute("ROLLBACK")
    except sqlite3.OperationalError as exc:
        if "locked" not in str(exc):  # locked: another process is writing it, so it can be written
            return count, (f"read-only ({exc}): no new embedding can be stored in it; make it "
                           f"and its folder {path.parent} writable, or set INSTA_CACHE_DIR to a writable folder")
    except sqlite3.Error as exc:
        return count, f"damaged ({exc}); 'insta cache --clear' deletes it"
    except OSError as exc:
        return count, f"cannot be opened for writing ({exc.strerror or exc}); set INSTA_CACHE_DIR to a writable folder"
    return count, None


def delete_cache(path: str | Path) -> int | None:
    """Delete a cache file (with its WAL files) however damaged; returns how many vectors it
    held, or None when it could not be read."""
    path = Path(path)
    n = None
    if path.is_file():
        try:
            with sqlite3.connect(path) as con:
                n = con.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]
        except sqlite3.Error:
            pass
    for suffix in ("", "-wal", "-shm"):
        try:
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        except OSError as exc:
            raise InstaError(f"cannot delete {path}{suffix} ({exc.strerror or exc}); delete it by hand") from None
    return n


class VectorStore:
    """Pool vectors as one ``.npy`` array per (model identity, pool texts), memory-mapped on
    reading: a warm start of a million-instruction pool maps one file instead of rebuilding
    the matrix row by row from SQLite. Beside the text-keyed cache, never instead of it
    (new texts are still embedded once and cached by text). Like the cache, a damaged or
    unwritable store is a warning, never a failure."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @staticmethod
    def key(model: str, texts: Sequence[str]) -> str:
        h = hashlib.sha256(model.encode("utf-8") + b"\0")
        for t in texts:
            h.update(t.encode("utf-8"))
            h.update(b"\0")
        return h.hexdigest()[:40]

    def path(self, key: str) -> Path:
        return self.root / f"{key}.npy"

    def load(self, key: str, n: int, first: np.ndarray | None = None) -> np.ndarray | None:
        """The stored (n, dim) float32 array, memory-mapped, or None (absent or unusable).

        Checked before use: its shape and type, that its rows are finite unit vectors (every
        row of a small file, an even sample of a large one) and, when ``first`` (the first
        text's vector from the text cache) is given, that row 0 is that vector. A damaged
        file is a warning and a rebuild, never a wrong result."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
            if arr.dtype != np.float32 or arr.ndim != 2 or arr.shape[0] != n or arr.shape[1] == 0:
                raise ValueError(f"holds a {arr.dtype} array of shape {arr.shape}, expected ({n}, dim) float32")
            rows = np.asarray(arr[::max(1, n // 4096)])
            norms = np.linalg.norm(rows, axis=1) if np.isfinite(rows).all() else np.array([np.nan])
            if not np.allclose(norms, 1.0, atol=1e-3):
                raise ValueError("its rows are not finite unit vectors")
            if first is not None and (first.shape != arr[0].shape or not np.allclose(first, arr[0], atol=1e-5)):
                raise ValueError("its first row is not the cached vector of the pool's first text")
            return arr
        except Exception as exc:  # noqa: BLE001 - any damage (EOFError, a bad header, ...) means: rebuild
            log.warning("pool vector file %s is unusable (%s): the vectors are rebuilt from the cache", path,
                        str(exc) or type(exc).__name__)
            return None

    def save(self, key: str, vectors: np.ndarray) -> np.ndarray:
        """Store the vectors atomically and return them memory-mapped (as given when the
        store cannot be written)."""
        from .io import atomic_path

        try:
            with atomic_path(self.path(key), "pool vector file") as tmp:
                with open(tmp, "wb") as fh:
                    np.save(fh, np.ascontiguousarray(vectors, dtype=np.float32), allow_pickle=False)
                    fh.flush()
                    os.fsync(fh.fileno())
        except InstaError as exc:
            log.warning("%s: pool vectors are not stored (embeddings are still cached by text)", exc)
            return vectors
        return self.load(key, len(vectors)) if len(vectors) else vectors

    def clear(self) -> int:
        """Delete every stored array (and temporaries of writes that were killed); returns how
        many arrays."""
        import shutil

        n = 0
        for f in self.root.glob("*"):
            if f.is_dir() and not f.is_symlink():
                shutil.rmtree(f, ignore_errors=True)
            else:
                f.unlink(missing_ok=True)
            n += f.name.endswith(".npy")
        return n


def cached_encode(cache: EmbeddingCache | None, identity: str, texts: Sequence[str],
                  compute: Callable[[list[str]], np.ndarray], progress: Callable[[int, int], None] | None = None,
                  dim: Callable[[], int] | None = None) -> np.ndarray:
    """Vectors of ``texts`` under a representation ``identity``, L2-normalised float32 rows:
    served from the cache where it holds them, ``compute(missing texts)`` for the rest (each
    distinct text once), which are then cached. The one caching path of every representation
    (sentence embeddings, LM hidden states, gradients)."""
    texts = list(texts)
    if not texts:
        return np.zeros((0, dim() if dim else 1), dtype=np.float32)
    unique = list(dict.fromkeys(texts))
    found = cache.get_many(identity, unique) if cache else {}
    missing = [t for t in unique if t not in found]
    if missing:
        vecs = np.asarray(compute(missing), dtype=np.float32)
        norms = np.linalg.norm(vecs, axis=1, keepdims=True)
        vecs = vecs / np.where(norms == 0, 1.0, norms)  # cached as used: unit rows
        if cache:
            cache.put_many(identity, missing, vecs)
        found.update(zip(missing, vecs))
    elif progress:
        progress(len(unique), len(unique))
    out = np.stack([found[t] for t in texts]).astype(np.float32)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.where(norms == 0, 1.0, norms)


def cached_pool(cache: EmbeddingCache | None, identity: str, texts: Sequence[str],
                encode: Callable[[list[str]], np.ndarray], progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """A whole pool's vectors as one memory-mapped array per (identity, texts) beside the text
    cache (see :class:`VectorStore`), checked on load against the cache's vector of the first
    text; ``encode(texts)`` (which caches by text) when absent or damaged, or with no cache."""
    texts = list(texts)
    if cache is None or cache.disabled is not None or not texts:
        return encode(texts)
    store = VectorStore(cache.path.parent / "vectors")
    key = store.key(identity, texts)
    found = None
    if store.path(key).is_file():
        found = store.load(key, len(texts), first=cache.get_many(identity, texts[:1]).get(texts[0]))
    if found is not None:
        if progress:
            progress(len(texts), len(texts))
        return found
    return store.save(key, encode(texts))
