"""Zero-shot evaluation of a trained model on target tasks.

Metrics, as the INSTA/T0/Tk-Instruct papers use them:

* ``rank``: rank classification — score every answer choice by the summed log-likelihood
  of its tokens given the input, pick the best; accuracy over examples that have choices;
* ``rouge``: ROUGE-L F-measure (rouge-score, stemming on) of the greedy generation against
  the best-matching reference;
* ``em``: exact match after SQuAD-style normalisation (lower case, no punctuation, no
  articles, single spaces);
* ``loglik``: the summed log-likelihood of the gold answer (the best-scoring gold choice, or
  the first reference), averaged over examples: continuous, so far less noisy than accuracy
  on small evaluations. Rank classification reports it too, at no extra cost;
* ``query_loss`` (reported beside ``loglik``): the mean negative log-likelihood per gold-answer
  token, i.e. the summed NLL of every example's gold answer divided by their summed token
  count, so that targets with long answers do not dominate a mean over targets.

``auto`` uses ``rank`` for a task whose examples carry choices and ``rouge`` + ``em`` otherwise.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import InstaError

METRICS = ("auto", "rank", "rouge", "em", "loglik")


def normalize_answer(text: str) -> str:
    text = "".join(ch for ch in str(text).lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, references: Sequence[str]) -> float:
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(r) for r in references))


_SCORER = None


def rouge_l(prediction: str, references: Sequence[str]) -> float:
    """ROUGE-L F-measure against the best reference (rouge-score with the Porter stemmer)."""
    global _SCORER
    if _SCORER is None:
        from rouge_score import rouge_scorer

        _SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return max((_SCORER.score(str(r), str(prediction))["rougeL"].fmeasure for r in references), default=0.0)


@dataclass
class TaskResult:
    task: str
    n: int
    metrics: dict[str, float]
    examples: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class EvalResult:
    model: str
    tasks: list[TaskResult]

    @property
    def average(self) -> dict[str, float]:
        names = sorted({m for t in self.tasks for m in t.metrics})
        return {m: sum(t.metrics[m] for t in self.tasks if m in t.metrics) / sum(m in t.metrics for t in self.tasks)
                for m in names}

    def to_dict(self, with_examples: bool = False) -> dict[str, Any]:
        tasks = [asdict(t) if with_examples else {k: v for k, v in asdict(t).items() if k != "examples"} for t in self.tasks]
        return {"model": self.model, "average": self.average, "tasks": tasks}


class Scorer:
    """A loaded seq2seq or causal LM that can score choices and generate."""

    def __init__(self, model_path: str, *, device: str = "auto", max_input_length: int = 768,
                 max_new_tokens: int = 64, batch_size: int = 8):
        from .checks import resolve_device
        from .models import load_model, supports_logits_to_keep

        self.device = resolve_device(device)
        self.model, self.tokenizer, self.seq2seq = load_model(model_path, for_training=False)
        self.model.to(self.device).eval()
        self.max_input_length = max_input_length
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        if not self.seq2seq:
            self.tokenizer.padding_side = "left"  # generation continues from the right edge
        self.logits_to_keep = not self.seq2seq and supports_logits_to_keep(self.model)
        # transformers >= 5.x names the key/value cache 'cache' (formerly 'past_key_values')
        import inspect

        self._cache_name = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"

    def _encode(self, texts: Sequence[str]):
        return self.tokenizer(list(texts), return_tensors="pt", padding=True, truncation=True,
                              max_length=self.max_input_length).to(self.device)

    def loglik(self, prompt: str, continuations: Sequence[str]) -> list[float]:
        """Summed log-probability of each continuation's tokens given the prompt."""
        import torch

        tok = self.tokenizer
        with torch.no_grad():
            if not self.seq2seq:
                return self._causal_loglik(prompt, continuations)
            enc = self._encode([prompt] * len(continuations))
            lab = tok(list(continuations), return_tensors="pt", padding=True).input_ids.to(self.device)
            lab[lab == tok.pad_token_id] = -100
            logp = torch.log_softmax(self.model(**enc, labels=lab).logits.float(), dim=-1)
            mask = lab != -100
            picked = logp.gather(-1, lab.clamp(min=0).unsqueeze(-1)).squeeze(-1)
            return (picked * mask).sum(-1).tolist()

    def _causal_loglik(self, prompt: str, continuations: Sequence[str]) -> list[float]:
        """The prompt runs once; its key/value cache is shared by every continuation, and
        only the positions that predict a continuation token are projected onto the vocabulary."""
        import torch

        tok = self.tokenizer
        p_ids = tok(prompt, truncation=True, max_length=self.max_input_length).input_ids
        conts = [tok(" " + c.strip(), add_special_tokens=False).input_ids or [tok.eos_token_id] for c in continuations]
        ids = torch.tensor([p_ids], device=self.device)
        if not self.logits_to_keep:  # older architectures: one full forward per continuation
            scores = []
            for c in conts:
                full = torch.tensor([p_ids + c], device=self.device)
                logp = torch.log_softmax(self.model(input_ids=full).logits[0, len(p_ids) - 1:-1].float(), dim=-1)
                scores.append(float(logp.gather(-1, torch.tensor(c, device=self.device).unsqueeze(-1)).sum()))
            return scores
        out = self.model(input_ids=ids, use_cache=True, logits_to_keep=1)
        first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
        cache_name = self._cache_name
        scores = [float(first[c[0]]) for c in conts]
        width = max(len(c) for c in conts) - 1
        if width > 0:  # the rest of each continuation, all at once over the shared prompt cache
            cache = getattr(out, cache_name)
            cache.batch_repeat_interleave(len(conts))
            pad = tok.pad_token_id
            rest = torch.tensor([c[:-1] + [pad] * (width + 1 - len(c)) for c in conts], device=self.device)
            att = torch.ones(len(conts), len(p_ids) + width, dtype=torch.long, device=self.device)
            for i, c in enumerate(conts):
                att[i, len(p_ids) + len(c) - 1:] = 0
            logits = self.model(input_ids=rest, attention_mask=att, **{cache_name: cache}).logits
            logp = torch.log_softmax(logits.float(), dim=-1)
            for i, c in enumerate(conts):
                for j, token in enumerate(c[1:]):
                    scores[i] += float(logp[i, j, token])
        return scores

    def n_tokens(self, continuation: str) -> int:
        """How many tokens :meth:`loglik` scores for ``continuation`` (as it tokenizes it)."""
        tok = self.tokenizer
        if self.seq2seq:
            return len(tok(continuation).input_ids)
        return len(tok(" " + continuation.strip(), add_special_tokens=False).input_ids) or 1

    def generate(self, prompts: Sequence[str]) -> list[str]:
        import torch

        out: list[str] = []
        for i in range(0, len(prompts), self.batch_size):
            enc = self._encode(prompts[i : i + self.batch_size])
            with torch.no_grad():
                gen = self.model.generate(**enc, max_new_tokens=self.max_new_tokens, do_sample=False,
                                          pad_token_id=self.tokenizer.pad_token_id)
            if not self.seq2seq:
                gen = gen[:, enc["input_ids"].shape[1]:]
            out.extend(t.strip() for t in self.tokenizer.batch_decode(gen, skip_special_tokens=True))
        return out


def evaluate_examples(scorer: Scorer, rows: Sequence[dict[str, Any]], metric: str = "auto", *,
                      progress: Callable[[int, int], None] | None = None) -> list[TaskResult]:
    """Per-task metrics over rows with ``task``, ``input``, ``target``, ``choices`` and
    optionally ``references`` (all acceptable outputs; default: the target)."""
    if metric not in METRICS:
        raise InstaError(f"unknown metric {metric!r}; available: {', '.join(METRICS)}")
    by_task: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_task.setdefault(r["task"], []).append(r)
    results = []
    done = 0
    for task, items in by_task.items():
        has_choices = all(r.get("choices") for r in items)
        use = ({"rank"} if has_choices else {"rouge", "em"}) if metric == "auto" else {metric}
        if "rank" in use and not has_choices:
            raise InstaError(f"task {task!r} has examples without answer choices; --metric rank needs them (use rouge or em)")
        metrics: dict[str, list[float]] = {m: [] for m in use}
        tokens: list[int] = []  # per example with a gold log-likelihood: its gold answer's tokens
        examples = []
        preds = scorer.generate([r["input"] for r in items]) if use & {"rouge", "em"} else [None] * len(items)
        for r, pred in zip(items, preds):
            refs = list(r.get("references") or [r["target"]])
            ex: dict[str, Any] = {"input": r["input"], "target": r["target"]}
            if "rank" in use:
                scores = scorer.loglik(r["input"], r["choices"])
                choice = r["choices"][max(range(len(scores)), key=scores.__getitem__)]
                gold = {normalize_answer(x) for x in refs}
                metrics["rank"].append(float(normalize_answer(choice) in gold))
                gold_scores = [(sc, c) for c, sc in zip(r["choices"], scores) if normalize_answer(c) in gold]
                if gold_scores:
                    best, text = max(gold_scores, key=lambda x: x[0])
                    metrics.setdefault("loglik", []).append(best)
                    tokens.append(scorer.n_tokens(text))
                    ex["gold_loglik"], ex["gold_tokens"] = best, tokens[-1]
                ex["choice"] = choice
                ex["scores"] = dict(zip(r["choices"], scores))
            elif "loglik" in use:
                metrics["loglik"].append(scorer.loglik(r["input"], [refs[0]])[0])
                tokens.append(scorer.n_tokens(refs[0]))
                ex["gold_loglik"], ex["gold_tokens"] = metrics["loglik"][-1], tokens[-1]
            if pred is not None:
                ex["prediction"] = pred
                if "rouge" in use:
                    metrics["rouge"].append(rouge_l(pred, refs))
                if "em" in use:
                    metrics["em"].append(exact_match(pred, refs))
            examples.append(ex)
            done += 1
            if progress:
                progress(done, len(rows))
        names = {"rank": "accuracy", "rouge": "rougeL", "em": "exact_match", "loglik": "gold_loglik"}
        summary = {names[m]: sum(v) / len(v) for m, v in metrics.items() if v}
        if tokens:
            summary["query_loss"] = -sum(metrics["loglik"]) / sum(tokens)
        results.append(TaskResult(task=task, n=len(items), examples=examples, metrics=summary))
    return results
