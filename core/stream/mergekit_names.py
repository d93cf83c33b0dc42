"""mergekit's method and parameter names, per tensor: which core.merge kernel runs a tensor
of a config, with which keyword arguments, and whether it takes the base tensor. The names of
the mergekit-family methods are in :mod:`core.stream.family`; which mergekit names a core.merge
method answers to is the ``mergekit`` field of its registry entry."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import Tensor

from .config import MergeConfig, parameter
from .family import FAMILY_ALIASES, family_call
from .st_io import StreamError


def tensor_call(cfg: MergeConfig, name: str, t: float) -> tuple[str, dict[str, Any], bool]:
    """The core.merge kernel, its keyword arguments and whether it takes the base tensor.

    Follows mergekit's parameter names and defaults: ``weight`` (1), ``density`` (1),
    ``lambda`` (1), ``normalize`` (linear and ties true, others false), ``t`` for slerp.
    """
    mk = cfg.merge_method
    if mk in FAMILY_ALIASES:
        return family_call(cfg, name, t)
    models = cfg.merged_models()

    def g(key: str, default: Any) -> Any:
        return parameter(cfg, None, key, name, t, default)

    def per(key: str, default: Any) -> list[Any]:
        return [parameter(cfg, m, key, name, t, default) for m in models]

    w = [float(x) for x in per("weight", 1.0)]
    if mk == "linear":
        if g("normalize", True):
            if any(x < 0 for x in w) or sum(w) <= 0:
                raise StreamError(
                    f"linear with normalize: true averages, so every 'weight' must be >= 0 with "
                    f"a positive sum; tensor {name!r} gets weights {w} (or set normalize: false "
                    "for a plain weighted sum)"
                )
            return "average", {"weights": w}, False
        return "task_arithmetic", {"weights": w, "scale": 1.0}, False
    if mk == "slerp":
        return "slerp", {"t": float(g("t", 0.5))}, False
    if mk == "model_stock":
        return "model_stock", {}, True
    lam = float(g("lambda", 1.0))
    if mk == "task_arithmetic":
        if g("normalize", False):
            w = _normalise(w)
        return "task_arithmetic", {"weights": w, "scale": lam}, True
    dens = [float(x) for x in per("density", 1.0)]
    if mk == "dare_linear":
        if g("normalize", False):
            w = _normalise(w)
        return (
            "dare",
            {"weights": w, "scale": lam, "drop": 1.0 - _uniform(dens, "density", mk)},
            True,
        )
    if mk == "ties":
        hyper: dict[str, Any] = {
            "weights": w,
            "scale": lam,
            "trim": str(g("trim", "tensor")),
            "disjoint": str(g("disjoint", "mean" if g("normalize", True) else "sum")),
        }
        if len(set(dens)) == 1:
            hyper["density"] = dens[0]
        else:
            hyper["_densities"] = dens  # per-model trim: thresholds computed per tensor
        return "ties", hyper, True
    if mk == "dare_ties":
        hyper = {
            "weights": w,
            "scale": lam,
            "drop": 1.0 - _uniform(dens, "density", mk),
            "disjoint": str(g("disjoint", "mean" if g("normalize", False) else "sum")),
            "density": 1.0,
            "trim": "tensor",
        }
        return "dare_ties", hyper, True
    if mk == "breadcrumbs":
        hyper = {
            "weights": w,
            "scale": lam,
            "density": _uniform(dens, "density", mk),
            "gamma": _uniform([float(x) for x in per("gamma", 0.01)], "gamma", mk),
        }
        if hyper["density"] + hyper["gamma"] > 1.0:
            raise StreamError(
                f"breadcrumbs keeps 'density' of each row after removing the top 'gamma': "
                f"density + gamma must be <= 1, got {hyper['density']} + {hyper['gamma']} for "
                f"tensor {name!r} (the defaults are density 1 and gamma 0.01)"
            )
        return "breadcrumbs", hyper, True
    raise StreamError(f"merge_method {mk!r} is not supported")  # pragma: no cover


def _normalise(w: list[float]) -> list[float]:
    s = sum(w)
    return [x / s for x in w] if s != 0 else w


def _uniform(values: list[float], key: str, method: str) -> float:
    if len(set(values)) != 1:
        raise StreamError(f"{method}: {key} must be the same for every model here, got {values}")
    return values[0]


def kernel(method: str) -> Callable[..., Tensor]:
    from ..merge import TENSOR_METHODS

    if method not in TENSOR_METHODS:
        raise StreamError(
            f"core.merge has no per-tensor kernel {method!r} (available: {sorted(TENSOR_METHODS)})"
        )
    return TENSOR_METHODS[method]


def accepted(fn: Callable[..., Any], hyper: dict[str, Any]) -> dict[str, Any]:
    """Drop keyword arguments the kernel does not take (e.g. ``trim`` for a DARE-TIES kernel
    without a trim step); unknown names starting with '_' are engine-internal."""
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return {k: v for k, v in hyper.items() if not k.startswith("_")}
    return {k: v for k, v in hyper.items() if k in params}
