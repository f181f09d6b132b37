"""High-level helpers shared by the CLI and scripts: building targets, running a selection."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from .errors import InstaError
from .io import read_text
from .pools import load_pool, parse_spec
from .select import Target
from .tasks import TaskPool, is_blank


def targets_from_file(path: str | os.PathLike[str]) -> list[Target]:
    """Targets from a file: ``.txt`` holds one instruction per line; any table (JSONL/CSV)
    holds one target per row (fields guessed, as for pools)."""
    p = Path(path).expanduser()
    if p.suffix.lower() in (".txt", ".text", ""):
        targets = []
        for lineno, line in enumerate(read_text(p, "targets file").splitlines(), start=1):
            if not is_blank(line) and not line.lstrip().startswith("#"):
                targets.append(Target.from_text(line, id=f"{p.name}:{lineno}"))
        if not targets:
            raise InstaError(f"targets file {p} holds no instruction lines")
        return targets
    return [Target.from_task(t) for t in load_pool(str(p))]


def resolve_targets(
    pool: TaskPool,
    *,
    instructions: Sequence[str] = (),
    target_ids: Sequence[str] = (),
    targets_spec: str | None = None,
    targets_file: str | None = None,
) -> list[Target]:
    """Build the list of targets from exactly one of the CLI's target options."""
    given = sum(bool(x) for x in (instructions, target_ids or targets_spec, targets_file))
    if given == 0:
        raise InstaError("no target: give --instruction TEXT, --target ID (with --targets SPEC), or --targets-file FILE")
    if given > 1:
        raise InstaError("give only one of --instruction, --target/--targets, --targets-file")
    if instructions:
        return [Target.from_text(list(instructions))]
    if targets_file:
        return targets_from_file(targets_file)
    source = load_pool(parse_spec(targets_spec)) if targets_spec else pool
    if target_ids:
        twice = sorted({t for t in target_ids if list(target_ids).count(t) > 1})
        if twice:
            raise InstaError(f"--target {twice[0]!r} is given twice; name each target once")
        return [Target.from_task(source.get(tid)) for tid in target_ids]
    return [Target.from_task(t) for t in source]
