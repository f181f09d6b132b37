"""T0's task clusters over promptsource (P3) entries.

Our own definition of the lists, from the T0 repository's ``t0/datasets.csv``
(bigscience-workshop/t-zero @ 7a699e3, Apache-2.0): ``T0_TRAIN`` is ``do_train == BASE``,
the T0+ additions are ``do_train == GPT_EVAL``, the T0++ additions ``do_train == SGLUE``,
``T0_EVAL`` is ``do_eval == BASE``. Cluster names are the T0 paper's. Keys are promptsource
template keys (``dataset`` or ``dataset/subset``).
"""

from __future__ import annotations

T0_TRAIN: dict[str, tuple[str, ...]] = {
    'closed_book_qa': ('kilt_tasks/hotpotqa', 'wiki_qa',),
    'extractive_qa': ('adversarial_qa/dbidaf', 'adversarial_qa/dbert', 'adversarial_qa/droberta', 'duorc/SelfRC', 'duorc/ParaphraseRC', 'ropes', 'quoref',),
    'multiple_choice_qa': ('cos_e/v1.11', 'cosmos_qa', 'dream', 'qasc', 'quail', 'quarel', 'quartz', 'sciq', 'social_i_qa', 'wiki_hop/original', 'wiqa',),
    'paraphrase_identification': ('glue/mrpc', 'glue/qqp', 'paws/labeled_final',),
    'sentiment': ('amazon_polarity', 'app_reviews', 'imdb', 'rotten_tomatoes', 'yelp_review_full',),
    'structure_to_text': ('common_gen', 'wiki_bio',),
    'summarization': ('cnn_dailymail/3.0.0', 'gigaword', 'multi_news', 'samsum', 'xsum',),
    'topic_classification': ('ag_news', 'dbpedia_14', 'trec',),
}

T0_EVAL: dict[str, tuple[str, ...]] = {
    'coreference_resolution': ('super_glue/wsc.fixed', 'winogrande/winogrande_xl',),
    'natural_language_inference': ('super_glue/cb', 'super_glue/rte', 'anli',),
    'sentence_completion': ('super_glue/copa', 'story_cloze/2016', 'hellaswag',),
    'word_sense_disambiguation': ('super_glue/wic',),
}

# Grouped by the csv's task_by_convention, renamed to the T0 cluster names above.
T0P_ADDITIONAL_TRAIN: dict[str, tuple[str, ...]] = {
    'closed_book_qa': ('ai2_arc/ARC-Challenge', 'ai2_arc/ARC-Easy', 'trivia_qa/unfiltered', 'web_questions',),
    'extractive_qa': ('squad_v2',),
    'multiple_choice_qa': ('openbookqa/main', 'race/high', 'race/middle', 'piqa',),
    'sentence_completion': ('hellaswag',),
}

T0PP_ADDITIONAL_TRAIN: dict[str, tuple[str, ...]] = {
    'coreference_resolution': ('super_glue/wsc.fixed',),
    'extractive_qa': ('super_glue/record',),
    'multiple_choice_qa': ('super_glue/boolq', 'super_glue/copa', 'super_glue/multirc',),
    'word_sense_disambiguation': ('super_glue/wic',),
}

BIAS_FAIRNESS_EVAL: tuple[str, ...] = ('crows_pairs', 'jigsaw_toxicity_pred', 'super_glue/axg', 'wino_bias/type1_anti', 'wino_bias/type2_anti', 'wino_bias/type1_pro', 'wino_bias/type2_pro',)


def _merge(*groups: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    out: dict[str, list[str]] = {}
    for g in groups:
        for cluster, keys in g.items():
            out.setdefault(cluster, []).extend(k for k in keys if k not in out.get(cluster, []))
    return {c: tuple(v) for c, v in out.items()}


T0P_TRAIN = _merge(T0_TRAIN, T0P_ADDITIONAL_TRAIN)
T0PP_TRAIN = _merge(T0P_TRAIN, T0PP_ADDITIONAL_TRAIN)

# Named selections of the p3 reader: name -> (description, cluster -> keys).
SELECTIONS: dict[str, tuple[str, dict[str, tuple[str, ...]]]] = {
    "t0-train": ("T0 training mixture (38 entries, 8 clusters)", T0_TRAIN),
    "t0-eval": ("T0 held-out evaluation (9 entries, 4 clusters)", T0_EVAL),
    "t0p-train": ("T0+ training mixture (T0 + GPT-3 eval datasets)", T0P_TRAIN),
    "t0pp-train": ("T0++ training mixture (T0+ + SuperGLUE)", T0PP_TRAIN),
    "bias-fairness": ("T0 bias and fairness evaluation", {"bias_fairness": BIAS_FAIRNESS_EVAL}),
}


def cluster_of() -> dict[str, str]:
    """Key -> T0 cluster, evaluation clusters taking precedence (e.g. COPA is sentence completion)."""
    out: dict[str, str] = {}
    for groups in (T0_EVAL, T0_TRAIN, T0P_ADDITIONAL_TRAIN, T0PP_ADDITIONAL_TRAIN, {"bias_fairness": BIAS_FAIRNESS_EVAL}):
        for cluster, keys in groups.items():
            for k in keys:
                out.setdefault(k, cluster)
    return out
