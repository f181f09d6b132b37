"""Shared fixtures: the real data beside the checkout, the real promptsource templates,
a tiny sentence-transformers model built locally, and an isolated cache per test."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# Tests never touch a model/dataset hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
# Tests embed with sentence-transformers unless they test the ONNX Runtime path (tests/test_onnx.py):
# an export per test's fresh cache root would cost seconds each
os.environ.setdefault("INSTA_EMBED_BACKEND", "torch")

REPO = Path(__file__).resolve().parents[1]
ON_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _need(condition: bool, reason: str) -> None:
    """Skip with a reason locally; on CI (where the data always exists) fail instead."""
    if not condition:
        if ON_CI:
            pytest.fail(f"{reason} (CI=true: the shared data must be present)")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = Path(os.environ.get("INSTA_SHARED_DATA", REPO.parent / "shared" / "data"))
    _need((root / "niv2" / "tasks.jsonl").is_file(), f"shared data not found at {root} (set INSTA_SHARED_DATA)")
    return root


@pytest.fixture(scope="session")
def promptsource_sdist(tmp_path_factory) -> Path:
    """The real promptsource 0.2.3 sdist, fetched once per machine with pip (cached in .insta-cache/)."""
    store = REPO / ".insta-cache" / "sdist"
    found = sorted(store.glob("promptsource-0.2.3.tar.gz"))
    if not found:
        store.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--ignore-requires-python", "--no-binary", ":all:",
             "promptsource==0.2.3", "-d", str(store)],
            capture_output=True, text=True,
        )
        found = sorted(store.glob("promptsource-0.2.3.tar.gz"))
        _need(bool(found), f"could not pip download promptsource==0.2.3: {proc.stderr.strip()[-300:]}")
    return found[0]


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch, request):
    """Each test gets its own cache root; P3 templates come from the sdist fixture when used."""
    cache = tmp_path / "insta-cache"
    monkeypatch.setenv("INSTA_CACHE_DIR", str(cache))
    monkeypatch.delenv("INSTA_PROMPTSOURCE", raising=False)
    return cache


@pytest.fixture()
def p3(promptsource_sdist, monkeypatch):
    """Point the p3 reader at the real templates (extracted once per session)."""
    monkeypatch.setenv("INSTA_PROMPTSOURCE", str(_extracted(promptsource_sdist)))
    return promptsource_sdist


_EXTRACTED: dict[Path, Path] = {}


def _extracted(sdist: Path) -> Path:
    if sdist not in _EXTRACTED:
        from insta.readers.promptsource import _extract_sdist

        dest = REPO / ".insta-cache" / "templates-0.2.3"
        if not any(dest.glob("*/templates.yaml")):
            shutil.rmtree(dest, ignore_errors=True)
            _extract_sdist(sdist, dest)
        _EXTRACTED[sdist] = dest
    return _EXTRACTED[sdist]


# ------------------------------------------------------------------ tiny local model

WORDS = (
    "the a an of to and is in this that for on with as by be or are given task text question answer "
    "sentence review movie positive negative sentiment summarize summary article news classify topic "
    "premise hypothesis entail entailment contradiction neutral true false yes no translate french english "
    "generate title paraphrase same meaning choose option correct best following what which who why how "
    "write story end ending context passage read find extract number count evaluate expression boolean"
).split()


def build_tiny_model(dest: Path, seed: int = 0, dim: int = 32) -> Path:
    """A tiny random BERT sentence-transformers model, built from a config (no download)."""
    import torch
    from sentence_transformers import SentenceTransformer

    try:  # sentence-transformers >= 5.2 moved the modules
        from sentence_transformers.sentence_transformer import modules as models
    except ImportError:
        from sentence_transformers import models
    from transformers import BertConfig, BertModel, BertTokenizerFast

    torch.manual_seed(seed)
    hf_dir = dest / "hf"
    hf_dir.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(WORDS)) + [chr(c) for c in range(33, 127)]
    (hf_dir / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n")
    tok = BertTokenizerFast(vocab_file=str(hf_dir / "vocab.txt"), do_lower_case=True)
    config = BertConfig(vocab_size=len(tok), hidden_size=dim, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=2 * dim, max_position_embeddings=128)
    BertModel(config).save_pretrained(hf_dir)
    tok.save_pretrained(hf_dir)
    word = models.Transformer(str(hf_dir), max_seq_length=64)
    dim_of = getattr(word, "get_embedding_dimension", None) or word.get_word_embedding_dimension
    pool = models.Pooling(dim_of(), pooling_mode="mean")
    out = dest / "st"
    SentenceTransformer(modules=[word, pool], device="cpu").save(str(out))
    return out


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def minilm_encoder():
    """The packaged all-MiniLM-L6-v2, without a disk cache (loaded once per session)."""
    from insta import Encoder

    enc = Encoder(cache=False)
    enc.model  # load now
    return enc


def build_tiny_lms(dest: Path) -> dict[str, Path]:
    """A tiny T5 (seq2seq) and a tiny GPT-2 (causal) built from configs (no download)."""
    from insta.testing import build_lms

    corpus = [" ".join(WORDS), "Definition: Now complete the following example - Input: Output: True False yes no"]
    return build_lms(dest, corpus * 4, size="tiny", vocab_size=320)


@pytest.fixture(scope="session")
def tiny_lms(tmp_path_factory) -> dict[str, Path]:
    return build_tiny_lms(tmp_path_factory.mktemp("tiny-lms"))
