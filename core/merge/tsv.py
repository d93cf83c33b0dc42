"""TSV-M: task singular vectors, merged after decorrelating their subspaces.

Gargiulo et al., "Task Singular Vectors: Reducing Task Interference in Model Merging",
CVPR 2025, arXiv:2412.00081.

Variant: TSV-M as in the paper and FusionBench's ``TSVM_utils.compute_and_sum_svd_mem_reduction``.
For every 2-D weight, each task matrix τᵢ = Uᵢ Σᵢ Vᵢᵀ keeps its top k = ⌊r / T⌋ singular
triplets (r = min(m, n), T tasks). The kept vectors are stacked, U = [U₁ₖ … U_Tₖ] (m × Tk) and
Vᵀ = [V₁ₖᵀ; …; V_Tₖᵀ] (Tk × n), and orthogonalised by their polar factors U⊥ = P_U Q_Uᵀ,
V⊥ = P_V Q_Vᵀ (the nearest orthonormal matrices, from one thin SVD each); then
τ_m = U⊥ diag(Σ₁ₖ … Σ_Tₖ) V⊥ᵀ and θ = θ₀ + λ τ_m. Every other tensor is the mean of the
task vectors (FusionBench; the paper treats matrices only). ``weights`` scale the task vectors
before the SVDs (FusionBench's list-valued ``alpha``), ``scale`` scales the merged vector
(its scalar ``alpha``; 1 in the paper). A matrix with r < T keeps k = 0 directions and
contributes nothing, as in FusionBench.

With mutually orthogonal task vectors of rank ≤ k the stacked U and V are already orthonormal,
so TSV-M equals task arithmetic with λ = 1 (tested).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .._checks import check_range
from .._registry import Hyper
from ..params import StateDict
from ._base import METHODS, apply_per_tensor, check_tensors, check_weights
from ._subspace import finish, polar, task_deltas

TSV_SCALE = Hyper("scale", "float", 1.0, 0.0, 3.0, 0.05, help="α: scale of the merged vector")
TSV_WEIGHTS = Hyper(
    "weights", "floats", None, 0.0, 2.0, 0.05, help="weight per task vector, before the SVD"
)


@METHODS.register(
    "tsv",
    title="TSV-M (task singular vectors)",
    paper="https://arxiv.org/abs/2412.00081",
    params=(TSV_SCALE, TSV_WEIGHTS),
    tags=("needs_base", "per_tensor"),
)
def tsv(
    models: Sequence[StateDict],
    *,
    base: StateDict | None = None,
    generator: torch.Generator | None = None,
    scale: float = 1.0,
    weights: Sequence[float] | None = None,
) -> StateDict:
    """θ₀ + α · TSV-M(τ₁ … τ_T), matrix by matrix."""
    return apply_per_tensor(tsv_tensor, models, base, scale=scale, weights=weights)


def tsv_tensor(
    tensors: Sequence[Tensor],
    base: Tensor | None,
    *,
    generator: torch.Generator | None = None,
    scale: float = 1.0,
    weights: Sequence[float] | None = None,
) -> Tensor:
    """TSV-M of one tensor.

    Args:
        tensors: T fine-tuned tensors (task vectors when ``base`` is None).
        base: θ₀ or None (zero).
        generator: unused.
        scale: α, the scale of the merged task vector.
        weights: T finite weights applied to the task vectors before the SVDs (default 1).
    """
    tensors = check_tensors(tensors, base)
    scale = check_range("scale", scale)
    w = check_weights(weights, len(tensors))
    taus = task_deltas(tensors, base, w)  # (T, m, n) or (T, *shape)
    if taus.ndim != 3:
        return finish(taus.mean(0), base, scale, tensors[0])
    return finish(tsv_matrix(taus), base, scale, tensors[0])


def tsv_matrix(taus: Tensor) -> Tensor:
    """TSV-M merge of a (T, m, n) stack of task matrices -> (m, n)."""
    n_tasks, m, n = taus.shape
    k = min(m, n) // n_tasks  # directions kept per task (FusionBench: int(r * 1/T))
    if k == 0:
        return taus.new_zeros(m, n)
    u, s, vh = torch.linalg.svd(taus, full_matrices=False)  # (T, m, r), (T, r), (T, r, n)
    u_cat = u[:, :, :k].permute(1, 0, 2).reshape(m, n_tasks * k)  # (m, Tk) task blocks
    s_cat = s[:, :k].reshape(n_tasks * k)  # (Tk,)
    v_cat = vh[:, :k, :].reshape(n_tasks * k, n)  # (Tk, n)
    return (polar(u_cat) * s_cat) @ polar(v_cat)  # (m, n)


METHODS.attach("tsv", tensor=tsv_tensor)
