"""Karcher mean: the Riemannian (Fréchet) barycentre of the models on the unit sphere, scaled
back by their mean norm (mergekit's ``karcher``).

Wang, Ye & Yin, "Functionality-Oriented LLM Merging on the Fisher–Rao Manifold", 2026,
arXiv:2603.04972 (the weighted Karcher mean with a spherical proxy; their code is mergekit's
``merge_methods/karcher.py``).

Per tensor (flattened), with weights αᵢ (normalised to sum 1; equal by default, as mergekit):
uᵢ = xᵢ/‖xᵢ‖ for the inputs with ‖xᵢ‖ > ``tol``; start from the normalised weighted mean of
the uᵢ and repeat ``max_iter`` times the fixed-point step of the weighted Karcher mean,

    T = Σᵢ α̂ᵢ θᵢ/sin θᵢ · (uᵢ − cos θᵢ · u),   θᵢ = arccos⟨u, uᵢ⟩ (terms with θᵢ < tol skipped),
    u ← cos‖T‖ · u + sin‖T‖ · T/‖T‖,  renormalised,

stopping early when ‖T‖ < tol (α̂ are the weights renormalised over the non-zero inputs).
The result is (Σᵢ αᵢ‖xᵢ‖) · u. u stays in the span of the uᵢ, so the iteration runs on the
N × N Gram matrix (:mod:`core.merge._sphere`): two passes over the data for any ``max_iter``
(mergekit makes N passes per iteration). The base model is not used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .._checks import check_int, check_range
from .._registry import Hyper
from ..params import StateDict
from ._base import METHODS, apply_per_tensor, check_tensors, compute_dtype
from ._blocks import weighted_sum
from ._sphere import gram, quad
from .average import normalised_weights

K_WEIGHTS = Hyper(
    "weights", "floats", None, 0.0, 1.0, 0.05, help="weight per model (normalised to sum 1)"
)
MAX_ITER = Hyper("max_iter", "int", 10, 1, 100, 1, help="fixed-point iterations at most")
TOL = Hyper("tol", "float", 1e-5, 1e-9, 1e-2, 1e-6, help="convergence tolerance on ‖T‖ and θ")


@METHODS.register(
    "karcher",
    mergekit=("karcher",),
    title="Karcher mean (spherical barycentre)",
    paper="https://arxiv.org/abs/2603.04972",
    params=(K_WEIGHTS, MAX_ITER, TOL),
    tags=("per_tensor",),
)
def karcher(
    models: Sequence[StateDict],
    *,
    base: StateDict | None = None,
    generator: torch.Generator | None = None,
    weights: Sequence[float] | None = None,
    max_iter: int = 10,
    tol: float = 1e-5,
) -> StateDict:
    """Weighted Karcher mean of the models on the sphere, scaled by their mean norm."""
    return apply_per_tensor(
        karcher_tensor, models, None, weights=weights, max_iter=max_iter, tol=tol
    )


def karcher_tensor(
    tensors: Sequence[Tensor],
    base: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
    weights: Sequence[float] | None = None,
    max_iter: int = 10,
    tol: float = 1e-5,
) -> Tensor:
    """Karcher mean of N tensors (``base`` is ignored).

    Args:
        tensors: N tensors of one shape (one tensor is returned as it is).
        base: unused.
        generator: unused.
        weights: N non-negative weights with a positive sum (default equal).
        max_iter: iterations at most, >= 1.
        tol: tolerance (> 0) for zero inputs, skipped terms and convergence.
    """
    tensors = check_tensors(tensors, None)
    alphas = normalised_weights(weights, len(tensors))
    check_int("max_iter", max_iter, 1)
    tol = check_range("tol", tol, 0.0, low_inclusive=False)
    ref = tensors[0]
    if len(tensors) == 1:
        return ref.clone()
    g = gram(tensors).cpu()  # (N, N) float64
    coef = karcher_coefficients(g, alphas, max_iter=max_iter, tol=tol)
    xs = [t.to(compute_dtype(ref)) for t in tensors]
    return weighted_sum(xs, coef).to(ref.dtype)


def karcher_coefficients(
    g: Tensor, alphas: Sequence[float], *, max_iter: int, tol: float
) -> list[float]:
    """Coefficients cᵢ with result Σ cᵢ xᵢ, from the Gram matrix ``g`` (N, N) float64."""
    norms = g.diagonal().clamp(min=0).sqrt()  # (N,)
    valid = [i for i in range(len(alphas)) if float(norms[i]) > tol]
    if not valid:
        return [0.0] * len(alphas)
    a = torch.tensor([alphas[i] for i in valid], dtype=torch.float64)
    a = a / a.sum()  # (V,) weights over the non-zero inputs
    nv = norms[valid]  # (V,)
    gu = g[valid][:, valid] / (nv[:, None] * nv[None, :])  # (V, V) Gram of the unit vectors
    c = a.clone()  # u = Σ cᵢ uᵢ: the weighted mean of the units ...
    n0 = math.sqrt(quad(gu, c))
    if n0 < tol:
        c = torch.zeros_like(a)
        c[0] = 1.0
    else:
        c = c / n0  # ... normalised
    eye = torch.eye(len(valid), dtype=torch.float64)
    for _ in range(max_iter):
        dots = (gu @ c).clamp(-1.0, 1.0)  # (V,) ⟨u, uᵢ⟩
        t = torch.zeros_like(c)
        for i in range(len(valid)):
            theta = math.acos(float(dots[i]))
            if theta < tol:
                continue
            t += float(a[i]) * (theta / math.sin(theta)) * (eye[i] - dots[i] * c)
        tn = math.sqrt(quad(gu, t))
        if tn < tol:
            break
        c = math.cos(tn) * c + math.sin(tn) * (t / tn)
        un = math.sqrt(quad(gu, c))
        if un > tol:
            c = c / un
    scale = sum(al * float(n) for al, n in zip(alphas, norms, strict=True))
    out = [0.0] * len(alphas)
    for j, i in enumerate(valid):
        out[i] = scale * float(c[j]) / float(norms[i])
    return out


METHODS.attach("karcher", tensor=karcher_tensor)
