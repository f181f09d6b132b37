"""Generic table readers: JSONL, CSV and Hugging Face ``datasets`` with a field mapping.

Options name the fields: ``id`` (one field, or several joined by '/', e.g. ``id=task,subtask``),
``instruction`` (one or more fields; a list-valued field gives several instructions),
``label`` and ``dataset``. Unset fields are guessed from common names.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..errors import InstaError, did_you_mean
from ..io import json_type, parse_json, read_text
from .base import PoolSpec, Reader
from ..tasks import Instruction, Task, TaskPool, clean_text, is_blank

ID_GUESSES = ("id", "task_id", "name", "task")
INSTRUCTION_GUESSES = ("instruction", "instructions", "definition", "description", "summary", "prompt")
LABEL_GUESSES = ("label", "category", "cluster")

COMMON_OPTIONS = {
    "id": "field(s) giving the task id; several are joined by '/' (default: first of id, task_id, name, task)",
    "instruction": "field(s) with instruction text; list values give several (default: instruction, definition, description, summary, ...)",
    "label": "field with the task's label/category (default: label, category or cluster if present)",
    "dataset": "field with the task's source dataset (siblings share it)",
    "split": "field with the task's split (default: split, if present)",
    "where": "keep rows matching FIELD:VALUE (comma-separated, all must hold; a list field matches when it holds VALUE)",
    "skip_empty": "true: drop rows whose instruction is empty instead of failing",
}


def _pick(spec: PoolSpec, name: str, guesses: tuple[str, ...], fields: Iterable[str], where: str, required: bool) -> list[str]:
    fields = list(fields)
    wanted = spec.listing(name)
    if wanted:
        missing = [f for f in wanted if f not in fields]
        if missing:
            raise InstaError(f"{where}: mapped {name} field {missing[0]!r} is not in the data; fields: {', '.join(fields)}")
        return wanted
    for g in guesses:
        if g in fields:
            return [g]
    if required:
        raise InstaError(f"{where}: no {name} field found; name it with ?{name}=FIELD (fields: {', '.join(fields)})")
    return []


def _where(spec: PoolSpec) -> list[tuple[str, str]]:
    out = []
    for cond in spec.listing("where"):
        field, sep, value = cond.partition(":")
        if not sep:
            raise InstaError(f"pool spec {spec.text!r}: where={cond!r} must look like FIELD:VALUE")
        out.append((field, value))
    return out


def _value_text(value: Any) -> str:
    return "" if value is None else str(value)


def _holds(value: Any, wanted: str) -> bool:
    """Does a row's value satisfy where=FIELD:wanted? A list field does when one of its items is ``wanted``."""
    if isinstance(value, list):
        return any(not isinstance(x, (dict, list)) and _value_text(x) == wanted for x in value)
    return _value_text(value) == wanted


class _WhereSeen:
    """What the rows held, to say why where= kept none of them: the fields, and some values
    of each filtered field."""

    def __init__(self, conditions: list[tuple[str, str]]):
        self.conditions = conditions
        self.fields: dict[str, None] = {}
        self.values: dict[str, dict[str, None]] = {f: {} for f, _ in conditions}

    def see(self, row: dict[str, Any]) -> None:
        if len(self.fields) < 200:
            self.fields.update(dict.fromkeys(row))
        for f, found in self.values.items():
            if f in row and len(found) < 6:
                items = row[f] if isinstance(row[f], list) else [row[f]]
                found.update((_value_text(x)[:40], None) for x in items if not isinstance(x, (dict, list)))

    def error(self, spec: PoolSpec, source: str, n_rows: int) -> InstaError:
        fields = ", ".join(self.fields)
        for f, v in self.conditions:
            if f not in self.fields:
                return InstaError(f"{source}: where={f}:{v} names a field no row has{did_you_mean(f, self.fields)}; "
                                  f"fields: {fields}")
        shown = "; ".join(f"{f} holds e.g. {', '.join(map(repr, self.values[f])) or 'nothing'}" for f, _ in self.conditions)
        return InstaError(f"{source}: where={spec.option('where')} keeps none of the {n_rows} rows ({shown}); "
                          "check the values")


def _scalar(row: dict[str, Any], name: str, where: str, what: str, *, first_of_list: bool = False) -> str | None:
    """A field holding one value: text or a number (a list gives its first value where
    ``first_of_list``); objects and nested lists are refused, never stringified."""
    value = row.get(name)
    if first_of_list and isinstance(value, list):
        value = value[0] if value else None
    if isinstance(value, (dict, list)) or isinstance(value, bool):
        raise InstaError(f"{where}: field {name!r} ({what}) must be a text{' or number' if not isinstance(value, bool) else ''}, "
                         f"got {json_type(type(value))}{'; map another field with ?' + what + '=FIELD' if what in ('id', 'label', 'dataset') else ''}")
    text = _value_text(value)
    return text or None


def _instruction_values(row: dict[str, Any], name: str, where: str) -> list[str]:
    """An instruction field: a text, or a list of texts (several instructions)."""
    value = row[name]
    values = value if isinstance(value, list) else [value]
    for i, v in enumerate(values):
        if v is not None and not isinstance(v, str):
            at = f"{name}[{i}]" if isinstance(value, list) else name
            raise InstaError(f"{where}: field {at!r} must be a text (an instruction), got {json_type(type(v))}; "
                             "an instruction field holds a text or a list of texts")
    return [v for v in values if v is not None]


def tasks_from_rows(rows: Iterator[tuple[str, dict[str, Any]]], spec: PoolSpec, source: str) -> TaskPool:
    """Build a pool from (location, row) pairs; location is 'file:line' for messages."""
    conditions = _where(spec)
    seen = _WhereSeen(conditions) if conditions else None
    skip_empty = spec.flag("skip_empty")
    tasks: list[Task] = []
    mapping: tuple[list[str], list[str], list[str], list[str], list[str]] | None = None
    n_rows = 0
    for where, row in rows:
        n_rows += 1
        if not isinstance(row, dict):
            raise InstaError(f"{where}: each row must be a JSON object, got {type(row).__name__}")
        if mapping is None:
            mapping = (
                _pick(spec, "id", ID_GUESSES, row, where, True),
                _pick(spec, "instruction", INSTRUCTION_GUESSES, row, where, True),
                _pick(spec, "label", LABEL_GUESSES, row, where, False),
                _pick(spec, "dataset", (), row, where, False),
                _pick(spec, "split", ("split",), row, where, False),
            )
        id_fields, ins_fields, label_fields, ds_fields, split_fields = mapping
        if seen is not None:
            seen.see(row)
        if not all(_holds(row.get(f), v) for f, v in conditions):
            continue
        for f in id_fields + ins_fields:
            if f not in row:
                raise InstaError(f"{where}: field {f!r} is missing; every row needs the mapped fields")
        task_id = "/".join(v for v in (_scalar(row, f, where, "id") for f in id_fields) if v)
        if not task_id.strip():
            raise InstaError(f"{where}: the id field ({', '.join(id_fields)}) is empty")
        instructions = []
        for f in ins_fields:
            values = _instruction_values(row, f, where)
            for i, v in enumerate(values):
                text = clean_text(v)
                if not is_blank(text):  # zero-width characters alone are no instruction either
                    name = f if len(values) == 1 else f"{f}[{i}]"
                    instructions.append(Instruction(text=text, raw=v, name=name))
        if not instructions:
            if skip_empty:
                continue
            raise InstaError(
                f"{where}: task {task_id!r} has an empty instruction (field {', '.join(ins_fields)}); "
                "fill it in, or pass skip_empty=true to drop such rows"
            )
        label = _scalar(row, label_fields[0], where, "label", first_of_list=True) if label_fields else None
        dataset = _scalar(row, ds_fields[0], where, "dataset") if ds_fields else None
        split = _scalar(row, split_fields[0], where, "split") if split_fields else None
        extra = {k: v for k, v in row.items() if k not in set(id_fields + ins_fields)}
        tasks.append(Task(id=task_id, instructions=instructions, label=label, dataset=dataset,
                          split=split, meta=extra, source="table"))
    if n_rows == 0:
        raise InstaError(f"{source}: the file holds no rows (one task per row is expected)")
    if seen is not None and not tasks and not skip_empty:
        raise seen.error(spec, source, n_rows)
    return TaskPool(tasks, name=source)


def _existing(spec: PoolSpec) -> Path:
    if not spec.arg:
        raise InstaError(f"{spec.kind}: give a file path, e.g. {spec.kind}:tasks.{spec.kind}")
    path = Path(spec.arg).expanduser()
    if path.is_dir():
        raise InstaError(f"{spec.kind}: {path} is a folder; give the path of a .{spec.kind} file")
    if not path.is_file():
        raise InstaError(f"{spec.kind}: file {path} does not exist")
    return path


def _jsonl_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    text = read_text(path, "jsonl")
    if text.lstrip().startswith("["):  # a JSON array of objects is accepted too
        try:
            array = parse_json(text, path)
        except InstaError:
            array = None  # not one array: read it as JSON Lines (whose first line may be an array, an error below)
        if array is not None:
            for i, row in enumerate(array):
                yield f"{path}[{i}]", row
            return
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        yield f"{path}:{lineno}", parse_json(line, f"{path}:{lineno}", line=True)


def load_jsonl(spec: PoolSpec) -> TaskPool:
    path = _existing(spec)
    return tasks_from_rows(_jsonl_rows(path), spec, str(path))


def _looks_like_data(cell: str) -> bool:
    """A header cell that reads as a value: a number, or a sentence (a column name is a word or two)."""
    text = cell.strip()
    try:
        float(text)
        return True
    except ValueError:
        return len(text.split()) >= 4 or len(text) > 40


def _check_header(spec: PoolSpec, path: Path, header: list[str]) -> None:
    """A CSV whose first line is a row of data (no header): say so, instead of listing its
    values as the field names."""
    names = set(ID_GUESSES + INSTRUCTION_GUESSES + LABEL_GUESSES)
    for option in ("id", "instruction", "label", "dataset", "split"):
        names.update(spec.listing(option))
    if header and not names & set(header) and any(_looks_like_data(h) for h in header):
        first = ",".join(header)
        raise InstaError(f"{path}:1: the first line ({first[:60] + '…' if len(first) > 60 else first}) is data, not a "
                         "header: a CSV pool needs a header line naming its columns; add one, e.g. 'id,instruction'")


def load_csv(spec: PoolSpec) -> TaskPool:
    path = _existing(spec)
    delimiter = spec.option("delimiter", ",") or ","
    if delimiter == "tab":
        delimiter = "\t"
    if len(delimiter) != 1:
        raise InstaError(f"pool spec {spec.text!r}: delimiter={delimiter!r} must be one character (or 'tab')")
    text = read_text(path, "csv")  # a byte-order mark is dropped: the first header is 'id', not '\ufeffid'

    def rows() -> Iterator[tuple[str, dict[str, Any]]]:
        # strict: a stray quote is an error instead of a cell that silently swallows the rows after it
        reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
        last = 0  # the line the previous row ended on: a row that fails starts on the next one
        try:
            header = reader.fieldnames or []
            last = reader.line_num
            twice = sorted({h for h in header if header.count(h) > 1})
            if twice:
                raise InstaError(f"{path}:1: the header names column {twice[0]!r} twice; give every column its own name")
            _check_header(spec, path, header)
            for row in reader:
                start = last + 1
                last = reader.line_num
                if None in row:
                    raise InstaError(f"{path}:{start}: more cells than header columns; quote cells that contain the "
                                     f"delimiter {delimiter!r}")
                yield f"{path}:{start}", row
        except csv.Error as exc:
            raise InstaError(f"{path}:{last + 1}: malformed CSV in the row starting on this line ({exc}); check its "
                             "quotes (a cell with a quote, delimiter or line break must be quoted, its quotes doubled)") from None

    return tasks_from_rows(rows(), spec, str(path))


def load_hf(spec: PoolSpec) -> TaskPool:
    if not spec.arg:
        raise InstaError("hf: give a dataset name or a folder saved with save_to_disk, e.g. hf:org/tasks")
    import datasets  # imported lazily: heavy

    split = spec.option("split", "train") or "train"
    path = Path(spec.arg).expanduser()
    try:
        if path.exists() and (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
            ds = datasets.load_from_disk(str(path))
        else:
            ds = datasets.load_dataset(spec.arg, spec.option("subset"), split=split)
    except FileNotFoundError as exc:
        raise InstaError(f"hf: dataset {spec.arg!r} not found ({exc}); give a hub id or a save_to_disk folder") from None
    except Exception as exc:  # datasets raises many types for offline/unknown datasets
        raise InstaError(f"hf: cannot load dataset {spec.arg!r}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise InstaError(f"hf: split {split!r} not in {spec.arg}; available: {', '.join(ds)}")
        ds = ds[split]
    return tasks_from_rows(((f"{spec.arg}[{split}][{i}]", row) for i, row in enumerate(ds)), spec, f"hf:{spec.arg}")


JSONL = Reader(kind="jsonl", summary="JSON Lines (or a JSON array) file, one task per row", arg="file path",
               options=COMMON_OPTIONS, examples=["jsonl:niv2/tasks.jsonl?id=name&instruction=summary&label=category"],
               load=load_jsonl)
CSV = Reader(kind="csv", summary="CSV file with a header row, one task per row", arg="file path",
             options=COMMON_OPTIONS | {"delimiter": "cell delimiter (default ','; 'tab' for TSV)"},
             examples=["csv:my_tasks.csv?id=task&instruction=prompt"], load=load_csv)
HF = Reader(kind="hf", summary="Hugging Face dataset: hub id (datasets.load_dataset) or a save_to_disk folder",
            arg="dataset id or folder",
            options=COMMON_OPTIONS | {"split": "split to read (default train)", "subset": "dataset config name"},
            examples=["hf:./my_tasks_saved?instruction=definition&label=category"], load=load_hf)
