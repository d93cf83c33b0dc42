"""Model Breadcrumbs masks followed by the TIES sign election (mergekit's ``breadcrumbs_ties``).

Davari & Belilovsky, "Model Breadcrumbs: Scaling Multi-Task Model Merging with Sparse Masks",
ECCV 2024, arXiv:2312.06795; the sign election and disjoint merge are TIES-Merging's
(Yadav et al., NeurIPS 2023, arXiv:2306.01708). The combination is mergekit's.

1. Mask each τᵢ as Breadcrumbs does: drop the top ``gamma`` fraction of |τᵢ| (outliers) and
   keep the next ``density`` fraction — per row of the last dimension like the reference code
   and :mod:`core.merge.breadcrumbs` (``scope="row"``), or over the flattened tensor like
   mergekit (``scope="tensor"``). Counts per row of D entries: ⌊γ·D⌋ removed, ⌊density·D⌋
   (at least 1) kept; equal magnitudes are ranked by position.
2. Elect the sign per entry from the weighted deltas Σ wᵢτ̃ᵢ (mergekit) and merge the agreeing
   entries: their sum (``disjoint="sum"``, mergekit's default ``normalize: false``, the
   Breadcrumbs sum) or their weighted mean (``"mean"``, TIES).
3. θ = θ₀ + λ τ_m.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .._checks import check_choice, check_range
from .._registry import Hyper
from ..params import StateDict
from ._base import (
    METHODS,
    apply_per_tensor,
    check_tensors,
    check_weights,
    compute_dtype,
)
from ._blocks import keep_count
from ._gta import SignConsensus, rank_window
from .breadcrumbs import BC_DENSITY, BC_SCALE, BC_WEIGHTS, GAMMA

SCOPE = Hyper(
    "scope",
    "choice",
    "row",
    choices=("row", "tensor"),
    help="rank per row of the last dimension (reference code) or per tensor (mergekit)",
)
BT_DISJOINT = Hyper(
    "disjoint",
    "choice",
    "sum",
    choices=("sum", "mean"),
    help="sum of the agreeing entries (mergekit) or their weighted mean (TIES)",
)


@METHODS.register(
    "breadcrumbs_ties",
    mergekit=("breadcrumbs_ties",),
    title="Model Breadcrumbs + TIES election",
    paper="https://arxiv.org/abs/2312.06795",
    params=(BC_DENSITY, GAMMA, BC_SCALE, SCOPE, BT_DISJOINT, BC_WEIGHTS),
    tags=("needs_base", "per_tensor"),
)
def breadcrumbs_ties(
    models: Sequence[StateDict],
    *,
    base: StateDict | None = None,
    generator: torch.Generator | None = None,
    density: float = 0.1,
    gamma: float = 0.01,
    scale: float = 1.0,
    scope: str = "row",
    disjoint: str = "sum",
    weights: Sequence[float] | None = None,
) -> StateDict:
    """θ₀ + λ · disjoint merge of the Breadcrumbs-masked task vectors (signs elected)."""
    return apply_per_tensor(
        breadcrumbs_ties_tensor,
        models,
        base,
        density=density,
        gamma=gamma,
        scale=scale,
        scope=scope,
        disjoint=disjoint,
        weights=weights,
    )


def breadcrumbs_ties_tensor(
    tensors: Sequence[Tensor],
    base: Tensor | None,
    *,
    generator: torch.Generator | None = None,
    density: float = 0.1,
    gamma: float = 0.01,
    scale: float = 1.0,
    scope: str = "row",
    disjoint: str = "sum",
    weights: Sequence[float] | None = None,
) -> Tensor:
    """Breadcrumbs-TIES merge of one tensor.

    Args:
        tensors: N fine-tuned tensors (task vectors when ``base`` is None).
        base: θ₀ or None (zero).
        generator: unused.
        density: final kept fraction per row (or tensor), in (0, 1].
        gamma: removed top fraction, in [0, 1); density + gamma <= 1.
        scale: λ.
        scope: "row" (last dimension) or "tensor".
        disjoint: "sum" or "mean".
        weights: N finite weights (default all 1); they vote in the sign election.
    """
    tensors = check_tensors(tensors, base)
    density = check_range("density", density, 0.0, 1.0, low_inclusive=False)
    gamma = check_range("gamma", gamma, 0.0, 1.0, high_inclusive=False)
    if density + gamma > 1.0 + 1e-12:
        raise ValueError(f"density + gamma must be <= 1, got {density} + {gamma}")
    scale = check_range("scale", scale)
    check_choice("scope", scope, ("row", "tensor"))
    check_choice("disjoint", disjoint, ("sum", "mean"))
    w = check_weights(weights, len(tensors))
    ref = tensors[0]
    dtype = compute_dtype(ref)
    acc: SignConsensus | None = None
    for t, wi in zip(tensors, w, strict=True):
        tau = t.to(dtype, copy=True) if base is None else t.to(dtype) - base.to(dtype)
        tau.mul_(breadcrumbs_mask(tau, density, gamma, scope))
        if acc is None:
            acc = SignConsensus(tau, elect="weighted")
        acc.add(tau, wi)
    assert acc is not None
    merged = acc.result(normalize=disjoint == "mean")
    if scale != 1.0:
        merged.mul_(scale)
    if base is not None:
        merged.add_(base.to(dtype))
    return merged.to(ref.dtype)


def breadcrumbs_mask(tau: Tensor, density: float, gamma: float, scope: str) -> Tensor:
    """True for the entries ranked ⌊γ·D⌋ .. ⌊γ·D⌋ + kept − 1 by magnitude (largest first) in
    each row of the last dimension (``scope="row"``) or in the whole tensor (``"tensor"``)."""
    if tau.numel() == 0:
        return torch.zeros_like(tau, dtype=torch.bool)
    if scope == "tensor" or tau.ndim <= 1:
        a = tau.reshape(1, -1)
    else:
        a = tau.reshape(-1, tau.shape[-1])  # (R, D)
    d = a.shape[1]
    n_top = math.floor(gamma * d)
    n_keep = min(keep_count(d, density), d - n_top)
    return rank_window(a.abs(), n_top, n_keep).reshape(tau.shape)


METHODS.attach("breadcrumbs_ties", tensor=breadcrumbs_ties_tensor)
