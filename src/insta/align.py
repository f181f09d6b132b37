"""Alignment: fine-tune the embedder to a meta-dataset's instruction style (INSTA, part 2).

Two recipes, both with the sentence-transformers trainer (model, loss, evaluator, trainer):

* ``paper`` — faithful to the INSTA authors' scripts: pairs of instructions of the same
  task labelled 1 (a random 40% of all such pairs); for each, an instruction of another
  task labelled 0, only if its cosine to the anchor under the base model is below 0.3 and
  each negative text is used at most 4 times; CosineSimilarityLoss; 5 epochs, lr 1e-6,
  batch 16, warm-up a tenth of an epoch.
* ``contrastive`` — in-batch contrastive training (MultipleNegativesRankingLoss) on
  (anchor, positive, hard negative) triples, with at most one instance of a task per batch
  (so siblings are never in-batch false negatives); the hard negative is the most similar
  text of another, non-sibling task that is still below the 0.3 base cosine (the hardest
  clearly-unrelated instruction, mined with the base model).

Positive pairs come from *views* of the pool: ``instructions`` (two instructions of one
task: P3), ``labels`` (instructions of two tasks sharing a label: NIV2 categories) and
``self`` (a task's definition against its own positive example, or the two halves of a
multi-sentence definition). ``auto`` picks ``instructions`` when most tasks have two or
more instructions, else ``labels`` (when the pool has labels) plus ``self``.

Every epoch is a checkpoint; the one with the best cosine-Pearson on a dev split of
*held-out tasks* (never the tasks trained on) is kept, or the base model itself when no
epoch beats it there (``keep_base``). Re-running an interrupted
alignment into the same folder resumes from its last checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .encoder import Encoder
from .errors import InstaError
from .checkpoints import last_whole_checkpoint
from .io import read_json, run_state, write_json_atomic, write_text_atomic
from .config import RECIPES, AlignConfig  # noqa: F401 - re-exported (insta.align.AlignConfig)
from .tasks import Task, TaskPool, family

STATE_FILE = "align.json"

ProgressFn = Callable[[str], None]


@dataclass
class AlignResult:
    model_dir: str
    config: dict[str, Any]
    views: list[str]
    train_tasks: list[str]
    dev_tasks: list[str]
    n_train_examples: int
    n_dev_pairs: int
    dev_pearson: dict[str, float] = field(default_factory=dict)  # "base", "epoch 1", ...
    best: str | None = None
    seconds: float = 0.0
    resumed: bool = False


# ------------------------------------------------------------------ views and pairs


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if len(s.strip().split()) >= 3]


def choose_views(pool: TaskPool, view: str) -> list[str]:
    """The positive-pair views to use for this pool (see module doc)."""
    multi = sum(len(set(t.texts)) >= 2 for t in pool)
    labelled = sum(t.label is not None for t in pool)
    if view == "instructions":
        if multi == 0:
            raise InstaError(
                f"{pool.name}: every task has a single instruction, but view 'instructions' needs two per task; "
                "use --view labels (tasks sharing a label) or --view self"
            )
        return ["instructions"]
    if view == "labels":
        if labelled < 2:
            raise InstaError(f"{pool.name}: view 'labels' needs labelled tasks; map a label (?label=FIELD) or use --view self")
        return ["labels"]
    if view == "self":
        return ["self"]
    if multi >= len(pool) / 2:
        return ["instructions"]
    return (["labels"] if labelled >= 2 else []) + ["self"]


def positive_pairs(tasks: list[Task], views: list[str], rng: np.random.Generator,
                   label_partners: int = 3, max_per_task: int | None = None) -> list[tuple[str, str, int]]:
    """(text a, text b, index of a's task) pairs that should embed close together; at most
    ``max_per_task`` same-task pairs per task (a seeded sample, in their original order)."""
    out: list[tuple[str, str, int]] = []
    if "instructions" in views:
        for i, t in enumerate(tasks):
            texts = list(dict.fromkeys(t.texts))
            mine = [(texts[a], texts[b], i) for a in range(len(texts)) for b in range(a + 1, len(texts))]
            if max_per_task is not None and len(mine) > max_per_task:
                mine = [mine[j] for j in sorted(rng.choice(len(mine), max_per_task, replace=False))]
            out += mine
    if "labels" in views:
        by_label: dict[str, list[int]] = {}
        for i, t in enumerate(tasks):
            if t.label is not None:
                by_label.setdefault(t.label, []).append(i)
        for members in by_label.values():
            for i in members:
                others = [j for j in members if not _siblings(tasks, i, j)]
                for j in (rng.permutation(others)[:label_partners] if others else []):
                    out.append((tasks[i].texts[0], tasks[int(j)].texts[0], i))
    if "self" in views:
        for i, t in enumerate(tasks):
            text = t.texts[0]
            for ex in t.demonstrations[:1]:
                if isinstance(ex, dict) and str(ex.get("input", "")).strip():
                    out.append((text, " ".join(str(ex["input"]).split()), i))
            sents = _sentences(text)
            if len(sents) >= 2:
                half = len(sents) // 2
                out.append((" ".join(sents[:half]), " ".join(sents[half:]), i))
    return out


def batch_keys(task: Task, views: list[str]) -> set[tuple[str, str]]:
    """What two rows of one contrastive batch must not share: the task's family (source dataset,
    so also the task), and its label when the pairs were built from labels."""
    keys = {("family", family(task))}
    if "labels" in views and task.label is not None:
        keys.add(("label", task.label))
    return keys


def _texts_and_owners(tasks: list[Task]) -> tuple[list[str], np.ndarray]:
    texts, owners = [], []
    for i, t in enumerate(tasks):
        for x in dict.fromkeys(t.texts):
            texts.append(x)
            owners.append(i)
    return texts, np.asarray(owners)


def _siblings(tasks: list[Task], i: int, j: int) -> bool:
    return i == j or family(tasks[i]) == family(tasks[j])


def build_examples(tasks: list[Task], cfg: AlignConfig, views: list[str], base: Encoder,
                   rng: np.random.Generator) -> list[dict[str, Any]]:
    """Training rows for the recipe: {sentence1, sentence2, score} (paper) or
    {anchor, positive, negative, task} (contrastive)."""
    pairs = positive_pairs(tasks, views, rng, cfg.label_partners, cfg.max_pairs_per_task)
    if not pairs:
        raise InstaError("no positive pairs could be built from this pool; try another --view")
    texts, owners = _texts_and_owners(tasks)
    emb = base.encode(texts)
    anchors = base.encode([a for a, _, _ in pairs])
    sims = anchors @ emb.T  # (pairs, texts)
    own = [set(t.texts) for t in tasks]  # a text another task shares with the anchor's is never its negative

    def allowed(i: int, k: int) -> bool:
        return not _siblings(tasks, i, int(owners[k])) and texts[k] not in own[i]

    rows: list[dict[str, Any]] = []
    if cfg.recipe == "paper":
        keep = rng.permutation(len(pairs))[: max(1, round(cfg.positive_fraction * len(pairs)))]
        uses: dict[int, int] = {}
        for p in sorted(keep):
            a, b, i = pairs[p]
            rows.append({"sentence1": a, "sentence2": b, "score": 1.0})
            ok = [k for k in rng.permutation(len(texts))
                  if allowed(i, int(k)) and sims[p, k] < cfg.negative_threshold
                  and uses.get(int(k), 0) < cfg.negative_max_uses]
            if ok:
                k = int(ok[0])
                uses[k] = uses.get(k, 0) + 1
                rows.append({"sentence1": a, "sentence2": texts[k], "score": 0.0})
        return rows
    for p, (a, b, i) in enumerate(pairs):
        order = np.argsort(-sims[p], kind="stable")
        negative = next((texts[k] for k in order if allowed(i, int(k)) and sims[p, k] < cfg.negative_threshold), None)
        if negative is None:
            continue
        rows.append({"anchor": a, "positive": b, "negative": negative, "task": i})
    return rows


def dev_pairs(tasks: list[Task], cfg: AlignConfig, views: list[str], base: Encoder,
              rng: np.random.Generator) -> tuple[list[str], list[str], list[float]]:
    """Held-out pairs for checkpoint selection: every positive pair of the dev tasks, and one
    below-threshold negative each (paper-style labels, whatever the recipe)."""
    dev_cfg = AlignConfig(**{**asdict(cfg), "recipe": "paper", "positive_fraction": 1.0})
    rows = build_examples(tasks, dev_cfg, views, base, rng)
    return [r["sentence1"] for r in rows], [r["sentence2"] for r in rows], [r["score"] for r in rows]


def split_dev(pool: TaskPool, fraction: float, seed: int) -> tuple[list[Task], list[Task]]:
    """Hold out about ``fraction`` of the tasks (siblings together) for checkpoint selection."""
    groups: dict[str, list[Task]] = {}
    for t in pool:
        groups.setdefault(family(t), []).append(t)
    keys = list(groups)
    np.random.default_rng(seed).shuffle(keys)
    n_dev = max(1, round(fraction * len(pool))) if len(groups) >= 4 else 0
    dev: list[Task] = []
    for k in keys:
        if len(dev) >= n_dev:
            break
        dev.extend(groups[k])
    dev_ids = {t.id for t in dev}
    return [t for t in pool if t.id not in dev_ids], dev


# ------------------------------------------------------------------ batch sampler


class TaskUniqueSampler:
    """Batch-sampler factory for the trainer: shuffled batches in which no two rows share a key
    (a module-level object, so the training arguments that hold it can be checkpointed).

    A row's keys are its task, its source dataset and, when the training pairs come from the
    labels, its label: in-batch negatives are then never a sibling or a same-label task (a
    false negative). A bare int is a row whose only key is that task."""

    def __init__(self, keys_of_row: list[Any]):
        self.keys_of_row = [frozenset([k]) if isinstance(k, (int, np.integer)) else frozenset(k) for k in keys_of_row]

    def batches(self, batch_size: int, drop_last: bool, seed: int) -> list[list[int]]:
        rng = np.random.default_rng(seed)
        batches: list[list[int]] = []
        seen: list[set[Any]] = []
        for idx in rng.permutation(len(self.keys_of_row)):
            keys = self.keys_of_row[idx]
            for batch, taken in zip(batches, seen):
                if len(batch) < batch_size and taken.isdisjoint(keys):
                    batch.append(int(idx))
                    taken.update(keys)
                    break
            else:
                batches.append([int(idx)])
                seen.append(set(keys))
        return [b for b in batches if len(b) == batch_size] if drop_last else batches

    def __call__(self, dataset, batch_size, drop_last, valid_label_columns=None, generator=None, seed=0):
        try:
            from sentence_transformers.base.sampler import DefaultBatchSampler
        except ImportError:  # sentence-transformers < 5.2
            from sentence_transformers.sampler import DefaultBatchSampler
        factory = self

        class _Sampler(DefaultBatchSampler):
            def __iter__(self):
                yield from factory.batches(self.batch_size, self.drop_last, self.seed + getattr(self, "epoch", 0))

            def __len__(self) -> int:
                return len(factory.batches(self.batch_size, self.drop_last, self.seed + getattr(self, "epoch", 0)))

        return _Sampler(dataset, batch_size=batch_size, drop_last=drop_last,
                        valid_label_columns=valid_label_columns, generator=generator, seed=seed)


# ------------------------------------------------------------------ the output folder


def _check_out_dir(out: Path, cfg: AlignConfig, pool: TaskPool) -> bool:
    """True when ``out`` holds an unfinished run of the same alignment (resume it)."""
    if out.is_symlink() and not out.exists():
        raise InstaError(f"--out {out} is a symbolic link to nothing; give a new folder")
    if not out.exists():
        return False
    if not out.is_dir():
        raise InstaError(f"--out {out} exists and is not a folder")
    state_path = out / STATE_FILE
    if not state_path.is_file():
        if any(out.iterdir()):
            raise InstaError(f"--out {out} exists and holds something else; give a new or empty folder")
        return False
    try:
        state = read_json(state_path, "alignment state", expect=dict)
    except InstaError as exc:
        raise InstaError(f"{exc} — the alignment state of --out {out} is damaged; delete the folder {out} to start over") from None
    if state.get("status") == "done":
        raise InstaError(f"--out {out} already holds a finished alignment; give a new folder (or remove it)")
    if state.get("config") != asdict(cfg) or state.get("pool") != pool.ids:
        was = state.get("config") if isinstance(state.get("config"), dict) else {}
        differ = [f"{k} {was.get(k)!r} there, {v!r} now" for k, v in asdict(cfg).items() if was.get(k) != v]
        raise InstaError(f"--out {out} holds an unfinished alignment with other settings "
                         f"({', '.join(differ[:3]) or 'another pool'}); remove it or use them again")
    return True


def _write_state(out: Path, state: dict[str, Any]) -> None:
    write_json_atomic(out / STATE_FILE, state, "alignment state")


def model_card(result: AlignResult, pool: TaskPool) -> str:
    cfg = result.config
    dev = "\n".join(f"| {k} | {v:.4f} |" for k, v in result.dev_pearson.items()) or "| (no dev split) | |"
    return f"""---
library_name: sentence-transformers
tags: [sentence-transformers, insta-select, instruction-alignment]
---

# Instruction-aligned embedder (insta-select)

Aligned with `insta align` to the instruction style of **{pool.name}** ({len(pool)} tasks), for
instruction-based task selection (INSTA). Use it anywhere insta takes `--model DIR`.

| | |
|---|---|
| base model | `{cfg['base'] or 'all-MiniLM-L6-v2 (packaged)'}` |
| recipe | `{cfg['recipe']}` |
| positive pairs (views) | {', '.join(result.views)} |
| epochs / lr / batch size | {cfg['epochs']} / {cfg['lr']} / {cfg['batch_size']} |
| training inputs | ≤ {cfg['max_seq_length']} tokens (the saved model and its dev figures: the base's own length) |
| warm-up | {cfg['warmup_fraction']} of an epoch |
| seed | {cfg['seed']} |
| paper-recipe settings | positives kept {cfg['positive_fraction']}, negative base cosine < {cfg['negative_threshold']}, each negative used ≤ {cfg['negative_max_uses']} times |
| training examples | {result.n_train_examples} |
| dev pairs (held-out tasks) | {result.n_dev_pairs} |
| kept checkpoint | {result.best or 'last epoch'}{' (no epoch beat the base model on dev)' if result.best == 'base' else ''} |
| training time | {result.seconds:.0f} s |

## Dev figures (cosine-Pearson on pairs of held-out tasks)

| model | Pearson |
|---|---|
{dev}

Benchmark figures for this recipe on held-out targets: `insta bench --suite p3 --folds 3
--methods bm25,insta,insta-aligned-{cfg['recipe']}` (see the project's BENCHMARKS.md).

## Tasks trained on ({len(result.train_tasks)})

{', '.join(result.train_tasks)}

## Dev tasks, held out from training ({len(result.dev_tasks)})

{', '.join(result.dev_tasks) or '(none)'}
"""


# ------------------------------------------------------------------ align


def align(pool: TaskPool, out_dir: str | os.PathLike[str], cfg: AlignConfig | None = None, *,
          quiet: bool = False, log: ProgressFn | None = None, callbacks: list | None = None) -> AlignResult:
    """Align ``cfg.base`` to ``pool`` and save a sentence-transformers model in ``out_dir``.

    ``callbacks`` are extra ``transformers.TrainerCallback`` objects (loggers, early stops)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        return _align(pool, out_dir, cfg or AlignConfig(), quiet=quiet, log=log, callbacks=callbacks or [])


def aligned_model(pool: TaskPool, cfg: AlignConfig, root: str | os.PathLike[str], *, quiet: bool = True,
                  log: ProgressFn | None = None) -> Path:
    """An aligned model for (pool, config, base), trained once and kept under ``root``."""
    key = hashlib.sha256(json.dumps({"pool": pool.ids, "config": asdict(cfg),
                                     "base": Encoder(cfg.base).identity}, sort_keys=True).encode()).hexdigest()[:16]
    out = Path(root) / f"{cfg.recipe}-{key}"
    state = out / STATE_FILE
    if state.is_file():
        try:
            if read_json(state, "alignment state", expect=dict).get("status") == "done":
                return out
        except InstaError:
            shutil.rmtree(out, ignore_errors=True)  # a cache entry of ours with a damaged state: align again
    align(pool, out, cfg, quiet=quiet, log=log)
    return out


def _load_st(base: Encoder, cfg: AlignConfig):
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(base.model_path, device="cpu" if not torch.cuda.is_available() else None)
    own = model.max_seq_length or cfg.max_seq_length
    model.max_seq_length = min(own, cfg.max_seq_length)
    return model, own


def _data(pool: TaskPool, cfg: AlignConfig, base: Encoder, say: ProgressFn):
    """(views, training tasks, dev tasks, training rows, dev pairs) of an alignment."""
    views = choose_views(pool, cfg.view)
    rng = np.random.default_rng(cfg.seed)
    train_tasks, dev_tasks = split_dev(pool, cfg.dev_fraction, cfg.seed)
    say(f"views: {', '.join(views)}; {len(train_tasks)} training tasks, {len(dev_tasks)} dev tasks")
    rows = build_examples(train_tasks, cfg, views, base, rng)
    if not rows:
        raise InstaError("no training examples could be built (no negatives below the threshold?); try another --view")
    dev = dev_pairs(dev_tasks, cfg, views, base, np.random.default_rng(cfg.seed + 1)) if dev_tasks else ([], [], [])
    if dev[0] and len(set(dev[2])) < 2:
        say("the dev pairs have no negative below the threshold: no checkpoint selection, the last epoch is kept")
        dev = ([], [], [])
    say(f"{len(rows)} training examples, {len(dev[0])} dev pairs")
    return views, train_tasks, dev_tasks, rows, dev


def _arguments(cfg: AlignConfig, ckpt: Path, n_rows: int, evaluating: bool, sampler: Any, quiet: bool):
    from sentence_transformers import SentenceTransformerTrainingArguments

    return SentenceTransformerTrainingArguments(
        output_dir=str(ckpt),
        num_train_epochs=cfg.epochs,
        learning_rate=cfg.lr,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=64,
        warmup_steps=max(0, math.ceil(cfg.warmup_fraction * math.ceil(n_rows / cfg.batch_size))),
        seed=cfg.seed,
        data_seed=cfg.seed,
        eval_strategy="epoch" if evaluating else "no",
        save_strategy="epoch",
        load_best_model_at_end=evaluating,
        metric_for_best_model="eval_dev_pearson_cosine" if evaluating else None,
        greater_is_better=True,
        batch_sampler=sampler,
        report_to="none",
        logging_strategy="no",
        disable_tqdm=quiet,
        dataloader_num_workers=0,
    )


def _align(pool: TaskPool, out_dir: str | os.PathLike[str], cfg: AlignConfig, *,
           quiet: bool, log: ProgressFn | None, callbacks: list) -> AlignResult:
    if len(pool) < 2:
        raise InstaError(f"{pool.name} has {len(pool)} task; alignment needs at least 2 tasks")
    out = Path(out_dir).expanduser()
    resuming = _check_out_dir(out, cfg, pool)
    try:  # now, not after the pool has been embedded
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InstaError(f"cannot create --out {out}: {exc.strerror or exc}; give a folder path that can be made") from None
    say = log or (lambda msg: None)
    start = time.perf_counter()
    base = Encoder(cfg.base)
    views, train_tasks, dev_tasks, rows, dev = _data(pool, cfg, base, say)

    with run_state(out / STATE_FILE, {"config": asdict(cfg), "pool": pool.ids}, "alignment state"):
        import torch
        from datasets import Dataset
        from sentence_transformers import SentenceTransformerTrainer
        from sentence_transformers.evaluation import EmbeddingSimilarityEvaluator
        from sentence_transformers.losses import CosineSimilarityLoss, MultipleNegativesRankingLoss
        from transformers import TrainerCallback

        import transformers

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
        torch.manual_seed(cfg.seed)
        # trained on inputs of at most cfg.max_seq_length tokens (cost); saved with the base's own
        # length, so that the kept model embeds a long instruction as far as the base did
        model, base_length = _load_st(base, cfg)
        if cfg.recipe == "paper":
            dataset = Dataset.from_list(rows)
            loss = CosineSimilarityLoss(model)
            sampler: Any = "batch_sampler"
        else:
            tasks = [train_tasks[r.pop("task")] for r in rows]
            dataset = Dataset.from_list(rows)
            loss = MultipleNegativesRankingLoss(model)
            sampler = TaskUniqueSampler([batch_keys(t, views) for t in tasks])
        class AtSavedLength(EmbeddingSimilarityEvaluator):
            """Dev figures (and so the kept epoch, or the base) of the model as it is saved: inputs
            up to the base's own length, not the shorter training length."""

            def __call__(self, model, *args, **kwargs):
                trained_at, model.max_seq_length = model.max_seq_length, base_length
                try:
                    return super().__call__(model, *args, **kwargs)
                finally:
                    model.max_seq_length = trained_at

        evaluator = AtSavedLength(*dev, name="dev", main_similarity="cosine") if dev[0] else None
        ckpt = out / "checkpoints"
        args = _arguments(cfg, ckpt, len(dataset), evaluator is not None, sampler, quiet)
        history: dict[str, float] = {}
        if evaluator is not None:
            history["base"] = float(evaluator(model)["dev_pearson_cosine"])

        class Record(TrainerCallback):
            def on_evaluate(self, args_, state, control, metrics=None, **kw):
                if metrics and "eval_dev_pearson_cosine" in metrics:
                    history[f"epoch {round(state.epoch or 0)}"] = float(metrics["eval_dev_pearson_cosine"])

        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=loss,
                                             evaluator=evaluator, callbacks=[Record(), *callbacks])
        if quiet:
            from transformers.trainer_callback import PrinterCallback, ProgressCallback

            trainer.remove_callback(PrinterCallback)
            trainer.remove_callback(ProgressCallback)
        resume = last_whole_checkpoint(ckpt, say) if resuming else None
        say("resuming from the last checkpoint" if resume else f"training {cfg.epochs} epochs on {len(dataset)} examples, batch {cfg.batch_size}")
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        if resume:  # epochs before the interruption: read their dev figures from the trainer state
            for entry in trainer.state.log_history:
                if "eval_dev_pearson_cosine" in entry:
                    history.setdefault(f"epoch {round(entry.get('epoch', 0))}", float(entry["eval_dev_pearson_cosine"]))

        best = None
        if evaluator is not None and trainer.state.best_metric is not None:
            # the epoch whose evaluation produced the kept checkpoint (steps per epoch vary under the task-unique sampler)
            best = next((f"epoch {round(e.get('epoch', 0))}" for e in trainer.state.log_history
                         if e.get("eval_dev_pearson_cosine") == trainer.state.best_metric), None)
            if cfg.keep_base and history.get("base", -np.inf) >= trainer.state.best_metric - 1e-6:
                say(f"no epoch beat the base model on dev ({history['base']:.4f} vs {trainer.state.best_metric:.4f}): keeping the base")
                model, _ = _load_st(base, cfg)
                best = "base"
        model.max_seq_length = base_length
        model.save(str(out))
        shutil.rmtree(ckpt, ignore_errors=True)
        result = AlignResult(
            model_dir=str(out), config=asdict(cfg), views=views,
            train_tasks=[t.id for t in train_tasks], dev_tasks=[t.id for t in dev_tasks],
            n_train_examples=len(rows), n_dev_pairs=len(dev[0]),
            dev_pearson={k: history[k] for k in sorted(history, key=lambda k: (k != "base", len(k), k))},
            best=best, seconds=round(time.perf_counter() - start, 1), resumed=bool(resume),
        )
        write_text_atomic(out / "README.md", model_card(result, pool), "model card")
        _write_state(out, {"status": "done", "config": asdict(cfg), "pool": pool.ids, "result": asdict(result)})
        return result
