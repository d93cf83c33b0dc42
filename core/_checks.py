"""Small input checks shared by public functions. Each raises an error that names the
argument, the expected value and the actual value."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch


def check_range(
    name: str,
    value: float,
    low: float | None = None,
    high: float | None = None,
    *,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> float:
    """Check ``low <= value <= high`` (inclusive or not) and that value is a finite number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    lo_ok = low is None or (value >= low if low_inclusive else value > low)
    hi_ok = high is None or (value <= high if high_inclusive else value < high)
    if not (lo_ok and hi_ok):
        left = "-inf" if low is None else f"{low}"
        right = "inf" if high is None else f"{high}"
        interval = f"{'[' if low_inclusive else '('}{left}, {right}{']' if high_inclusive else ')'}"
        raise ValueError(f"{name} must be in {interval}, got {value!r}")
    return float(value)


def check_int(name: str, value: Any, low: int | None = None, high: int | None = None) -> int:
    """Check that value is an int in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(
            f"{name} must be in [{low if low is not None else '-inf'}, "
            f"{high if high is not None else 'inf'}], got {value}"
        )
    return value


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """Check that value is one of choices."""
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_tensor(
    name: str,
    value: Any,
    *,
    ndim: int | tuple[int, ...] | None = None,
    floating: bool = False,
    finite: bool = False,
    min_len: int | None = None,
) -> torch.Tensor:
    """Check that value is a tensor with the given number of dimensions (and optionally
    floating point, all finite, at least ``min_len`` rows)."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if value.ndim not in allowed:
            raise ValueError(
                f"{name} must have {' or '.join(map(str, allowed))} dimensions, "
                f"got shape {tuple(value.shape)}"
            )
    if floating and not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    if min_len is not None and (value.ndim == 0 or value.shape[0] < min_len):
        raise ValueError(
            f"{name} must have at least {min_len} rows, got shape {tuple(value.shape)}"
        )
    if finite and value.is_floating_point() and not bool(torch.isfinite(value).all()):
        n_bad = int((~torch.isfinite(value)).sum())
        raise ValueError(f"{name} must be finite, got {n_bad} NaN/Inf values")
    return value


def kind_of(value: Any) -> str:
    """What a value from a config file or JSON header is, in words ("a list", "a number",
    "null"), for messages read by people who wrote YAML or JSON rather than Python."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    kinds: tuple[tuple[type, str], ...] = (
        (int, "a number"),
        (float, "a number"),
        (str, "text"),
        (list, "a list"),
        (tuple, "a list"),
        (dict, "a mapping"),
        (bytes, "binary data"),
        (set, "a set"),
    )
    for t, name in kinds:
        if isinstance(value, t):
            return name
    return f"a {type(value).__name__}"
