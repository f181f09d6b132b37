"""Super-NaturalInstructions v2 reader over a checkout of allenai/natural-instructions.

Layout: ``tasks/<name>.json`` (Definition, Categories, Source, Positive Examples, Instances)
and ``splits/<setting>/{train,test}_tasks.txt``. One task file is one task; its Definition
is its instruction and its first category its label.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..errors import InstaError
from ..io import json_type, read_json, read_text
from .base import PoolSpec, Reader
from ..tasks import Instruction, Task, TaskPool, clean_text, is_blank


def source_from_name(name: str) -> str:
    """The source dataset a NIV2 task name carries (``task1385_anli_r1_entailment``: ``anli``),
    for tables and files without a Source field; a name of another shape is its own source."""
    parts = name.split("_")
    return parts[1] if len(parts) > 2 and re.fullmatch(r"task\d+", parts[0]) else name


def _split_lists(root: Path, setting: str) -> dict[str, str]:
    """task name -> 'train' / 'test' for the split setting (empty if no split files)."""
    out: dict[str, str] = {}
    folder = root / "splits" / setting
    for split in ("train", "test"):
        path = folder / f"{split}_tasks.txt"
        if path.is_file():
            for line in read_text(path, "NIV2 split list").splitlines():
                if line.strip():
                    out[line.strip()] = split
    return out


def _texts(path: Path, data: dict[str, Any], name: str, *, required: bool = False) -> list[str]:
    """A field that holds a text or a list of texts (Definition, Categories, Source, ...)."""
    value = data.get(name)
    if value is None:
        if required:
            raise InstaError(f"{path}: field {name!r} is missing; is this a NIV2 task file?")
        return []
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(v, str) for v in values):
        raise InstaError(f"{path}: field {name!r} must be a text or a list of texts, "
                         f"got {json_type(type(value if not isinstance(value, list) else next(v for v in values if not isinstance(v, str))))}")
    return values


def _examples(path: Path, data: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """Instances or Positive Examples: a list of objects with a text 'input' and 'output'
    (a text or a list of texts); anything else is refused with its index."""
    value = data.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        raise InstaError(f"{path}: field {name!r} must be a list of objects, got {json_type(type(value))}")
    out = []
    for i, ex in enumerate(value):
        if not isinstance(ex, dict) or not isinstance(ex.get("input", ""), str):
            raise InstaError(f"{path}: {name}[{i}] must be an object with a text 'input'")
        output = ex.get("output")
        outputs = output if isinstance(output, list) else [] if output is None else [output]
        if not all(isinstance(o, (str, int, float)) for o in outputs):  # real files hold numbers too (task1759)
            raise InstaError(f"{path}: {name}[{i}].output must be a text or a list of texts")
        out.append({"id": ex.get("id"), "input": ex.get("input", ""), "output": [str(o) for o in outputs],
                    **({"explanation": ex["explanation"]} if isinstance(ex.get("explanation"), str) else {})})
    return out


def read_task_file(path: Path, *, max_instances: int | None = 0) -> dict[str, Any]:
    """Read one NIV2 task file; ``max_instances`` None keeps all instances, 0 none."""
    data = read_json(path, "NIV2 task file", expect=dict)
    if "Definition" not in data:
        raise InstaError(f"{path}: field 'Definition' is missing; is this a NIV2 task file?")
    if max_instances != 0:
        instances = _examples(path, data, "Instances")
        data["Instances"] = instances if max_instances is None else instances[:max_instances]
    else:
        data.pop("Instances", None)
    return data


def _file_key(path: Path) -> str | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return f"niv2\0{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}"


def task_from_file(path: Path, *, split: str | None = None, max_instances: int | None = 0) -> Task:
    data = read_task_file(path, max_instances=max_instances)
    definition = " ".join(_texts(path, data, "Definition", required=True))
    if is_blank(definition):
        raise InstaError(f"{path}: field 'Definition' is empty; a task needs its instruction text")
    categories = _texts(path, data, "Categories")
    sources = _texts(path, data, "Source")
    positives = _examples(path, data, "Positive Examples")
    instances = data.get("Instances")
    return Task(
        id=path.stem,
        instructions=[Instruction(text=clean_text(definition), raw=definition, name="Definition")],
        label=categories[0] if categories else None,
        dataset=sources[0] if sources else source_from_name(path.stem),
        split=split,
        instances=instances,
        source="niv2",
        instance_loader=None if max_instances is None else (
            lambda: task_from_file(path, split=split, max_instances=None).instances or []),
        content_key=_file_key(path),
        meta={
            "categories": categories,
            "input_language": _texts(path, data, "Input_language"),
            "output_language": _texts(path, data, "Output_language"),
        },
        demonstrations=positives,
    )


def load_niv2(spec: PoolSpec) -> TaskPool:
    if not spec.arg:
        raise InstaError("niv2: give the checkout folder, e.g. niv2:/data/natural-instructions")
    root = Path(spec.arg).expanduser()
    if not root.exists():
        raise InstaError(f"niv2: {root} does not exist; clone allenai/natural-instructions and point at it")
    task_dir = root / "tasks" if (root / "tasks").is_dir() else root
    files = sorted(p for p in task_dir.glob("task*.json"))
    if not files:
        raise InstaError(f"niv2: no tasks/task*.json under {root}; is this a natural-instructions checkout?")
    setting = spec.option("setting", "default") or "default"
    splits = _split_lists(root, setting)
    want_split = spec.option("split", "all")
    if want_split not in ("all", "train", "test"):
        raise InstaError(f"pool spec {spec.text!r}: split={want_split!r}; use train, test or all")
    if want_split != "all" and not splits:
        raise InstaError(f"niv2: split={want_split} asked for but {root / 'splits' / setting} has no *_tasks.txt")
    raw_instances = spec.option("instances", "0")
    max_instances: int | None
    if raw_instances == "all":
        max_instances = None
    else:
        max_instances = spec.integer("instances", 0)
        if max_instances < 0:
            raise InstaError(f"pool spec {spec.text!r}: instances must be >= 0 or 'all'")
    include = set(spec.listing("categories"))
    exclude = set(spec.listing("exclude_categories"))
    tasks = []
    for path in files:
        split = splits.get(path.stem)
        if want_split != "all" and split != want_split:
            continue
        task = task_from_file(path, split=split, max_instances=max_instances)
        cats = set(task.meta["categories"])
        if include and not cats & include:
            continue
        if exclude and cats & exclude:
            continue
        tasks.append(task)
    return TaskPool(tasks, name=f"niv2:{root.name}", description=f"NIV2 task files under {task_dir} (split {want_split})")


READER = Reader(
    kind="niv2",
    summary="Super-NaturalInstructions v2 checkout (tasks/*.json, splits/<setting>/)",
    arg="path of the natural-instructions checkout (or its tasks/ folder)",
    options={
        "split": "train | test | all (default) — from splits/<setting>/",
        "setting": "split setting folder: default (default) or xlingual",
        "categories": "keep only tasks in these categories (comma-separated)",
        "exclude_categories": "drop tasks in these categories (comma-separated)",
        "instances": "load up to N instances per task (default 0; 'all' for every one)",
    },
    examples=["niv2:natural-instructions?split=train", "niv2:natural-instructions?exclude_categories=Translation"],
    load=load_niv2,
)
