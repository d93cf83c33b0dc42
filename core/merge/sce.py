"""SCE: Select, Calculate, Erase — FuseChat's matrix-level task-vector merge.

Wan et al., "FuseChat: Knowledge Fusion of Chat Models", 2024, arXiv:2408.07990; the variant
implemented is mergekit's ``sce`` (``merge_methods/sce.py``), step for step:

1. Select: per tensor, the variance of each entry across the N task vectors (population
   variance); keep the ``density`` fraction (paper τ, mergekit ``select_topk``) of the entries
   with non-zero variance that vary most (at least one), zero the rest in every τᵢ.
   ``density = 1`` selects everything.
2. Calculate: matrix-level coefficients ηᵢ = mean(τ̂ᵢ²) / Σⱼ mean(τ̂ⱼ²) over the selected
   vectors (uniform when every τ̂ is zero).
3. Erase: elect the sign per entry from the unweighted Σ τ̂ᵢ; entries of the other sign (and
   zeros) are erased.
4. Merge: Σ ηᵢ τ̂ᵢ over the surviving entries divided by Σ ηᵢ over them
   (``disjoint="mean"``, mergekit, the divisor clamped at 1e-6) or not divided
   (``"sum"``: θ₀ + Σ ηᵢ τ̂ᵢ, the paper's formula read literally); θ = θ₀ + λ τ_m.

mergekit falls back to uniform ηᵢ when Σⱼ mean(τ̂ⱼ²) < 1e-6, an absolute threshold that
switches the weighting off for small task vectors (|τ| ~ 1e-3); here only an exact zero does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .._checks import check_choice, check_range
from .._registry import Hyper
from ..params import StateDict
from ._base import METHODS, apply_per_tensor, check_tensors, compute_dtype
from ._blocks import keep_count
from ._gta import SignConsensus, kth_largest

SCE_DENSITY = Hyper(
    "density",
    "float",
    1.0,
    0.01,
    1.0,
    0.01,
    help="fraction of entries kept by variance across models (τ; 1 = no selection)",
)
SCE_SCALE = Hyper("scale", "float", 1.0, 0.0, 3.0, 0.05, help="λ: scale of the merged vector")
SCE_DISJOINT = Hyper(
    "disjoint",
    "choice",
    "mean",
    choices=("mean", "sum"),
    help="η-weighted mean of the surviving entries (mergekit) or the plain Σ η τ (paper)",
)


@METHODS.register(
    "sce",
    mergekit=("sce",),
    title="SCE (select, calculate, erase)",
    paper="https://arxiv.org/abs/2408.07990",
    params=(SCE_DENSITY, SCE_SCALE, SCE_DISJOINT),
    tags=("needs_base", "per_tensor"),
)
def sce(
    models: Sequence[StateDict],
    *,
    base: StateDict | None = None,
    generator: torch.Generator | None = None,
    density: float = 1.0,
    scale: float = 1.0,
    disjoint: str = "mean",
) -> StateDict:
    """θ₀ + λ · SCE merge of the task vectors, tensor by tensor."""
    return apply_per_tensor(
        sce_tensor, models, base, density=density, scale=scale, disjoint=disjoint
    )


def sce_tensor(
    tensors: Sequence[Tensor],
    base: Tensor | None,
    *,
    generator: torch.Generator | None = None,
    density: float = 1.0,
    scale: float = 1.0,
    disjoint: str = "mean",
) -> Tensor:
    """SCE merge of one tensor.

    Args:
        tensors: N fine-tuned tensors (task vectors when ``base`` is None).
        base: θ₀ or None (zero).
        generator: unused.
        density: fraction of the entries with non-zero variance selected, in (0, 1].
        scale: λ.
        disjoint: "mean" (mergekit) or "sum".
    """
    tensors = check_tensors(tensors, base)
    density = check_range("density", density, 0.0, 1.0, low_inclusive=False)
    scale = check_range("scale", scale)
    check_choice("disjoint", disjoint, ("mean", "sum"))
    ref = tensors[0]
    dtype = compute_dtype(ref)
    b = None if base is None else base.to(dtype)
    taus = [t.to(dtype, copy=True) if b is None else t.to(dtype) - b for t in tensors]
    if density < 1.0:
        mask = variance_mask(taus, density)
        for tau in taus:
            tau.mul_(mask)
    eta = coefficients(taus)
    acc = SignConsensus(taus[0], elect="unweighted")
    for tau, e in zip(taus, eta, strict=True):
        acc.add(tau, e)
    merged = acc.result(normalize=disjoint == "mean", floor=1e-6)
    if scale != 1.0:
        merged.mul_(scale)
    if b is not None:
        merged.add_(b)
    return merged.to(ref.dtype)


def variance_mask(taus: Sequence[Tensor], density: float) -> Tensor:
    """Mask of the entries whose population variance across ``taus`` is among the top
    ``density`` fraction of the non-zero variances (entries tied with the cut are kept)."""
    n = len(taus)
    mean = torch.zeros_like(taus[0])
    for tau in taus:
        mean += tau
    mean /= n
    var = torch.zeros_like(taus[0])
    for tau in taus:
        d = tau - mean
        var.addcmul_(d, d)
    var /= n
    nonzero = int(torch.count_nonzero(var))
    if nonzero == 0:
        return torch.zeros_like(var, dtype=torch.bool)
    cut = kth_largest(var.reshape(1, -1), keep_count(nonzero, density))  # (1,)
    return var >= cut.to(var.device)


def coefficients(taus: Sequence[Tensor]) -> list[float]:
    """ηᵢ = mean(τᵢ²) / Σⱼ mean(τⱼ²) (uniform when all τ are zero)."""
    energy = [float(torch.linalg.vector_norm(t)) ** 2 for t in taus]
    total = sum(energy)
    if total == 0.0:
        return [1.0 / len(taus)] * len(taus)
    return [e / total for e in energy]


METHODS.attach("sce", tensor=sce_tensor)
