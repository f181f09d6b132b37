"""Instruction tuning on a mixture: seq2seq (T5 family) or causal decoder LMs, full or LoRA.

The paper's recipe is the default: 3 epochs, lr 1e-4 for P3 mixtures and 5e-5 for NIV2,
input/target lengths 768/256. Causal LMs see ``input + " " + target + eos`` with the loss on
the target tokens only. On CUDA, bf16 (where supported) and gradient checkpointing are on by
default. Checkpoints go to ``OUT/checkpoints`` each epoch; re-running the same command after an
interruption resumes from the last one. The finished folder holds a normal Hugging Face
model (LoRA adapters merged in; the adapter itself is kept under ``adapter/``), its
tokenizer, and ``train.json``.

Several GPUs: ``accelerate launch --config_file configs/deepspeed_zero2.yaml -m insta train ...``
"""

from __future__ import annotations

import contextlib
import math
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .checks import resolve_device
from .checkpoints import last_whole_checkpoint
from .errors import InstaError
from .config import TrainConfig  # noqa: F401 - re-exported (insta.train.TrainConfig)
from .io import read_json, run_state, write_json_atomic
from .models import load_model, supports_logits_to_keep  # noqa: F401 - re-exported (insta.train.load_model)

DEFAULT_LR = {"p3": 1e-4, "niv2": 5e-5}
STATE = "train.json"


@dataclass
class TrainResult:
    model_dir: str
    base: str
    kind: str
    config: dict[str, Any]
    n_examples: int
    steps: int
    train_loss: float | None
    seconds: float
    resumed: bool
    lora: bool
    history: list[dict[str, float]] = field(default_factory=list)


def _tokenize(batch: dict[str, list[Any]], tokenizer, seq2seq: bool, cfg: TrainConfig) -> dict[str, list[Any]]:
    if seq2seq:
        enc = tokenizer(batch["input"], truncation=True, max_length=cfg.max_input_length)
        enc["labels"] = tokenizer(text_target=batch["target"], truncation=True, max_length=cfg.max_target_length)["input_ids"]
        return dict(enc)
    ids, labels = [], []
    for src, tgt in zip(batch["input"], batch["target"]):
        p = tokenizer(src, truncation=True, max_length=cfg.max_input_length)["input_ids"]
        t = tokenizer(" " + tgt.strip(), add_special_tokens=False, truncation=True,
                      max_length=cfg.max_target_length - 1)["input_ids"] + [tokenizer.eos_token_id]
        ids.append(p + t)
        labels.append([-100] * len(p) + t)  # loss on the target tokens only
    return {"input_ids": ids, "attention_mask": [[1] * len(x) for x in ids], "labels": labels}


def _target_only_trainer():
    """A Trainer whose causal-LM loss projects only the target positions onto the vocabulary.

    The output layer is most of a small LM's cost (SmolLM2: 49k tokens × 576): with the
    answer a few tokens after a long prompt, ``logits_to_keep`` (a boolean mask of the
    positions that predict a target token) skips the rest. Same loss as the model's own
    (mean token cross-entropy over the target tokens of the micro-batch).
    """
    import torch
    import torch.nn.functional as F
    from transformers import Trainer

    class TargetOnlyTrainer(Trainer):
        loss_is_scaled_for_ga = False  # a per-micro-batch mean: training_step divides by the accumulation steps

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            labels = inputs["labels"]
            keep = torch.zeros_like(labels, dtype=torch.bool)
            keep[:, :-1] = labels[:, 1:] != -100  # position t predicts token t + 1
            outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], logits_to_keep=keep)
            logits = outputs.logits.reshape(-1, outputs.logits.shape[-1])
            loss = F.cross_entropy(logits.float(), labels[:, 1:][keep[:, :-1]])
            return (loss, outputs) if return_outputs else loss

    return TargetOnlyTrainer


def _state(out: Path) -> dict[str, Any] | None:
    """The folder's train.json, None when absent; one line when it is damaged."""
    path = out / STATE
    if not path.is_file():
        return None
    try:
        return read_json(path, "training state", expect=dict)
    except InstaError as exc:
        raise InstaError(f"{exc} — the training state of --out {out} is damaged; delete the folder {out} to train from "
                         "scratch") from None


def finished(out: str | Path) -> bool:
    """Does ``out`` hold a finished training (a model folder written by insta train)?"""
    try:
        return (_state(Path(out).expanduser()) or {}).get("status") == "done"
    except InstaError:
        return False


def recorded_seconds(model_dir: str | Path) -> float | None:
    """How long the finished training in ``model_dir`` took (its train.json); None when not recorded."""
    seconds = ((_state(Path(model_dir)) or {}).get("result") or {}).get("seconds")
    return float(seconds) if isinstance(seconds, (int, float)) else None


def _prepare_out(out: Path, model: str, cfg: TrainConfig, mixture: str | Path) -> bool:
    """True when ``out`` holds an interrupted run of the same training (resume); error when it is in the way."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise InstaError(f"--out {out} exists and is not a folder; give a new folder")
    state = _state(out)
    if state is not None:
        if state.get("status") == "done":
            raise InstaError(f"--out {out} already holds a trained model; give a new folder")
        same = {"base": model, "config": asdict(cfg), "mixture": str(mixture)}
        if any(state.get(k) != v for k, v in same.items() if k in state):
            raise InstaError(f"--out {out} holds an interrupted training with other settings (model, mixture or "
                             f"options); rerun with the same ones to resume, or delete {out} to start over")
        return True
    if out.exists() and any(out.iterdir()):
        raise InstaError(f"--out {out} already exists and holds something else; give a new folder")
    return False


def _prepare_model(net, cfg: TrainConfig, seq2seq: bool, grad_ckpt: bool):
    """LoRA adapters (peft) when asked for, and gradient checkpointing on the model itself."""
    if cfg.lora:
        try:
            from peft import LoraConfig, TaskType, get_peft_model
        except ImportError:  # pragma: no cover - peft is a dependency
            raise InstaError("--lora needs peft: pip install peft") from None
        task_type = TaskType.SEQ_2_SEQ_LM if seq2seq else TaskType.CAUSAL_LM
        net = get_peft_model(net, LoraConfig(task_type=task_type, r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                                             lora_dropout=cfg.lora_dropout, target_modules="all-linear"))
    if grad_ckpt:  # on the model itself (works with LoRA too), not through TrainingArguments
        net.gradient_checkpointing_enable()
        if cfg.lora:
            net.enable_input_require_grads()
    return net


def _save_final(trainer, cfg: TrainConfig, tokenizer, dest: Path) -> bool:
    """The trained model (LoRA merged, the adapter kept under adapter/) and tokenizer into
    ``dest``, checkpoints removed; True on the process that writes (one under accelerate)."""
    main_process = trainer.is_world_process_zero()
    if trainer.is_deepspeed_enabled:
        trainer.save_model(str(dest))  # gathers ZeRO-partitioned weights
    elif main_process:
        final = trainer.model
        if cfg.lora:
            final.save_pretrained(str(dest / "adapter"))
            final = final.merge_and_unload()
        final.save_pretrained(str(dest))
    if main_process:
        tokenizer.save_pretrained(str(dest))
        shutil.rmtree(dest / "checkpoints", ignore_errors=True)
    return main_process


def _stderr_progress():
    """transformers' ProgressCallback with its log lines (``{'loss': ...}``) on stderr: it
    writes them through tqdm to stdout, which carries a command's output (its JSON) alone."""
    from transformers.trainer_callback import ProgressCallback

    class StderrProgress(ProgressCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            with contextlib.redirect_stdout(sys.stderr):
                return super().on_log(args, state, control, logs=logs, **kwargs)

    return StderrProgress()


def train(mixture: str | Path, model: str, out: str | Path, cfg: TrainConfig | None = None, *,
          quiet: bool = False, say: Callable[[str], None] | None = None, callbacks: list[Any] | None = None) -> TrainResult:
    """Fine-tune ``model`` on the mixture folder; the result is a model folder at ``out``."""
    from .mix import load_mixture

    cfg = cfg or TrainConfig()
    say = say or (lambda _msg: None)
    start = time.perf_counter()
    dest = Path(out).expanduser()
    dataset, manifest = load_mixture(mixture)
    device = resolve_device(cfg.device)
    resuming = _prepare_out(dest, model, cfg, mixture)

    import torch
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    cuda = device.startswith("cuda")
    bf16 = cfg.bf16 if cfg.bf16 is not None else bool(cuda and torch.cuda.is_bf16_supported())
    if bf16 and not cuda:
        raise InstaError("--bf16 needs a CUDA device here; drop it on CPU")
    grad_ckpt = cfg.gradient_checkpointing if cfg.gradient_checkpointing is not None else cuda
    sources = {r for r in dataset["source"]}
    lr = cfg.lr if cfg.lr is not None else (DEFAULT_LR["p3"] if sources == {"p3"} else DEFAULT_LR["niv2"])
    net, tokenizer, seq2seq = load_model(model, for_training=True)
    dest.mkdir(parents=True, exist_ok=True)
    with run_state(dest / STATE, {"base": model, "config": asdict(cfg), "mixture": str(mixture)}, "training state"):
        net = _prepare_model(net, cfg, seq2seq, grad_ckpt)
        # in memory: the map's cache would be written into the mixture folder (an input, maybe read-only)
        tokenized = dataset.map(lambda b: _tokenize(b, tokenizer, seq2seq, cfg), batched=True, keep_in_memory=True,
                                remove_columns=dataset.column_names, desc="tokenizing" if not quiet else None)
        steps_per_epoch = math.ceil(len(tokenized) / (cfg.batch_size * cfg.grad_accum))
        args = TrainingArguments(
            output_dir=str(dest / "checkpoints"),
            num_train_epochs=cfg.epochs,
            max_steps=cfg.max_steps,
            learning_rate=lr,
            per_device_train_batch_size=cfg.batch_size,
            gradient_accumulation_steps=cfg.grad_accum,
            warmup_steps=float(cfg.warmup_ratio) if cfg.warmup_ratio else 0,
            weight_decay=cfg.weight_decay,
            bf16=bf16,
            save_strategy="steps" if cfg.max_steps > 0 else "epoch",
            save_steps=max(1, cfg.max_steps) if cfg.max_steps > 0 else 500,
            save_total_limit=2,
            logging_steps=max(1, min(50, (cfg.max_steps if cfg.max_steps > 0 else steps_per_epoch) // 10)),
            logging_strategy="steps",
            report_to="none",
            seed=cfg.seed,
            data_seed=cfg.seed,
            use_cpu=not cuda,
            disable_tqdm=quiet,
            dataloader_num_workers=0,
            remove_unused_columns=False,
        )
        collator = DataCollatorForSeq2Seq(tokenizer, model=net, label_pad_token_id=-100, padding=True)
        trainer_cls = Trainer if seq2seq or not supports_logits_to_keep(net) else _target_only_trainer()
        trainer = trainer_cls(model=net, args=args, train_dataset=tokenized, data_collator=collator,
                              processing_class=tokenizer, callbacks=callbacks or [])
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        trainer.remove_callback(PrinterCallback)
        if trainer.pop_callback(ProgressCallback) is not None and not quiet:
            trainer.add_callback(_stderr_progress())  # the same bar and log lines, kept off stdout
        resume = last_whole_checkpoint(dest / "checkpoints", say) if resuming else None
        say(f"{'resuming' if resume else 'training'} {'LoRA on ' if cfg.lora else ''}{model} "
            f"({'seq2seq' if seq2seq else 'causal'}) on {len(tokenized)} examples, lr {lr:g}, {device}{', bf16' if bf16 else ''}")
        output = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        main_process = _save_final(trainer, cfg, tokenizer, dest)
        history = [{k: float(v) for k, v in e.items() if isinstance(v, (int, float))} for e in trainer.state.log_history]
        result = TrainResult(
            model_dir=str(dest), base=model, kind="seq2seq" if seq2seq else "causal",
            config=asdict(cfg) | {"lr": lr, "bf16": bf16, "gradient_checkpointing": grad_ckpt, "device": device},
            n_examples=len(tokenized), steps=int(trainer.state.global_step),
            train_loss=float(output.training_loss) if output.training_loss is not None else None,
            seconds=round(time.perf_counter() - start, 1), resumed=bool(resume), lora=cfg.lora, history=history,
        )
        if main_process:
            write_json_atomic(dest / STATE, {"status": "done", "mixture": str(mixture), "manifest": manifest,
                                             "result": asdict(result)}, "training state")
        return result
