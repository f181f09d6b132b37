"""insta's warnings go through one logger, ``insta``: the CLI prints each as a one-line
``warning:`` on stderr; library users see them through :mod:`logging` (Python prints
warnings to stderr when no handler is configured)."""

from __future__ import annotations

import logging

log = logging.getLogger("insta")
