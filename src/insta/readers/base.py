"""What a pool reader is: the parsed pool spec it receives and its registry entry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import InstaError
from ..tasks import TaskPool


@dataclass(frozen=True)
class PoolSpec:
    kind: str
    arg: str
    options: dict[str, str]
    text: str

    def option(self, name: str, default: str | None = None) -> str | None:
        return self.options.get(name, default)

    def flag(self, name: str, default: bool = False) -> bool:
        value = self.options.get(name)
        if value is None:
            return default
        lowered = value.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise InstaError(f"pool spec {self.text!r}: option {name}={value!r} is not a boolean; use true or false")

    def integer(self, name: str, default: int) -> int:
        value = self.options.get(name)
        if value is None:
            return default
        try:
            return int(value)
        except ValueError:
            raise InstaError(f"pool spec {self.text!r}: option {name}={value!r} is not an integer") from None

    def listing(self, name: str) -> list[str]:
        value = self.options.get(name)
        return [v.strip() for v in value.split(",") if v.strip()] if value else []


@dataclass(frozen=True)
class Reader:
    """A registered pool reader: how to spell it, what it takes, and the loader."""

    kind: str
    summary: str
    arg: str
    options: dict[str, str]
    examples: list[str]
    load: Callable[[PoolSpec], TaskPool]
    named: dict[str, str] = field(default_factory=dict)  # named pools: arg -> description
