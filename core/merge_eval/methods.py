"""Which registered methods a lab can run, and the slider grids over their hyperparameters."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .._checks import check_int, check_range
from ..merge import METHODS

# Methods whose result is θ₀ + λ·f(τ; other hyperparameters) (tagged ``scale_linear``): a move
# of the λ slider alone reuses the cached merged task vector f (tests/merge/test_merge_eval.py checks
# the identity).
SCALE_LINEAR = frozenset(n for n in METHODS if "scale_linear" in METHODS[n].tags)


def applicable_methods(has_base: bool, n_models: int) -> list[str]:
    """Registered merge methods usable with (or without) a base and ``n_models`` models.

    Methods tagged ``needs_base`` need a base; ``two_models`` ones need exactly 2 models.
    """
    check_int("n_models", n_models, 0)
    out = []
    for e in METHODS.entries():
        if "needs_base" in e.tags and not has_base:
            continue
        if "two_models" in e.tags and n_models != 2:
            continue
        out.append(e.name)
    return out


def effective_coefficients(
    method: str, hyperparameters: Mapping[str, Any], n_models: int
) -> list[float] | None:
    """λ·wᵢ of each task vector for task arithmetic (where it is a point of the coefficient
    landscape), else None."""
    if method != "task_arithmetic":
        return None
    scale = float(hyperparameters.get("scale", METHODS[method].defaults().get("scale", 1.0)))
    weights = hyperparameters.get("weights") or [1.0] * n_models
    if len(weights) != n_models:
        raise ValueError(f"weights must have {n_models} entries, got {len(weights)}")
    return [scale * float(w) for w in weights]


def linear_grid(low: float, high: float, n_points: int) -> tuple[float, ...]:
    """``n_points`` evenly spaced values from ``low`` to ``high`` (a landscape axis)."""
    check_range("low", low)
    check_range("high", high)
    check_int("n_points", n_points, 2, 1000)
    if not low < high:
        raise ValueError(f"low must be below high, got low={low}, high={high}")
    return tuple(float(v) for v in np.linspace(low, high, n_points))


def sweep_values(
    method: str, param: str, n_points: int = 11, *, current: float | None = None
) -> list[float]:
    """``n_points`` evenly spaced values over a hyperparameter's slider range, plus 0 (λ = 0 is
    the base model) when the range holds it and the ``current`` slider value, sorted."""
    check_int("n_points", n_points, 2, 1000)
    hyper = {p.name: p for p in METHODS[method].params}
    if param not in hyper or hyper[param].kind not in ("float", "int"):
        numeric = [n for n, p in hyper.items() if p.kind in ("float", "int")]
        raise ValueError(
            f"param must be a numeric hyperparameter of {method!r} ({numeric}), got {param!r}"
        )
    p = hyper[param]
    if p.low is None or p.high is None:
        raise ValueError(f"hyperparameter {param!r} of {method!r} has no range to sweep")
    low, high = float(p.low), float(p.high)
    vals = np.linspace(low, high, n_points)
    extra = [0.0] if low <= 0.0 <= high else []
    if current is not None:
        cur = check_range("current", current, low, high)
        extra.append(float(round(cur)) if p.kind == "int" else float(cur))
    vals = np.concatenate([vals, extra])
    if p.kind == "int":
        vals = np.round(vals)
    return [float(v) for v in np.unique(vals)]
