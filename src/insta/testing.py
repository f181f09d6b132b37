"""Language models built from configs, with no download: for offline smoke tests of the
mix → train → eval chain and for throughput benchmarks. Their weights are random; they
learn what a few steps teach them and nothing else.

    from insta.testing import build_lms
    paths = build_lms("lms/", corpus=texts, size="small")  # {"t5": Path, "gpt2": Path}

``tiny`` models (32 wide, 2 layers) train in seconds on a CPU; ``small`` ones have the
shapes of t5-small (60M parameters with its vocabulary) and gpt2 (124M), so a step costs
what a step of those models costs at the same sequence lengths.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

SIZES: dict[str, dict[str, dict[str, int]]] = {
    "tiny": {"t5": {"d_model": 32, "d_ff": 64, "d_kv": 8, "num_layers": 2, "num_heads": 2},
             "gpt2": {"n_embd": 32, "n_layer": 2, "n_head": 2}},
    "small": {"t5": {"d_model": 512, "d_ff": 2048, "d_kv": 64, "num_layers": 6, "num_heads": 8},
              "gpt2": {"n_embd": 768, "n_layer": 12, "n_head": 12}},
}


def build_lms(dest: str | Path, corpus: Iterable[str], *, size: str = "tiny", vocab_size: int = 320,
              seed: int = 0) -> dict[str, Path]:
    """A T5 (seq2seq) and a GPT-2 (causal) of ``size`` sharing a byte-level BPE tokenizer
    trained on ``corpus`` (byte-level: any text encodes). Returns their folders under ``dest``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; available: {', '.join(SIZES)}")
    dims = SIZES[size]
    dest = Path(dest)
    torch.manual_seed(seed)
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "</s>", "<unk>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    t5 = T5ForConditionalGeneration(T5Config(
        vocab_size=len(tok), **dims["t5"], pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
        decoder_start_token_id=tok.pad_token_id))
    gpt2 = GPT2LMHeadModel(GPT2Config(
        vocab_size=len(tok), **dims["gpt2"], n_positions=1024, bos_token_id=tok.eos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    out = {}
    for name, model in (("t5", t5), ("gpt2", gpt2)):
        model.save_pretrained(dest / name)
        tok.save_pretrained(dest / name)
        out[name] = dest / name
    return out
