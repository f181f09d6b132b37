"""On-disk embedding cache keyed by model identity and exact text.

One SQLite file under the cache root. Each write is a single transaction
(``INSERT OR IGNORE``), so concurrent writers never corrupt it, and an interrupted
run leaves either all or none of a batch. Vectors are stored as float32 blobs.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .errors import InstaError

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
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as con:
                con.execute(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise InstaError(f"embedding cache {self.path}: cannot open ({exc}); pass --no-cache or set INSTA_CACHE_DIR") from None
        self.hits = 0
        self.misses = 0

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
        return con

    def get_many(self, model: str, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Vectors for the texts that are cached, keyed by text."""
        keys = {text_key(t): t for t in texts}
        found: dict[str, np.ndarray] = {}
        items = list(keys)
        with self._connect() as con:
            for start in range(0, len(items), 500):
                chunk = items[start:start + 500]
                marks = ",".join("?" * len(chunk))
                rows = con.execute(
                    f"SELECT key, dim, vector FROM embeddings WHERE model = ? AND key IN ({marks})",
                    [model, *chunk],
                ).fetchall()
                for key, dim, blob in rows:
                    vec = np.frombuffer(blob, dtype=np.float32)
                    if vec.shape[0] == dim:
                        found[keys[key]] = vec
        self.hits += len(found)
        self.misses += len(keys) - len(found)
        return found

    def put_many(self, model: str, texts: Sequence[str], vectors: np.ndarray) -> None:
        """Store vectors for texts in one transaction (all or nothing)."""
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
                    raise InstaError(f"embedding cache {self.path}: {exc}; pass --no-cache to run without it") from None
                time.sleep(0.2 * (attempt + 1))

    def count(self, model: str | None = None) -> int:
        with self._connect() as con:
            if model is None:
                return con.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]
            return con.execute("SELECT COUNT(*) FROM embeddings WHERE model = ?", (model,)).fetchone()[0]

    def clear(self, model: str | None = None) -> int:
        with self._connect() as con:
            cur = con.execute("DELETE FROM embeddings" + (" WHERE model = ?" if model else ""), (model,) if model else ())
            return cur.rowcount
