"""Checks of recipe args (JSON values): each error names the arg, the expected and the actual value."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def need_str(args: Mapping[str, Any], name: str) -> str:
    value = args.get(name)
    if not isinstance(value, str) or not value:
        raise ValueError(f"recipe args[{name!r}] must be a non-empty string, got {value!r}")
    return value


def need_int(args: Mapping[str, Any], name: str, low: int) -> int:
    value = args.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"recipe args[{name!r}] must be an int >= {low}, got {value!r}")
    return value


def need_number(args: Mapping[str, Any], name: str) -> float:
    value = args.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"recipe args[{name!r}] must be a finite number, got {value!r}")
    return float(value)


def need_ids(args: Mapping[str, Any], name: str, n: int) -> list[str]:
    value = args.get(name)
    if (
        not isinstance(value, (list, tuple))
        or len(value) != n
        or not all(isinstance(v, str) and v for v in value)
    ):
        raise ValueError(f"recipe args[{name!r}] must be a list of {n} model ids, got {value!r}")
    return list(value)


def need_names(args: Mapping[str, Any], name: str) -> list[str]:
    """A non-empty list of non-empty strings (model ids, method names)."""
    value = args.get(name)
    if (
        not isinstance(value, (list, tuple))
        or not value
        or not all(isinstance(v, str) and v for v in value)
    ):
        raise ValueError(f"recipe args[{name!r}] must be a non-empty list of names, got {value!r}")
    return list(value)


def choice(args: Mapping[str, Any], name: str, choices: tuple[Any, ...], default: Any) -> Any:
    value = args.get(name, default)
    if value not in choices:
        raise ValueError(f"recipe args[{name!r}] must be one of {list(choices)}, got {value!r}")
    return value


def optional(args: Mapping[str, Any], **lows: int) -> None:
    """Check the optional int args that are present (``name=lowest value``)."""
    for name, low in lows.items():
        if args.get(name) is not None:
            need_int(args, name, low)
