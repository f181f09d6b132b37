"""High-level helpers shared by the CLI and scripts: building targets, running a selection."""

from __future__ import annotations

import json
import os
import stat
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import InstaError
from .pools import load_pool, parse_spec
from .select import Target
from .tasks import TaskPool


def targets_from_file(path: str | os.PathLike[str]) -> list[Target]:
    """Targets from a file: ``.txt`` holds one instruction per line; any table (JSONL/CSV)
    holds one target per row (fields guessed, as for pools)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise InstaError(f"targets file {p} does not exist")
    if p.suffix.lower() in (".txt", ".text", ""):
        targets = []
        for lineno, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip() and not line.lstrip().startswith("#"):
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
        return [Target.from_task(source.get(tid)) for tid in target_ids]
    return [Target.from_task(t) for t in source]


def check_out(path: str | os.PathLike[str], what: str = "--out") -> Path:
    """``path`` as a place for a new regular file, or a one-line error: never a folder, and
    never a FIFO, device or symbolic link (replacing one by a regular file would destroy it;
    writing through it would not be atomic). Commands call it before they start working."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise InstaError(f"{what} {p} is a folder; give a file path")
    if p.is_symlink() or (p.exists() and not p.is_file()):
        kind = ("a symbolic link" if p.is_symlink() else "a FIFO" if stat.S_ISFIFO(p.stat().st_mode)
                else "a device or special file")
        raise InstaError(f"{what} {p} is {kind}, not a regular file; give the path of a regular file")
    return p


@contextmanager
def atomic_path(path: str | os.PathLike[str], what: str = "--out") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` (normal file
    permissions), on failure it is removed: the target is never half-written."""
    p = check_out(path, what)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=p.suffix, dir=p.parent)
        os.close(fd)
    except OSError as exc:
        raise InstaError(f"cannot write {p}: {exc.strerror}") from None
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, p)
    except OSError as exc:
        raise InstaError(f"cannot write {p}: {exc.strerror}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json_atomic(path: str | os.PathLike[str], doc: Any) -> None:
    """Write JSON to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
