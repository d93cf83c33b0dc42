"""Iso-CTS: isotropic merging in the common and task-specific subspaces.

Marczak et al., "No Task Left Behind: Isotropic Model Merging with Common and Task-Specific
Subspaces", ICML 2025, arXiv:2502.04959.

Variant: the paper's Iso-CTS, as FusionBench's ``iso_utils.iso_cts``. For every 2-D weight
(r = min(m, n), T tasks):

1. Common subspace: the top k_c singular vectors of τ_Σ = Σᵢ τᵢ, with
   k_c = r − T·round((r − ⌊r·f⌋) / T) so that the rest splits evenly (f = ``common_fraction``).
2. Task-specific subspaces: each τᵢ minus its projection on the common left subspace,
   τᵢ − U_c U_cᵀ τᵢ, keeps its top (r − k_c) / T singular triplets.
3. The task-specific and common vectors are stacked (tasks first, then the common block, as in
   FusionBench), orthogonalised by their polar factors, and every singular value is replaced
   by the mean of the stacked ones: τ_m = σ̄ U⊥ V⊥ᵀ.

Every other tensor is the mean of the task vectors; θ = θ₀ + α τ_m. Defaults f = 0.8, α = 1
(FusionBench's configuration).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .._checks import check_range
from .._registry import Hyper
from ..params import StateDict
from ._base import METHODS, apply_per_tensor, check_tensors
from ._subspace import finish, polar, task_deltas
from .iso_c import ISO_SCALE

COMMON = Hyper(
    "common_fraction",
    "float",
    0.8,
    0.0,
    1.0,
    0.05,
    help="share of the rank for the common subspace",
)


@METHODS.register(
    "iso_cts",
    title="Iso-CTS (isotropic, common + task subspaces)",
    paper="https://arxiv.org/abs/2502.04959",
    params=(ISO_SCALE, COMMON),
    tags=("needs_base", "per_tensor"),
)
def iso_cts(
    models: Sequence[StateDict],
    *,
    base: StateDict | None = None,
    generator: torch.Generator | None = None,
    scale: float = 1.0,
    common_fraction: float = 0.8,
) -> StateDict:
    """θ₀ + α · Iso-CTS(τ₁ … τ_T), matrix by matrix."""
    return apply_per_tensor(
        iso_cts_tensor, models, base, scale=scale, common_fraction=common_fraction
    )


def iso_cts_tensor(
    tensors: Sequence[Tensor],
    base: Tensor | None,
    *,
    generator: torch.Generator | None = None,
    scale: float = 1.0,
    common_fraction: float = 0.8,
) -> Tensor:
    """Iso-CTS of one tensor (``tensors`` are task vectors when ``base`` is None)."""
    tensors = check_tensors(tensors, base)
    scale = check_range("scale", scale)
    common_fraction = check_range("common_fraction", common_fraction, 0.0, 1.0)
    taus = task_deltas(tensors, base)  # (T, *shape)
    if taus.ndim != 3:
        return finish(taus.mean(0), base, scale, tensors[0])
    return finish(iso_cts_matrix(taus, common_fraction), base, scale, tensors[0])


def common_size(r: int, n_tasks: int, common_fraction: float) -> tuple[int, int]:
    """(k_c, k_t): common directions and task-specific directions per task, k_c + T k_t = r."""
    k_c = int(r * common_fraction)
    task_total = round((r - k_c) / n_tasks) * n_tasks
    k_c = r - task_total
    return k_c, task_total // n_tasks


def iso_cts_matrix(taus: Tensor, common_fraction: float) -> Tensor:
    """Iso-CTS merge of a (T, m, n) stack -> (m, n)."""
    n_tasks, m, n = taus.shape
    k_c, k_t = common_size(min(m, n), n_tasks, common_fraction)
    u, s, vh = torch.linalg.svd(taus.sum(0), full_matrices=False)  # (m, r), (r,), (r, n)
    u_c, s_c, vh_c = u[:, :k_c], s[:k_c], vh[:k_c]  # common subspace
    us, ss, vs = [], [], []
    if k_t > 0:
        resid = taus - u_c @ (u_c.T @ taus)  # (T, m, n) minus the common left subspace
        u_t, s_t, vh_t = torch.linalg.svd(resid, full_matrices=False)
        us.append(u_t[:, :, :k_t].permute(1, 0, 2).reshape(m, n_tasks * k_t))
        ss.append(s_t[:, :k_t].reshape(-1))
        vs.append(vh_t[:, :k_t, :].reshape(n_tasks * k_t, n))
    u_all = torch.cat([*us, u_c], dim=1)  # (m, r) task blocks, then the common block
    s_all = torch.cat([*ss, s_c])  # (r,)
    v_all = torch.cat([*vs, vh_c], dim=0)  # (r, n)
    return (polar(u_all) * s_all.mean()) @ polar(v_all)  # (m, n)


METHODS.attach("iso_cts", tensor=iso_cts_tensor)
