"""The task model: a source or target task with its instructions, and a pool of tasks."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import InstaError, did_you_mean
from .io import surrogate_at


def family(item: Any) -> str:
    """The sibling rule, the one place it is defined: tasks (or targets) built on the same
    source dataset are siblings; a task without a recorded dataset is its own family."""
    return item.dataset or item.id


def is_blank(text: str) -> bool:
    """True when ``text`` shows nothing: only whitespace, control characters and invisible
    format characters (zero-width spaces and joiners, word joiners, byte-order marks,
    direction marks), which ``str.split`` keeps. Such an instruction is empty."""
    return all(ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf") for ch in text)


def clean_text(text: str) -> str:
    """Collapse all whitespace runs into single spaces and strip the ends."""
    return " ".join(str(text).split())


@dataclass(frozen=True)
class Instruction:
    """One instruction of a task.

    ``text`` is what gets embedded; ``raw`` keeps the original (e.g. the Jinja template);
    ``name`` is a human handle (template name, field name).
    """

    text: str
    raw: str | None = None
    name: str | None = None


@dataclass
class Task:
    """A task of a meta-dataset: an id, one or more instructions and optional metadata.

    ``label`` is a grouping such as the NIV2 category or the T0 cluster; ``dataset`` is the
    underlying source dataset (siblings share it); ``instances`` are optional examples
    (dicts with at least ``input`` and ``output``). ``source`` names the reader family that
    made the task (``p3``, ``niv2``, ``bigbench``, ``table``): how its examples are rendered.
    A reader that loads pools without instances (selection needs only instructions) sets
    ``instance_loader``, and :meth:`with_instances` reads them on demand.
    """

    id: str
    instructions: list[Instruction]
    label: str | None = None
    dataset: str | None = None
    split: str | None = None
    instances: list[dict[str, Any]] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    source: str | None = None
    instance_loader: Callable[[], list[dict[str, Any]]] | None = field(default=None, repr=False, compare=False)
    demonstrations: list[dict[str, Any]] = field(default_factory=list, repr=False)
    templates: tuple[Any, ...] = field(default=(), repr=False)
    members: tuple[str, ...] = ()
    #: a reader's fingerprint of the task's instances (their files' paths, sizes and times), so
    #: that what is derived from them (sampled examples) can be cached without reading them
    content_key: str | None = field(default=None, repr=False, compare=False)
    #: in a union of pools (``--pool A --pool B``): the spec of the pool the task came from;
    #: None in a single pool
    origin: str | None = None
    #: in a union, for an id that several pools hold: the task's id in its own pool (its union
    #: id is qualified, KIND:ID); None otherwise
    source_id: str | None = None

    @property
    def own_id(self) -> str:
        """The task's id in its own pool (the id a reader gave it)."""
        return self.source_id or self.id

    def with_instances(self) -> Task:
        """This task with every instance: loaded now through the reader's loader when the
        pool was read without them (only the tasks a mixture or evaluation uses are read)."""
        if self.instances or self.instance_loader is None:
            return self
        from dataclasses import replace

        return replace(self, instances=self.instance_loader())

    @property
    def texts(self) -> list[str]:
        return [ins.text for ins in self.instructions]

    def to_dict(self, with_instances: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "instructions": [
                {k: v for k, v in (("text", i.text), ("raw", i.raw), ("name", i.name)) if v is not None}
                for i in self.instructions
            ],
            "label": self.label,
            "dataset": self.dataset,
            "split": self.split,
        }
        if self.origin is not None:
            out["origin"] = self.origin
        if with_instances and self.instances is not None:
            out["instances"] = self.instances
        return out


class TaskPool(Sequence[Task]):
    """An ordered, validated collection of tasks with unique ids.

    Validation happens on construction: duplicate ids and tasks without usable
    instruction text are rejected with an error naming the task and the pool.
    """

    def __init__(self, tasks: Iterable[Task], name: str = "pool", *, description: str = ""):
        self.name = name
        self.description = description
        self._tasks: list[Task] = []
        self._index: dict[str, int] = {}
        for task in tasks:
            if task.id in self._index:
                raise InstaError(
                    f"{name}: duplicate task id {task.id!r}; ids must be unique "
                    "(map the id to a unique field, or combine fields, e.g. id=task,subtask)"
                )
            if not task.instructions or all(is_blank(i.text) for i in task.instructions):
                raise InstaError(f"{name}: task {task.id!r} has no usable instruction text")
            for what, text in [("its id", task.id), ("its label", task.label or ""),
                               *((f"instruction {i.name or n!r}", i.text) for n, i in enumerate(task.instructions))]:
                at = surrogate_at(text)
                if at is not None:
                    raise InstaError(f"{name}: task {task.id.encode('utf-8', 'backslashreplace').decode()!r}: {what} "
                                     f"holds an invalid character at position {at} (a lone surrogate, e.g. a JSON "
                                     "'\\ud800' escape, or bytes that were not UTF-8); fix the text")
            self._index[task.id] = len(self._tasks)
            self._tasks.append(task)

    # Sequence protocol
    def __len__(self) -> int:
        return len(self._tasks)

    def __getitem__(self, i):  # type: ignore[override]
        return self._tasks[i]

    def __iter__(self) -> Iterator[Task]:
        return iter(self._tasks)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._index

    def __repr__(self) -> str:
        return f"TaskPool({self.name!r}, {len(self)} tasks, {self.n_instructions} instructions)"

    @property
    def ids(self) -> list[str]:
        return [t.id for t in self._tasks]

    @property
    def n_instructions(self) -> int:
        return sum(len(t.instructions) for t in self._tasks)

    @property
    def labels(self) -> list[str | None]:
        return [t.label for t in self._tasks]

    def get(self, task_id: str) -> Task:
        """Return the task with this id, or raise an error suggesting close ids."""
        try:
            return self._tasks[self._index[task_id]]
        except KeyError:
            raise InstaError(
                f"unknown task id {task_id!r} in {self.name}{did_you_mean(task_id, self._index)}; "
                "list ids with 'insta tasks --pool SPEC'"
            ) from None

    def filter(self, keep, name: str | None = None) -> TaskPool:
        """A new pool with the tasks for which ``keep(task)`` is true."""
        return TaskPool([t for t in self._tasks if keep(t)], name or self.name, description=self.description)

    def group_by_dataset(self) -> TaskPool:
        """Merge tasks of the same source dataset into one task (id = dataset).

        The merged task keeps all instructions; its label is kept when the members agree
        and becomes the members' labels joined by '+' otherwise.
        """
        groups: dict[str, list[Task]] = {}
        for t in self._tasks:
            groups.setdefault(family(t), []).append(t)
        merged = []
        for ds, members in groups.items():
            if len(members) == 1 and members[0].id == ds:
                merged.append(members[0])
                continue
            labels = sorted({m.label for m in members if m.label})
            merged.append(
                Task(
                    id=ds,
                    instructions=[ins for m in members for ins in m.instructions],
                    label="+".join(labels) if labels else None,
                    dataset=ds,
                    split=members[0].split,
                    instances=(
                        [x for m in members for x in (m.instances or [])]
                        if any(m.instances is not None for m in members)
                        else None
                    ),
                    members=tuple(m.id for m in members),
                    source=members[0].source,
                )
            )
        return TaskPool(merged, self.name, description=self.description)
