"""Selection: aggregation math on hand-made embeddings, and real rankings with the packaged MiniLM."""

import numpy as np
import pytest

from insta import Exclusions, InstaError, Instruction, InstructionSelector, Target, Task, TaskPool, load_pool
from insta.encoder import Embedder


class FixedEncoder:
    """An embedder whose vectors are given by hand (no model), to check the arithmetic."""

    def __init__(self, vectors):
        self.vectors = {k: np.asarray(v, dtype=np.float32) / np.linalg.norm(v) for k, v in vectors.items()}

    def encode(self, texts, progress=None):
        return np.stack([self.vectors[t] for t in texts])

    def describe(self):
        return {"model": "fixed vectors"}


def test_a_plain_class_is_an_embedder():
    assert isinstance(FixedEncoder({}), Embedder)
    with pytest.raises(TypeError, match="abstract"):
        from insta.select import Selector

        Selector()


def pool_of(**tasks):
    return TaskPool([Task(id=k, instructions=[Instruction(t) for t in v[0]], label=v[1]) for k, v in tasks.items()])


@pytest.fixture()
def toy():
    # unit vectors in 2-D at known angles: cos with the target e1 = x-coordinate
    enc = FixedEncoder({
        "T": [1, 0], "T2": [0, 1],
        "a1": [0.9, np.sqrt(1 - 0.81)], "a2": [0.1, np.sqrt(1 - 0.01)],
        "b1": [0.8, 0.6], "b2": [0.7, np.sqrt(1 - 0.49)],
        "c1": [0.3, np.sqrt(1 - 0.09)],
    })
    pool = pool_of(A=(["a1", "a2"], "x"), B=(["b1", "b2"], "y"), C=(["c1"], "x"))
    return enc, pool


def test_max_mean_vote_hand_computed(toy):
    enc, pool = toy
    target = Target("t", ["T"])
    by_max = InstructionSelector(enc, aggregate="max").fit(pool).select(target, k=3)
    assert by_max.ids == ["A", "B", "C"]
    assert [r.score for r in by_max.results] == pytest.approx([0.9, 0.8, 0.3], abs=1e-6)
    assert by_max.results[0].match.source_instruction == "a1" and by_max.results[0].match.similarity == pytest.approx(0.9)

    by_mean = InstructionSelector(enc, aggregate="mean").fit(pool).select(target, k=3)
    assert by_mean.ids == ["B", "A", "C"]  # B: (0.8+0.7)/2 = 0.75 beats A: (0.9+0.1)/2 = 0.5
    assert [r.score for r in by_mean.results] == pytest.approx([0.75, 0.5, 0.3], abs=1e-6)

    # vote with depth 2: the two closest source instructions are a1 (A) and b1 (B): one vote each
    by_vote = InstructionSelector(enc, aggregate="vote", vote_depth=2).fit(pool).select(target, k=3)
    assert by_vote.ids == ["A", "B", "C"]  # tie on votes broken by best cosine
    assert [r.score for r in by_vote.results] == pytest.approx([0.5, 0.5, 0.0])
    # depth 3 adds b2 -> B has 2 of 3 votes
    by_vote3 = InstructionSelector(enc, aggregate="vote", vote_depth=3).fit(pool).select(target, k=3)
    assert by_vote3.ids == ["B", "A", "C"]
    assert by_vote3.results[0].score == pytest.approx(2 / 3)


def test_several_target_instructions_and_first_n(toy):
    enc, pool = toy
    sel = InstructionSelector(enc, aggregate="max").fit(pool)
    both = sel.select(Target("t", ["T", "T2"]), k=3)
    # against T2 (the y axis) a2 has cosine sqrt(0.99): A wins with the T2 pair
    assert both.ids[0] == "A"
    assert both.results[0].match.target_instruction == "T2"
    assert both.results[0].match.source_instruction == "a2"
    assert both.results[0].score == pytest.approx(np.sqrt(0.99), abs=1e-6)
    first = sel.select(Target("t", ["T", "T2"]), k=3, n_instructions=1)
    assert first.target.instructions == ["T"] and first.results[0].match.target_instruction == "T"
    mean_both = InstructionSelector(enc, aggregate="mean").fit(pool).select(Target("t", ["T", "T2"]), k=1)
    b_mean = (0.8 + 0.6 + 0.7 + np.sqrt(0.51)) / 4
    a_mean = (0.9 + np.sqrt(0.19) + 0.1 + np.sqrt(0.99)) / 4
    assert mean_both.ids == ["B"] and mean_both.results[0].score == pytest.approx(max(a_mean, b_mean), abs=1e-6)


def test_ties_are_broken_deterministically_by_id():
    enc = FixedEncoder({"T": [1, 0], "x": [0.5, np.sqrt(0.75)]})
    pool = pool_of(zeta=(["x"], None), alpha=(["x"], None), mid=(["x"], None))
    sel = InstructionSelector(enc).fit(pool).select(Target("t", ["T"]), k=3)
    assert sel.ids == ["alpha", "mid", "zeta"]


def test_exclusions_target_itself_ids_patterns_labels_siblings(toy):
    enc, pool = toy
    sel = InstructionSelector(enc).fit(pool)
    assert sel.select(Target("A", ["T"]), k=3).ids == ["B", "C"]  # the target itself never appears
    assert sel.select(Target("t", ["T"]), k=3, exclusions=Exclusions(ids=["B"])).ids == ["A", "C"]
    assert sel.select(Target("t", ["T"]), k=3, exclusions=Exclusions(patterns=["[AB]"])).ids == ["C"]
    assert sel.select(Target("t", ["T"]), k=3, exclusions=Exclusions(labels=["x"])).ids == ["B"]
    sib_pool = TaskPool([Task("d/1", [Instruction("a1")], dataset="d"), Task("d/2", [Instruction("b1")], dataset="d"),
                         Task("e", [Instruction("c1")], dataset="e")])
    sel2 = InstructionSelector(enc).fit(sib_pool)
    target = Target("d/1", ["T"], dataset="d")
    assert sel2.select(target, k=3).ids == ["d/2", "e"]
    assert sel2.select(target, k=3, exclusions=Exclusions(siblings=True)).ids == ["e"]
    with pytest.raises(InstaError, match="every task of pool is excluded"):
        sel.select(Target("t", ["T"]), k=1, exclusions=Exclusions(patterns=["*"]))


def test_k_validation_and_k_larger_than_pool(toy):
    enc, pool = toy
    sel = InstructionSelector(enc).fit(pool)
    for bad in (0, -3):
        with pytest.raises(InstaError, match="k must be a positive integer"):
            sel.select(Target("t", ["T"]), k=bad)
    big = sel.select(Target("t", ["T"]), k=10)
    assert big.ids == ["A", "B", "C"]
    assert big.warnings == ["k=10 is larger than the 3 candidate tasks; returning all of them"]


def test_unknown_aggregation_lists_the_available_ones(toy):
    with pytest.raises(InstaError, match="unknown aggregation 'median' \\(did you mean: mean\\?\\); available: max, mean, vote"):
        InstructionSelector(toy[0], aggregate="median")


def test_blank_target_instruction():
    with pytest.raises(InstaError, match="target instruction is empty"):
        Target.from_text("   ")


# ------------------------------------------------------------------ real rankings (packaged MiniLM)

@pytest.mark.slow
def test_sentiment_instruction_ranks_sentiment_datasets_first(p3, minilm_encoder):
    pool = load_pool("p3:t0-train")
    sel = InstructionSelector(minilm_encoder).fit(pool)
    result = sel.select(Target.from_text("Is the sentiment of this movie review positive or negative?"), k=5)
    assert [r.label for r in result.results] == ["sentiment"] * 5
    summ = sel.select(Target.from_text("Write a one-sentence summary of the news article."), k=3)
    assert [r.label for r in summ.results] == ["summarization"] * 3
    topic = sel.select(Target.from_text("Which category does this text belong to?"), k=2)
    assert [r.label for r in topic.results] == ["topic_classification"] * 2
    # surface words pull too: "news article" puts multi_news (summarization) above ag_news here
    news = sel.select(Target.from_text("What is the topic of this news article: world, sports, business or science?"), k=2)
    assert "ag_news" in news.ids


@pytest.mark.slow
def test_t0_heldout_targets_against_t0_train(p3, minilm_encoder):
    """Batch selection for real targets: the T0 held-out datasets (all their templates) against the T0 train pool."""
    train = load_pool("p3:t0-train")
    targets = [Target.from_task(t) for t in load_pool("p3:t0-eval")]
    sels = InstructionSelector(minilm_encoder).fit(train).select_many(targets, k=5)
    by_id = {s.target.id: s for s in sels}
    assert set(by_id) == {t.id for t in targets}
    for s in sels:
        assert len(s.results) == 5 and not set(s.ids) & {s.target.id}
        assert s.results[0].score >= s.results[-1].score
    # RTE's templates ("... Yes or no?") match paraphrase identification ones best
    assert any(r.label == "paraphrase_identification" for r in by_id["super_glue/rte"].results)


@pytest.mark.slow
def test_niv2_table_rankings(shared_data, minilm_encoder):
    table = f"{shared_data}/niv2/tasks.jsonl"
    full = InstructionSelector(minilm_encoder).fit(load_pool(table))
    res = full.select(Target.from_text("Decide whether the hypothesis sentence is entailed by the premise sentence."), k=10)
    labels = [r.label for r in res.results]
    assert labels.count("Textual Entailment") >= 6, labels
    # every Textual Entailment task is in the default *test* split: the train pool has none to offer
    train = InstructionSelector(minilm_encoder).fit(load_pool(f"{table}?where=split_default:train"))
    res = train.select(Target.from_text("Given a product review, classify its sentiment as positive or negative."), k=10)
    assert [r.label for r in res.results] == ["Sentiment Analysis"] * 10


@pytest.mark.slow
def test_bbh_targets_find_their_bigbench_parents(shared_data, minilm_encoder):
    bb = load_pool(f"jsonl:{shared_data}/bigbench/tasks.jsonl?id=task&instruction=description&where=level:task&skip_empty=true")
    bbh = load_pool(f"{shared_data}/bbh/tasks.jsonl")
    sel = InstructionSelector(minilm_encoder).fit(bb)
    hits = 0
    # BBH names equal their parents' ids, and a target's own id is always excluded: rename the targets
    sels = sel.select_many([Target(f"bbh/{t.id}", t.texts) for t in bbh], k=5)
    for task, s in zip(bbh, sels):
        hits += task.meta["bigbench_task"] in s.ids
    assert hits >= 18, f"only {hits}/27 BBH tasks find their BIG-bench parent in the top 5"


@pytest.mark.slow
def test_niv2_task_files_bbh_target(shared_data, minilm_encoder):
    pool = load_pool(f"niv2:{shared_data}/niv2")
    sel = InstructionSelector(minilm_encoder).fit(pool)
    res = sel.select(Target.from_text("Solve the grade school math word problem."), k=5)
    assert any("gsm" in i or "svamp" in i or "arithmetic" in i for i in res.ids), res.ids


def test_vote_counts_only_the_votes_cast_for_candidates():
    """The target's own task (excluded) shares its instructions: its rows must not take the
    votes. With them, each target instruction's top-2 wastes one vote on the target itself and
    A (best cosine) wins a 1-1 tie; among the candidates, B gets 3 votes of 4."""
    enc = FixedEncoder({"q1": [1, 0], "q2": [0, 1], "a1": [0.9, 0.43589], "b1": [0.8, 0.6], "b2": [0.6, 0.8]})
    pool = pool_of(t=(["q1", "q2"], "x"), A=(["a1"], "y"), B=(["b1", "b2"], "y"))
    target = Target.from_task(pool.get("t"))
    sel = InstructionSelector(enc, aggregate="vote", vote_depth=2).fit(pool).select(target, k=2)
    assert [(r.task_id, r.score) for r in sel.results] == [("B", 0.75), ("A", 0.25)]
    from insta.baselines import HybridSelector  # the fused method's vote side too
    hybrid = HybridSelector(enc, aggregate="vote").fit(pool)
    assert [r.task_id for r in hybrid.select(target, k=2).results] == ["B", "A"]
