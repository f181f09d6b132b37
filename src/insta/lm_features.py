"""Model-aware representations of examples, from the causal LM the user will train.

* ``hidden`` (RDS+, Ivison et al. 2025): the position-weighted mean of the model's last hidden
  states over the example's tokens (prompt and answer; weight of token t ∝ t), L2-normalised.
* ``grad`` (LESS, Xia et al. 2024): the gradient of the example's answer-token loss (mean
  cross-entropy over the answer tokens) with respect to LoRA parameters, randomly projected
  to ``proj_dim`` dimensions and L2-normalised. Source examples use the Adam update direction
  from a short LoRA warm-up on a random sample of the pool (``m / (sqrt(v) + eps)`` with the
  warm-up's moment estimates updated by the example's gradient); target examples use the
  plain gradient, at the same warmed-up checkpoint. LESS's recipe with one checkpoint.

Per-example gradients come from one batched backward pass: hooks on every LoRA matrix keep
its input and output gradient, and the per-example weight gradient is their outer product
summed over tokens (exact: padding gets no gradient, examples do not interact). They are
projected module by module with a sparse sign projection (a sparse Johnson-Lindenstrauss
transform: each parameter adds ±1/sqrt(s) to one coordinate in each of s blocks of the
output; unbiased for inner products), so no parameters × dimensions matrix ever exists:
memory is a few index arrays the size of the LoRA parameters.

Vectors are cached under the cache root by representation identity (model fingerprint,
lengths, LoRA shape, warm-up key, projection seed and size) and exact example text, and a
pool's vectors as one memory-mapped array: a second run over the same pool costs seconds.
The warm-up itself (adapter and Adam moments) is kept under ``CACHE/lm-warmup/<key>/``.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .cache import EmbeddingCache, cached_encode, cached_pool
from .config import FeatureConfig
from .errors import InstaError
from .examples import Example, sample
from .log import log

ProgressFn = Callable[[int, int], None]
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


def lm_identity(name: str, path: str) -> str:
    """A causal LM's cache identity: its name and a fingerprint of its files (a hub id: the id)."""
    from .encoder import _fingerprint_dir

    p = Path(path).expanduser()
    return f"{Path(name).name}@{_fingerprint_dir(p)}" if p.is_dir() else name


class CausalLM:
    """A causal LM loaded once for featurising: tokenisation as ``insta train`` does it
    (prompt, " " + answer, eos; the prompt cut from the left), batched forwards."""

    def __init__(self, name: str, *, device: str = "auto", max_length: int = 256, batch_size: int = 8):
        from .checks import resolve_device
        from .models import resolve_lm

        self.name = name
        self.path = resolve_lm(name)
        self.device = resolve_device(device)
        self.max_length = max_length
        self.batch_size = batch_size
        self.identity = lm_identity(name, self.path)
        self._loaded: tuple[Any, Any] | None = None

    def load(self):
        """(model, tokenizer), loaded on first use (a run served by the cache never loads it)."""
        if self._loaded is None:
            import warnings

            import torch
            from transformers.utils import logging as hf_logging

            from .models import load_model

            hf_logging.disable_progress_bar()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model, tok, seq2seq = load_model(self.path, for_training=True)  # as trained: an eos ends each answer
            if seq2seq:
                raise InstaError(f"model {self.name!r} is a seq2seq model; the model-aware representations (less, rds) "
                                 "need a causal LM (e.g. --lm smollm2)")
            dtype = torch.float32
            if self.device.startswith("cuda") and torch.cuda.is_bf16_supported():
                dtype = torch.bfloat16
            model.to(self.device, dtype=dtype).eval()
            self._loaded = (model, tok)
        return self._loaded

    def encode(self, examples: Sequence[Example]) -> list[tuple[list[int], int]]:
        """(token ids, number of prompt tokens) per example: the answer (and eos) always kept,
        the prompt cut from the left to fit ``max_length``, at least one prompt token."""
        _, tok = self.load()
        out = []
        for ex in examples:
            answer = tok(" " + ex.target.strip(), add_special_tokens=False)["input_ids"][: self.max_length - 2]
            answer = answer + [tok.eos_token_id]
            prompt = tok(ex.input, add_special_tokens=True)["input_ids"] or [tok.eos_token_id]
            prompt = prompt[-max(1, self.max_length - len(answer)):]
            out.append((prompt + answer, len(prompt)))
        return out

    def batches(self, examples: Sequence[Example]):
        """(positions, input_ids, attention_mask, answer mask) per batch, examples grouped by
        length (less padding; results are put back in order by the caller via positions)."""
        import torch

        encoded = self.encode(examples)
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
        pad = self.load()[1].pad_token_id or 0
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            width = max(len(encoded[i][0]) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            att = torch.zeros((len(idx), width), dtype=torch.long)
            answer = torch.zeros((len(idx), width), dtype=torch.bool)
            for row, i in enumerate(idx):
                seq, n_prompt = encoded[i]
                ids[row, :len(seq)] = torch.tensor(seq)
                att[row, :len(seq)] = 1
                answer[row, n_prompt:len(seq)] = True
            yield idx, ids.to(self.device), att.to(self.device), answer.to(self.device)


def _check_finite(vectors: np.ndarray, what: str, lm: CausalLM) -> np.ndarray:
    if not np.isfinite(vectors).all():
        bad = int((~np.isfinite(vectors).all(axis=1)).sum())
        raise InstaError(f"model {lm.name!r}: the {what} of {bad} example(s) are not finite (NaN or infinite): its "
                         "weights are damaged or overflow; check the model file, or use a float32 model")
    return vectors


class Representation:
    """A way of turning examples into vectors. ``prepare`` (once per pool: e.g. the LoRA
    warm-up), then ``pool_vectors`` (source examples, cached per pool) and
    ``query_vectors`` (target examples)."""

    name = "base"

    def __init__(self, cache: EmbeddingCache | None | bool = None):
        from .paths import cache_dir

        if cache is None or cache is True:
            cache = EmbeddingCache(cache_dir() / "embeddings.sqlite")
        self.cache: EmbeddingCache | None = cache or None
        self.computed = 0  # examples actually run through the model (not served from cache)
        self.seconds = 0.0  # spent computing them (a warm-up included where there is one)

    def identity(self, role: str) -> str:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"representation": self.name}

    def text(self, ex: Example) -> str:
        """The cache key text of an example under this representation."""
        return ex.text

    def prepare(self, examples: Sequence[Example], progress: ProgressFn | None = None) -> None:
        return None

    def ready(self) -> None:
        """Whatever featurising needs besides the model, made now (the gradients' warm-up)."""
        return None

    def remote(self) -> bool:
        """Are the pool's examples featurised on Ray Data?"""
        return False

    def compute(self, examples: Sequence[Example], role: str, progress: ProgressFn | None = None) -> np.ndarray:
        raise NotImplementedError

    def _vectors(self, examples: Sequence[Example], role: str, progress: ProgressFn | None, pool: bool) -> np.ndarray:
        by_text = {self.text(ex): ex for ex in examples}

        def compute(missing: list[str]) -> np.ndarray:
            start = time.perf_counter()
            chosen = [by_text[t] for t in missing]
            if pool and self.remote():
                from .distributed import ray_features

                self.ready()  # the warm-up is trained here, then read by every actor
                vecs = ray_features(self, chosen, role, actors=self.cfg.actors)
            else:
                vecs = self.compute(chosen, role, progress)
            self.computed += len(missing)
            self.seconds += time.perf_counter() - start
            return vecs

        texts = [self.text(ex) for ex in examples]
        encode = lambda ts: cached_encode(self.cache, self.identity(role), ts, compute, progress)  # noqa: E731
        return cached_pool(self.cache, self.identity(role), texts, encode, progress) if pool else encode(texts)

    def pool_vectors(self, examples: Sequence[Example], progress: ProgressFn | None = None) -> np.ndarray:
        return self._vectors(examples, "source", progress, pool=True)

    def query_vectors(self, examples: Sequence[Example], progress: ProgressFn | None = None) -> np.ndarray:
        return self._vectors(examples, "target", progress, pool=False)


class SentenceExamples(Representation):
    """Retrieval-of-Experts: sentence embeddings of the examples' raw inputs (the ``samples``
    method), through the embedder's own cache (vectors cached by text are shared with it)."""

    name = "sentence"

    def __init__(self, encoder=None):
        from .encoder import Encoder

        self.encoder = encoder or Encoder()
        self.computed = 0
        self.seconds = 0.0

    def text(self, ex: Example) -> str:
        return " ".join((ex.raw or ex.input).split())

    def describe(self) -> dict[str, Any]:
        return {"representation": self.name, **self.encoder.describe()}

    def pool_vectors(self, examples, progress=None):
        from .encoder import embed_pool

        return embed_pool(self.encoder, [self.text(ex) for ex in examples], progress=progress)

    def query_vectors(self, examples, progress=None):
        return self.encoder.encode([self.text(ex) for ex in examples], progress=progress)


class LMRepresentation(Representation):
    """A representation computed by a causal LM (loaded once, on first use)."""

    def __init__(self, cfg: FeatureConfig | None = None, *, lm: CausalLM | None = None, cache=None):
        super().__init__(cache)
        self.cfg = cfg or FeatureConfig()
        self.lm = lm or CausalLM(self.cfg.lm, device=self.cfg.device, max_length=self.cfg.max_length,
                                 batch_size=self.cfg.batch_size)

    def remote(self) -> bool:
        return self.cfg.engine == "ray"


class HiddenStates(LMRepresentation):
    """RDS+: position-weighted mean of the last hidden states (prompt and answer tokens)."""

    name = "hidden"

    def identity(self, role: str) -> str:
        return f"hidden:{self.lm.identity}:len{self.cfg.max_length}:posmean"  # the same for source and target

    def describe(self) -> dict[str, Any]:
        return {"representation": self.name, "lm": self.lm.name, "identity": self.identity("source"),
                "computed": self.computed, "seconds": round(self.seconds, 1)}

    def compute(self, examples, role, progress=None) -> np.ndarray:
        import torch

        model, _ = self.lm.load()
        backbone = model.get_base_model() if hasattr(model, "get_base_model") else model
        backbone = backbone.base_model
        out = np.zeros((len(examples), 0), dtype=np.float32)
        done = 0
        with torch.no_grad():
            for idx, ids, att, _ in self.lm.batches(examples):
                h = backbone(input_ids=ids, attention_mask=att).last_hidden_state.float()
                weights = torch.cumsum(att, dim=1).float() * att  # token t (1-based) weighs t; padding 0
                pooled = (h * weights.unsqueeze(-1)).sum(1) / weights.sum(1, keepdim=True)
                if out.shape[1] == 0:
                    out = np.zeros((len(examples), pooled.shape[1]), dtype=np.float32)
                out[idx] = pooled.cpu().numpy()
                done += len(idx)
                if progress:
                    progress(done, len(examples))
        return _check_finite(out, "hidden states", self.lm)


class SparseSignProjection:
    """A sparse Johnson-Lindenstrauss projection of a parameter vector to ``dim`` coordinates:
    the output is split into ``nnz`` blocks; each parameter adds ``±x/sqrt(nnz)`` to one
    coordinate of every block (coordinate and sign drawn from a generator seeded by ``seed``
    and the parameter's name, so a parameter's column never depends on the others).
    E[<Px, Py>] = <x, y>; the error's standard deviation is about
    sqrt((<x,y>² + |x|²|y|²) / dim). Memory: one int64 and one float per parameter and block."""

    def __init__(self, shapes: dict[str, int], dim: int, nnz: int = 4, seed: int = 0):
        import torch

        if dim % nnz:
            raise InstaError(f"the projection dimension {dim} must be a multiple of its {nnz} nonzeros")
        self.dim, self.nnz, self.seed = dim, nnz, seed
        block = dim // nnz
        self.index: dict[str, Any] = {}
        self.sign: dict[str, Any] = {}
        for name, n in shapes.items():
            digest = hashlib.sha256(f"{seed}\0{name}".encode()).digest()
            gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)
            offsets = (torch.arange(nnz, dtype=torch.long) * block).unsqueeze(1)
            self.index[name] = torch.randint(0, block, (nnz, n), generator=gen) + offsets
            self.sign[name] = (torch.randint(0, 2, (nnz, n), generator=gen).float() * 2 - 1) / math.sqrt(nnz)

    def add(self, out, name: str, values) -> None:
        """out (batch, dim) += P_name · values (batch, n): one parameter group's contribution."""
        index, sign = self.index[name].to(values.device), self.sign[name].to(values.device)
        for j in range(self.nnz):
            out.index_add_(1, index[j], values * sign[j])

    def project(self, vectors: dict[str, Any]):
        """The projection of a whole vector given as {parameter name: (batch, n) values}."""
        import torch

        first = next(iter(vectors.values()))
        out = torch.zeros((first.shape[0], self.dim), dtype=torch.float32, device=first.device)
        for name, values in vectors.items():
            self.add(out, name, values.float())
        return out


def _lora_modules(model) -> dict[str, Any]:
    """{parameter name: the nn.Linear holding it} for every LoRA matrix of a peft model."""
    import torch

    found = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and (".lora_A." in name + "." or ".lora_B." in name + "."):
            if module.weight.requires_grad:
                found[f"{name}.weight"] = module
    return found


class Gradients(LMRepresentation):
    """LESS: projected LoRA gradients of the answer loss, Adam-preconditioned for source
    examples, plain for target examples, at the checkpoint of a short LoRA warm-up."""

    name = "grad"

    def __init__(self, cfg: FeatureConfig | None = None, *, lm: CausalLM | None = None, cache=None):
        super().__init__(cfg, lm=lm, cache=cache)
        self.warmup_key: str | None = None
        self.warmup_info: dict[str, Any] = {}
        self._peft = None
        self._state: dict[str, dict[str, Any]] | None = None
        self._projection: SparseSignProjection | None = None

    # -- identity ----------------------------------------------------------------------------
    def identity(self, role: str) -> str:
        if self.warmup_key is None:
            raise RuntimeError("call prepare(pool examples) before featurising: the warm-up decides the checkpoint")
        c = self.cfg
        return (f"grad:{self.lm.identity}:len{c.max_length}:lora{c.lora_r}x{c.lora_alpha}:warmup{self.warmup_key}:"
                f"proj{c.proj_dim}x{c.sketch_nnz}s{c.proj_seed}:{'adam' if role == 'source' else 'sgd'}")

    def describe(self) -> dict[str, Any]:
        return {"representation": self.name, "lm": self.lm.name, "identity": self.identity("source"),
                "computed": self.computed, "seconds": round(self.seconds, 1), "warmup": self.warmup_info}

    # -- the warm-up -------------------------------------------------------------------------
    def _warmup_sample(self, examples: Sequence[Example]) -> list[Example]:
        return sample(list(examples), self.cfg.warmup_examples, self.cfg.seed, "warmup")

    def prepare(self, examples: Sequence[Example], progress: ProgressFn | None = None) -> None:
        """Train (or load from the cache) the LoRA warm-up on a random sample of the pool."""
        c = self.cfg
        chosen = self._warmup_sample(examples)
        if not chosen:
            raise InstaError("the pool has no examples to warm the LoRA adapter up on")
        h = hashlib.sha256(json.dumps({"lm": self.lm.identity, "len": c.max_length, "r": c.lora_r, "alpha": c.lora_alpha,
                                       "steps": c.warmup_steps, "lr": c.warmup_lr, "batch": c.batch_size, "seed": c.seed,
                                       "examples": [ex.text for ex in chosen]}, sort_keys=True).encode())
        self.warmup_key = h.hexdigest()[:16]
        self._chosen = chosen

    def ready(self) -> None:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._peft_model()

    def _warmup_dir(self) -> Path:
        from .paths import cache_dir

        return cache_dir() / "lm-warmup" / f"{Path(self.lm.name).name}-{self.warmup_key}"

    def _peft_model(self):
        """The LoRA-wrapped model at the warmed-up checkpoint, with the Adam moments (trained now
        when the cache does not hold them whole)."""
        if self._peft is not None:
            return self._peft
        import torch
        from peft import LoraConfig, get_peft_model

        model, _ = self.lm.load()
        torch.manual_seed(self.cfg.seed)
        peft_model = get_peft_model(model, LoraConfig(r=self.cfg.lora_r, lora_alpha=self.cfg.lora_alpha,
                                                      lora_dropout=0.0, target_modules="all-linear",
                                                      task_type="CAUSAL_LM"))
        modules = _lora_modules(peft_model)
        for name, m in modules.items():
            m.weight.data = m.weight.data.float()  # gradients and Adam moments in float32
        state = self._load_warmup(modules)
        if state is None:
            if not getattr(self, "_chosen", None):
                raise InstaError(f"the LoRA warm-up {self._warmup_dir()} is not there; a Ray worker reads it from the "
                                 "driver's cache root: give every worker that folder (INSTA_CACHE_DIR on shared storage)")
            state = self._train_warmup(peft_model, modules)
        self._peft, self._state = peft_model, state
        self._projection = SparseSignProjection({n: m.weight.numel() for n, m in modules.items()}, self.cfg.proj_dim,
                                                self.cfg.sketch_nnz, self.cfg.proj_seed)
        return peft_model

    def _load_warmup(self, modules) -> dict[str, dict[str, Any]] | None:
        from safetensors.torch import load_file

        where = self._warmup_dir()
        if not (where / "warmup.json").is_file():
            return None
        try:
            weights = load_file(str(where / "adapter.safetensors"))
            moments = load_file(str(where / "adam.safetensors"))
            info = json.loads((where / "warmup.json").read_text(encoding="utf-8"))
            state = {}
            for name, m in modules.items():
                w, avg, sq = weights[name], moments[f"{name}.exp_avg"], moments[f"{name}.exp_avg_sq"]
                if w.shape != m.weight.shape or avg.shape != w.shape or sq.shape != w.shape:
                    raise ValueError(f"{name} has shape {tuple(w.shape)}, the model's is {tuple(m.weight.shape)}")
                if not (w.isfinite().all() and avg.isfinite().all() and sq.isfinite().all() and (sq >= 0).all()):
                    raise ValueError(f"{name} holds values that are not finite")
                state[name] = {"weight": w, "exp_avg": avg, "exp_avg_sq": sq}
        except Exception as exc:  # noqa: BLE001 - any damage means: train the warm-up again
            log.warning("LoRA warm-up %s is unusable (%s): it is removed and trained again", where,
                        str(exc)[:200] or type(exc).__name__)
            import shutil

            shutil.rmtree(where, ignore_errors=True)
            return None
        for name, m in modules.items():
            m.weight.data.copy_(state[name]["weight"])
        self.warmup_info = info
        return state

    def _train_warmup(self, peft_model, modules) -> dict[str, dict[str, Any]]:
        """Adam on the LoRA matrices, ``warmup_steps`` batches cycling over the warm-up sample."""
        import torch
        from safetensors.torch import save_file

        from .io import atomic_dir

        c = self.cfg
        start = time.perf_counter()
        params = [m.weight for m in modules.values()]
        opt = torch.optim.Adam(params, lr=c.warmup_lr, betas=ADAM_BETAS, eps=ADAM_EPS)
        batches = [b for b in self.lm.batches(self._chosen)]
        gen = np.random.default_rng(c.seed)
        losses = []
        peft_model.train()
        for step in range(c.warmup_steps):
            if step % len(batches) == 0:
                order = gen.permutation(len(batches))
            _, ids, att, answer = batches[int(order[step % len(batches)])]
            per_example = self._answer_loss(peft_model, ids, att, answer)
            loss = per_example.mean()
            if not torch.isfinite(loss):
                raise InstaError(f"model {self.lm.name!r}: the warm-up loss is not finite at step {step + 1}; the model's "
                                 "weights are damaged or overflow")
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(round(loss.item(), 4))
        peft_model.eval()
        state = {}
        for name, m in modules.items():
            st = opt.state[m.weight]
            state[name] = {"weight": m.weight.detach().clone(), "exp_avg": st["exp_avg"].detach().clone(),
                           "exp_avg_sq": st["exp_avg_sq"].detach().clone()}
            m.weight.grad = None
        info = {"examples": len(self._chosen), "steps": c.warmup_steps, "batch_size": c.batch_size, "lr": c.warmup_lr,
                "lora_r": c.lora_r, "lora_alpha": c.lora_alpha, "losses": losses,
                "seconds": round(time.perf_counter() - start, 1), "lm": self.lm.name, "key": self.warmup_key}
        self.warmup_info = info
        try:
            with atomic_dir(self._warmup_dir(), "the LoRA warm-up") as tmp:
                save_file({n: s["weight"].contiguous().cpu() for n, s in state.items()}, str(tmp / "adapter.safetensors"))
                save_file({f"{n}.{k}": s[k].contiguous().cpu() for n, s in state.items() for k in ("exp_avg", "exp_avg_sq")},
                          str(tmp / "adam.safetensors"))
                (tmp / "warmup.json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
        except InstaError as exc:
            log.warning("%s: the LoRA warm-up is not kept (it is trained again next time)", exc)
        return state

    @staticmethod
    def _answer_loss(model, ids, att, answer):
        """Per-example mean cross-entropy over the answer tokens; only the positions that predict
        an answer token are projected onto the vocabulary."""
        import torch
        import torch.nn.functional as F

        lm = model.get_base_model() if hasattr(model, "get_base_model") else model
        hidden = lm.base_model(input_ids=ids, attention_mask=att).last_hidden_state
        predicts = answer[:, 1:]  # position t predicts token t + 1
        rows = torch.nonzero(predicts, as_tuple=True)
        logits = lm.get_output_embeddings()(hidden[:, :-1][rows]).float()
        ce = F.cross_entropy(logits, ids[:, 1:][rows], reduction="none")
        total = torch.zeros(ids.shape[0], dtype=ce.dtype, device=ce.device).index_add_(0, rows[0], ce)
        return total / predicts.sum(1).clamp(min=1)

    # -- per-example gradients ---------------------------------------------------------------
    def compute(self, examples, role, progress=None) -> np.ndarray:
        import warnings

        import torch

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = self._peft_model()
        modules = _lora_modules(model)
        saved: dict[str, Any] = {}
        out_rows = np.zeros((len(examples), self.cfg.proj_dim), dtype=np.float32)
        buffer: dict[str, Any] = {}
        adam = role == "source"
        beta1, beta2 = ADAM_BETAS

        def forward_hook(name):
            def hook(module, inputs, output):
                saved[name] = inputs[0].detach().float()
            return hook

        def backward_hook(name):
            def hook(module, grad_input, grad_output):
                g = torch.einsum("bto,bti->boi", grad_output[0].float(), saved.pop(name)).reshape(grad_output[0].shape[0], -1)
                if adam:
                    st = self._state[name]
                    avg = beta1 * st["exp_avg"].reshape(1, -1) + (1 - beta1) * g
                    sq = beta2 * st["exp_avg_sq"].reshape(1, -1) + (1 - beta2) * g * g
                    g = avg / (sq.sqrt() + ADAM_EPS)
                self._projection.add(buffer["out"], name, g)
            return hook

        handles = []
        for name, module in modules.items():
            handles.append(module.register_forward_hook(forward_hook(name)))
            handles.append(module.register_full_backward_hook(backward_hook(name)))
        done = 0
        try:
            for idx, ids, att, answer in self.lm.batches(examples):
                buffer["out"] = torch.zeros((len(idx), self.cfg.proj_dim), dtype=torch.float32, device=ids.device)
                model.zero_grad(set_to_none=True)
                with warnings.catch_warnings():  # "no inputs require gradients": the hooks need outputs' only
                    warnings.simplefilter("ignore", UserWarning)
                    self._answer_loss(model, ids, att, answer).sum().backward()
                out_rows[idx] = buffer["out"].cpu().numpy()
                done += len(idx)
                if progress:
                    progress(done, len(examples))
        finally:
            for h in handles:
                h.remove()
            saved.clear()
            model.zero_grad(set_to_none=True)
        return _check_finite(out_rows, "gradients", self.lm)

