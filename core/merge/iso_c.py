"""Iso-C: isotropic merging in the common subspace.

Marczak et al., "No Task Left Behind: Isotropic Model Merging with Common and Task-Specific
Subspaces", ICML 2025, arXiv:2502.04959.

Variant: the paper's Iso-C, as FusionBench's ``iso_utils.iso_c``. For every 2-D weight, the
task-arithmetic sum τ_Σ = Σᵢ τᵢ = U Σ Vᵀ has its spectrum flattened: every singular value is
replaced by their mean σ̄ = mean(Σ), τ_m = σ̄ U Vᵀ (all min(m, n) directions, so τ_m's singular
values are all equal). Every other tensor is the mean of the task vectors. θ = θ₀ + α τ_m;
α defaults to 1 (FusionBench; the paper tunes it on validation data).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .._checks import check_range
from .._registry import Hyper
from ..params import StateDict
from ._base import METHODS, apply_per_tensor, check_tensors
from ._blocks import weighted_sum
from ._subspace import finish

ISO_SCALE = Hyper("scale", "float", 1.0, 0.0, 3.0, 0.05, help="α: scale of the merged vector")


@METHODS.register(
    "iso_c",
    title="Iso-C (isotropic, common subspace)",
    paper="https://arxiv.org/abs/2502.04959",
    params=(ISO_SCALE,),
    tags=("needs_base", "per_tensor"),
)
def iso_c(
    models: Sequence[StateDict],
    *,
    base: StateDict | None = None,
    generator: torch.Generator | None = None,
    scale: float = 1.0,
) -> StateDict:
    """θ₀ + α · σ̄ U Vᵀ of Σᵢ τᵢ, matrix by matrix."""
    return apply_per_tensor(iso_c_tensor, models, base, scale=scale)


def iso_c_tensor(
    tensors: Sequence[Tensor],
    base: Tensor | None,
    *,
    generator: torch.Generator | None = None,
    scale: float = 1.0,
) -> Tensor:
    """Iso-C of one tensor (``tensors`` are task vectors when ``base`` is None)."""
    tensors = check_tensors(tensors, base)
    scale = check_range("scale", scale)
    n = len(tensors)
    total = weighted_sum(tensors, [1.0] * n, base, -float(n))  # Σ τᵢ in one pass, no stack
    if total.ndim != 2:
        return finish(total / n, base, scale, tensors[0])
    return finish(isotropic(total), base, scale, tensors[0])


def isotropic(matrix: Tensor) -> Tensor:
    """σ̄ U Vᵀ for matrix = U Σ Vᵀ (thin SVD), σ̄ the mean singular value."""
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)  # (m, r), (r,), (r, n)
    return (u * s.mean()) @ vh


METHODS.attach("iso_c", tensor=iso_c_tensor)
