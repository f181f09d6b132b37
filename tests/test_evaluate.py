"""Evaluation metrics against hand-computed values, and log-likelihood scoring of real (tiny) models."""

from __future__ import annotations

import math

import pytest

from insta.errors import InstaError
from insta.evaluate import Scorer, evaluate_examples, exact_match, normalize_answer, rouge_l


def test_rouge_l_by_hand():
    # LCS of "the cat sat on the mat" / "the cat was on the mat" = "the cat on the mat": P = R = 5/6
    assert rouge_l("the cat sat on the mat", ["the cat was on the mat"]) == pytest.approx(5 / 6)
    # best reference counts; stemming makes "cats" match "cat"
    assert rouge_l("the cat sat on the mat", ["a dog", "the cat was on the mat"]) == pytest.approx(5 / 6)
    assert rouge_l("cats", ["cat"]) == pytest.approx(1.0)
    # "a b c d" vs "a c": LCS 2, P = 2/4, R = 2/2, F = 2PR/(P+R) = 2/3
    assert rouge_l("a b c d", ["a c"]) == pytest.approx(2 / 3)
    assert rouge_l("", ["something"]) == 0.0


def test_exact_match_normalises_like_squad():
    assert normalize_answer("  The  Answer!! ") == "answer"
    assert exact_match("The Answer!", ["answer"]) == 1.0
    assert exact_match("an answer", ["no", "Answer."]) == 1.0
    assert exact_match("answers", ["answer"]) == 0.0


class KnownScorer:
    """Prefers the choice listed in ``favourite`` for each prompt; generates a fixed text."""

    def __init__(self, favourite: dict[str, str], generation: str = "the cat was on the mat"):
        self.favourite = favourite
        self.generation = generation

    def loglik(self, prompt, continuations):
        return [0.0 if c == self.favourite[prompt] else -5.0 for c in continuations]

    def generate(self, prompts):
        return [self.generation for _ in prompts]

    def n_tokens(self, text):  # one token per character: the per-token loss is checkable by hand
        return len(text)


def test_rank_classification_and_generation_metrics_by_hand():
    rows = [
        {"task": "cls", "input": "p1", "target": "True", "choices": ["False", "True"]},
        {"task": "cls", "input": "p2", "target": "False", "choices": ["False", "True"]},
        {"task": "cls", "input": "p3", "target": "true", "choices": ["False", "True"]},  # normalised match
        {"task": "gen", "input": "g1", "target": "the cat sat on the mat", "choices": []},
        {"task": "gen", "input": "g2", "target": "x", "references": ["x", "The cat was on the mat."], "choices": []},
    ]
    scorer = KnownScorer({"p1": "True", "p2": "True", "p3": "True"})
    results = {r.task: r for r in evaluate_examples(scorer, rows, "auto")}
    # p2 picked True, gold False; the gold answer's log-likelihood comes free with the ranking: 0, -5, 0
    # query loss: the summed NLL per gold-answer token (True 4, False 5, True 4 characters here)
    assert results["cls"].metrics == {"accuracy": pytest.approx(2 / 3), "gold_loglik": pytest.approx(-5 / 3),
                                      "query_loss": pytest.approx(5 / 13)}
    assert [e["choice"] for e in results["cls"].examples] == ["True", "True", "True"]
    assert results["gen"].metrics == {"rougeL": pytest.approx((5 / 6 + 1) / 2), "exact_match": pytest.approx(0.5)}
    assert evaluate_examples(scorer, rows[3:], "em")[0].metrics == {"exact_match": 0.5}
    # loglik alone scores the first reference only (KnownScorer: 0 for the favourite, else -5)
    assert evaluate_examples(scorer, rows[:2], "loglik")[0].metrics == {"gold_loglik": pytest.approx(-2.5),
                                                                       "query_loss": pytest.approx(5 / 9)}
    with pytest.raises(InstaError, match="task 'gen' has examples without answer choices; --metric rank needs them"):
        evaluate_examples(scorer, rows, "rank")
    with pytest.raises(InstaError, match="unknown metric 'bleu'; available: auto, rank, rouge, em, loglik"):
        evaluate_examples(scorer, rows, "bleu")


@pytest.mark.parametrize("kind", ["t5", "gpt2"])
def test_loglik_is_the_summed_token_log_probability(tiny_lms, kind):
    import torch

    scorer = Scorer(str(tiny_lms[kind]), device="cpu")
    tok, model = scorer.tokenizer, scorer.model
    prompt, choices = "Is the sky blue? Answer:", ["yes", "no way", "perhaps it is, perhaps not"]
    got = scorer.loglik(prompt, choices)
    for choice, value in zip(choices, got):
        with torch.no_grad():
            if kind == "t5":
                enc = tok(prompt, return_tensors="pt")
                labels = tok(choice, return_tensors="pt").input_ids
                logp = torch.log_softmax(model(**enc, labels=labels).logits[0], -1)
                want = sum(logp[i, t].item() for i, t in enumerate(labels[0].tolist()))
            else:
                p = tok(prompt).input_ids
                c = tok(" " + choice, add_special_tokens=False).input_ids
                logp = torch.log_softmax(model(input_ids=torch.tensor([p + c])).logits[0], -1)
                want = sum(logp[len(p) + i - 1, t].item() for i, t in enumerate(c))
        assert value == pytest.approx(want, abs=1e-4)
        assert value < 0 and math.isfinite(value)
