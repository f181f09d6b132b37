"""Resuming interrupted training (``insta train``, ``insta align``): which checkpoints are whole.

The Trainer writes ``checkpoint-N/`` file by file (weights, optimizer, scheduler, RNG state)
and ``trainer_state.json`` last, so a process killed mid-save leaves a folder that the
Trainer would refuse on every later resume. A checkpoint counts only when its
``trainer_state.json`` parses and its weights and optimizer state are there; the others are
removed before resuming from the newest whole one.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

WEIGHTS = ("*.safetensors", "*.bin", "*.pt")


def _step(path: Path) -> int:
    m = re.fullmatch(r"checkpoint-(\d+)", path.name)
    return int(m.group(1)) if m else -1


def is_whole(path: Path) -> bool:
    """Did the save of this checkpoint folder finish?"""
    try:
        state = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    has_weights = any(f.name != "optimizer.pt" for pattern in WEIGHTS for f in path.rglob(pattern))
    return isinstance(state, dict) and (path / "optimizer.pt").is_file() and has_weights


def last_whole_checkpoint(folder: Path, say: Callable[[str], None] | None = None) -> Path | None:
    """The newest whole ``checkpoint-N`` under ``folder``; incomplete ones are deleted (and said)."""
    if not folder.is_dir():
        return None
    found = sorted((p for p in folder.iterdir() if p.is_dir() and _step(p) >= 0), key=_step)
    whole = []
    for path in found:
        if is_whole(path):
            whole.append(path)
        else:
            if say:
                say(f"removing {path.name}: its save was interrupted (incomplete checkpoint)")
            shutil.rmtree(path, ignore_errors=True)
    return whole[-1] if whole else None
