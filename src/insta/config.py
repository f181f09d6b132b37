"""The settings of the chain's steps (alignment, mixture, training) as checked dataclasses, in
one light module: the CLI takes its option defaults from them without importing the steps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .checks import check_choice, check_fields, check_float, check_int, option
from .errors import unknown
from .registry import Registry

#: each recipe's defaults (its loss and pairs: see build_examples)
RECIPES: Registry[dict[str, Any]] = Registry("recipe", {
    "paper": {"epochs": 5, "lr": 1e-6, "batch_size": 16},
    # set a priori (the usual MultipleNegativesRankingLoss fine-tuning settings), never tuned on
    # benchmark targets; every alignment reports its dev curve (align.json, model card)
    "contrastive": {"epochs": 3, "lr": 2e-5, "batch_size": 16},
})
VIEWS = ("auto", "instructions", "labels", "self")


@dataclass
class AlignConfig:
    recipe: str = "contrastive"
    base: str | None = None
    epochs: int | None = None
    lr: float | None = None
    batch_size: int | None = None
    seed: int = 0
    view: str = "auto"
    warmup_fraction: float = 0.1  # of one epoch
    positive_fraction: float = 0.4  # paper: share of same-task pairs kept
    negative_threshold: float = 0.3  # paper: a negative's base cosine must be below this
    negative_max_uses: int = 4  # paper: each negative text at most this often
    label_partners: int = 3  # 'labels' view: same-label partner tasks per task
    # 'instructions' view: same-task pairs per task at most (a seeded sample beyond). A task with n
    # instructions has n(n-1)/2 pairs: 3 BIG-bench tasks with 123-247 would be 98% of the rows
    # (and of the steps: their rows cannot share a contrastive batch); P3's ≤ 12 templates give ≤ 66
    max_pairs_per_task: int = 256
    dev_fraction: float = 0.15  # held-out tasks for checkpoint selection
    max_seq_length: int = 128
    keep_base: bool = True  # the base model is a candidate too: kept when no epoch beats it on dev

    def __post_init__(self) -> None:
        defaults = RECIPES.get(self.recipe)
        if self.view not in VIEWS:
            raise unknown("view", self.view, VIEWS)
        self.epochs = self.epochs if self.epochs is not None else defaults["epochs"]
        self.lr = self.lr if self.lr is not None else defaults["lr"]
        self.batch_size = self.batch_size if self.batch_size is not None else defaults["batch_size"]
        check_fields(self, "align")
        for name in ("epochs", "batch_size", "label_partners", "negative_max_uses", "max_pairs_per_task"):
            check_int(getattr(self, name), option("align", name), min=1)
        # fewer tokens cannot hold [CLS], [SEP] and an instruction (and at 1 the tokenizer stops truncating)
        check_int(self.max_seq_length, option("align", "max_seq_length"), min=8)
        check_float(self.lr, option("align", "lr"), positive=True, max=10.0)
        check_float(self.negative_threshold, option("align", "negative_threshold"), min=-1.0, max=1.0)
        check_float(self.warmup_fraction, option("align", "warmup_fraction"), min=0.0, max=1.0)
        check_float(self.positive_fraction, option("align", "positive_fraction"), positive=True, max=1.0)
        check_float(self.dev_fraction, option("align", "dev_fraction"), min=0.0, max=0.9)


FORMATS = ("def", "def+pos")


@dataclass
class MixConfig:
    per_task_cap: int = 5000
    format: str = "def"
    n_positive: int = 2
    seed: int = 0
    #: at most this many examples in all, drawn evenly across the tasks (a task with fewer
    #: examples than its share leaves the rest to the others); None: no total budget
    total_examples: int | None = None

    def __post_init__(self) -> None:
        check_fields(self, "mix")
        check_int(self.per_task_cap, option("mix", "per_task_cap"), min=1)
        if self.total_examples is not None:
            check_int(self.total_examples, option("mix", "total_examples"), min=1)
        check_int(self.n_positive, option("mix", "n_positive"), min=0)
        check_choice(self.format, option("mix", "format"), FORMATS)


@dataclass
class TrainConfig:
    epochs: float = 3.0
    lr: float | None = None  # None: the paper's, by the mixture's source (P3 1e-4, NIV2 5e-5)
    batch_size: int = 8
    grad_accum: int = 1
    max_input_length: int = 768
    max_target_length: int = 256
    max_steps: int = -1
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    bf16: bool | None = None  # None: on where CUDA supports it
    gradient_checkpointing: bool | None = None  # None: on with CUDA
    device: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        check_fields(self, "train")
        for name in ("batch_size", "grad_accum", "max_input_length", "max_target_length", "lora_r", "lora_alpha"):
            check_int(getattr(self, name), option("train", name), min=1)
        check_int(self.max_steps, option("train", "max_steps"), min=-1)
        if self.max_steps <= 0:
            check_float(self.epochs, option("train", "epochs") + " (or give --max-steps)", positive=True, max=1e6)
        if self.lr is not None:
            check_float(self.lr, option("train", "lr"), positive=True, max=10.0)
        check_float(self.warmup_ratio, option("train", "warmup_ratio"), min=0.0, max=1.0)
        check_float(self.weight_decay, option("train", "weight_decay"), min=0.0)
        check_float(self.lora_dropout, option("train", "lora_dropout"), min=0.0, max=0.99)


@dataclass
class FeatureConfig:
    """Model-aware representations of examples (``less``: gradients, ``rds``: hidden states)
    and how the example selectors use them. Defaults are set a priori (LESS's and RDS+'s
    recipes scaled to a CPU), never tuned on benchmark targets."""

    lm: str = "smollm2"  # the causal LM whose features represent examples
    per_task: int = 16  # examples sampled (seeded) from each source task
    query_examples: int = 8  # target examples the selector sees (never evaluated on)
    max_length: int = 256  # tokens of prompt + answer (the prompt is cut from the left)
    batch_size: int = 8
    proj_dim: int = 8192  # LESS: 8192
    proj_seed: int = 0
    sketch_nnz: int = 4  # nonzeros per parameter of the sparse sign projection
    lora_r: int = 8
    lora_alpha: int = 16
    warmup_examples: int = 64  # random pool examples the LoRA warm-up trains on
    warmup_steps: int = 16  # Adam steps of batch_size examples (2 epochs of 64)
    warmup_lr: float = 1e-4
    device: str = "auto"
    seed: int = 0
    engine: str = "local"  # local | ray: the pool's examples featurised by LM actors on Ray Data
    actors: int = 1  # with engine ray

    def __post_init__(self) -> None:
        check_fields(self, "features")
        check_choice(self.engine, option("features", "engine"), ("local", "ray"))
        check_int(self.actors, option("features", "actors"), min=1, max=100_000)
        for name in ("per_task", "query_examples", "batch_size", "lora_r", "lora_alpha", "warmup_examples",
                     "warmup_steps"):
            check_int(getattr(self, name), option("features", name), min=1, max=1_000_000)
        check_int(self.max_length, option("features", "max_length"), min=8, max=1_000_000)
        check_int(self.proj_dim, option("features", "proj_dim"), min=16, max=1_048_576)
        check_int(self.sketch_nnz, option("features", "sketch_nnz"), min=1, max=64)
        if self.proj_dim % self.sketch_nnz:
            from .errors import InstaError

            raise InstaError(f"{option('features', 'proj_dim')} must be a multiple of features.sketch_nnz "
                             f"({self.sketch_nnz}), got {self.proj_dim}")
        check_float(self.warmup_lr, option("features", "warmup_lr"), positive=True, max=10.0)
