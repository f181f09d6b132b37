"""Examples as units of selection: a task's instances rendered as the training rows they
become, sampled per task (seeded), and a target's *query* examples (the ones a selector sees,
never the ones it is evaluated on).

An :class:`Example` is what the model-aware representations (:mod:`insta.lm_features`) and the
sentence-embedding ``samples`` method represent: its ``input`` (the rendered prompt) and its
``target`` (the gold answer), with the task and the position among the task's instances that
``insta mix`` uses to rebuild exactly this row from an example-level selection.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import InstaError
from .mix import example_key, instance_renderer

if TYPE_CHECKING:
    from .config import MixConfig
    from .select import Target
    from .tasks import Task


@dataclass(frozen=True)
class Example:
    task: str  # the owning task's id
    index: int  # position among the task's instances (-1: given by the user, not from a pool)
    input: str
    target: str
    #: the instance's own input, before rendering (what Retrieval-of-Experts embeds)
    raw: str = field(default="", compare=False)

    @property
    def key(self) -> str:
        """Identity of the row's content (a changed pool is detected by it)."""
        return example_key(self.input, self.target)

    @property
    def text(self) -> str:
        """The cache key text of the example for model-aware representations."""
        return json.dumps([self.input, self.target], ensure_ascii=False)

    def short(self, n: int = 160) -> str:
        """A one-line view for explanations: the end of the prompt (where the question is) → the answer."""
        prompt = " ".join(self.input.split())
        prompt = prompt if len(prompt) <= n else "…" + prompt[-(n - 1):]
        return f"{prompt} → {' '.join(self.target.split())[:60]}"

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "index": self.index, "key": self.key, "input": self.input, "target": self.target}


def sample_seed(seed: int, key: str) -> int:
    """A per-task (or per-target) seed, stable across runs and machines."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "little")


def rendered(task: Task, cfg: MixConfig | None = None) -> list[Example]:
    """Every instance of ``task`` that has an answer, rendered as ``insta mix`` renders it (NIV2
    and tables: the Tk-Instruct ``def`` encoding; BIG-bench: its own prompts). P3 entries have
    no instances (their rows come from the source datasets): an empty list."""
    from .config import MixConfig

    if task.source == "p3":
        return []
    full = task.with_instances()
    if not full.instances:
        return []
    render = instance_renderer(full, cfg or MixConfig())
    out = []
    for i, inst in enumerate(full.instances):
        if not isinstance(inst, dict):
            continue
        row = render(i, inst)
        if row is not None and row["input"].strip() and str(row["target"]).strip():
            out.append(Example(task.id, i, row["input"], str(row["target"]), str(inst.get("input", ""))))
    return out


def sample(examples: Sequence[Example], n: int, seed: int, key: str) -> list[Example]:
    """The first ``n`` of a seeded permutation (by ``seed`` and ``key``, the task or target id):
    the same examples on every machine, whatever else the pool holds."""
    order = np.random.default_rng(sample_seed(seed, key)).permutation(len(examples))
    return [examples[int(i)] for i in order[:n]]


#: bump when rendering changes: cached samples of an older rendering are not reused
SAMPLE_VERSION = 1


def task_sample(task: Task, n: int, seed: int = 0) -> list[Example]:
    """Up to ``n`` examples of a source task (seeded). When the task's instances are read on
    demand (BIG-bench, NIV2 files), the sample is kept under ``CACHE/example-samples/`` by the
    reader's fingerprint of the files: a second run reads no task file."""
    if task.instances or task.instance_loader is None or task.content_key is None:
        return sample(rendered(task), n, seed, task.id)
    from .paths import cache_dir

    key = hashlib.sha256(json.dumps([SAMPLE_VERSION, task.source, task.id, task.instructions[0].raw or
                                     task.instructions[0].text, task.content_key, n, seed]).encode()).hexdigest()[:32]
    path = cache_dir() / "example-samples" / f"{key}.json"
    if path.is_file():
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
            return [Example(task.id, int(r["index"]), str(r["input"]), str(r["target"]), str(r.get("raw", "")))
                    for r in rows]
        except (OSError, ValueError, TypeError, KeyError) as exc:
            from .log import log

            log.warning("cached example sample %s is damaged (%s): it is drawn again", path, exc)
    got = sample(rendered(task), n, seed, task.id)
    from .io import write_json_atomic

    try:
        write_json_atomic(path, [{"index": ex.index, "input": ex.input, "target": ex.target, "raw": ex.raw} for ex in got],
                          "example sample")
    except InstaError:
        pass  # an unwritable cache: drawn again next time
    return got


def query_examples(target: Target, n: int, seed: int = 0) -> list[Example]:
    """The examples of ``target`` a selector sees: the ones the user gave (``--target-examples``),
    else up to ``n`` of its instances (seeded by the target id, so that evaluation can leave
    the very same ones out). Empty when the target has none."""
    if target.examples is not None:
        return list(target.examples[:n])
    if target.task is None:
        return []
    return sample(rendered(target.task), n, seed, target.id)


def read_examples(path: str | Path, task: str = "target") -> list[Example]:
    """Target examples from a JSONL file: one object a line with ``input`` (or ``prompt``) and
    ``output`` (or ``target``; a list gives its first item); other fields are ignored."""
    from .io import iter_jsonl

    p = Path(path).expanduser()
    if p.suffix.lower() not in (".jsonl", ".json"):
        raise InstaError(f"--target-examples {p}: give a .jsonl file (one {{\"input\": ..., \"output\": ...}} per line)")
    out = []
    for lineno, row in iter_jsonl(p, "target examples file"):
        if not isinstance(row, dict):
            raise InstaError(f"{p}:{lineno}: each line must be an object with 'input' and 'output'")
        prompt = row.get("input", row.get("prompt"))
        answer = row.get("output", row.get("target"))
        if isinstance(answer, list):
            answer = answer[0] if answer else None
        for name, value in (("input", prompt), ("output", answer)):
            if not isinstance(value, str) or not value.strip():
                raise InstaError(f"{p}:{lineno}: field '{name}' must be non-empty text; got {value!r:.40}")
        from .io import check_text

        check_text(prompt, f"{p}:{lineno}: field 'input'")
        check_text(answer, f"{p}:{lineno}: field 'output'")
        out.append(Example(task, -1, prompt, answer))
    if not out:
        raise InstaError(f"{p} holds no examples; give one JSON object per line with 'input' and 'output'")
    return out
