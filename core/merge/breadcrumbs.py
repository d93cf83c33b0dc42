"""Model Breadcrumbs: drop the largest and the smallest entries of each task vector.

Davari & Belilovsky, "Model Breadcrumbs: Scaling Multi-Task Model Merging with Sparse Masks",
ECCV 2024, arXiv:2312.06795.

Per tensor and per row (the last dimension, as in the reference code), rank |τᵢ|; remove the
top ``gamma`` fraction (outliers) and keep the next ``density`` fraction, so ``density`` is the
final kept fraction and the bottom 1 − density − gamma is dropped. Then θ₀ + λ Σᵢ wᵢ τ̃ᵢ.
Counts are ⌊γ·D⌋ removed and ⌊density·D⌋ (at least 1) kept per row of D entries, so a row with
fewer than 1/γ entries loses no outlier — and is never zeroed whole (mergekit's edge case).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .._checks import check_range
from .._registry import Hyper
from ..params import StateDict
from ._base import METHODS, apply_per_tensor, check_tensors, check_weights
from ._blocks import keep_count

BC_DENSITY = Hyper("density", "float", 0.1, 0.01, 1.0, 0.01, help="final fraction of |τ| kept")
GAMMA = Hyper(
    "gamma",
    "float",
    0.01,
    0.0,
    0.5,
    0.005,
    help="top fraction of |τ| removed",
    sum_limit=("density", 1.0),
)
BC_SCALE = Hyper("scale", "float", 1.0, 0.0, 3.0, 0.05, help="λ: scale of the summed vectors")
BC_WEIGHTS = Hyper("weights", "floats", None, 0.0, 2.0, 0.05, help="weight per task vector")


@METHODS.register(
    "breadcrumbs",
    mergekit=("breadcrumbs",),
    title="Model Breadcrumbs",
    paper="https://arxiv.org/abs/2312.06795",
    params=(BC_DENSITY, GAMMA, BC_SCALE, BC_WEIGHTS),
    tags=("needs_base", "per_tensor", "scale_linear"),
)
def breadcrumbs(
    models: Sequence[StateDict],
    *,
    base: StateDict | None = None,
    generator: torch.Generator | None = None,
    density: float = 0.1,
    gamma: float = 0.01,
    scale: float = 1.0,
    weights: Sequence[float] | None = None,
) -> StateDict:
    """θ₀ + λ Σᵢ wᵢ · (τᵢ without its top-γ and bottom entries), row by row."""
    return apply_per_tensor(
        breadcrumbs_tensor,
        models,
        base,
        density=density,
        gamma=gamma,
        scale=scale,
        weights=weights,
    )


def breadcrumbs_tensor(
    tensors: Sequence[Tensor],
    base: Tensor | None,
    *,
    generator: torch.Generator | None = None,
    density: float = 0.1,
    gamma: float = 0.01,
    scale: float = 1.0,
    weights: Sequence[float] | None = None,
) -> Tensor:
    """Breadcrumbs merge of one tensor.

    Args:
        tensors: N fine-tuned tensors (task vectors when ``base`` is None).
        base: θ₀ or None (zero).
        generator: unused.
        density: final kept fraction per row, in (0, 1].
        gamma: removed top fraction per row, in [0, 1); density + gamma <= 1.
        scale: λ.
        weights: N finite weights (default all 1).
    """
    tensors = check_tensors(tensors, base)
    density = check_range("density", density, 0.0, 1.0, low_inclusive=False)
    gamma = check_range("gamma", gamma, 0.0, 1.0, high_inclusive=False)
    if density + gamma > 1.0 + 1e-12:
        raise ValueError(f"density + gamma must be <= 1, got {density} + {gamma}")
    scale = check_range("scale", scale)
    w = check_weights(weights, len(tensors))
    ref = tensors[0]
    acc_dtype = torch.float32 if ref.dtype != torch.float64 else ref.dtype
    acc = torch.zeros(ref.shape, dtype=acc_dtype, device=ref.device)
    for t, wi in zip(tensors, w, strict=True):
        tau = t.to(acc.dtype) - (0.0 if base is None else base.to(acc.dtype))  # same shape
        acc += wi * tau * middle_mask(tau, density, gamma)
    out = acc * scale if base is None else base.to(acc.dtype) + scale * acc
    return out.to(ref.dtype)


def middle_mask(tau: Tensor, density: float, gamma: float) -> Tensor:
    """Per row of the last dimension: True for the entries ranked ⌊γ·D⌋ .. ⌊γ·D⌋ + kept − 1
    by magnitude (largest first)."""
    if tau.numel() == 0:  # an empty tensor has nothing to mask (reshape(-1, 0) is ambiguous)
        return torch.zeros_like(tau, dtype=torch.bool)
    rows = tau.reshape(1, -1) if tau.ndim <= 1 else tau.reshape(-1, tau.shape[-1])  # (R, D)
    d = rows.shape[1]
    n_top = math.floor(gamma * d)
    n_keep = min(keep_count(d, density), d - n_top)
    order = torch.argsort(rows.abs(), dim=1, descending=True, stable=True)  # (R, D)
    ranks = torch.empty_like(order).scatter_(
        1, order, torch.arange(d, device=tau.device).expand_as(order)
    )  # (R, D) rank of each entry by magnitude
    mask = (ranks >= n_top) & (ranks < n_top + n_keep)  # (R, D)
    return mask.reshape(tau.shape)


METHODS.attach("breadcrumbs", tensor=breadcrumbs_tensor)
