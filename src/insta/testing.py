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


def _llama_cpp_permute(weight, n_head: int):
    """The row order llama.cpp's converter gives the q/k projections of a Llama (rotary halves
    interleaved), which GGUF readers undo."""
    rows = weight.shape[0]
    return weight.reshape(n_head, 2, rows // n_head // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def build_tiny_gguf(dest: str | Path, corpus: Iterable[str], *, vocab_size: int = 320, seed: int = 0) -> tuple[Path, Path]:
    """A tiny random Llama written to a GGUF file with the ``gguf`` package's writer, as
    llama.cpp lays one out (names, q/k order, a BPE vocabulary with merges), and the same
    model as a Hugging Face folder for reference. Returns ``(gguf file, reference folder)``."""
    import gguf
    import numpy as np
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    dest = Path(dest)
    tok_dir = build_lms(dest / "tok", corpus, size="tiny", vocab_size=vocab_size, seed=seed)["gpt2"]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tok_dir)
    torch.manual_seed(seed)
    heads, kv_heads = 4, 2
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=256,
                         rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False,
                         bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model = LlamaForCausalLM(config).eval()
    ref = dest / "reference"
    model.save_pretrained(ref)
    tok.save_pretrained(ref)

    path = dest / "tiny-llama.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(10000.0)
    writer.add_rope_dimension_count(config.hidden_size // heads)
    writer.add_vocab_size(len(tok))
    backend = tok.backend_tokenizer
    vocab = backend.get_vocab(with_added_tokens=True)
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    merges = [" ".join(m) if isinstance(m, (list, tuple)) else m
              for m in __import__("json").loads(backend.to_str())["model"]["merges"]]
    specials = {tok.pad_token, tok.eos_token, tok.unk_token}
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL if t in specials else gguf.TokenType.NORMAL for t in tokens])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tok.eos_token_id)
    writer.add_eos_token_id(tok.eos_token_id)
    writer.add_pad_token_id(tok.pad_token_id)
    writer.add_add_bos_token(False)
    state = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    writer.add_tensor("token_embd.weight", state["model.embed_tokens.weight"])
    for i in range(config.num_hidden_layers):
        p = f"model.layers.{i}."
        names = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
                 "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
                 "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
                 "ffn_down": "mlp.down_proj"}
        for g, h in names.items():
            w = state[p + h + ".weight"]
            if g == "attn_q":
                w = _llama_cpp_permute(w, heads)
            elif g == "attn_k":
                w = _llama_cpp_permute(w, kv_heads)
            writer.add_tensor(f"blk.{i}.{g}.weight", np.ascontiguousarray(w))
    writer.add_tensor("output_norm.weight", state["model.norm.weight"])
    writer.add_tensor("output.weight", state["lm_head.weight"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path, ref
