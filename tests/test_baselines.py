"""Baselines behind the common selector interface."""

import numpy as np
import pytest

from insta import Encoder, InstaError, Instruction, Target, Task, TaskPool, load_pool
from insta.baselines import AllSelector, BM25Selector, RandomSelector
from insta.example_select import SamplesSelector
from insta.selectors import make_selector, parse_method


def toy_pool():
    return TaskPool([
        Task("sent", [Instruction("Is this movie review positive or negative?"), Instruction("Rate the review.")], label="s"),
        Task("summ", [Instruction("Summarize the news article in one sentence.")], label="g"),
        Task("topic", [Instruction("Which topic is this news article about?")], label="c"),
        Task("nli", [Instruction("Does the premise entail the hypothesis?")], label="c"),
    ])


def test_method_registry():
    assert parse_method("insta") == ("insta", "max")
    assert parse_method("bm25:vote") == ("bm25", "vote")
    assert parse_method("insta", "mean") == ("insta", "mean")
    assert parse_method("random") == ("random", None)
    with pytest.raises(InstaError, match="unknown method 'bm52' \\(did you mean: bm25\\?\\); available: all, bm25, hybrid, hybrid-aligned-contrastive, hybrid-less, hybrid-rds, insta, insta-aligned-contrastive, insta-aligned-paper, less, random, rds, samples"):
        parse_method("bm52")
    with pytest.raises(InstaError, match="takes no aggregation"):
        parse_method("random:max")
    with pytest.raises(InstaError, match="unknown aggregation 'median'"):
        make_selector("insta:median")


def test_random_is_seeded_and_per_target():
    pool = toy_pool()
    a = RandomSelector(seed=1).fit(pool).select(Target("t", ["x"]), k=4).ids
    assert RandomSelector(seed=1).fit(pool).select(Target("t", ["x"]), k=4).ids == a
    orders = {tuple(RandomSelector(seed=s).fit(pool).select(Target("t", ["x"]), k=4).ids) for s in range(12)}
    assert len(orders) > 3
    assert sorted(a) == sorted(pool.ids)


def test_all_returns_every_candidate_in_pool_order():
    sel = AllSelector().fit(toy_pool()).select(Target("summ", ["x"]), k=1)
    assert sel.ids == ["sent", "topic", "nli"]


def test_bm25_lexical_match_and_explanation():
    pool = toy_pool()
    res = BM25Selector().fit(pool).select(Target("t", ["Summarize this news article."]), k=4)
    assert res.ids[0] == "summ" and res.ids[1] == "topic"  # 'news article' is shared with topic too
    assert res.results[0].match.measure == "bm25" and res.results[0].match.similarity > 0
    assert res.results[-1].score == 0.0
    # a query with only stopwords matches nothing, and still ranks deterministically
    empty = BM25Selector().fit(pool).select(Target("t", ["is the of a"]), k=4)
    assert [r.score for r in empty.results] == [0.0] * 4 and empty.ids == sorted(pool.ids)
    mean = BM25Selector(aggregate="mean").fit(pool).select(Target("t", ["positive review"]), k=1)
    assert mean.ids == ["sent"]


def test_samples_on_real_niv2_task_files(shared_data, tiny_model):
    pool = load_pool(f"niv2:{shared_data}/niv2?instances=40")
    enc = Encoder(str(tiny_model))
    sel = SamplesSelector(enc, per_task=20, per_target=8).fit(pool)
    assert len(sel._examples) == 20 * len(pool)
    copa = pool.get("task1393_superglue_copa_text_completion")
    (scores,) = sel.score_many([Target.from_task(copa)])
    assert scores.score.sum() == pytest.approx(1.0)  # each of the 8 target instances votes once
    assert scores.score[pool.ids.index(copa.id)] == 0.0  # never its own task
    result = sel.select(Target.from_task(copa), k=3)
    assert copa.id not in result.ids
    assert result.results[0].match.measure == "cosine (instances)"
    assert result.results[0].match.source_instruction  # the nearest source instance text


def test_samples_needs_instances(shared_data, tiny_model):
    enc = Encoder(str(tiny_model))
    with pytest.raises(InstaError, match="needs examples of the pool's tasks"):
        SamplesSelector(enc).fit(toy_pool())  # no instances (task files read on demand do have them)
    pool = load_pool(f"niv2:{shared_data}/niv2?instances=5")
    sel = SamplesSelector(enc).fit(pool)
    with pytest.raises(InstaError, match="needs examples of the target 'target'"):
        sel.select(Target.from_text("classify"), k=3)


def test_hybrid_fuses_the_two_rankings_by_reciprocal_rank(tiny_model):
    from insta.baselines import HybridSelector
    from insta.select import InstructionSelector

    pool = toy_pool()
    target = Target("t", ["Summarize this news article."])
    encoder = Encoder(str(tiny_model), cache=False)
    hybrid = HybridSelector(encoder).fit(pool)
    (scores,) = hybrid.score_many([target])
    (dense_scores,) = InstructionSelector(encoder).fit(pool).score_many([target])
    (lexical_scores,) = BM25Selector().fit(pool).score_many([target])
    # competition ranks: 1 + how many tasks score strictly higher (ties share a rank)
    rank_d = {tid: 1 + int((dense_scores.score > dense_scores.score[i]).sum()) for i, tid in enumerate(pool.ids)}
    rank_l = {tid: 1 + int((lexical_scores.score > lexical_scores.score[i]).sum()) for i, tid in enumerate(pool.ids)}
    for i, tid in enumerate(pool.ids):  # exactly 1/(60 + rank) summed over the two sides
        assert scores.score[i] == pytest.approx(1 / (60 + rank_d[tid]) + 1 / (60 + rank_l[tid]))
    sel = hybrid.select(target, k=4)
    top = sel.ids[0]
    assert sel.method == "hybrid" and sel.results[0].score == pytest.approx(scores.score.max(), abs=1e-6)
    match = sel.results[0].match
    assert match.measure == "rrf(cosine, bm25)" and [p["measure"] for p in match.parts] == ["cosine", "bm25"]
    assert [p["rank"] for p in match.parts] == [rank_d[top], rank_l[top]]
    assert make_selector("hybrid:mean", encoder=encoder).aggregate == "mean"
    # no lexical match at all: BM25 ranks every task first, so the fusion follows the embedder alone
    (stop,) = hybrid.score_many([Target("s", ["the of and a to"])])
    (dense_only,) = InstructionSelector(encoder).fit(pool).score_many([Target("s", ["the of and a to"])])
    assert list(np.argsort(-stop.score, kind="stable")) == list(np.argsort(-dense_only.score, kind="stable"))
