"""Argument checks shared by the layers and the backbones: each returns the normalized value or raises
a one-line ``ValueError`` that starts with the argument's name (``"<argument>: must be ..."``).

The backbone toolkit (``zoo/backbones/_common.py``) builds its hyper-parameter checks from these,
so a layer and a backbone reject a bad width, count, rate or choice with the same words.
"""

from __future__ import annotations

import numbers
from typing import Any, Sequence

NORMS = (None, "batch", "layer")


def is_integer(value: Any) -> bool:
    """True for ints and integral reals (``3``, ``3.0``, ``np.int64(3)``), False for bools and others."""
    return (not isinstance(value, bool) and isinstance(value, numbers.Real) and value == value
            and float(value).is_integer())


def integer(value: Any, argument: str, minimum: int = 1) -> int:
    """``value`` as an int ``>= minimum``.

    >>> integer(3.0, "num_layers")
    3
    """
    if not is_integer(value) or value < minimum:
        raise ValueError(f"{argument}: must be an integer >= {minimum}, got {value!r}")
    return int(value)


def optional_integer(value: Any, argument: str, minimum: int = 1) -> int | None:
    """None, or ``value`` as an int ``>= minimum`` (e.g. an optional low rank)."""
    return None if value is None else integer(value, argument, minimum)


def widths(value: Any, argument: str, allow_empty: bool = True) -> list[int]:
    """``value`` as a list of positive layer widths (empty only when ``allow_empty``).

    >>> widths((64, 32), "dnn_units")
    [64, 32]
    """
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError(f"{argument}: must be a list of positive integer widths, got {value!r}")
    if not all(is_integer(u) and u >= 1 for u in value):
        raise ValueError(f"{argument}: must be a list of positive integer widths, got {list(value)!r}")
    if not value and not allow_empty:
        raise ValueError(f"{argument}: needs one or more positive integer widths, got []")
    return [int(u) for u in value]


def rate(value: Any, argument: str) -> float:
    """``value`` as a float in ``[0, 1)`` (a dropout rate)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{argument}: must be a number in [0, 1), got {value!r}")
    return float(value)


def choice(value: Any, argument: str, choices: Sequence[Any]) -> Any:
    """``value`` if it is one of ``choices``."""
    if value not in tuple(choices):
        raise ValueError(f"{argument}: must be one of {tuple(choices)}, got {value!r}")
    return value


def norm(value: Any, argument: str = "norm") -> str | None:
    """A normalization name: None, ``"batch"`` or ``"layer"``."""
    return choice(value, argument, NORMS)


def flag(value: Any, argument: str) -> bool:
    """``value`` if it is a bool (``0``/``1`` and strings are refused: a YAML typo would flip it)."""
    if not isinstance(value, bool):
        raise ValueError(f"{argument}: must be true or false, got {value!r}")
    return value
