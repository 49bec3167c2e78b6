"""Argument checks shared by the public functions.

They run before anything is sent, so a bad value fails at the call with the argument's
name (``TypeError`` for a wrong type, ``ValueError`` for a bad value) instead of as a
packing error or a rejection from the daemon.
"""

from __future__ import annotations

import enum
import math
import numbers
import operator
from typing import TypeVar

from audiodecode._protocol import MAX_SLOTS

U32_MAX = (1 << 32) - 1
U64_MAX = (1 << 64) - 1
# The daemon refuses higher rates.
# The daemon's bounds (daemon/src/decode/limits.rs, Note [Resource limits]).
MIN_SAMPLE_RATE = 1_000
MAX_SAMPLE_RATE = 768_000
# A ring has at most this many slots, so no stream can run further ahead.
MAX_PREFETCH = MAX_SLOTS

E = TypeVar("E", bound=enum.Enum)
_COMPARE = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}


def text(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, not {value!r}")
    return value


def flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, not {value!r}")
    return value


def integer(name: str, value: object, low: int = 0, high: int = U32_MAX) -> int:
    """An integer in ``[low, high]`` (bool is not an integer here)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    n = int(value)
    if not low <= n <= high:
        raise ValueError(f"{name} must be an integer from {low} to {high}, not {n}")
    return n


def sample_rate(name: str, value: object) -> int:
    return integer(name, value, MIN_SAMPLE_RATE, MAX_SAMPLE_RATE)


def number(
    name: str,
    value: object,
    *,
    above: float | None = None,
    at_least: float | None = None,
    below: float | None = None,
    at_most: float | None = None,
) -> float:
    """A finite real number within the given bounds, as a float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, not {value!r}")
    try:
        x = float(value)
    except OverflowError:  # an int beyond float range
        x = math.inf
    given = ((">", above), (">=", at_least), ("<", below), ("<=", at_most))
    limits = [(op, bound) for op, bound in given if bound is not None]
    if not (math.isfinite(x) and all(_COMPARE[op](x, bound) for op, bound in limits)):
        within = "".join(f" {'and ' if i else ''}{op} {b:g}" for i, (op, b) in enumerate(limits))
        raise ValueError(f"{name} must be a finite number{within}, not {value}")
    return x


def choice(name: str, value: object, options: type[E]) -> E:
    """The member of ``options`` named ``value``, case-insensitively."""
    names = ", ".join(m.name.lower() for m in options)
    if not isinstance(value, str):
        raise TypeError(f"{name} must be one of {names}, not {value!r}")
    try:
        return options[value.upper()]
    except KeyError:
        raise ValueError(f"{name} must be one of {names}, not {value!r}") from None
