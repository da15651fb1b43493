"""Shared argument normalisation and validation for layers (Keras style).

Every check raises :class:`ArgError` whose message states the rule and ends
with ``Received: name=value``; ``arg`` lets the front end point at the argument.
"""
from __future__ import annotations

from typing import Any, Sequence

from ..errors import KdslError

__all__ = ["ArgError", "standardize_tuple", "check_choice", "check_int", "check_float", "check_rate"]


class ArgError(KdslError):
    """An invalid layer argument; ``arg`` names it."""

    def __init__(self, message: str, arg: str | None = None, hint: str | None = None):
        super().__init__(message, None, hint)
        self.arg = arg


def standardize_tuple(value: Any, n: int, name: str, allow_zero: bool = False) -> tuple[int, ...]:
    """An int or a sequence of ``n`` ints -> a tuple of ``n`` positive ints."""
    if isinstance(value, bool):
        raise ArgError(f"The `{name}` argument must be an int or a tuple of {n} ints. "
                       f"Received: {name}={value!r}", name)
    if isinstance(value, int):
        vals = (value,) * n
    elif isinstance(value, (list, tuple)) and len(value) == n and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        vals = tuple(value)
    else:
        raise ArgError(f"The `{name}` argument must be an int or a tuple of {n} ints. "
                       f"Received: {name}={value!r}", name)
    lo = 0 if allow_zero else 1
    if any(v < lo for v in vals):
        rule = "non-negative" if allow_zero else "positive"
        raise ArgError(f"The `{name}` argument must be {rule}. Received: {name}={value!r}", name)
    return vals


def check_choice(value: Any, choices: Sequence[str], name: str) -> str:
    if isinstance(value, str) and value.lower() in choices:
        return value.lower()
    raise ArgError(f"Invalid value for argument `{name}`: expected one of {list(choices)}. "
                   f"Received: {name}={value!r}", name)


def check_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgError(f"The `{name}` argument must be an int. Received: {name}={value!r}", name)
    if value < minimum:
        rule = "positive" if minimum == 1 else f">= {minimum}"
        raise ArgError(f"The `{name}` argument must be {rule}. Received: {name}={value!r}", name)
    return value


def check_float(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ArgError(f"The `{name}` argument must be a number. Received: {name}={value!r}", name)
    return float(value)


def check_rate(value: Any, name: str = "rate") -> float:
    v = check_float(value, name)
    if not 0.0 <= v < 1.0:
        raise ArgError(f"Invalid value for argument `{name}`: expected a float in the range [0, 1). "
                       f"Received: {name}={value!r}", name)
    return v
