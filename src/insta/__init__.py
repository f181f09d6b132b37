"""insta-select: instruction-based task selection (INSTA) for instruction tuning.

>>> from insta import load_pool, InstructionSelector, Target
>>> pool = load_pool("p3:t0-train")
>>> selector = InstructionSelector().fit(pool)
>>> selector.select(Target.from_text("Is this review positive or negative?"), k=5).ids
"""

from __future__ import annotations

__version__ = "0.1.0"

from .cache import EmbeddingCache
from .encoder import DEFAULT_MODEL, PAPER_MODEL, Encoder
from .errors import InstaError
from .pools import load_pool, parse_spec
from .pools import readers as available_readers  # insta.readers is the subpackage of readers
from .select import Exclusions, InstructionSelector, Match, Selected, Selection, Target
from .tasks import Instruction, Task, TaskPool

__all__ = [
    "DEFAULT_MODEL", "PAPER_MODEL", "EmbeddingCache", "Encoder", "Exclusions", "Instruction",
    "InstaError", "InstructionSelector", "Match", "Selected", "Selection", "Target", "Task",
    "TaskPool", "available_readers", "load_pool", "parse_spec", "__version__",
]
