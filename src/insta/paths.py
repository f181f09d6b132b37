"""Where insta keeps its artifacts (embedding cache, downloaded promptsource templates)."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def cache_dir() -> Path:
    """The cache root: ``$INSTA_CACHE_DIR`` or the platform's user cache dir."""
    env = os.environ.get("INSTA_CACHE_DIR")
    path = Path(env).expanduser() if env else Path(platformdirs.user_cache_dir("insta-select"))
    return path
