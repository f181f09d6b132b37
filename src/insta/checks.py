"""Checking settings: the numbers and names users give on the command line or in a run config.

The config dataclasses (``TrainConfig``, ``MixConfig``, ``AlignConfig``) call
:func:`check_fields` in ``__post_init__``, so a value of the wrong type (``k: abc``,
``epochs: "3"``), a NaN or an infinity is refused wherever the config comes from, with a
message naming both the config field and the command-line option.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

from .errors import InstaError, did_you_mean

#: seeds feed numpy's legacy seeding (transformers.set_seed), which takes 0 .. 2**32 - 1
MAX_SEED = 2**32 - 1
#: no count insta takes is anywhere near this; larger values overflow C integers downstream
MAX_INT = 2**40


#: settings whose command-line option is not --<name> (None: no option; a run config field only)
FLAGS: dict[str, dict[str, str | None]] = {
    "features": {"per_task": "--examples-per-task", "query_examples": "--query-examples", "proj_dim": "--proj-dim",
                 "lm": "--lm", "device": "--device", "seed": "--seed", "engine": "--embed-engine",
                 "actors": "--ray-actors"},
}


def option(section: str, name: str) -> str:
    """'train.lr (--lr)': how a setting is spelled in a run config and on the command line."""
    if not section:
        return f"--{name.replace('_', '-')}"
    flags = FLAGS.get(section)
    flag = flags.get(name) if flags is not None else f"--{name.replace('_', '-')}"
    return f"{section}.{name} ({flag})" if flag else f"{section}.{name}"


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"


def check_int(value: Any, name: str, *, min: int | None = None, max: int = MAX_INT) -> int:
    """``value`` as an int in [min, max], or one line naming the setting."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InstaError(f"{name} must be an integer, got {_describe(value)}")
    if min is not None and value < min:
        raise InstaError(f"{name} must be at least {min}, got {value}")
    if value > max:
        raise InstaError(f"{name} must be at most {max}, got {value}")
    return value


def check_seed(value: Any, name: str = "--seed") -> int:
    return check_int(value, name, min=0, max=MAX_SEED)


def check_float(value: Any, name: str, *, min: float | None = None, max: float | None = None,
                positive: bool = False) -> float:
    """``value`` as a finite float (ints accepted) in range, or one line naming the setting."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InstaError(f"{name} must be a number, got {_describe(value)}")
    value = float(value)
    if not math.isfinite(value):
        raise InstaError(f"{name} must be a finite number, got {value}")
    if positive and value <= 0:
        raise InstaError(f"{name} must be positive, got {value:g}")
    if min is not None and value < min:
        raise InstaError(f"{name} must be at least {min:g}, got {value:g}")
    if max is not None and value > max:
        raise InstaError(f"{name} must be at most {max:g}, got {value:g}")
    return value


def check_choice(value: Any, name: str, choices: typing.Iterable[str]) -> str:
    choices = list(choices)
    if not isinstance(value, str) or value not in choices:
        hint = did_you_mean(value, choices) if isinstance(value, str) else ""
        raise InstaError(f"{name} must be one of {', '.join(choices)}; got {_describe(value)}{hint}")
    return value


def _allowed(hint: Any) -> tuple[set[type], bool]:
    """(types accepted, None accepted) of a simple annotation such as ``float | None``."""
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union else (hint,)
    kinds = {a for a in args if isinstance(a, type) and a is not type(None)}
    return kinds, type(None) in args


def check_fields(obj: Any, section: str) -> None:
    """Check every field of a config dataclass against its annotation (int, float, bool, str,
    optionally None): types, finiteness, the size of integers, seeds in range."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        kinds, nullable = _allowed(hints[f.name])
        name = option(section, f.name)
        if value is None:
            if not nullable:
                raise InstaError(f"{name} must be given (got null)")
            continue
        if not kinds or not kinds <= {int, float, bool, str}:
            continue  # nested or free-form fields are checked by their owner
        if bool in kinds:
            if not isinstance(value, bool):
                raise InstaError(f"{name} must be true or false, got {_describe(value)}")
        elif float in kinds:
            check_float(value, name)
        elif int in kinds:
            check_seed(value, name) if f.name == "seed" else check_int(value, name, min=-MAX_INT)
        elif str in kinds and not isinstance(value, str):
            raise InstaError(f"{name} must be text, got {_describe(value)}")


def resolve_device(device: str | None) -> str:
    """A torch device name for ``--device``: auto -> cuda when torch sees one, else cpu; cuda
    asked for on a machine without it is one line that says so (not a model-loading error)."""
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not isinstance(device, str):
        raise InstaError(f"--device must be text (auto, cpu, cuda or cuda:N), got {_describe(device)}")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InstaError(f"--device {device} asked for, but torch sees no CUDA device here (torch {torch.__version__}); "
                             "use --device cpu (or auto)")
        index = device.partition(":")[2]
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            raise InstaError(f"--device {device}: torch sees {torch.cuda.device_count()} CUDA device(s): cuda:0 .. "
                             f"cuda:{torch.cuda.device_count() - 1}")
        return device
    if device == "mps":
        if not torch.backends.mps.is_available():
            raise InstaError("--device mps asked for, but torch sees no Apple GPU here; use --device cpu (or auto)")
        return device
    if device != "cpu":
        raise InstaError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps")
    return device
